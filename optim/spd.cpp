// SPD: one fused pass (Adam update, moments, and the three sums) over every piece of every tensor, the sums
// added per tensor, then a projection pass only over the tensors whose condition fired. Where ||w~ - w0|| is 0
// the projection is skipped: the reference divides by zero there, and w~ already sits on w0 anyway.
#include "optim/spd.h"

#include <algorithm>
#include <cmath>

namespace spdlab::optim {

namespace {
const SPDOptions& checked(const SPDOptions& o) {
  check_adam_options(o.adam, "SPDOptions.adam");
  SPDLAB_CHECK(o.adam.weight_decay == 0, "SPDOptions: adam.weight_decay must be 0 (SPD's decay is lambda); got ",
               o.adam.weight_decay);
  SPDLAB_CHECK(!o.adam.amsgrad && !o.adam.decoupled, "SPDOptions: adam.amsgrad and adam.decoupled are not supported");
  SPDLAB_CHECK(std::isfinite(o.lambda) && o.lambda >= 0, "SPDOptions: lambda must be >= 0; got ", o.lambda);
  return o;
}

// Diagnostics are saved as one f64 vector per tensor: steps, fired, fired_last, last_r, r_sum, dev_norm.
constexpr int64_t kStatsLen = 6;
}  // namespace

SPD::SPD(NamedTensors params, SPDOptions options) : SPD(one_group(std::move(params)), options) {}

SPD::SPD(std::vector<ParamGroup> groups, SPDOptions options)
    : Optimizer(std::move(groups), checked(options).adam.lr, options.lambda, true), opt_(options) {
  for (const Param& p : params_) stats_.push_back({p.name});
}

std::vector<std::string> SPD::slot_names() const { return {"exp_avg", "exp_avg_sq"}; }

SPD::~SPD() {
  // A step that failed half-way may have left a GPU about to write sums into sums_: let it finish first.
  try {
    wait_for_sums();
  } catch (...) {  // never throw from a destructor; the error was reported when the step failed
  }
}

void SPD::wait_for_sums() {
  std::vector<Device> seen;
  for (const Param& p : params_)
    if (std::find(seen.begin(), seen.end(), p.value.device()) == seen.end()) {
      seen.push_back(p.value.device());
      kernels::get(seen.back()).synchronize();
    }
}

void SPD::start_step(const std::vector<Work>&, const std::vector<Piece>& pieces) {
  // The pieces' sums are written by the devices (spd_adam_pass) and read after a synchronize(). The buffer only
  // grows, and a device has nothing pending into it when it does (the last step finished, or failed and is
  // waited for here), so no write lands in freed memory.
  if (pieces.size() > sums_.size()) {
    wait_for_sums();
    sums_.resize(pieces.size());
  }
  std::fill(sums_.begin(), sums_.end(), kernels::SpdSums{});
}

void SPD::update(const Work& w, int64_t begin, int64_t end, size_t piece) {
  Param& p = *w.param;
  auto at = [&](const Tensor& t) { return t.data<float>() + begin; };
  kernels::get(p.value.device())
      .spd_adam_pass(at(p.value), at(w.grad), at(p.slots[0]), at(p.slots[1]), p.anchor.defined() ? at(p.anchor) : nullptr,
                     end - begin, adam_step_params(opt_.adam, w.lr, 0.0, p.step), &sums_[piece]);
}

void SPD::finish_step(const std::vector<Work>& work, const std::vector<Piece>& pieces) {
  wait_for_sums();  // one wait per device for every tensor's sums
  // Each tensor's sums, added in piece order; then the decision per tensor.
  std::vector<kernels::SpdSums> total(work.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    kernels::SpdSums& t = total[pieces[i].work];
    t.g_dot_dev += sums_[i].g_dot_dev;
    t.dev_sq += sums_[i].dev_sq;
    t.new_dev_sq += sums_[i].new_dev_sq;
  }
  std::vector<float> scale(work.size(), 0.0f);
  for (size_t k = 0; k < work.size(); ++k) {
    const kernels::SpdSums& s = total[k];
    SpdTensorStats& st = stats_[static_cast<size_t>(work[k].param - params_.data())];
    const double old_norm = std::sqrt(s.dev_sq), new_norm = std::sqrt(s.new_dev_sq);
    const double c = -s.g_dot_dev;
    st.steps++;
    st.fired_last = c < 0;
    st.dev_norm = new_norm;
    st.c = c;
    st.r = 0;
    if (c < 0) {
      st.fired++;
      if (new_norm > 0) {
        const double r = std::clamp((new_norm - old_norm) / new_norm, 0.0, 1.0);
        st.last_r = r;
        st.r = r;
        st.r_sum += r;
        scale[k] = static_cast<float>(work[k].decay * r);  // lambda r
        st.dev_norm = std::abs(1 - work[k].decay * r) * new_norm;
      }
    }
  }
  std::vector<Piece> project;
  for (const Piece& pc : pieces)
    if (scale[pc.work] != 0.0f) project.push_back(pc);
  for_each_piece(work, project, [&](size_t i) {
    const Piece& pc = project[i];
    Param& p = *work[pc.work].param;
    kernels::get(p.value.device())
        .spd_project(p.value.data<float>() + pc.begin, p.anchor.defined() ? p.anchor.data<float>() + pc.begin : nullptr,
                     pc.end - pc.begin, scale[pc.work]);
  });
}

void SPD::save_extra(NamedTensors& out) const {
  for (const SpdTensorStats& st : stats_)
    out.emplace_back("spd_stats." + st.name,
                     Tensor::from_vector(std::vector<double>{double(st.steps), double(st.fired), st.fired_last ? 1.0 : 0.0,
                                                             st.last_r, st.r_sum, st.dev_norm},
                                         {kStatsLen}));
}

void SPD::check_extra(const std::map<std::string, Tensor>& state, std::vector<std::string>& problems,
                      std::vector<std::string>& consumed) const {
  for (const SpdTensorStats& st : stats_) {
    const std::string key = "spd_stats." + st.name;
    auto it = state.find(key);
    if (it == state.end())
      problems.push_back("missing " + key);
    else if (it->second.numel() != kStatsLen || it->second.dtype() == DType::i64)
      problems.push_back(key + " should hold " + std::to_string(kStatsLen) + " floating values");
    else
      consumed.push_back(key);
  }
}

void SPD::load_extra(const std::map<std::string, Tensor>& state) {
  for (SpdTensorStats& st : stats_) {
    std::vector<double> v = state.at("spd_stats." + st.name).to_vector_f64();
    st.steps = static_cast<int64_t>(v[0]);
    st.fired = static_cast<int64_t>(v[1]);
    st.fired_last = v[2] != 0;
    st.last_r = v[3];
    st.r_sum = v[4];
    st.dev_norm = v[5];
  }
}

}  // namespace spdlab::optim
