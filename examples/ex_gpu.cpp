// Lab 5: the same code on a GPU. Nothing in a model or an optimizer names a device: tensors carry theirs, and
// every op asks kernels::get(device) for the kernels that run there. So the only GPU-specific lines are choosing
// the device, moving the model (before making the optimizer, which holds its tensors) and moving each batch.
//
//   ./build/ex_gpu [STEPS=20]
//
// Built with -DSPDLAB_CUDA=ON on a machine with a GPU, it trains there; with -DSPDLAB_CUDA_EMULATE=ON it runs the
// CUDA kernels on the CPU's emulation of a GPU; otherwise it says why there is no GPU and uses the CPU.
// It overfits one fixed batch of 32 random images: on the CPU the loss falls from 2.32 (step 0) to 0.72 (step 19).
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/kernels.h"
#include "models/vit.h"
#include "optim/optim.h"

using namespace spdlab;

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 20;
  const Device device = kernels::cuda_device_count() > 0 ? Device::cuda : Device::cpu;
  if (device.is_cpu()) std::printf("no GPU (%s): running on the CPU\n", kernels::cuda_unavailable_reason().c_str());
  std::printf("device: %s (%s)\n", device.str().c_str(), kernels::get(device).name().c_str());

  models::ViTConfig cfg = models::vit_preset("vit_fmnist_tiny");
  models::VisionTransformer model(cfg, 0);
  model.to(device);  // first the model...
  auto opt = optim::make_optimizer("spd", model.named_parameters(), {.lr = 1e-3, .lambda = 1.0});
  opt->capture_anchors();  // ...then the optimizer, on the moved tensors
  Generator gen(0);
  const Tensor x = Tensor::rand({32, 1, 28, 28}, gen).to(device);  // a fixed batch to overfit
  std::vector<int64_t> labels(32);
  for (int64_t i = 0; i < 32; ++i) labels[i] = i % 10;
  const Tensor y = Tensor::from_vector(labels, {32}).to(device);
  model.train();
  for (int64_t s = 0; s < steps; ++s) {
    Tensor loss = cross_entropy(model.forward(model.preprocess(x)), y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    if (s % 5 == 0 || s + 1 == steps) std::printf("step %lld: loss %.4f\n", static_cast<long long>(s), loss.item());
  }
  return 0;
}
