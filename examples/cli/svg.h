// Minimal SVG charts for the study's report: grouped bars and a scatter with error bars.
// Just enough to look at results without Python; not a plotting library.
#pragma once
#include <string>
#include <vector>

namespace spdlab::cli::svg {

struct Series {
  std::string name;
  std::vector<double> values, errors;  // errors may be empty
};

// Groups along x (one label each), one bar per series inside a group. `line` (optional) is drawn over the bars
// on a right-hand axis from 0 to 1, for a rate such as SPD's condition rate.
std::string grouped_bars(const std::string& title, const std::string& y_label, const std::vector<std::string>& groups,
                         const std::vector<Series>& series, const Series* line = nullptr);

struct Point {
  std::string name;
  double x, y, x_err, y_err;
};
std::string scatter(const std::string& title, const std::string& x_label, const std::string& y_label,
                    const std::vector<Point>& points);

}  // namespace spdlab::cli::svg
