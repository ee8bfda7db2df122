// Minimal SVG charts for reports and labs: grouped bars, a scatter with error bars and curves, and lines
// (trajectories). Just enough to look at results without Python; not a plotting library. What the charts
// promise a reader: axis ticks at round values (1, 2, 2.5 or 5 times a power of ten), a legend sized to its
// longest name (never cut off), scatter points labelled with their names and moved apart where labels would
// overlap, and a colour per name that the caller can keep the same across charts (`color`).
#pragma once
#include <string>
#include <vector>

namespace spdlab::svg {

// The palette's i-th colour (it repeats after 14): a caller that draws one thing in several charts picks its
// colour once, by a fixed index, and passes it as `color`.
std::string palette(size_t i);

struct Series {
  std::string name;
  std::vector<double> values, errors;  // errors may be empty
  std::string color = {};              // empty: the palette by position
};

// Groups along x (one label each), one bar per series inside a group. `line` (optional) is drawn over the bars
// on a right-hand axis from 0 to 1, for a rate such as SPD's condition rate.
std::string grouped_bars(const std::string& title, const std::string& y_label, const std::vector<std::string>& groups,
                         const std::vector<Series>& series, const Series* line = nullptr);

struct Point {
  std::string name;
  double x, y, x_err, y_err;
  std::string color = {};  // empty: the palette by position
};

// Polylines in the plane (optimizer trajectories, say), one per series, each point drawn as a dot; points with
// `marked` set get a ring (where something happened, such as SPD's condition firing). Axes fit the data.
struct Line {
  std::string name;
  std::vector<double> x, y;
  std::vector<bool> marked = {};  // empty, or one per point
  std::string color = {};         // empty: the palette by position
  bool dashed = false;
  bool dots = true;  // a dot at every point
};
std::string lines(const std::string& title, const std::string& x_label, const std::string& y_label,
                  const std::vector<Line>& series);

// Points with error bars, each labelled with its name, and optional curves under them (in the legend).
std::string scatter(const std::string& title, const std::string& x_label, const std::string& y_label,
                    const std::vector<Point>& points, const std::vector<Line>& curves = {});

// Round tick values covering [lo, hi] with about `count` intervals: {first, step, last}, first <= lo and
// last >= hi, step 1, 2, 2.5 or 5 times a power of ten. For tests and for callers that print their own axes.
struct Ticks {
  double first, step, last;
};
Ticks nice_ticks(double lo, double hi, int count = 5);

}  // namespace spdlab::svg
