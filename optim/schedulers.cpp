// The learning-rate schedules of schedulers.h: constructor checks and closed-form lr_at.
#include "optim/schedulers.h"

#include <cmath>
#include <numbers>

#include "core/check.h"

namespace spdlab::optim {

namespace {
void check_lr(const char* who, double lr, const char* name = "lr") {
  SPDLAB_CHECK(std::isfinite(lr) && lr >= 0, who, ": ", name, " must be >= 0; got ", lr);
}
void check_step(const char* who, int64_t step) {
  SPDLAB_CHECK(step >= 0, who, ": lr_at expects a step >= 0; got ", step);
}
}  // namespace

ConstantSchedule::ConstantSchedule(double lr) : lr_(lr) { check_lr("ConstantSchedule", lr); }

double ConstantSchedule::lr_at(int64_t step) const {
  check_step("ConstantSchedule", step);
  return lr_;
}

StepSchedule::StepSchedule(double lr, int64_t step_size, double gamma) : lr_(lr), gamma_(gamma), step_size_(step_size) {
  check_lr("StepSchedule", lr);
  SPDLAB_CHECK(step_size >= 1, "StepSchedule: step_size must be >= 1; got ", step_size);
  SPDLAB_CHECK(std::isfinite(gamma) && gamma > 0, "StepSchedule: gamma must be > 0; got ", gamma);
}

double StepSchedule::lr_at(int64_t step) const {
  check_step("StepSchedule", step);
  return lr_ * std::pow(gamma_, static_cast<double>(step / step_size_));
}

CosineSchedule::CosineSchedule(double lr, int64_t warmup, int64_t total, double min_lr)
    : lr_(lr), min_lr_(min_lr), warmup_(warmup), total_(total) {
  check_lr("CosineSchedule", lr);
  check_lr("CosineSchedule", min_lr, "min_lr");
  SPDLAB_CHECK(min_lr <= lr, "CosineSchedule: min_lr ", min_lr, " is above lr ", lr);
  SPDLAB_CHECK(warmup >= 0, "CosineSchedule: warmup must be >= 0; got ", warmup);
  SPDLAB_CHECK(total > warmup, "CosineSchedule: total (", total, ") must be greater than warmup (", warmup, ")");
}

double CosineSchedule::lr_at(int64_t step) const {
  check_step("CosineSchedule", step);
  if (step < warmup_) return lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step >= total_) return min_lr_;
  double progress = static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return min_lr_ + 0.5 * (lr_ - min_lr_) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace spdlab::optim
