// Parameter groups for fine-tuning methods: which tensors train, at which lr scale, with which decay. Each
// function takes a model's named_parameters() and returns the groups to give an optimizer; frozen tensors
// (requires_grad false) are left out. The names are timm's (models/vit.h), so the rules go by name.
//
// Every function applies timm's decay split inside its groups: 1-D tensors, biases, cls_token, pos_embed (and
// dist_token, reg_token) get decay_scale 0, everything else 1. A group's decay is weight decay for sgd, adam,
// adamw and l2sp, and SPD's lambda for spd (optim/optimizer.h).
#pragma once
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace spdlab::optim {

// Every trainable tensor: {no-decay group, decay group}, as timm's param_groups_weight_decay.
std::vector<ParamGroup> timm_param_groups(const NamedTensors& named);

// Linear probing (LP): only the classification head (head.weight, head.bias) trains.
std::vector<ParamGroup> linear_probe_groups(const NamedTensors& named);

// BitFit (Ben Zaken et al., 2022): every bias, and the head, train; nothing else does.
std::vector<ParamGroup> bitfit_groups(const NamedTensors& named);

// LoRA (nn/lora.h): the adapters (names with .lora_A. or .lora_B.) and the head train, nothing else. The adapters
// come first, in one group with decay_scale 1 and no anchor: AdamW decays them towards zero, and SPD runs in the
// paper's PEFT mode, where the adapters' deviation from zero is what is projected. The head's groups follow with
// timm's split, anchored as in full fine-tuning. Fails when the model has no adapters.
std::vector<ParamGroup> lora_groups(const NamedTensors& named);

// Layer-wise learning-rate decay (LLRD), as timm's param_groups_layer_decay for a ViT: with L = depth blocks,
// layer 0 is the stem (cls_token, pos_embed, patch_embed, norm_pre), layer i + 1 is blocks.i, and layer L + 1
// everything after the blocks (norm, proj, head). Layer k trains at lr_scale = decay^(L + 1 - k): the head at
// the full lr, each block below it `decay` times slower. decay in (0, 1]; 1 is plain fine-tuning. One group
// per (layer, decay split), in layer order. (timm puts norm_pre in the last layer, by its name matching "^norm";
// here it sits with the stem it follows.)
std::vector<ParamGroup> layer_decay_groups(const NamedTensors& named, double decay);

// The layer id layer_decay_groups gives `name` in a model of `depth` blocks (an unknown name: depth + 1).
int64_t vit_layer_id(const std::string& name, int64_t depth);

// Sets requires_grad false on every trainable tensor of `named` that is in none of `groups`, so backward computes
// no gradient for it; returns the tensors it froze (requires_grad_(true) on them undoes it).
NamedTensors freeze_unlisted(const NamedTensors& named, const std::vector<ParamGroup>& groups);

}  // namespace spdlab::optim
