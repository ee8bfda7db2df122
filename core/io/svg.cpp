// SVG drawing for the study's plots and the labs; see svg.h.
#include "core/io/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace spdlab::svg {

namespace {
const char* kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"};
const int W = 760, H = 420, L = 70, R = 150, T = 40, B = 70;

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

// A round axis maximum a little above `v`.
double nice_max(double v) {
  if (v <= 0) return 1;
  double p = std::pow(10, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= v * 1.05) return m * p;
  return 10 * p;
}

void header(std::ostringstream& o, const std::string& title) {
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(title) << "</text>\n";
}

void y_axis(std::ostringstream& o, double ymin, double ymax, const std::string& label, int x, bool right) {
  for (int i = 0; i <= 5; ++i) {
    double v = ymin + (ymax - ymin) * i / 5;
    double y = H - B - (H - T - B) * i / 5.0;
    if (!right)
      o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << y << "\" y2=\"" << y
        << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << (right ? x + 6 : x - 6) << "\" y=\"" << y + 4 << "\" text-anchor=\""
      << (right ? "start" : "end") << "\">" << num(v) << "</text>\n";
  }
  int lx = right ? x + 50 : 18;
  o << "<text transform=\"translate(" << lx << "," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << esc(label) << "</text>\n";
}

void legend(std::ostringstream& o, const std::vector<std::string>& names, int first_color = 0) {
  for (size_t i = 0; i < names.size(); ++i) {
    int y = T + 10 + static_cast<int>(i) * 18;
    o << "<rect x=\"" << W - R + 60 << "\" y=\"" << y - 9 << "\" width=\"12\" height=\"12\" fill=\""
      << kColors[(i + first_color) % 8] << "\"/><text x=\"" << W - R + 78 << "\" y=\"" << y + 1 << "\">"
      << esc(names[i]) << "</text>\n";
  }
}
}  // namespace

std::string grouped_bars(const std::string& title, const std::string& y_label, const std::vector<std::string>& groups,
                         const std::vector<Series>& series, const Series* line) {
  std::ostringstream o;
  header(o, title);
  double vmax = 0;
  for (const auto& s : series)
    for (size_t i = 0; i < s.values.size(); ++i)
      vmax = std::max(vmax, s.values[i] + (s.errors.empty() ? 0 : s.errors[i]));
  double ymax = nice_max(vmax);
  y_axis(o, 0, ymax, y_label, L, false);
  double gw = static_cast<double>(W - L - R) / std::max<size_t>(groups.size(), 1);
  double bw = gw * 0.8 / std::max<size_t>(series.size(), 1);
  auto ypix = [&](double v, double top) { return H - B - (H - T - B) * v / top; };
  for (size_t g = 0; g < groups.size(); ++g) {
    double gx = L + g * gw + gw * 0.1;
    for (size_t s = 0; s < series.size(); ++s) {
      if (g >= series[s].values.size()) continue;
      double v = series[s].values[g], x = gx + s * bw, y = ypix(v, ymax);
      o << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << bw * 0.92 << "\" height=\"" << H - B - y
        << "\" fill=\"" << kColors[s % 8] << "\"><title>" << esc(series[s].name) << " " << esc(groups[g]) << ": "
        << num(v) << "</title></rect>\n";
      if (!series[s].errors.empty()) {
        double e = series[s].errors[g], cx = x + bw * 0.46;
        o << "<line x1=\"" << cx << "\" x2=\"" << cx << "\" y1=\"" << ypix(v - e, ymax) << "\" y2=\""
          << ypix(v + e, ymax) << "\" stroke=\"black\"/>\n";
      }
    }
    o << "<text transform=\"translate(" << gx + gw * 0.4 << "," << H - B + 14 << ") rotate(30)\">" << esc(groups[g])
      << "</text>\n";
  }
  std::vector<std::string> names;
  for (const auto& s : series) names.push_back(s.name);
  if (line) {
    y_axis(o, 0, 1, line->name, W - R, true);
    std::string pts;
    for (size_t g = 0; g < line->values.size() && g < groups.size(); ++g)
      pts += num(L + g * gw + gw * 0.5) + "," + num(ypix(line->values[g], 1.0)) + " ";
    o << "<polyline points=\"" << pts << "\" fill=\"none\" stroke=\"black\" stroke-width=\"2\" "
      << "stroke-dasharray=\"5,3\"/>\n";
    o << "<text x=\"" << W - R + 60 << "\" y=\"" << T + 10 + names.size() * 18 + 1 << "\">- - " << esc(line->name)
      << "</text>\n";
  }
  legend(o, names);
  o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << H - B << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n</svg>\n";
  return o.str();
}

namespace {
// Two numeric axes fitted to [xmin, xmax] x [ymin, ymax] plus a margin of `pad` of each range; draws the y axis,
// the x ticks and the x label, and maps data to pixels.
struct Plane {
  double xmin, xmax, ymin, ymax;
  double x(double v) const { return L + (W - L - R) * (v - xmin) / (xmax - xmin); }
  double y(double v) const { return H - B - (H - T - B) * (v - ymin) / (ymax - ymin); }
};
Plane plane(std::ostringstream& o, double xmin, double xmax, double ymin, double ymax, double pad,
            const std::string& x_label, const std::string& y_label) {
  const double px = std::max((xmax - xmin) * pad, 0.01), py = std::max((ymax - ymin) * pad, 0.01);
  const Plane P{xmin - px, xmax + px, ymin - py, ymax + py};
  y_axis(o, P.ymin, P.ymax, y_label, L, false);
  for (int i = 0; i <= 5; ++i) {
    const double v = P.xmin + (P.xmax - P.xmin) * i / 5;
    o << "<text x=\"" << P.x(v) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << num(v) << "</text>\n";
  }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - B + 40 << "\" text-anchor=\"middle\">" << esc(x_label)
    << "</text>\n";
  return P;
}
}  // namespace

std::string scatter(const std::string& title, const std::string& x_label, const std::string& y_label,
                    const std::vector<Point>& points) {
  std::ostringstream o;
  header(o, title);
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& p : points) {
    xmin = std::min(xmin, p.x - p.x_err);
    xmax = std::max(xmax, p.x + p.x_err);
    ymin = std::min(ymin, p.y - p.y_err);
    ymax = std::max(ymax, p.y + p.y_err);
  }
  const Plane P = plane(o, xmin, xmax, ymin, ymax, 0.15, x_label, y_label);
  auto X = [&](double v) { return P.x(v); };
  auto Y = [&](double v) { return P.y(v); };
  std::vector<std::string> names;
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    const char* c = kColors[i % 8];
    o << "<line x1=\"" << X(p.x - p.x_err) << "\" x2=\"" << X(p.x + p.x_err) << "\" y1=\"" << Y(p.y) << "\" y2=\""
      << Y(p.y) << "\" stroke=\"" << c << "\"/>\n<line x1=\"" << X(p.x) << "\" x2=\"" << X(p.x) << "\" y1=\""
      << Y(p.y - p.y_err) << "\" y2=\"" << Y(p.y + p.y_err) << "\" stroke=\"" << c << "\"/>\n<circle cx=\"" << X(p.x)
      << "\" cy=\"" << Y(p.y) << "\" r=\"6\" fill=\"" << c << "\"><title>" << esc(p.name) << ": " << num(p.x) << ", "
      << num(p.y) << "</title></circle>\n";
    names.push_back(p.name);
  }
  legend(o, names);
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"black\"/>\n</svg>\n";
  return o.str();
}

std::string lines(const std::string& title, const std::string& x_label, const std::string& y_label,
                  const std::vector<Line>& series) {
  std::ostringstream o;
  header(o, title);
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  if (xmin > xmax) xmin = 0, xmax = 1, ymin = 0, ymax = 1;  // nothing to draw: empty axes
  const Plane P = plane(o, xmin, xmax, ymin, ymax, 0.08, x_label, y_label);
  auto X = [&](double v) { return P.x(v); };
  auto Y = [&](double v) { return P.y(v); };
  std::vector<std::string> names;
  for (size_t k = 0; k < series.size(); ++k) {
    const Line& s = series[k];
    const char* c = kColors[k % 8];
    const size_t n = std::min(s.x.size(), s.y.size());
    o << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < n; ++i) o << X(s.x[i]) << "," << Y(s.y[i]) << " ";
    o << "\"/>\n";
    for (size_t i = 0; i < n; ++i) {
      o << "<circle cx=\"" << X(s.x[i]) << "\" cy=\"" << Y(s.y[i]) << "\" r=\"2\" fill=\"" << c << "\"/>\n";
      if (i < s.marked.size() && s.marked[i])
        o << "<circle cx=\"" << X(s.x[i]) << "\" cy=\"" << Y(s.y[i]) << "\" r=\"5\" fill=\"none\" stroke=\"" << c
          << "\"/>\n";
    }
    names.push_back(s.name);
  }
  legend(o, names);
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"black\"/>\n</svg>\n";
  return o.str();
}

}  // namespace spdlab::svg
