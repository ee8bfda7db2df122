// Lab 3: SPD on a 2-D toy problem, next to Adam, AdamW and L2-SP, with a plot of the four trajectories.
//
// The "pre-trained" weights are w0 = (0, 0). The fine-tuning loss is L(w) = 0.5 ((w1 - 2)^2 + 4 (w2 - 1)^2), and
// each step sees its gradient plus noise (the same noise for every optimizer), as a minibatch would. SPD's
// condition c = -<g, w - w0> < 0 says: this step's descent direction points back towards w0, so the move away
// from w0 is not what the loss wants now; only then does SPD pull w towards w0, by the ratio r of how much the
// step grew the distance. The plot rings the steps where the condition fired.
//
//   ./build/ex_spd_toy [STEPS=200] [OUT=runs/spd_toy.svg]
//
// What to look for (the defaults print this): SPD ends next to Adam (loss 0.165 vs 0.166, ||w - w0|| 2.06 vs
// 2.07), its condition firing on 84 of 200 steps, mostly once it has reached the noisy minimum, where steps point
// back as often as forward; L2-SP (alpha 1) and AdamW (decay 0.5, towards 0, which is w0 here) settle about
// halfway, because their pull never switches off. Try a larger lambda, a w0 away from the origin, or more noise.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/io/svg.h"
#include "core/ops.h"
#include "optim/optim.h"

using namespace spdlab;

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 200;
  const std::string out = argc > 2 ? argv[2] : "runs/spd_toy.svg";
  if (const auto dir = std::filesystem::path(out).parent_path(); !dir.empty()) std::filesystem::create_directories(dir);
  const double target[2] = {2.0, 1.0}, curvature[2] = {1.0, 4.0}, noise = 1.5;
  auto loss = [&](double a, double b) {
    return 0.5 * (curvature[0] * (a - target[0]) * (a - target[0]) + curvature[1] * (b - target[1]) * (b - target[1]));
  };
  std::vector<svg::Line> lines;
  std::printf("%-6s %8s %8s %10s %8s %6s\n", "optim", "w1", "w2", "||w-w0||", "loss", "fired");
  for (const char* kind : {"adam", "adamw", "l2sp", "spd"}) {
    Tensor w = Tensor::zeros({2}).requires_grad_(true);  // starts at w0
    optim::Hyperparams h;
    h.lr = 0.05;
    h.weight_decay = std::string(kind) == "adamw" ? 0.5 : 0.0;  // AdamW's decoupled decay
    h.lambda = 1.0;                                             // SPD's projection strength
    h.alpha = 1.0;  // L2-SP's pull towards w0
    auto opt = optim::make_optimizer(kind, optim::NamedTensors{{"w", w}}, h);
    opt->capture_anchors();  // w0 = the starting weights
    Generator gen(7);        // the same noise sequence for every optimizer
    svg::Line line{kind, {0.0}, {0.0}, {false}};
    int64_t fired = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const std::vector<float> v = w.detach().to_vector_f32();
      std::vector<float> g(2);
      for (int i = 0; i < 2; ++i)
        g[i] = static_cast<float>(curvature[i] * (v[i] - target[i]) + noise * gen.next_normal());
      w.set_grad(Tensor::from_vector(g, {2}));
      opt->step();
      const std::vector<float> now = w.detach().to_vector_f32();
      bool f = false;
      if (auto* spd = dynamic_cast<optim::SPD*>(opt.get())) f = spd->stats()[0].fired_last;
      fired += f;
      line.x.push_back(now[0]);
      line.y.push_back(now[1]);
      line.marked.push_back(f);
    }
    const std::vector<float> end = w.detach().to_vector_f32();
    std::printf("%-6s %8.3f %8.3f %10.3f %8.4f %6lld\n", kind, end[0], end[1], std::hypot(end[0], end[1]),
                loss(end[0], end[1]), static_cast<long long>(fired));
    lines.push_back(line);
  }
  std::ofstream(out) << svg::lines("Trajectories from w0 = (0, 0) to the minimum (2, 1); rings: SPD's condition fired",
                                   "w1", "w2", lines);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
