// Statistics for studies (core/stats.h).
#include "core/stats.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace spdlab::stats {

MeanStd mean_std(const std::vector<double>& v) {
  MeanStd m;
  for (double x : v) m.mean += x;
  m.mean /= std::max<size_t>(v.size(), 1);
  if (v.size() > 1) {
    for (double x : v) m.std += (x - m.mean) * (x - m.mean);
    m.std = std::sqrt(m.std / (v.size() - 1));
  }
  return m;
}

double t_quantile_975(int64_t dof) {
  static const double t[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                             2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                             2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  SPDLAB_CHECK(dof >= 1, "t_quantile_975: expected at least 1 degree of freedom, got ", dof);
  return dof <= 30 ? t[dof - 1] : 1.96;
}

PairedDiff paired_difference(const std::vector<double>& a, const std::vector<double>& b) {
  SPDLAB_CHECK(a.size() == b.size() && !a.empty(), "paired_difference: expected two equal, non-empty lists; got ",
               a.size(), " and ", b.size());
  std::vector<double> d;
  for (size_t i = 0; i < a.size(); ++i) d.push_back(a[i] - b[i]);
  const MeanStd m = mean_std(d);
  PairedDiff out;
  out.n = static_cast<int64_t>(d.size());
  out.mean = m.mean;
  out.half_width = d.size() < 2 ? -1 : t_quantile_975(out.n - 1) * m.std / std::sqrt(static_cast<double>(d.size()));
  return out;
}

std::vector<std::pair<double, double>> pareto_front(std::vector<std::pair<double, double>> pts) {
  // By x descending (ties: y descending); a point is on the front when its y beats every point before it.
  std::sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second > b.second;
  });
  std::vector<std::pair<double, double>> front;
  double best = -HUGE_VAL;
  for (const auto& p : pts)
    if (p.second > best) {
      front.push_back(p);
      best = p.second;
    }
  std::reverse(front.begin(), front.end());
  return front;
}

}  // namespace spdlab::stats
