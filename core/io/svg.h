// Minimal SVG charts for reports and labs: grouped bars, a scatter with error bars, and lines (trajectories).
// Just enough to look at results without Python; not a plotting library.
#pragma once
#include <string>
#include <vector>

namespace spdlab::svg {

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

// Polylines in the plane (optimizer trajectories, say), one per series, each point drawn as a dot; points with
// `marked` set get a ring (where something happened, such as SPD's condition firing). Axes fit the data.
struct Line {
  std::string name;
  std::vector<double> x, y;
  std::vector<bool> marked;  // empty, or one per point
};
std::string lines(const std::string& title, const std::string& x_label, const std::string& y_label,
                  const std::vector<Line>& series);

}  // namespace spdlab::svg
