// Small statistics for studies: mean and sample standard deviation, a paired difference with its 95% t interval,
// and the Pareto front of points to maximize on two axes (a robust fine-tuning study's ID vs OOD accuracy).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace spdlab::stats {

struct MeanStd {
  double mean = 0, std = 0;  // std: the sample standard deviation (n - 1); 0 for fewer than two values
};
MeanStd mean_std(const std::vector<double>& v);

// The 0.975 quantile of Student's t with `dof` degrees of freedom (a table to 30; 1.96 beyond, within 2%).
double t_quantile_975(int64_t dof);

// a - b pair by pair (the same seed of two methods): the mean difference and the half-width of its two-sided 95%
// t interval; half_width < 0 for a single pair (no interval).
struct PairedDiff {
  double mean = 0, half_width = 0;
  int64_t n = 0;
};
PairedDiff paired_difference(const std::vector<double>& a, const std::vector<double>& b);

// The points (x, y) that no other point beats on both coordinates (larger is better on each), by increasing x.
std::vector<std::pair<double, double>> pareto_front(std::vector<std::pair<double, double>> points);

}  // namespace spdlab::stats
