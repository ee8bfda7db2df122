// The loops behind the commands: see train.h.
#include "examples/cli/train.h"
#include "examples/cli/args.h"
#include "kernels/kernels.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/autograd.h"
#include "core/io/json.h"

namespace spdlab::cli {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static std::string fmt_time(double s) {
  char buf[32];
  int t = static_cast<int>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), start_(now_seconds()), tty_(isatty(2)) {}

void Progress::update(int64_t step, double loss, int64_t images) {
  double t = now_seconds(), el = t - start_;
  // A terminal redraws up to 10 times a second; a log gets a line every 10 s and at the end.
  if (step < total_ && last_print_ >= 0 && t - last_print_ < (tty_ ? 0.1 : 10.0)) return;
  last_print_ = t;
  double frac = static_cast<double>(step) / total_;
  double eta = step > 0 ? el * (total_ - step) / step : 0;
  char info[160];
  int n = std::snprintf(info, sizeof info, "%lld/%lld", static_cast<long long>(step), static_cast<long long>(total_));
  if (loss >= 0) n += std::snprintf(info + n, sizeof info - n, " loss %.4f", loss);
  std::snprintf(info + n, sizeof info - n, " %.0f img/s elapsed %s eta %s", el > 0 ? images / el : 0.0,
                fmt_time(el).c_str(), fmt_time(eta).c_str());
  if (tty_) {
    const int width = 24;
    int fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar += std::string(width - fill, '.');
    std::fprintf(stderr, "\r%s [%s] %s\033[K", label_.c_str(), bar.c_str(), info);
  } else {
    std::fprintf(stderr, "%s %3.0f%% %s\n", label_.c_str(), frac * 100, info);
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

Tensor normalize_input(const Tensor& images, const models::ViTConfig& cfg) {
  int64_t C = cfg.in_chans;
  SPDLAB_CHECK(images.dim() == 4 && images.size(1) == C, "normalize_input: expected [B, ", C, ", H, W], got ",
               shape_str(images.shape()));
  std::vector<float> m(cfg.mean.begin(), cfg.mean.end()), s;
  for (float v : cfg.std) s.push_back(1.0f / v);
  Tensor mean = Tensor::from_vector(m, {1, C, 1, 1}), inv = Tensor::from_vector(s, {1, C, 1, 1});
  return mul(sub(images, mean), inv);
}

Flag device_flag() { return {"device", "DEV", "cpu, cuda or cuda:N (a GPU; spdlab built with -DSPDLAB_CUDA=ON)", "cpu"}; }

Device apply_device(const Args& a) {
  Device d;
  try {
    d = Device::parse(a.has("device") ? a.str("device") : "cpu");
    kernels::get(d);  // a GPU that is not there fails here, before any work
  } catch (const Error& e) {
    SPDLAB_FAIL("--device: ", e.what());
  }
  return d;
}

TrainResult train(models::VisionTransformer& model, const data::Dataset& train_set, data::SampleTransform transform,
                  const TrainOptions& opt) {
  SPDLAB_CHECK(train_set.num_classes <= model.config().num_classes, "train: the data has ", train_set.num_classes,
               " classes but the model's head has ", model.config().num_classes);
  data::BatchLoader loader(train_set, {opt.batch_size, true, true, opt.seed, std::move(transform)});
  int64_t per_epoch = loader.num_batches(), total = per_epoch * opt.epochs;
  SPDLAB_CHECK(total > 0, "train: ", train_set.size(), " images make no full batch of ", opt.batch_size);
  auto optimizer = optim::make_optimizer(opt.optim, model.named_parameters(), opt.hp);
  if (opt.anchor_to_init) optimizer->capture_anchors();
  int64_t warmup = static_cast<int64_t>(opt.warmup_frac * total);
  optim::CosineSchedule schedule(opt.hp.lr, warmup, total);
  std::ofstream metrics;
  if (!opt.metrics_path.empty()) {
    metrics.open(opt.metrics_path);
    SPDLAB_CHECK(metrics.good(), "train: cannot write metrics to ", opt.metrics_path);
  }
  model.train();
  const Device dev = model.named_parameters().front().second.device();  // batches go where the model is
  Progress progress(opt.label, total);
  TrainResult res;
  double t0 = now_seconds(), loss_avg = -1;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < opt.epochs; ++epoch) {
    loader.start_epoch(epoch);
    data::Batch b;
    while (loader.next(b)) {
      optimizer->set_lr(schedule.lr_at(step));
      Tensor loss = cross_entropy(model.forward(normalize_input(b.x, model.config()).to(dev)), b.y.to(dev));
      optimizer->zero_grad();
      loss.backward();
      if (opt.clip > 0) optim::clip_grad_norm(model.named_parameters(), opt.clip);
      optimizer->step();
      double l = loss.item();
      SPDLAB_CHECK(std::isfinite(l), opt.label, ": the loss became ", l, " at step ", step,
                   "; lower the learning rate (--lr)");
      loss_avg = loss_avg < 0 ? l : 0.98 * loss_avg + 0.02 * l;
      ++step;
      if (metrics.is_open())
        metrics << "{\"step\":" << step << ",\"epoch\":" << epoch << ",\"lr\":" << optimizer->lr()
                << ",\"loss\":" << l << "}\n";
      progress.update(step, loss_avg, step * opt.batch_size);
    }
  }
  progress.finish();
  res.seconds = now_seconds() - t0;
  res.steps = step;
  res.final_loss = loss_avg;
  if (auto* spd = dynamic_cast<optim::SPD*>(optimizer.get())) res.spd_stats = spd->stats();
  return res;
}

double evaluate(models::VisionTransformer& model, const data::Dataset& test, data::Domain domain, uint64_t seed,
                Progress* progress, int64_t* progress_step) {
  autograd::NoGradGuard ng;
  model.eval();
  const int64_t bs = 500;
  data::BatchLoader loader(test, {bs, false, false, seed, data::domain_transform(domain)});
  loader.start_epoch(0);
  data::Batch b;
  int64_t correct = 0, seen = 0;
  const Device dev = model.named_parameters().front().second.device();  // batches go where the model is
  while (loader.next(b)) {
    Tensor pred = argmax(model.forward(normalize_input(b.x, model.config()).to(dev)), 1).cpu();
    const int64_t* p = pred.data<int64_t>();
    const int64_t* y = b.y.data<int64_t>();
    for (int64_t i = 0; i < pred.numel(); ++i) correct += p[i] == y[i];
    seen += pred.numel();
    if (progress) {
      ++*progress_step;
      progress->update(*progress_step, -1, *progress_step * bs);
    }
  }
  return seen ? static_cast<double>(correct) / seen : 0.0;
}

std::vector<std::pair<std::string, double>> deviation_per_tensor(const models::VisionTransformer& model,
                                                                 const models::VisionTransformer& init) {
  auto a = model.named_parameters(), b = init.named_parameters();
  SPDLAB_CHECK(a.size() == b.size(), "deviation: the models have different parameter lists");
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < a.size(); ++i) {
    SPDLAB_CHECK(a[i].first == b[i].first && a[i].second.shape() == b[i].second.shape(), "deviation: '", a[i].first,
                 "' differs in name or shape between the models");
    const float* p = a[i].second.data<float>();
    const float* q = b[i].second.data<float>();
    double s = 0;
    for (int64_t j = 0; j < a[i].second.numel(); ++j) s += static_cast<double>(p[j] - q[j]) * (p[j] - q[j]);
    out.emplace_back(a[i].first, std::sqrt(s));
  }
  return out;
}

std::string layer_of(const std::string& name) {
  if (name.rfind("blocks.", 0) == 0) return name.substr(0, name.find('.', 7));
  if (name == "cls_token" || name == "pos_embed") return "embed";
  return name.substr(0, name.find('.'));
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SPDLAB_CHECK(!ec && std::filesystem::is_directory(dir), "cannot create the output directory '", dir,
               "': ", ec ? ec.message() : "a file of that name exists");
  SPDLAB_CHECK(access(dir.c_str(), W_OK) == 0, "the output directory '", dir, "' is not writable");
}

void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    SPDLAB_CHECK(f.good(), "cannot write '", path, "': ", std::strerror(errno));
    f << text;
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      SPDLAB_FAIL("writing '", path, "' failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    SPDLAB_FAIL("cannot move the finished file into place at '", path, "': ", std::strerror(errno));
  }
}

}  // namespace spdlab::cli
