// A program outside the spdlab tree, built against an installed spdlab (find_package, pkg-config) or through
// add_subdirectory: tensors, autograd, a small ViT and one SPD step, with the headers at their source paths.
#include <cstdio>

#include "core/ops.h"
#include "models/vit.h"
#include "optim/optim.h"

using namespace spdlab;

int main() {
  models::ViTConfig cfg = models::vit_preset("vit_fmnist_tiny");
  cfg.depth = 1;
  models::VisionTransformer model(cfg, 0);
  auto opt = optim::make_optimizer("spd", model.named_parameters(), {.lr = 1e-3, .lambda = 1.0});
  opt->capture_anchors();
  Generator gen(0);
  const Tensor x = Tensor::rand({4, 1, 28, 28}, gen);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4});
  Tensor loss = cross_entropy(model.forward(model.preprocess(x)), y);
  loss.backward();
  opt->step();
  std::printf("consumer: loss %.4f, %lld parameters, one SPD step done\n", loss.item(),
              static_cast<long long>(model.num_parameters()));
  return 0;
}
