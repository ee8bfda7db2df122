// SVG drawing for the study's plots and the labs; see svg.h.
#include "core/io/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace spdlab::svg {

namespace {
// Tableau 10 (distinct in print and for the common colour-vision deficiencies), then four darker tones from
// Tableau 20 for studies of more methods.
const char* kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                         "#ff9da7", "#9c755f", "#bab0ac", "#499894", "#d37295", "#b6992d", "#79706e"};
constexpr int kPlotW = 560, H = 420, L = 70, T = 40, B = 70;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

// Text width in pixels at font-size 12, on the generous side (DejaVu Sans, librsvg's usual sans-serif, averages
// about 7 px a character; UTF-8 continuation bytes do not count).
double text_width(const std::string& s) {
  double n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return 7.2 * n;
}

std::string color_of(const std::string& given, size_t index) { return given.empty() ? palette(index) : given; }

// The chart's frame: the plot area [L, L + kPlotW] x [T, H - B], then an optional right axis, then the legend,
// as wide as its longest entry.
struct Frame {
  int right_axis = 0;  // pixels for a right-hand axis between the plot and the legend
  int legend = 0;      // legend width
  int plot_right() const { return L + kPlotW; }
  int legend_x() const { return plot_right() + right_axis + 16; }
  int width() const { return legend_x() + legend + 10; }
};

Frame frame_for(const std::vector<std::string>& legend_names, int right_axis = 0) {
  Frame f;
  f.right_axis = right_axis;
  double w = 0;
  for (const auto& n : legend_names) w = std::max(w, text_width(n));
  f.legend = legend_names.empty() ? 0 : static_cast<int>(std::ceil(w)) + 24;
  return f;
}

void header(std::ostringstream& o, const Frame& f, const std::string& title) {
  const int w = std::max<int>(f.width(), static_cast<int>(text_width(title) * 1.25) + 20);
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << H << "\" viewBox=\"0 0 " << w
    << " " << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
    << "fill=\"white\"/>\n<text x=\"" << w / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(title)
    << "</text>\n";
}

// Tick labels with as many decimals as the step needs (0.25 -> 2, 5 -> 0).
std::string tick_label(double v, double step) {
  int d = 0;
  while (d < 8 && std::abs(step * std::pow(10, d) - std::round(step * std::pow(10, d))) > 1e-6) ++d;
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", d, std::abs(v) < step * 1e-9 ? 0.0 : v);
  return b;
}

// A vertical axis over the ticks; `x` is the axis position, labels on its left (or right).
void y_axis(std::ostringstream& o, const Ticks& t, const std::string& label, int x, bool right, int grid_to) {
  auto ypix = [&](double v) { return H - B - (H - T - B) * (v - t.first) / (t.last - t.first); };
  for (double v = t.first; v <= t.last + t.step * 1e-9; v += t.step) {
    const double y = ypix(v);
    if (!right)
      o << "<line x1=\"" << L << "\" x2=\"" << grid_to << "\" y1=\"" << y << "\" y2=\"" << y << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << (right ? x + 6 : x - 6) << "\" y=\"" << y + 4 << "\" text-anchor=\""
      << (right ? "start" : "end") << "\">" << tick_label(v, t.step) << "</text>\n";
  }
  const int lx = right ? x + 48 : 18;
  o << "<text transform=\"translate(" << lx << "," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << esc(label) << "</text>\n";
}

struct LegendEntry {
  std::string name, color;
  bool line = false, dashed = false;
};

void legend(std::ostringstream& o, const Frame& f, const std::vector<LegendEntry>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const int y = T + 10 + static_cast<int>(i) * 18, x = f.legend_x();
    const auto& e = entries[i];
    if (e.line)
      o << "<line x1=\"" << x << "\" x2=\"" << x + 14 << "\" y1=\"" << y - 3 << "\" y2=\"" << y - 3 << "\" stroke=\""
        << e.color << "\" stroke-width=\"2\"" << (e.dashed ? " stroke-dasharray=\"4,3\"" : "") << "/>";
    else
      o << "<rect x=\"" << x << "\" y=\"" << y - 9 << "\" width=\"12\" height=\"12\" fill=\"" << e.color << "\"/>";
    o << "<text x=\"" << x + 20 << "\" y=\"" << y + 1 << "\">" << esc(e.name) << "</text>\n";
  }
}

// Two numeric axes with round ticks covering the data, and the data-to-pixel maps.
struct Plane {
  Ticks xt, yt;
  double x(double v) const { return L + kPlotW * (v - xt.first) / (xt.last - xt.first); }
  double y(double v) const { return H - B - (H - T - B) * (v - yt.first) / (yt.last - yt.first); }
};

Plane plane(std::ostringstream& o, const Frame& f, double xmin, double xmax, double ymin, double ymax,
            const std::string& x_label, const std::string& y_label) {
  const Plane P{nice_ticks(xmin, xmax), nice_ticks(ymin, ymax)};
  y_axis(o, P.yt, y_label, L, false, f.plot_right());
  for (double v = P.xt.first; v <= P.xt.last + P.xt.step * 1e-9; v += P.xt.step) {
    o << "<line x1=\"" << P.x(v) << "\" x2=\"" << P.x(v) << "\" y1=\"" << T << "\" y2=\"" << H - B
      << "\" stroke=\"#eee\"/>\n<text x=\"" << P.x(v) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">"
      << tick_label(v, P.xt.step) << "</text>\n";
  }
  o << "<text x=\"" << L + kPlotW / 2 << "\" y=\"" << H - B + 40 << "\" text-anchor=\"middle\">" << esc(x_label)
    << "</text>\n";
  return P;
}

void border(std::ostringstream& o) {
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << kPlotW << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"black\"/>\n";
}

void polyline(std::ostringstream& o, const Plane& P, const Line& s, const std::string& c) {
  const size_t n = std::min(s.x.size(), s.y.size());
  o << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.5\""
    << (s.dashed ? " stroke-dasharray=\"5,3\"" : "") << " points=\"";
  for (size_t i = 0; i < n; ++i) o << P.x(s.x[i]) << "," << P.y(s.y[i]) << " ";
  o << "\"/>\n";
  for (size_t i = 0; i < n; ++i) {
    if (s.dots) o << "<circle cx=\"" << P.x(s.x[i]) << "\" cy=\"" << P.y(s.y[i]) << "\" r=\"2\" fill=\"" << c << "\"/>\n";
    if (i < s.marked.size() && s.marked[i])
      o << "<circle cx=\"" << P.x(s.x[i]) << "\" cy=\"" << P.y(s.y[i]) << "\" r=\"5\" fill=\"none\" stroke=\"" << c
        << "\"/>\n";
  }
}

void extend(double v, double& lo, double& hi) {
  lo = std::min(lo, v);
  hi = std::max(hi, v);
}
}  // namespace

std::string palette(size_t i) { return kColors[i % (sizeof kColors / sizeof kColors[0])]; }

Ticks nice_ticks(double lo, double hi, int count) {
  if (!(lo <= hi) || !std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {  // one value: a unit around it
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(count, 1);
  const double p = std::pow(10, std::floor(std::log10(raw)));
  double step = 10 * p;
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * p >= raw) {
      step = m * p;
      break;
    }
  return {std::floor(lo / step + 1e-9) * step, step, std::ceil(hi / step - 1e-9) * step};
}

std::string grouped_bars(const std::string& title, const std::string& y_label, const std::vector<std::string>& groups,
                         const std::vector<Series>& series, const Series* line) {
  std::vector<LegendEntry> entries;
  for (size_t s = 0; s < series.size(); ++s) entries.push_back({series[s].name, color_of(series[s].color, s)});
  if (line) entries.push_back({line->name, "black", true, true});
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  const Frame f = frame_for(names, line ? 60 : 0);
  std::ostringstream o;
  header(o, f, title);
  double vmax = 0;
  for (const auto& s : series)
    for (size_t i = 0; i < s.values.size(); ++i)
      vmax = std::max(vmax, s.values[i] + (s.errors.empty() ? 0 : s.errors[i]));
  const Ticks yt = nice_ticks(0, vmax);
  y_axis(o, yt, y_label, L, false, f.plot_right());
  const double gw = static_cast<double>(kPlotW) / std::max<size_t>(groups.size(), 1);
  const double bw = gw * 0.8 / std::max<size_t>(series.size(), 1);
  auto ypix = [&](double v, const Ticks& t) { return H - B - (H - T - B) * (v - t.first) / (t.last - t.first); };
  for (size_t g = 0; g < groups.size(); ++g) {
    const double gx = L + g * gw + gw * 0.1;
    for (size_t s = 0; s < series.size(); ++s) {
      if (g >= series[s].values.size()) continue;
      const double v = series[s].values[g], x = gx + s * bw, y = ypix(v, yt);
      o << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << bw * 0.92 << "\" height=\"" << H - B - y
        << "\" fill=\"" << entries[s].color << "\"><title>" << esc(series[s].name) << " " << esc(groups[g]) << ": "
        << num(v) << "</title></rect>\n";
      if (!series[s].errors.empty() && series[s].errors[g] > 0) {
        const double e = series[s].errors[g], cx = x + bw * 0.46;
        o << "<line x1=\"" << cx << "\" x2=\"" << cx << "\" y1=\"" << ypix(v - e, yt) << "\" y2=\"" << ypix(v + e, yt)
          << "\" stroke=\"black\"/>\n";
      }
    }
    o << "<text transform=\"translate(" << gx + gw * 0.4 << "," << H - B + 14 << ") rotate(30)\">" << esc(groups[g])
      << "</text>\n";
  }
  if (line) {
    const Ticks unit{0, 0.2, 1};
    y_axis(o, unit, line->name, f.plot_right(), true, f.plot_right());
    std::string pts;
    for (size_t g = 0; g < line->values.size() && g < groups.size(); ++g)
      pts += num(L + g * gw + gw * 0.5) + "," + num(ypix(line->values[g], unit)) + " ";
    o << "<polyline points=\"" << pts << "\" fill=\"none\" stroke=\"black\" stroke-width=\"2\" "
      << "stroke-dasharray=\"5,3\"/>\n";
  }
  legend(o, f, entries);
  o << "<line x1=\"" << L << "\" x2=\"" << f.plot_right() << "\" y1=\"" << H - B << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n</svg>\n";
  return o.str();
}

std::string scatter(const std::string& title, const std::string& x_label, const std::string& y_label,
                    const std::vector<Point>& points, const std::vector<Line>& curves) {
  std::vector<LegendEntry> entries;
  for (size_t k = 0; k < curves.size(); ++k)
    entries.push_back({curves[k].name, color_of(curves[k].color, k + points.size()), true, curves[k].dashed});
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  const Frame f = frame_for(names);
  std::ostringstream o;
  header(o, f, title);
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& p : points) {
    extend(p.x - p.x_err, xmin, xmax);
    extend(p.x + p.x_err, xmin, xmax);
    extend(p.y - p.y_err, ymin, ymax);
    extend(p.y + p.y_err, ymin, ymax);
  }
  for (const auto& c : curves)
    for (size_t i = 0; i < c.x.size() && i < c.y.size(); ++i) {
      extend(c.x[i], xmin, xmax);
      extend(c.y[i], ymin, ymax);
    }
  if (xmin > xmax) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  const Plane P = plane(o, f, xmin, xmax, ymin, ymax, x_label, y_label);
  for (size_t k = 0; k < curves.size(); ++k) polyline(o, P, curves[k], entries[k].color);
  // Points: error bars, a marker with a white rim (so a point under another still shows), and a label at the first
  // place beside it that covers no marker and no earlier label (right, left, above, below, then further down).
  struct Box {
    double x0, y0, x1, y1;
  };
  std::vector<Box> placed;
  for (const auto& p : points) placed.push_back({P.x(p.x) - 7, P.y(p.y) - 7, P.x(p.x) + 7, P.y(p.y) + 7});
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    const std::string c = color_of(p.color, i);
    const double px = P.x(p.x), py = P.y(p.y);
    o << "<line x1=\"" << P.x(p.x - p.x_err) << "\" x2=\"" << P.x(p.x + p.x_err) << "\" y1=\"" << py << "\" y2=\""
      << py << "\" stroke=\"" << c << "\"/>\n<line x1=\"" << px << "\" x2=\"" << px << "\" y1=\"" << P.y(p.y - p.y_err)
      << "\" y2=\"" << P.y(p.y + p.y_err) << "\" stroke=\"" << c << "\"/>\n<circle cx=\"" << px << "\" cy=\"" << py
      << "\" r=\"5.5\" fill=\"" << c << "\" stroke=\"white\" stroke-width=\"1.5\"><title>" << esc(p.name) << ": "
      << num(p.x) << ", " << num(p.y) << "</title></circle>\n";
    const double w = text_width(p.name), h = 13;
    auto free_at = [&](double ax, double ay) {
      if (ax < L || ax + w > L + kPlotW || ay < T || ay + h > H - B) return false;
      for (const Box& b : placed)
        if (ax < b.x1 && ax + w > b.x0 && ay < b.y1 && ay + h > b.y0) return false;
      return true;
    };
    std::vector<std::pair<double, double>> spots = {
        {px + 9, py - h / 2}, {px - 9 - w, py - h / 2}, {px - w / 2, py - 9 - h}, {px - w / 2, py + 9}};
    for (int k = 1; k <= 30; ++k) {
      spots.push_back({px + 9, py - h / 2 + k * (h + 1)});
      spots.push_back({px - 9 - w, py - h / 2 + k * (h + 1)});
      spots.push_back({px + 9, py - h / 2 - k * (h + 1)});
      spots.push_back({px - 9 - w, py - h / 2 - k * (h + 1)});
    }
    double x0 = spots[0].first, y0 = spots[0].second;
    for (const auto& [sx, sy] : spots)
      if (free_at(sx, sy)) {
        x0 = sx;
        y0 = sy;
        break;
      }
    placed.push_back({x0, y0, x0 + w, y0 + h});
    if (std::abs(y0 + h / 2 - py) > h)  // moved away: a thin leader back to the point
      o << "<line x1=\"" << px << "\" y1=\"" << py << "\" x2=\"" << (x0 > px ? x0 - 2 : x0 + w + 2) << "\" y2=\""
        << y0 + h / 2 << "\" stroke=\"#999\" stroke-width=\"0.7\"/>\n";
    // A white halo under the letters keeps a label readable where it crosses a curve.
    o << "<text x=\"" << x0 << "\" y=\"" << y0 + 10 << "\" fill=\"" << c << "\" stroke=\"white\" stroke-width=\"3\" "
      << "paint-order=\"stroke\">" << esc(p.name) << "</text>\n";
  }
  legend(o, f, entries);
  border(o);
  o << "</svg>\n";
  return o.str();
}

std::string lines(const std::string& title, const std::string& x_label, const std::string& y_label,
                  const std::vector<Line>& series) {
  std::vector<LegendEntry> entries;
  for (size_t k = 0; k < series.size(); ++k)
    entries.push_back({series[k].name, color_of(series[k].color, k), true, series[k].dashed});
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  const Frame f = frame_for(names);
  std::ostringstream o;
  header(o, f, title);
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      extend(s.x[i], xmin, xmax);
      extend(s.y[i], ymin, ymax);
    }
  if (xmin > xmax) xmin = 0, xmax = 1, ymin = 0, ymax = 1;  // nothing to draw: empty axes
  const Plane P = plane(o, f, xmin, xmax, ymin, ymax, x_label, y_label);
  for (size_t k = 0; k < series.size(); ++k) polyline(o, P, series[k], entries[k].color);
  legend(o, f, entries);
  border(o);
  o << "</svg>\n";
  return o.str();
}

}  // namespace spdlab::svg
