// LoRA (Hu et al., ICLR 2022): a frozen layer W learns only a low-rank change, W + (alpha / r) B A, with
// A [r, in] and B [out, r]. Adapters are attached to Linear modules by name and carry PEFT's names
// ("blocks.0.attn.qkv.lora_A.weight"), so an adapter file reads like PEFT's without its "base_model.model." prefix.
//
// spdlab computes the adapted layer as a reparametrized weight, linear(x, W + s B A): every fused path (layer
// norm + qkv, GELU + fc2) and every device runs it unchanged, and backward gives A and B their exact gradients
// through dW. The cost: a step computes the full dW, as full fine-tuning does (PEFT's x A^T B^T form skips it);
// the savings are in optimizer state and in what is saved. Merging makes the layer plain again.
#pragma once
#include <string>
#include <vector>

#include "nn/layers.h"

namespace spdlab::nn {

struct LoRAOptions {
  int64_t rank = 8;
  double alpha = 8;  // the scale is alpha / rank, as PEFT's lora_alpha
  // Linear modules adapted: those whose dotted name ends in one of these (a ViT's four per block).
  std::vector<std::string> targets = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
  uint64_t seed = 0;  // draws every A, in module order
};

// Attaches adapters to every targeted Linear below `model`; returns their names. Fails when nothing matches or a
// target already has adapters. The base weights keep requires_grad: freezing them is the trainer's choice
// (optim::lora_groups with freeze_unlisted).
std::vector<std::string> add_lora(Module& model, const LoRAOptions& o);
bool has_lora(Module& model);
void merge_lora(Module& model);    // every adapter into its weight; forward gives the same bits as before
void unmerge_lora(Module& model);  // and back, up to float rounding
// Detaches every adapter, first merging it into its weight when `merge` (a plain model with timm's names).
void remove_lora(Module& model, bool merge = true);

// True for an adapter tensor's name (".lora_A." or ".lora_B." in it).
bool is_lora_name(const std::string& name);
// The adapters' tensors, in parameter order.
NamedTensors lora_parameters(Module& model);

// An adapter file: the adapters and any `extra` tensors (a trained head), with metadata spdlab.lora holding rank,
// alpha and targets as JSON. Written atomically.
void save_lora(Module& model, const LoRAOptions& o, const std::string& path, const NamedTensors& extra = {},
               std::map<std::string, std::string> metadata = {});
// Reads an adapter file into `model`: attaches adapters as its metadata says where the model has none (a file
// without spdlab.lora needs `fallback`), then loads every tensor by name; PEFT's "base_model.model." prefix is
// dropped. Unknown names, missing adapters and shape mismatches are one error naming them.
LoRAOptions load_lora(Module& model, const std::string& path, const LoRAOptions* fallback = nullptr);

}  // namespace spdlab::nn
