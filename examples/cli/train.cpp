// The loops behind the commands: see train.h.
#include "examples/cli/train.h"
#include "examples/cli/args.h"
#include "examples/cli/run_state.h"
#include "kernels/kernels.h"
#include "models/evaluate.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <map>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <fstream>
#include <sstream>

#include "core/autograd.h"
#include "core/io/atomic_file.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "dist/communicator.h"

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

std::vector<Flag> model_flags() {
  return {{"arch", "NAME", "a preset for a checkpoint (vit_tiny_patch16_224, ...); default: spdlab's metadata, or the "
                           "architecture read from the tensor shapes", ""},
          {"num-heads", "N", "attention heads, for a file without spdlab metadata (default: width / 64)", ""},
          {"num-classes", "N", "replace the head with a fresh one of N classes (default: the data's classes)", ""},
          {"act", "NAME", "MLP activation for a file without spdlab metadata: gelu or quick_gelu (default: the "
                          "layout's: QuickGELU for CLIP)", ""},
          {"mean", "LIST", "input normalization mean per channel (default: the checkpoint's or its layout's)", ""},
          {"std", "LIST", "input normalization std per channel", ""}};
}

models::ModelSpec model_spec(const Args& a) {
  models::ModelSpec s;
  if (a.has("arch")) s.arch = a.str("arch");
  if (a.has("num-heads")) s.num_heads = a.integer("num-heads", 1, 4096);
  if (a.has("num-classes")) s.num_classes = a.integer("num-classes", 1, 1 << 24);
  if (a.has("act")) {
    s.act = a.str("act");
    try {
      nn::parse_activation(s.act);
    } catch (const Error& e) {
      SPDLAB_FAIL("--act: ", e.what());
    }
  }
  auto floats = [&](const char* name) {
    std::vector<float> v;
    if (a.has(name))
      for (double x : a.num_list(name)) v.push_back(static_cast<float>(x));
    return v;
  };
  s.mean = floats("mean");
  s.std = floats("std");
  for (float v : s.std) SPDLAB_CHECK(v > 0, "--std: every value must be positive, got ", v);
  return s;
}

void print_model_info(const std::string& command, const std::string& path, const models::ModelInfo& info) {
  std::fprintf(stderr, "%s: %s: %s\n", command.c_str(), path.c_str(), info.cfg.describe().c_str());
  for (const auto& n : info.notes) std::fprintf(stderr, "%s:   %s\n", command.c_str(), n.c_str());
}

Flag device_flag() { return {"device", "DEV", "cpu, cuda or cuda:N (a GPU; spdlab built with -DSPDLAB_CUDA=ON)", "cpu"}; }

Device apply_device(const Args& a) {
  Device d;
  try {
    const std::string text = a.has("device") ? a.str("device") : "cpu";
    d = Device::parse(text);
    dist::Communicator& comm = dist::world();
    if (comm.size() > 1 && d.is_cuda()) {
      // Data parallel on GPUs: each rank its own GPU, and NCCL to sum gradients where this build has it.
      SPDLAB_CHECK(text == "cuda", "with ", comm.size(), " ranks, --device cuda gives each rank its own GPU (cuda:<rank "
                   "on this machine>); '", text, "' would put them all on one");
      d = Device::cuda_at(comm.local_rank());
      if (dist::built_with_nccl() && comm.backend() == "mpi") dist::set_world(dist::make_nccl());
    }
    kernels::get(d);  // a GPU that is not there fails here, before any work
  } catch (const Error& e) {
    SPDLAB_FAIL("--device: ", e.what());
  }
  return d;
}

namespace {

// The run's position and everything else a resumed run needs beside the model and the optimizer.
struct TrainState {
  int64_t step = 0, epoch = 0, batch = 0, total = 0;
  double loss_avg = -1;
  uint64_t dropout_rng = 0;
  std::string metrics;  // the JSON lines so far
};

void save_train_state(RunDir& run, const models::VisionTransformer& model, const optim::Optimizer& optimizer,
                      const TrainState& st) {
  // The metrics first: a kill between the two files leaves metrics ahead of the state, and a resumed run
  // keeps only the bytes the state counted.
  io::write_file_atomic(run.file("metrics.jsonl"), st.metrics);
  optim::NamedTensors tensors;
  for (auto& [k, t] : model.state_dict()) tensors.emplace_back("model." + k, t.detach().cpu());
  for (auto& [k, t] : optimizer.state_dict()) tensors.emplace_back("optim." + k, t.cpu());
  tensors.emplace_back("train.counters",
                       Tensor::from_vector(std::vector<int64_t>{st.step, st.epoch, st.batch, st.total,
                                                                static_cast<int64_t>(st.dropout_rng),
                                                                static_cast<int64_t>(st.metrics.size())},
                                           {6}));
  tensors.emplace_back("train.loss_avg", Tensor::from_vector(std::vector<double>{st.loss_avg}, {1}));
  io::save_safetensors(run.file("state.safetensors"), tensors, {{"format", "spdlab-train-state"}});
}

TrainState load_train_state(RunDir& run, models::VisionTransformer& model, optim::Optimizer& optimizer,
                            int64_t total) {
  const std::string path = run.file("state.safetensors");
  io::SafetensorsFile f(path);
  std::map<std::string, Tensor> model_state;
  optim::NamedTensors optim_state;
  TrainState st;
  Tensor counters, loss_avg;
  for (const std::string& k : f.names()) {
    Tensor t = f.load_exact(k);  // F64 statistics (SPD's, the loss average) stay exact
    if (k.rfind("model.", 0) == 0) model_state[k.substr(6)] = t;
    else if (k.rfind("optim.", 0) == 0) optim_state.emplace_back(k.substr(6), t);
    else if (k == "train.counters") counters = t;
    else if (k == "train.loss_avg") loss_avg = t;
  }
  SPDLAB_CHECK(counters.defined() && counters.numel() == 6 && counters.dtype() == DType::i64 && loss_avg.defined() &&
                   loss_avg.numel() == 1,
               path, ": not a training state spdlab wrote (train.counters and train.loss_avg are missing)");
  const auto c = counters.to_vector_i64();
  st.step = c[0];
  st.epoch = c[1];
  st.batch = c[2];
  st.total = c[3];
  st.dropout_rng = static_cast<uint64_t>(c[4]);
  st.loss_avg = loss_avg.to(DType::f64).item();
  SPDLAB_CHECK(st.total == total && st.step >= 0 && st.step <= total, path, ": the state is for a run of ", st.total,
               " steps at step ", st.step, ", but this run has ", total, " steps; the data or flags changed");
  try {
    model.load_state_dict(model_state);
    optimizer.load_state_dict(optim_state);
  } catch (const Error& e) {
    SPDLAB_FAIL(path, ": ", e.what());
  }
  std::ifstream m(run.file("metrics.jsonl"), std::ios::binary);
  std::stringstream ss;
  ss << m.rdbuf();
  st.metrics = ss.str();
  SPDLAB_CHECK(static_cast<int64_t>(st.metrics.size()) >= c[5], run.file("metrics.jsonl"), " holds ",
               st.metrics.size(), " bytes but the state counted ", c[5]);
  st.metrics.resize(static_cast<size_t>(c[5]));
  return st;
}

// The memory a process may still take, in bytes, and what limits it: the address-space limit (ulimit -v)
// less what is mapped, the cgroup's limit less its usage, and the machine's available memory.
std::pair<double, std::string> memory_headroom() {
  double best = std::numeric_limits<double>::infinity();
  std::string what = "no limit";
  auto consider = [&](double bytes, const char* name) {
    if (bytes < best) {
      best = bytes;
      what = name;
    }
  };
  rlimit rl{};
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    std::ifstream statm("/proc/self/statm");
    double pages = 0;
    if (statm >> pages) consider(double(rl.rlim_cur) - pages * double(sysconf(_SC_PAGESIZE)), "the address-space limit (ulimit -v)");
  }
  auto read_number = [](const char* path, double& v) {
    std::ifstream f(path);
    std::string s;
    if (!(f >> s) || s == "max") return false;
    v = std::strtod(s.c_str(), nullptr);
    return true;
  };
  double max = 0, cur = 0;
  if (read_number("/sys/fs/cgroup/memory.max", max) && read_number("/sys/fs/cgroup/memory.current", cur))
    consider(max - cur, "the cgroup's memory limit");
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit)
    if (key == "MemAvailable:") consider(kb * 1024.0, "the machine's available memory");
  return {best, what};
}

// Refuses, before the first step, a batch whose training step cannot fit in memory: the step's peak is measured
// on probe steps of 1 and 9 images (forward and backward, no update) and extrapolated linearly. Without this a
// batch too large for `ulimit -v` could leave OpenBLAS retrying a failed allocation forever. The probes leave
// the weights, the gradients (cleared) and the dropout generator as they were. CPU only.
void check_batch_fits(models::VisionTransformer& model, optim::Optimizer& optimizer, int64_t batch) {
  if (!model.named_parameters().front().second.device().is_cpu()) return;
  const auto& c = model.config();
  auto& k = kernels::get(Device::cpu);
  const uint64_t rng = model.dropout_generator().seed_state();
  auto probe = [&](int64_t b) {
    const size_t before = k.memory_stats().current;
    k.reset_peak_memory();
    {
      Tensor x = Tensor::zeros({b, c.in_chans, c.img_size, c.img_size});
      Tensor y = Tensor::zeros({b}, DType::i64);
      Tensor loss = cross_entropy(model.forward(x), y);
      loss.backward();
    }
    optimizer.zero_grad();
    return double(k.memory_stats().peak - before);
  };
  const double one = probe(1), per_image = std::max(0.0, (probe(9) - one) / 8);
  model.dropout_generator().set_state(rng);
  // The allocator's peak undercounts the process's growth (blocks cached in other size classes, OpenBLAS's
  // buffers, the loader's next batch): on vit_fmnist_tiny the resident size grew 1.29 MB per image against
  // 1.00 MB measured here, so the estimate is scaled by 1.5.
  constexpr double kSlack = 1.5;
  const double need = kSlack * (one + per_image * double(batch - 1));
  const auto [headroom, limit] = memory_headroom();
  if (need <= headroom) return;
  const int64_t fits = per_image > 0 ? std::max<int64_t>(0, int64_t((headroom / kSlack - one) / per_image) + 1) : 0;
  SPDLAB_FAIL("train: a batch of ", batch, " images needs about ", int64_t(need / (1 << 20)), " MiB for a training step (",
              int64_t(kSlack * one / (1 << 20)), " MiB at 1 image and ", int64_t(kSlack * per_image / (1 << 10)),
              " KiB more per image, measured), but ", limit, " leaves ", int64_t(headroom / (1 << 20)), " MiB; about ",
              fits, " images per batch fit: lower --batch-size");
}

}  // namespace

void check_params_name(const std::string& params) {
  SPDLAB_CHECK(params == "all" || params == "head" || params == "bitfit" || params == "llrd" || params == "lora",
               "--params: expected all, head, bitfit, llrd or lora; got '", params, "'");
}

nn::LoRAOptions lora_options(const TrainOptions& opt) {
  nn::LoRAOptions o;
  o.rank = opt.lora_rank;
  o.alpha = opt.lora_alpha;
  o.seed = opt.seed;
  return o;
}

std::vector<optim::ParamGroup> training_groups(const optim::NamedTensors& named, const std::string& params,
                                               double layer_decay) {
  check_params_name(params);
  if (params == "all") return optim::one_group(named);
  std::vector<optim::ParamGroup> groups = params == "head"     ? optim::linear_probe_groups(named)
                                          : params == "bitfit" ? optim::bitfit_groups(named)
                                          : params == "lora"   ? optim::lora_groups(named)
                                                               : optim::layer_decay_groups(named, layer_decay);
  for (auto& g : groups) g.decay_scale = 1.0;  // the study decays every tensor it trains (README, PROTOCOL.md)
  return groups;
}

TrainResult train(models::VisionTransformer& model, const data::Dataset& train_set, data::SampleTransform transform,
                  const TrainOptions& opt) {
  SPDLAB_CHECK(train_set.num_classes <= model.config().num_classes, "train: the data has ", train_set.num_classes,
               " classes but the model's head has ", model.config().num_classes);
  // Data parallel (dist/communicator.h): rank r of N builds rows [B r / N, B (r + 1) / N) of every global batch
  // of B; the gradients are summed across ranks before the step, so every replica takes the step one process
  // would take on the whole batch (within float rounding: the per-rank sums are added in another order).
  dist::Communicator& comm = dist::world();
  const int ranks = comm.size();
  data::LoaderOptions lo{opt.batch_size, true, true, opt.seed, std::move(transform)};
  lo.shard_index = comm.rank();
  lo.shard_count = ranks;
  SPDLAB_CHECK(opt.batch_size >= ranks, opt.label, ": a global batch of ", opt.batch_size, " cannot be split over ",
               ranks, " ranks; raise --batch-size to at least ", ranks);
  SPDLAB_CHECK(ranks == 1 || model.config().drop_rate == 0, opt.label, ": the model uses dropout (drop_rate ",
               model.config().drop_rate, "), which data parallel does not support yet: every rank would draw the "
               "same masks; run in one process");
  data::BatchLoader loader(train_set, std::move(lo));
  const int64_t per_epoch = loader.num_batches();
  SPDLAB_CHECK(per_epoch > 0, "train: ", train_set.size(), " images make no full batch of ", opt.batch_size);
  int64_t total = 0;
  SPDLAB_CHECK(!__builtin_mul_overflow(per_epoch, opt.epochs, &total), "train: ", opt.epochs, " epochs of ",
               per_epoch, " steps overflow");
  if (opt.params == "lora" && !nn::has_lora(model)) nn::add_lora(model, lora_options(opt));
  const optim::NamedTensors named = model.named_parameters();
  std::vector<optim::ParamGroup> groups = training_groups(named, opt.params, opt.layer_decay);
  // Tensors outside the groups are frozen, so backward skips them; they are unfrozen however the run ends.
  struct Unfreeze {
    optim::NamedTensors frozen;
    ~Unfreeze() {
      for (auto& [n, t] : frozen) t.requires_grad_(true);
    }
  } unfreeze{optim::freeze_unlisted(named, groups)};
  auto optimizer = optim::make_optimizer(opt.optim, std::move(groups), opt.hp);
  if (opt.anchor_to_init) optimizer->capture_anchors();
  int64_t warmup = static_cast<int64_t>(opt.warmup_frac * total);
  optim::CosineSchedule schedule(opt.hp.lr, warmup, total);
  TrainState st;
  st.total = total;
  TrainResult res;
  if (opt.resume && opt.run && opt.run->exists("state.safetensors")) {
    st = load_train_state(*opt.run, model, *optimizer, total);
    model.dropout_generator().set_state(st.dropout_rng);
    res.resumed_at = st.step;
    std::fprintf(stderr, "%s: resuming at step %lld of %lld from %s\n", opt.label.c_str(),
                 static_cast<long long>(st.step), static_cast<long long>(total), opt.run->dir().c_str());
  }
  if (opt.run) install_stop_handlers();
  model.train();
  check_batch_fits(model, *optimizer, (opt.batch_size + ranks - 1) / ranks);
  if (ranks > 1) {
    std::fprintf(stderr, "%s: data parallel over %d ranks (%s): %lld images per rank (up to), global batch %lld\n",
                 opt.label.c_str(), ranks, comm.backend().c_str(),
                 static_cast<long long>((opt.batch_size + ranks - 1) / ranks), static_cast<long long>(opt.batch_size));
    // The replicas start equal (the same checkpoint, seeds and resumed state), or the run stops here.
    dist::check_same_on_all_ranks(comm, dist::digest(model.named_parameters()),
                                  opt.label + ": the parameters at the start");
  }
  const Device dev = model.named_parameters().front().second.device();  // batches go where the model is
  Progress progress(opt.label, total);
  const double t0 = now_seconds();
  const int64_t first_step = st.step;
  // Where the last good state is, for the messages of a run that stops.
  auto kept = [&] {
    return opt.run && opt.run->exists("state.safetensors") ? "; the last good checkpoint is in " + opt.run->dir()
                                                            : std::string();
  };
  for (int64_t epoch = st.epoch; epoch < opt.epochs && st.step < total; ++epoch) {
    const int64_t first_batch = epoch == st.epoch ? st.batch : 0;  // mid-epoch only where a resumed run starts
    loader.start_epoch(epoch, first_batch);
    st.epoch = epoch;
    st.batch = first_batch;
    data::Batch b;
    while (loader.next(b)) {
      optimizer->set_lr(schedule.lr_at(st.step));
      Tensor loss = cross_entropy(model.forward(model.preprocess(b.x.to(dev))), b.y.to(dev));
      optimizer->zero_grad();
      loss.backward();
      // Across ranks: each rank's gradient of its shard's mean loss is weighted by its share of the global batch
      // and summed; so is the loss, beside whether any rank was asked to stop (all stop after the same step).
      const double share = static_cast<double>(b.y.size(0)) / opt.batch_size;
      double l = loss.item();
      int sig = stop_requested();
      if (ranks > 1) {
        dist::wait_policy().context = detail::cat(opt.label, ", step ", st.step + 1);
        dist::all_reduce_grads(model.named_parameters(), comm, share);
        double shared[2] = {l * share, sig ? 1.0 : 0.0};
        comm.all_reduce_sum(shared, 2);
        l = shared[0];
        sig = shared[1] > 0 ? (sig ? sig : SIGTERM) : 0;
      }
      // Finite guards: a NaN or inf loss, gradient or weight stops the run before it spreads or is saved.
      SPDLAB_CHECK(std::isfinite(l), opt.label, ": the loss became ", l, " at step ", st.step + 1,
                   "; nothing was saved from this step", kept(), "; lower the learning rate (--lr)");
      const auto params = model.named_parameters();
      const std::string bad_grad = optim::first_nonfinite(params, true);
      SPDLAB_CHECK(bad_grad.empty(), opt.label, ": the gradient of '", bad_grad, "' holds NaN or inf at step ",
                   st.step + 1, " (loss ", l, ")", kept(), "; lower the learning rate (--lr) or clip (--clip)");
      if (opt.clip > 0) optim::clip_grad_norm(params, opt.clip);
      optimizer->step();
      const std::string bad_weight = optim::first_nonfinite(params);
      SPDLAB_CHECK(bad_weight.empty(), opt.label, ": '", bad_weight, "' holds NaN or inf after step ", st.step + 1,
                   " (the update overflowed float32)", kept(), "; lower the learning rate (--lr)");
      st.loss_avg = st.loss_avg < 0 ? l : 0.98 * st.loss_avg + 0.02 * l;
      ++st.step;
      ++st.batch;
      if (!opt.metrics_path.empty() || opt.run) {
        std::ostringstream line;
        line.precision(17);
        line << "{\"step\":" << st.step << ",\"epoch\":" << epoch << ",\"lr\":" << optimizer->lr()
             << ",\"loss\":" << l;
        // An optimizer with per-tensor statistics (SPD): per layer, the fraction of its tensors whose condition
        // fired on this step.
        if (const auto& stats = optimizer->stats(); !stats.empty()) {
          std::map<std::string, std::pair<int, int>> fired;  // layer -> (fired, tensors), in name order
          for (const auto& s : stats) {
            auto& f = fired[layer_of(s.name)];
            f.first += s.fired_last;
            f.second += 1;
          }
          line << ",\"fired\":{";
          bool first = true;
          for (const auto& [layer, f] : fired) {
            line << (first ? "" : ",") << "\"" << layer << "\":" << double(f.first) / f.second;
            first = false;
          }
          line << "}";
        }
        line << "}\n";
        st.metrics += line.str();
      }
      progress.update(st.step, st.loss_avg, (st.step - first_step) * opt.batch_size);
      const bool periodic = opt.checkpoint_every > 0 && st.step % opt.checkpoint_every == 0 && st.step < total;
      if (opt.run && (periodic || (sig && st.step < total))) {
        TrainState save = st;
        if (save.batch == per_epoch) {  // the epoch is done: the next step starts the next one
          ++save.epoch;
          save.batch = 0;
        }
        save.dropout_rng = model.dropout_generator().seed_state();
        if (comm.is_root()) save_train_state(*opt.run, model, *optimizer, save);  // rank 0 writes, for all
        comm.barrier();  // no rank stops before the state is saved
      }
      if (sig && opt.run && st.step < total) {
        progress.finish();
        throw Interrupted(sig, detail::cat(opt.label, ": stopped by ", signal_name(sig), " after step ", st.step,
                                           " of ", total, "; the state is saved in ", opt.run->dir()));
      }
    }
  }
  progress.finish();
  dist::wait_policy().context.clear();
  if (ranks > 1) {
    // The replicas end equal, having made the same decisions: a proof, not an assumption.
    dist::check_same_on_all_ranks(comm, dist::digest(model.named_parameters()), opt.label + ": the final parameters");
    std::ostringstream decisions;
    for (const auto& s : optimizer->stats()) decisions << s.name << ' ' << s.steps << ' ' << s.fired << '\n';
    const std::string d = decisions.str();
    dist::check_same_on_all_ranks(comm, dist::digest({{d, Tensor()}}), opt.label + ": SPD's per-tensor firing counts");
  }
  if (!opt.metrics_path.empty() && comm.is_root()) io::write_file_atomic(opt.metrics_path, st.metrics);
  comm.barrier();  // the metrics are on disk before any rank reads them
  res.seconds = now_seconds() - t0;
  res.steps = st.step;
  res.final_loss = st.loss_avg;
  if (auto* spd = dynamic_cast<optim::SPD*>(optimizer.get())) res.spd_stats = spd->stats();
  return res;
}

double evaluate(models::VisionTransformer& model, const data::Dataset& test, data::Domain domain, uint64_t seed,
                Progress* progress, int64_t* progress_step) {
  return evaluate(model, test, data::domain_transform(domain), seed, progress, progress_step);
}

double evaluate(models::VisionTransformer& model, const data::Dataset& test, data::SampleTransform transform,
                uint64_t seed, Progress* progress, int64_t* progress_step) {
  // With several ranks each scores its range of the batches and the counts are summed: the accuracy is the one
  // process's to the last image. Progress (shown by rank 0) counts every rank's batches as its own.
  dist::Communicator& comm = dist::world();
  const models::Counts c = models::accuracy_counts(
      model, test, std::move(transform), seed, kEvalBatch,
      [&](int64_t) {
        if (!progress) return;
        *progress_step += comm.size();
        progress->update(*progress_step, -1, *progress_step * kEvalBatch);
      },
      comm.rank(), comm.size());
  double counts[2] = {static_cast<double>(c.correct), static_cast<double>(c.seen)};
  comm.all_reduce_sum(counts, 2);
  return counts[1] > 0 ? counts[0] / counts[1] : 0.0;
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

std::string dir_of(const std::string& file) {
  const auto parent = std::filesystem::path(file).parent_path();
  return parent.empty() ? "." : parent.string();
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SPDLAB_CHECK(!ec && std::filesystem::is_directory(dir), "cannot create the output directory '", dir,
               "': ", ec ? ec.message() : "a file of that name exists");
  SPDLAB_CHECK(access(dir.c_str(), W_OK) == 0, "the output directory '", dir, "' is not writable");
}

void check_out_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  SPDLAB_CHECK(!ec, "--out '", dir, "': ", ec.message());
  if (fs::exists(p, ec)) {
    SPDLAB_CHECK(fs::is_directory(p, ec), "--out '", dir, "' is a file; expected a directory");
    SPDLAB_CHECK(access(p.c_str(), W_OK) == 0, "the output directory '", dir, "' is not writable");
    return;
  }
  while (p.has_parent_path() && p != p.parent_path() && !fs::exists(p, ec)) p = p.parent_path();
  SPDLAB_CHECK(fs::is_directory(p, ec) && access(p.c_str(), W_OK) == 0, "cannot create the output directory '", dir,
               "': '", p.string(), "' is not a writable directory");
}

void write_text_atomic(const std::string& path, const std::string& text) {
  on_root(path, [&] { io::write_file_atomic(path, text); });
}

void on_root(const std::string& what, const std::function<void()>& write) {
  dist::Communicator& comm = dist::world();
  if (comm.is_root()) write();
  comm.barrier();  // what rank 0 wrote is there before any rank reads it
}

}  // namespace spdlab::cli
