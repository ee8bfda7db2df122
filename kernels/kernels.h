// The one kernel interface. Ops call kernels::get(device) and nothing else picks a backend.
// Kernels take raw pointers and sizes, never Tensors; they write outputs and leave accumulation to autograd.
// Layout notes use shape letters: rows x cols means row-major, cols contiguous.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "core/tensor.h"

namespace spdlab::kernels {

enum class Unary { neg, exp, log, sqrt, rsqrt, tanh, abs, relu, gelu, gelu_tanh, pow, add_scalar, mul_scalar, rsub_scalar };
enum class Binary { add, sub, mul, div, maximum };
enum class Reduce { sum, max };

// A strided n-d operand: element (i0..in) lives at data + sum(i_k * strides[k]) elements.
struct Strided {
  const void* data;
  const int64_t* strides;
};

// Optimizer hyperparameters for one fused update of one tensor (see optim/). Doubles, so that a kernel rounds
// each derived coefficient (1 - beta, lr / (1 - beta1^t), 1 - lr wd) to float once, as PyTorch does with the
// Python scalars it passes to its kernels; rounding beta first would bias 1 - beta2 by 1e-5 relative.
struct AdamStep {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1, bias_correction2;  // 1 - beta^t
  bool decoupled;  // AdamW: p *= 1 - lr*wd before the update; else g += wd*p (Adam)
  bool amsgrad;
  double l2sp_alpha, l2sp_beta;  // g += alpha (p - p0) where an anchor exists, else g += beta p
};

// What SPD needs from the pass that computes the plain Adam update w~ (see optim/spd.cpp).
struct SpdSums {
  double g_dot_dev = 0;      // <g, w - w0>
  double dev_sq = 0;         // ||w - w0||^2
  double new_dev_sq = 0;     // ||w~ - w0||^2
};

// What a device's allocator holds, in bytes; `device_mallocs` counts the calls to the system allocator
// (cudaMalloc on a GPU), so a test can check that a training step after the first makes none.
struct MemoryStats {
  size_t current = 0;  // held by live tensors (rounded up to the allocator's size classes)
  size_t peak = 0;     // the most `current` has been since the last reset_peak_memory()
  size_t cached = 0;   // freed blocks kept for reuse
  int64_t device_mallocs = 0;
};

class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual Device device() const = 0;
  // "cpu (avx2)", or the GPU's name ("NVIDIA H200"; "emulated GPU (CPU)" under the emulation).
  virtual std::string name() const = 0;

  // Device memory. allocate throws spdlab::Error naming the size when memory runs out; deallocate never
  // throws. The copies move contiguous bytes between this device and host memory and return when done.
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) noexcept = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t nbytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t nbytes) = 0;
  virtual MemoryStats memory_stats() = 0;
  virtual void reset_peak_memory() = 0;
  // Waits for the device's queued work (a no-op on the CPU); timing code calls it.
  virtual void synchronize() {}

  // How optimizers split a step: the most elements one fused call takes. The CPU's fixed pieces spread over
  // its cores; a GPU takes each tensor whole (INT64_MAX), and its calls are queued from one host thread.
  virtual int64_t optimizer_piece() const = 0;

  // Inference in chunks (models/evaluate.h's logits): the token rows (images x tokens) a chunk of a batch should
  // hold, or 0 where a batch runs whole (the default: a GPU's ops queue on one stream from one host thread). The
  // CPU runs the chunks side by side (run_apart), each on one thread, so its ops need no barrier between them.
  virtual int64_t inference_chunk_rows() const { return 0; }
  // How many pieces run_apart runs at once (the CPU: its threads; given fewer, it runs them in turn).
  virtual int apart_width() const { return 1; }
  // Calls f(i) for every i in [0, n): independent pieces of work that run ops themselves. The CPU runs them on
  // its threads, every op inside a piece on the thread running it; the default calls them in order. An error
  // thrown by a piece is rethrown here once every piece has run (the first, if several throw).
  virtual void run_apart(int64_t n, const std::function<void(int64_t)>& f) {
    for (int64_t i = 0; i < n; ++i) f(i);
  }

  // Memory. copy_strided converts dtypes; dst may be strided too (for narrow().copy_()).
  virtual void copy_strided(DType src_dt, Strided src, DType dst_dt, void* dst, const int64_t* dst_strides,
                            const int64_t* shape, int ndim) = 0;
  virtual void fill(DType dt, void* dst, int64_t n, double value) = 0;

  // Elementwise on contiguous x[n] -> y[n]; `alpha` is the exponent or scalar where the op has one.
  virtual void unary_fwd(Unary op, DType dt, const void* x, void* y, int64_t n, double alpha) = 0;
  // dx = dy * f'(x) (y = f(x) is given for ops whose derivative is cheaper from y).
  virtual void unary_bwd(Unary op, DType dt, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                         double alpha) = 0;
  // out[shape] (contiguous) = a op b, with broadcast operands given by strides (0 on broadcast dims).
  virtual void binary_fwd(Binary op, DType dt, Strided a, Strided b, void* out, const int64_t* shape, int ndim) = 0;
  // out = cond != 0 ? a : b, all strided over `shape`; cond has its own dtype.
  virtual void where_fwd(DType cond_dt, Strided cond, DType dt, Strided a, Strided b, void* out, const int64_t* shape,
                         int ndim) = 0;
  // x contiguous viewed as [outer, r, inner] -> y [outer, inner]; argmax (may be null) gets the index of the max.
  virtual void reduce(Reduce op, DType dt, const void* x, void* y, int64_t outer, int64_t r, int64_t inner,
                      int64_t* argmax) = 0;
  // dx [outer, r, inner] = dy [outer, inner] at argmax, 0 elsewhere.
  virtual void max_bwd(DType dt, const void* dy, const int64_t* argmax, void* dx, int64_t outer, int64_t r,
                       int64_t inner) = 0;

  // C[M,N] = alpha op(A) op(B) + beta C, row-major; batched over `batch` with element strides per operand.
  virtual void gemm(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                    const void* A, int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc) = 0;
  virtual void gemm_batched(DType dt, int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                            double alpha, const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb,
                            int64_t stride_b, double beta, void* C, int64_t ldc, int64_t stride_c) = 0;
  // Independent products, each as gemm(); a backend may run them at the same time. None may write what
  // another reads or writes.
  struct Gemm {
    bool trans_a, trans_b;
    int64_t M, N, K;
    double alpha;
    const void* A;
    int64_t lda;
    const void* B;
    int64_t ldb;
    double beta;
    void* C;
    int64_t ldc;
  };
  virtual void gemm_group(DType dt, const Gemm* calls, int64_t n) = 0;
  // A product with its neighbours folded in: C[M,N] (+)= pro_a(op(A)) pro_b(op(B)), then + bias[j], then
  // * gelu'(aux[i,j]), then + residual[i,j]. A prologue transforms an operand's stored elements X[r][c] as the
  // product reads them, so gelu(h) or layer_norm(x) is never written out. The default (kernels/gemm_ex.cpp) composes it from the
  // kernels above through temporaries; the AVX2 CPU kernels run it in spdlab's own SGEMM (kernels/cpu/sgemm.h)
  // with the prologue in its packing and the rest in its epilogue.
  struct Prologue {
    enum Kind { none, gelu, layer_norm } kind = none;
    // layer_norm: X[r][c] -> (X[r][c] - mean[r]) rstd[r] gamma[c] + beta[c], with the statistics layer_norm_fwd
    // saved (gamma, beta may be null: 1 and 0); eps is what they were computed with. Forward has no statistics
    // yet: it sets mean_out and rstd_out [rows] instead, and the product first computes them there, as
    // layer_norm_fwd would, from X's contiguous rows.
    const double* mean = nullptr;
    const double* rstd = nullptr;
    double* mean_out = nullptr;
    double* rstd_out = nullptr;
    const void* gamma = nullptr;
    const void* beta = nullptr;
    double eps = 0;
    // This prologue once mean_out and rstd_out hold the statistics: it reads them from there.
    Prologue with_saved_statistics() const {
      Prologue q = *this;
      q.mean = mean_out;
      q.rstd = rstd_out;
      q.mean_out = q.rstd_out = nullptr;
      return q;
    }
  };
  struct GemmEx {
    Prologue a, b;
    const void* bias = nullptr;       // [N]
    const void* gelu_grad = nullptr;  // aux [M, N] with leading dim ldc: C[i,j] *= gelu'(aux[i,j]) (exact GELU)
    const void* residual = nullptr;   // r [M, N] with leading dim ldc: C[i,j] += r[i,j], last (a residual stream)
    bool accumulate = false;          // C += the product instead of C =
  };
  virtual void gemm_ex(DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                       int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, const GemmEx& ex);
  // Independent gemm_ex products (as gemm_group for gemm); the default runs them one after another.
  struct GemmExCall {
    bool trans_a, trans_b;
    int64_t M, N, K;
    const void* A;
    int64_t lda;
    const void* B;
    int64_t ldb;
    void* C;
    int64_t ldc;
    GemmEx ex;
  };
  // With `sums` set, the group also writes the column sums of sums.x [rows, cols] to sums.y [cols] (a linear
  // layer's bias gradient, beside its dx and dW), as reduce(sum) does, bit for bit: on the CPU, on whichever
  // thread finishes its product first, which then helps with the others (sgemm_group, kernels/cpu/gemm.h).
  struct ColumnSums {
    const void* x = nullptr;
    void* y = nullptr;
    int64_t rows = 0, cols = 0;
  };
  virtual void gemm_ex_group(DType dt, const GemmExCall* calls, int64_t n, const ColumnSums& sums);
  // y[rows, cols] = bias[cols] for every row
  virtual void fill_rows(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) = 0;

  // Softmax (or log-softmax) over the last axis of x[rows, cols]; scale multiplies x first.
  virtual void softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t cols, double scale, bool log) = 0;
  // dx = scale * softmax'(y)^T dy; y is the forward output.
  virtual void softmax_bwd(DType dt, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols,
                           double scale, bool log) = 0;
  // x[rows, cols] -> y; saves mean[rows] and rstd[rows] (always f64 for accuracy in both dtypes).
  virtual void layer_norm_fwd(DType dt, const void* x, const void* w, const void* b, void* y, double* mean,
                              double* rstd, int64_t rows, int64_t cols, double eps) = 0;
  // dx (written), dw/db (accumulated into zeroed buffers, may be null).
  virtual void layer_norm_bwd(DType dt, const void* x, const void* w, const double* mean, const double* rstd,
                              const void* dy, void* dx, void* dw, void* db, int64_t rows, int64_t cols) = 0;
  // loss[rows] from logits[rows, cols] and int64 targets; probs[rows, cols] saved for backward.
  virtual void cross_entropy_fwd(DType dt, const void* logits, const int64_t* target, void* probs, double* loss,
                                 int64_t rows, int64_t cols, double smoothing) = 0;
  // dlogits = (probs - smoothed one-hot) * scale
  virtual void cross_entropy_bwd(DType dt, const void* probs, const int64_t* target, void* dlogits, int64_t rows,
                                 int64_t cols, double smoothing, double scale) = 0;

  // x [B, C, H, W] <-> patches [B, (H/P)(W/P), C P P]; fold adds into dx.
  virtual void unfold_patches_fwd(DType dt, const void* x, void* y, int64_t B, int64_t C, int64_t H, int64_t W,
                                  int64_t P) = 0;
  virtual void unfold_patches_bwd(DType dt, const void* dy, void* dx, int64_t B, int64_t C, int64_t H, int64_t W,
                                  int64_t P) = 0;
  // Along an axis of x viewed as [outer, n, inner]: y [outer, m, inner] = x[:, index[j], :]; bwd scatters-adds.
  virtual void index_select_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n,
                                int64_t m, int64_t inner) = 0;
  virtual void index_select_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n,
                                int64_t m, int64_t inner) = 0;
  // gather along an axis: x [outer, n, inner], index/y [outer, m, inner]; bwd scatter-adds into dx.
  virtual void gather_fwd(DType dt, const void* x, const int64_t* index, void* y, int64_t outer, int64_t n, int64_t m,
                          int64_t inner) = 0;
  virtual void gather_bwd(DType dt, const void* dy, const int64_t* index, void* dx, int64_t outer, int64_t n,
                          int64_t m, int64_t inner) = 0;

  // Dropout: mask[i] = keep-scale 1/(1-p) or 0, from the Philox counter of (seed, offset + i) (core/philox.h),
  // so every backend draws the same mask for the same generator state.
  virtual void dropout_mask(DType dt, void* mask, int64_t n, double p, uint64_t seed, uint64_t offset) = 0;

  // What attention_fwd saves for attention_bwd, in elements of dt: the CPU keeps each query row's max and
  // 1 / sum [B, H, N, 2], then the probabilities [B, H, N, M] of small heads (N M <= 4096) and recomputes the
  // others'; the GPU's tiled kernel keeps one log-sum-exp per query row [B, H, N] and recomputes them all.
  virtual int64_t attention_saved_numel(int64_t B, int64_t H, int64_t N, int64_t M) const = 0;
  // Attention for one (batch, head) pair at a time, over [B, H] pairs. q [N, D] and out attend over k, v
  // [M, D]; all are addressed by element strides for (b, h, row) with d contiguous; `saved` (attention_saved_numel
  // elements) is kept for backward, or null when no backward follows. out = softmax(q k^T * scale) v
  virtual void attention_fwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                             const int64_t* q_str, const void* k, const int64_t* k_str, const void* v,
                             const int64_t* v_str, void* out, const int64_t* out_str, void* saved, double scale) = 0;
  // dq, dk, dv are written (not accumulated) through their own (b, h, n) strides, so they can land directly
  // in a fused qkv gradient.
  virtual void attention_bwd(DType dt, int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, const void* q,
                             const int64_t* q_str, const void* k, const int64_t* k_str, const void* v,
                             const int64_t* v_str, const void* saved, const void* dout, const int64_t* dout_str,
                             void* dq, const int64_t* dq_str, void* dk, const int64_t* dk_str, void* dv,
                             const int64_t* dv_str, double scale) = 0;

  // Fused optimizer passes over one tensor of n elements (f32). anchor may be null.
  virtual void sgd_step(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float dampening,
                        float weight_decay, bool nesterov, bool first_step) = 0;
  // Adam/AdamW/L2-SP update of p in place; returns nothing.
  virtual void adam_step(float* p, const float* g, float* m, float* v, float* vmax, const float* anchor, int64_t n,
                         const AdamStep& h) = 0;
  // SPD pass 1: overwrites p with the plain Adam update w~ (no decay), updates m and v, and computes the sums
  // over the old and new p in the same pass (32 bytes per parameter, the fused-loop floor). They land in *sums
  // by the time synchronize() returns (at once on the CPU), so a step over many tensors waits for the GPU
  // once, not once per tensor; *sums must stay alive until then.
  virtual void spd_adam_pass(float* p, const float* g, float* m, float* v, const float* anchor, int64_t n,
                             const AdamStep& h, SpdSums* sums) = 0;
  // SPD pass 2, only on steps where the condition fired: p -= scale * (p - anchor); a null anchor means 0.
  virtual void spd_project(float* p, const float* anchor, int64_t n, float scale) = 0;
};

// The dispatch point: the CPU kernels, or the CUDA kernels of one GPU when built with SPDLAB_CUDA (or its CPU
// emulation). Asking for a GPU that this build or machine does not have is an spdlab::Error that says why.
Kernels& get(Device device);

// The number of CUDA devices this build can use: 0 without CUDA or without a GPU; the emulation has 1 (or
// SPDLAB_EMULATED_GPUS).
int cuda_device_count();
// Why cuda_device_count() is 0, for messages and test skips ("built without CUDA", the driver's words).
std::string cuda_unavailable_reason();
// Whether the CUDA kernels are the CPU emulation of the CUDA execution model (SPDLAB_CUDA_EMULATE).
bool cuda_is_emulated();
// TF32 tensor-core products for f32 GEMMs on the GPU: off by default (results then match the CPU to float
// rounding); SPDLAB_TF32=1 or set_allow_tf32(true) turns them on.
void set_allow_tf32(bool on);
bool allow_tf32();

// The instruction set the CPU kernels run with: "avx512" (the AVX2 kernels, with spdlab's SGEMM on its AVX-512
// tile: chosen when the CPU has AVX-512F), "avx2" (AVX2 and FMA, chosen when the CPU has both) or "base" (the
// compiler's default target). SPDLAB_CPU_ISA=base|avx2|avx512 in the environment overrides the choice; asking
// for a set the CPU lacks is an error. Results are bit-identical run to run for one ISA, and avx512's are avx2's
// (the SGEMM sums every element in the same order on either tile); base's differ from both.
const char* cpu_isa();

}  // namespace spdlab::kernels
