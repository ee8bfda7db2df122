// Learning-rate schedules as pure functions of the step: lr_at(step) for step = 0, 1, ... (the step about to run).
// A training loop calls opt.set_lr(schedule.lr_at(opt.steps())) before each step, so a resumed run picks the
// schedule up where it left off with no scheduler state to save.
#pragma once
#include <cstdint>

namespace spdlab::optim {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual double lr_at(int64_t step) const = 0;
};

class ConstantSchedule : public Schedule {
 public:
  explicit ConstantSchedule(double lr);
  double lr_at(int64_t step) const override;

 private:
  double lr_;
};

// lr * gamma^floor(step / step_size), as torch.optim.lr_scheduler.StepLR.
class StepSchedule : public Schedule {
 public:
  StepSchedule(double lr, int64_t step_size, double gamma);
  double lr_at(int64_t step) const override;

 private:
  double lr_, gamma_;
  int64_t step_size_;
};

// Linear warmup to lr over `warmup` steps (lr (step + 1) / warmup, so the first step already trains and step
// warmup - 1 runs at lr), then a half cosine from lr at step `warmup` to min_lr at step `total`, min_lr after.
class CosineSchedule : public Schedule {
 public:
  CosineSchedule(double lr, int64_t warmup, int64_t total, double min_lr = 0.0);
  double lr_at(int64_t step) const override;

 private:
  double lr_, min_lr_;
  int64_t warmup_, total_;
};

}  // namespace spdlab::optim
