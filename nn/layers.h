// The layers of a timm Vision Transformer. Member names equal timm's state_dict keys, and weights keep
// PyTorch's layouts (Linear [out, in], the patch projection [D, C, P, P]), so checkpoints load without transposes.
#pragma once
#include "core/ops.h"
#include "nn/module.h"

namespace spdlab::nn {

namespace init {
// Normal(0, std) truncated to [-2 std, 2 std] by redrawing, as timm's trunc_normal_ (in effect).
void trunc_normal_(Tensor& t, double std, Generator& gen);
void normal_(Tensor& t, double std, Generator& gen);
}  // namespace init

struct Linear : Module {  // [..., in] -> [..., out]
  Tensor& weight;
  Tensor* bias = nullptr;
  // LoRA adapters (nn/lora.h), PEFT's names and layouts: lora_A.weight [rank, in], lora_B.weight [out, rank].
  std::shared_ptr<Linear> lora_A, lora_B;
  double lora_scale = 0;     // alpha / rank
  bool lora_merged = false;  // scale B A has been added into weight; forward uses weight alone
  Linear(int64_t in, int64_t out, bool with_bias, Generator& gen);
  // With a residual (the output's shape): residual + the layer's output, added as the product writes it.
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const {
    return linear(x, effective_weight(), bias_or_none(), residual);
  }
  Tensor bias_or_none() const { return bias ? *bias : Tensor(); }
  // The weight the layer applies: weight + lora_scale * lora_B.weight @ lora_A.weight with unmerged adapters,
  // weight otherwise. Every forward (the fused ones in Block and Mlp too) goes through it.
  Tensor effective_weight() const;
  // Attaches adapters of rank r: A drawn as PEFT draws it (uniform in +-1/sqrt(in), torch's kaiming_uniform_ with
  // a = sqrt(5)) and B = 0, so the layer computes what it did before.
  void add_lora(int64_t rank, double alpha, Generator& gen);
  void merge_lora();    // weight += scale B A (no-op when merged)
  void unmerge_lora();  // weight -= scale B A (no-op when not merged): weight back up to float rounding
  void remove_lora(bool merge);  // detaches the adapters, first merging them into weight when `merge`
};

struct LayerNorm : Module {  // normalizes the last dim
  Tensor& weight;
  Tensor& bias;
  double eps;
  LayerNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
};

struct Dropout : Module {
  double p;
  Generator* gen;  // the model's dropout stream; identity in eval mode
  Dropout(double p, Generator* gen);
  Tensor forward(const Tensor& x) const;
};

// The MLP's activation: exact GELU (timm's ViTs, open_clip models trained with nn.GELU) or QuickGELU,
// x * sigmoid(1.702 x), which OpenAI's CLIP weights were trained with.
enum class Activation { gelu, quick_gelu };
Activation parse_activation(const std::string& name);  // "gelu" or "quick_gelu"
std::string activation_name(Activation a);

// x * sigmoid(1.702 x), composed from ops that each have a backward (sigmoid is core/ops.h's).
Tensor quick_gelu(const Tensor& x);

struct GELU : Module {
  GeluApprox approx;
  Activation kind;
  explicit GELU(GeluApprox a = GeluApprox::none, Activation k = Activation::gelu) : approx(a), kind(k) {}
  Tensor forward(const Tensor& x) const { return kind == Activation::quick_gelu ? quick_gelu(x) : gelu(x, approx); }
};

struct Mlp : Module {  // fc1 -> activation -> dropout -> fc2 -> dropout
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<GELU> act;
  std::shared_ptr<Dropout> drop;
  Mlp(int64_t dim, int64_t hidden, double drop_p, Generator& gen, Generator* drop_gen,
      Activation activation = Activation::gelu);
  Tensor forward(const Tensor& x) const { return forward_hidden(fc1->forward(x)); }
  // The rest of the MLP, from fc1's output; with a residual, residual + that (in fc2's epilogue when it can).
  Tensor forward_hidden(const Tensor& h, const Tensor& residual = Tensor()) const;
};

struct Attention : Module {  // [B, N, C] -> [B, N, C], fused qkv like timm
  std::shared_ptr<Linear> qkv, proj;
  int64_t num_heads;
  Attention(int64_t dim, int64_t heads, bool qkv_bias, Generator& gen);
  Tensor forward(const Tensor& x) const { return forward_qkv(qkv->forward(x)); }
  // The rest of the attention, from qkv's output; for the first `queries` tokens only (-1 = all); with a
  // residual, residual + that, in proj's epilogue.
  Tensor forward_qkv(const Tensor& qkv_out, int64_t queries = -1, const Tensor& residual = Tensor()) const;
};

struct Block : Module {  // pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<Mlp> mlp;
  Block(int64_t dim, int64_t heads, double mlp_ratio, double eps, double drop_p, Generator& gen, Generator* drop_gen,
        Activation activation = Activation::gelu);
  Tensor forward(const Tensor& x) const;
  // The same block as the equations read, module by module and without dropout:
  //   h = x + proj(attention(q, k, v)) with q, k, v the heads of qkv(norm1(x)); out = h + fc2(act(fc1(norm2(h)))).
  // forward() computes this with fused ops (layer norm + linear, attention on qkv, GELU + linear); tests check
  // the two equal (tests/test_reference_paths.cpp).
  Tensor forward_reference(const Tensor& x) const;
  // Row 0 of forward(x), as [B, 1, C], computing only what reaches it: the class token's query attends to
  // every token's key and value, and proj, norm2 and the MLP run on one row per image. A class-token
  // classifier's last block needs nothing else. With MLP dropout in training, masks are drawn for that row only.
  Tensor forward_class_token(const Tensor& x) const;

 private:
  Tensor forward_queries(const Tensor& x, int64_t queries) const;  // the first `queries` rows; -1 = all
};

struct PatchEmbed : Module {  // [B, C, H, W] -> [B, (H/P)(W/P), D]
  struct Proj : Module {
    Tensor& weight;          // [D, C, P, P], as timm's Conv2d
    Tensor* bias = nullptr;  // [D]; CLIP's patch embedding has none
    Proj(int64_t in_chans, int64_t dim, int64_t patch, bool with_bias, Generator& gen);
  };
  std::shared_ptr<Proj> proj;
  int64_t img_size, patch_size, in_chans, embed_dim;
  PatchEmbed(int64_t img, int64_t patch, int64_t in_chans, int64_t dim, Generator& gen, bool with_bias = true);
  int64_t num_patches() const { return (img_size / patch_size) * (img_size / patch_size); }
  Tensor forward(const Tensor& x) const;
};

struct Embedding : Module {  // int64 indices [...] -> [..., dim]
  Tensor& weight;
  Embedding(int64_t num, int64_t dim, Generator& gen);
  Tensor forward(const Tensor& idx) const;
};

}  // namespace spdlab::nn
