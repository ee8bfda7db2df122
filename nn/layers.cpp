// Layer constructors (timm's initialization) and forwards. Shapes are in the header.
#include "nn/layers.h"

#include <cmath>

#include "core/autograd.h"

namespace spdlab::nn {

namespace init {
void trunc_normal_(Tensor& t, double std, Generator& gen) {
  SPDLAB_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "trunc_normal_: expected a contiguous f32 tensor");
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v;
    do v = gen.next_normal();
    while (v < -2.0 || v > 2.0);
    p[i] = static_cast<float>(v * std);
  }
}
void normal_(Tensor& t, double std, Generator& gen) {
  SPDLAB_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "normal_: expected a contiguous f32 tensor");
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(gen.next_normal() * std);
}
}  // namespace init

static Tensor trunc(const Shape& s, double std, Generator& gen) {
  Tensor t = Tensor::empty(s);
  init::trunc_normal_(t, std, gen);
  return t;
}

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen)
    : weight(register_parameter("weight", trunc({out, in}, 0.02, gen))) {
  SPDLAB_CHECK(in > 0 && out > 0, "Linear: in and out features must be positive, got ", in, ", ", out);
  if (with_bias) bias = &register_parameter("bias", Tensor::zeros({out}));
}

// scale B A: what the adapters add to the weight.
static Tensor lora_delta(const Linear& l) { return mul(matmul(l.lora_B->weight, l.lora_A->weight), l.lora_scale); }

Tensor Linear::effective_weight() const {
  if (!lora_A || lora_merged) return weight;
  return add(weight, lora_delta(*this));
}

void Linear::add_lora(int64_t rank, double alpha, Generator& gen) {
  SPDLAB_CHECK(!lora_A, "Linear::add_lora: the layer already has adapters");
  const int64_t out = weight.size(0), in = weight.size(1);
  SPDLAB_CHECK(rank >= 1 && rank <= std::min(in, out), "Linear::add_lora: rank must be in [1, ", std::min(in, out),
               "] for a [", out, ", ", in, "] weight; got ", rank);
  SPDLAB_CHECK(std::isfinite(alpha) && alpha > 0, "Linear::add_lora: alpha must be > 0; got ", alpha);
  lora_A = register_module("lora_A", std::make_shared<Linear>(in, rank, false, gen));
  lora_B = register_module("lora_B", std::make_shared<Linear>(rank, out, false, gen));
  autograd::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  lora_A->weight.copy_(Tensor::uniform({rank, in}, -bound, bound, gen, weight.dtype()).to(weight.device()));
  lora_B->weight.copy_(Tensor::zeros({out, rank}, weight.dtype(), weight.device()));
  lora_scale = alpha / static_cast<double>(rank);
  lora_merged = false;
}

void Linear::merge_lora() {
  if (!lora_A || lora_merged) return;
  autograd::NoGradGuard no_grad;
  weight.copy_(effective_weight());  // the same ops as the unmerged forward: the merged layer gives its bits
  lora_merged = true;
}

void Linear::unmerge_lora() {
  if (!lora_A || !lora_merged) return;
  autograd::NoGradGuard no_grad;
  weight.copy_(sub(weight, lora_delta(*this)));
  lora_merged = false;
}

void Linear::remove_lora(bool merge) {
  if (!lora_A) return;
  if (merge) merge_lora();
  else unmerge_lora();
  remove_module("lora_A");
  remove_module("lora_B");
  lora_A.reset();
  lora_B.reset();
  lora_scale = 0;
  lora_merged = false;
}

LayerNorm::LayerNorm(int64_t dim, double e)
    : weight(register_parameter("weight", Tensor::ones({dim}))),
      bias(register_parameter("bias", Tensor::zeros({dim}))),
      eps(e) {}

Dropout::Dropout(double p_, Generator* g) : p(p_), gen(g) {
  SPDLAB_CHECK(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got ", p);
}

Tensor Dropout::forward(const Tensor& x) const {
  if (!is_training() || p == 0) return x;
  SPDLAB_CHECK(gen != nullptr, "Dropout: training with p = ", p, " needs a generator");
  return dropout(x, p, true, *gen);
}

Activation parse_activation(const std::string& name) {
  if (name == "gelu") return Activation::gelu;
  if (name == "quick_gelu") return Activation::quick_gelu;
  SPDLAB_FAIL("unknown activation '", name, "'; expected gelu or quick_gelu");
}

std::string activation_name(Activation a) { return a == Activation::quick_gelu ? "quick_gelu" : "gelu"; }

Tensor quick_gelu(const Tensor& x) { return mul(x, sigmoid(mul(x, 1.702))); }

Mlp::Mlp(int64_t dim, int64_t hidden, double drop_p, Generator& gen, Generator* drop_gen, Activation activation) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, true, gen));
  act = register_module("act", std::make_shared<GELU>(GeluApprox::none, activation));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, true, gen));
  drop = register_module("drop", std::make_shared<Dropout>(drop_p, drop_gen));
}

Tensor Mlp::forward_hidden(const Tensor& h, const Tensor& residual) const {
  // Without dropout between them, GELU and fc2 run as one op that keeps only h for backward (half the
  // MLP's saved activations); the result is the same.
  if (act->kind == Activation::gelu && act->approx == GeluApprox::none && (!drop->is_training() || drop->p == 0))
    return gelu_linear(h, fc2->effective_weight(), fc2->bias_or_none(), residual);
  Tensor out = drop->forward(fc2->forward(drop->forward(act->forward(h))));
  return residual.defined() ? add(residual, out) : out;
}

Attention::Attention(int64_t dim, int64_t heads, bool qkv_bias, Generator& gen) : num_heads(heads) {
  SPDLAB_CHECK(heads > 0 && dim % heads == 0, "Attention: dim ", dim, " is not divisible by num_heads ", heads);
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, qkv_bias, gen));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, true, gen));
}

Tensor Attention::forward_qkv(const Tensor& qkv_out, int64_t queries, const Tensor& residual) const {
  return proj->forward(qkv_attention(qkv_out, num_heads, std::nullopt, queries), residual);
}

Block::Block(int64_t dim, int64_t heads, double mlp_ratio, double eps, double drop_p, Generator& gen,
             Generator* drop_gen, Activation activation) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim, eps));
  attn = register_module("attn", std::make_shared<Attention>(dim, heads, true, gen));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim, eps));
  int64_t hidden = static_cast<int64_t>(std::llround(dim * mlp_ratio));
  mlp = register_module("mlp", std::make_shared<Mlp>(dim, hidden, drop_p, gen, drop_gen, activation));
}

Tensor Block::forward(const Tensor& x) const { return forward_queries(x, -1); }

Tensor Block::forward_reference(const Tensor& x) const {
  SPDLAB_CHECK(x.dim() == 3, "Block::forward_reference: expected tokens [B, N, C], got ", shape_str(x.shape()));
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = attn->num_heads, D = C / H;
  Tensor qkv = attn->qkv->forward(norm1->forward(x));                    // [B, N, 3C]: q, k, v side by side
  Tensor heads = qkv.reshape({B, N, 3, H, D}).permute({2, 0, 3, 1, 4});  // [3, B, H, N, D]
  Tensor a = attention_reference(heads.select(0, 0), heads.select(0, 1), heads.select(0, 2));  // [B, H, N, D]
  Tensor h = add(x, attn->proj->forward(a.transpose(1, 2).reshape({B, N, C})));  // heads merged back, projected
  return add(h, mlp->fc2->forward(mlp->act->forward(mlp->fc1->forward(norm2->forward(h)))));
}

Tensor Block::forward_class_token(const Tensor& x) const {
  SPDLAB_CHECK(x.dim() == 3 && x.size(1) >= 1, "Block::forward_class_token: expected tokens [B, N, C], got ",
               shape_str(x.shape()));
  return forward_queries(x, 1);
}

Tensor Block::forward_queries(const Tensor& x_in, int64_t queries) const {
  // norm1 with attn.qkv, and norm2 with mlp.fc1, each run as one op that keeps the block's residual stream
  // for backward instead of its normalized copy; proj and fc2 add the residual stream as they write their
  // outputs. The result is the same, to the bit.
  const Linear &qkv = *attn->qkv, &fc1 = *mlp->fc1;
  Tensor qkv_out =
      layer_norm_linear(x_in, norm1->weight, norm1->bias, norm1->eps, qkv.effective_weight(), qkv.bias_or_none());
  Tensor x = attn->forward_qkv(qkv_out, queries, queries == -1 ? x_in : x_in.narrow(1, 0, queries));
  return mlp->forward_hidden(
      layer_norm_linear(x, norm2->weight, norm2->bias, norm2->eps, fc1.effective_weight(), fc1.bias_or_none()), x);
}

PatchEmbed::Proj::Proj(int64_t in_chans, int64_t dim, int64_t patch, bool with_bias, Generator& gen)
    : weight(register_parameter("weight", trunc({dim, in_chans, patch, patch}, 0.02, gen))) {
  if (with_bias) bias = &register_parameter("bias", Tensor::zeros({dim}));
}

PatchEmbed::PatchEmbed(int64_t img, int64_t patch, int64_t chans, int64_t dim, Generator& gen, bool with_bias)
    : img_size(img), patch_size(patch), in_chans(chans), embed_dim(dim) {
  SPDLAB_CHECK(patch > 0 && img % patch == 0, "PatchEmbed: img_size ", img, " is not divisible by patch_size ", patch);
  proj = register_module("proj", std::make_shared<Proj>(chans, dim, patch, with_bias, gen));
}

Tensor PatchEmbed::forward(const Tensor& x) const {
  SPDLAB_CHECK(x.dim() == 4 && x.size(1) == in_chans && x.size(2) == img_size && x.size(3) == img_size,
               "PatchEmbed: expected images [B, ", in_chans, ", ", img_size, ", ", img_size, "], got ",
               shape_str(x.shape()));
  // A stride-P convolution is a product of the unfolded patches with the flattened kernel.
  Tensor patches = unfold_patches(x, patch_size);  // [B, N, C*P*P]
  return linear(patches, proj->weight.reshape({embed_dim, -1}), proj->bias ? *proj->bias : Tensor());
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen)
    : weight(register_parameter("weight", Tensor::empty({num, dim}))) {
  init::normal_(weight, 1.0, gen);
}

Tensor Embedding::forward(const Tensor& idx) const {
  Shape out = idx.shape();
  out.push_back(weight.size(1));
  return index_select(weight, 0, idx.reshape({-1})).reshape(out);
}

}  // namespace spdlab::nn
