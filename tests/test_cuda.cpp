// The CUDA backend beyond the per-op tables (those are the "cuda" cases in test_reference, test_vit and
// test_optim): devices and moves, errors for bad devices, a 50-step fine-tune against the CPU, the caching
// allocator, dropout masks equal on both devices, and the emulation's own checks (barrier divergence,
// shuffles, shared-memory overruns, cuBLAS argument checks). GPU cases skip with the reason when there is none.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/kernels.h"
#include "models/vit.h"
#include "nn/lora.h"
#include "optim/optim.h"
#if SPDLAB_CUDA_EMULATE
#include "kernels/cuda/runtime.h"
#endif

using namespace spdlab;

namespace {
bool have_cuda() {
  if (kernels::cuda_device_count() > 0) return true;
  MESSAGE("skipped: no CUDA device (" << kernels::cuda_unavailable_reason() << ")");
  return false;
}

// A small ViT fine-tuned for `steps` steps on fixed random data with `kind`; returns the losses. With `lora`, rank-4
// adapters and the head train (optim::lora_groups), the rest frozen.
std::vector<double> finetune(Device device, const std::string& kind, int steps, int64_t* mallocs_after_first,
                             double lr = 1e-3, bool lora = false) {
  models::ViTConfig cfg = models::vit_preset("vit_fmnist_tiny");
  cfg.depth = 2;
  auto model = std::make_shared<models::VisionTransformer>(cfg);  // same seed, same initial weights
  if (lora) nn::add_lora(*model, {.rank = 4, .alpha = 4});
  model->to(device);
  optim::Hyperparams h{.lr = lr};
  (kind == "spd" ? h.lambda : h.weight_decay) = 0.5;
  std::vector<optim::ParamGroup> groups = optim::one_group(model->named_parameters());
  if (lora) {
    groups = optim::lora_groups(model->named_parameters());
    optim::freeze_unlisted(model->named_parameters(), groups);
  }
  auto opt = optim::make_optimizer(kind, groups, h);
  opt->capture_anchors();
  Generator gen(7);
  Tensor x = Tensor::randn({16, 1, 28, 28}, gen).to(device);
  std::vector<int64_t> labels;
  for (int i = 0; i < 16; ++i) labels.push_back(i % 10);
  Tensor y = Tensor::from_vector(labels, {16}).to(device);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    Tensor loss = cross_entropy(model->forward(x), y);
    losses.push_back(loss.item());
    opt->zero_grad();
    loss.backward();
    opt->step();
    if (s == 0 && mallocs_after_first) *mallocs_after_first = kernels::get(device).memory_stats().device_mallocs;
  }
  return losses;
}
}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("devices: parsing, printing and the errors for devices that are not there") {
  CHECK(Device::parse("cpu") == Device::cpu);
  CHECK(Device::parse("cuda") == Device::cuda_at(0));
  CHECK(Device::parse("cuda:3") == Device::cuda_at(3));
  CHECK(Device::cuda_at(2).str() == "cuda:2");
  CHECK_THROWS_WITH_AS(Device::parse("gpu"), doctest::Contains("expected cpu, cuda or cuda:N"), Error);
  CHECK_THROWS_WITH_AS(Device::parse("cuda:x"), doctest::Contains("got 'cuda:x'"), Error);
  int n = kernels::cuda_device_count();
  // One past the last GPU (cuda:0 on a build or machine without any) is a clear error, never a crash.
  const std::string want = "cuda:" + std::to_string(n) + " was asked for";
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::f32, Device::cuda_at(n)), doctest::Contains(want.c_str()), Error);
  if (n == 0) MESSAGE("no CUDA device: " << kernels::cuda_unavailable_reason());
}

TEST_CASE("tensors move between devices; mixed devices are one clear error naming both") {
  if (!have_cuda()) return;
  Tensor a = Tensor::from_vector(std::vector<float>{1, -2, 3, -4, 5, -6}, {2, 3});
  Tensor g = a.cuda();
  CHECK(g.device() == Device::cuda);
  CHECK(g.cpu().to_vector_f32() == a.to_vector_f32());
  CHECK_THROWS_WITH_AS(g.item(), doctest::Contains("one-element"), Error);
  CHECK(g.select(0, 1).select(0, 2).item() == -6);
  CHECK(g.transpose(0, 1).contiguous().cpu().to_vector_f32() == a.transpose(0, 1).contiguous().to_vector_f32());
  CHECK_THROWS_WITH_AS(add(a, g), doctest::Contains("cpu vs cuda:0"), Error);
  CHECK_THROWS_WITH_AS(matmul(g, a.transpose(0, 1)), doctest::Contains("cuda:0"), Error);
  // Gradients flow back across a move.
  Tensor leaf = a.detach().clone().requires_grad_();
  sum(mul(leaf.cuda(), 2.0)).backward();
  REQUIRE(leaf.grad().defined());
  CHECK(leaf.grad().device() == Device::cpu);
  CHECK(leaf.grad().to_vector_f32() == std::vector<float>(6, 2.0f));
}

TEST_CASE("dropout draws the same mask on the CPU and the GPU") {
  if (!have_cuda()) return;
  Tensor x = Tensor::ones({1000});
  Generator g1(5), g2(5);
  Tensor yc = dropout(x, 0.3, true, g1), yg = dropout(x.cuda(), 0.3, true, g2);
  CHECK(yg.cpu().to_vector_f32() == yc.to_vector_f32());
  double kept = sum(yc).item() * 0.7 / 1000;
  CHECK(kept == doctest::Approx(0.7).epsilon(0.08));
}

// lr 1e-4: at 1e-3 these 16 memorized images send Adam's loss back up after step 35, where rounding
// differences of 1e-7 grow chaotically (7e-3 apart by step 45, both devices equally "right").
TEST_CASE("a 50-step fine-tune on the GPU matches the CPU within 1e-4 (Adam and SPD), bit-identical on reruns") {
  if (!have_cuda()) return;
  for (std::string kind : {"adam", "spd"}) {
    CAPTURE(kind);
    std::vector<double> cpu = finetune(Device::cpu, kind, 50, nullptr, 1e-4);
    std::vector<double> gpu = finetune(Device::cuda, kind, 50, nullptr, 1e-4);
    std::vector<double> again = finetune(Device::cuda, kind, 50, nullptr, 1e-4);
    double worst = 0;
    for (size_t i = 0; i < cpu.size(); ++i) worst = std::max(worst, std::abs(cpu[i] - gpu[i]));
    MESSAGE(kind, ": loss ", cpu.front(), " -> ", cpu.back(), " on the CPU; max |cpu - gpu| over 50 steps ", worst);
    CHECK(worst < 1e-4);
    CHECK(cpu.back() < cpu.front() - 0.5);  // it learns
    CHECK(again == gpu);  // the same bits on a rerun: no float atomics anywhere
  }
}

// 10 steps (the emulation runs about 3 s per step of this model): FTP's projections and radii, and LoRA's
// reparametrized weights with SPD's zero anchors, run as ordinary tensor ops on either device.
TEST_CASE("FTP, and LoRA adapters with SPD (PEFT mode), on the GPU match the CPU over 10 steps") {
  if (!have_cuda()) return;
  for (bool lora : {false, true}) {
    const std::string what = lora ? "spd on LoRA adapters" : "ftp";
    CAPTURE(what);
    std::vector<double> cpu = finetune(Device::cpu, lora ? "spd" : "ftp", 10, nullptr, 1e-3, lora);
    std::vector<double> gpu = finetune(Device::cuda, lora ? "spd" : "ftp", 10, nullptr, 1e-3, lora);
    double worst = 0;
    for (size_t i = 0; i < cpu.size(); ++i) worst = std::max(worst, std::abs(cpu[i] - gpu[i]));
    MESSAGE(what, ": loss ", cpu.front(), " -> ", cpu.back(), " on the CPU; max |cpu - gpu| over 10 steps ", worst);
    CHECK(worst < 1e-5);
    CHECK(cpu.back() < cpu.front());  // it learns
  }
}

TEST_CASE("the caching allocator: no cudaMalloc in training steps after the first; current and peak bytes") {
  if (!have_cuda()) return;
  kernels::Kernels& k = kernels::get(Device::cuda);
  finetune(Device::cuda, "adamw", 2, nullptr);  // warms the size classes this model uses
  int64_t first = 0;
  finetune(Device::cuda, "adamw", 5, &first);
  kernels::MemoryStats s = k.memory_stats();
  CHECK(s.device_mallocs == first);
  CHECK(s.peak >= s.current);
  k.reset_peak_memory();
  CHECK(k.memory_stats().peak == k.memory_stats().current);
  Tensor big = Tensor::zeros({1 << 20}, DType::f32, Device::cuda);
  CHECK(k.memory_stats().current >= s.current + (size_t(4) << 20));
  CHECK(k.memory_stats().peak >= size_t(4) << 20);
}

TEST_CASE("TF32 is off unless asked for") {
  CHECK_FALSE(kernels::allow_tf32());
  kernels::set_allow_tf32(true);
  CHECK(kernels::allow_tf32());
  kernels::set_allow_tf32(false);
}

#if SPDLAB_CUDA_EMULATE
namespace emu_checks {
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) __syncthreads();  // half the block waits at a barrier the other half never reaches
  out[threadIdx.x] = 1;
}
__global__ void early_exit(int* out) {
  if (threadIdx.x == 3) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void shared_overrun(int* out) {
  int* s = cuda::shared_mem<int>();
  s[threadIdx.x + 1] = 1;  // one past the 32 ints the launch asked for
  out[threadIdx.x] = 0;
}
__global__ void reverse_through_shared(const int* in, int* out, bool sync) {
  int* s = cuda::shared_mem<int>();
  s[threadIdx.x] = in[threadIdx.x];
  if (sync) __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}
__global__ void warp_total(const int* in, int* out) {
  int v = in[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x] = v;
}
}  // namespace emu_checks

TEST_CASE("emulation: barrier divergence, early exits and shared-memory overruns are errors; shuffles work") {
  int *in = nullptr, *out = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&in), 64 * sizeof(int)) == cudaSuccess);
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&out), 64 * sizeof(int)) == cudaSuccess);
  std::vector<int> host(64);
  for (int i = 0; i < 64; ++i) host[i] = i;
  REQUIRE(cudaMemcpy(in, host.data(), 64 * sizeof(int), cudaMemcpyHostToDevice) == cudaSuccess);
  using namespace emu_checks;
  CHECK_THROWS_WITH_AS(SPDLAB_LAUNCH(divergent_barrier, 1, 32, 0, nullptr, out),
                       doctest::Contains("barrier divergence in divergent_barrier"), Error);
  CHECK_THROWS_WITH_AS(SPDLAB_LAUNCH(early_exit, 1, 32, 0, nullptr, out), doctest::Contains("has exited"), Error);
  CHECK_THROWS_WITH_AS(SPDLAB_LAUNCH(shared_overrun, 1, 32, 32 * sizeof(int), nullptr, out),
                       doctest::Contains("past the 128 bytes"), Error);
  CHECK_THROWS_WITH_AS(SPDLAB_LAUNCH(warp_total, 1, 2000, 0, nullptr, in, out), doctest::Contains("1 to 1024 threads"),
                       Error);
  // A missing barrier shows: without it, a thread reads a slot its partner has not written yet (every run
  // alternates the order threads run in, so one of two launches must differ).
  std::vector<int> got(64), want(64);
  for (int i = 0; i < 64; ++i) want[i] = 63 - i;
  SPDLAB_LAUNCH(reverse_through_shared, 1, 64, 64 * sizeof(int), nullptr, static_cast<const int*>(in), out, true);
  cudaMemcpy(got.data(), out, 64 * sizeof(int), cudaMemcpyDeviceToHost);
  CHECK(got == want);
  bool wrong = false;
  for (int run = 0; run < 2; ++run) {
    SPDLAB_LAUNCH(reverse_through_shared, 1, 64, 64 * sizeof(int), nullptr, static_cast<const int*>(in), out, false);
    cudaMemcpy(got.data(), out, 64 * sizeof(int), cudaMemcpyDeviceToHost);
    wrong = wrong || got != want;
  }
  CHECK(wrong);
  SPDLAB_LAUNCH(warp_total, 1, 64, 0, nullptr, static_cast<const int*>(in), out);
  cudaMemcpy(got.data(), out, 64 * sizeof(int), cudaMemcpyDeviceToHost);
  CHECK(got[0] == 31 * 32 / 2);
  CHECK(got[40] == (32 + 63) * 32 / 2);
  // A failed wait names the last kernel queued before it (on a GPU, the usual suspect of an async error).
  CHECK_THROWS_WITH_AS(kernels::get(Device::cuda).copy_to_host(got.data(), host.data(), 4),
                       doctest::Contains("the last kernel queued before it: warp_total with grid (1,1,1)"), Error);
  (void)cudaGetLastError();
  // Copies check their direction against the live device blocks; cuBLAS checks leading dimensions.
  CHECK(cudaMemcpy(host.data(), in, 64 * sizeof(int), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cublasHandle_t h;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  float one = 1, zero = 0;
  float* f = reinterpret_cast<float*>(in);
  CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, f, 2, f, 4, &zero, f + 16, 4) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, reinterpret_cast<float*>(host.data()), 4, f, 4,
                    &zero, f + 16, 4) ==
        CUBLAS_STATUS_INVALID_VALUE);
  cublasDestroy(h);
  cudaFree(in);
  cudaFree(out);
}
#endif
}
