// VisionTransformer with timm's state_dict names, presets, checkpoint loading (timm, spdlab, or Hugging Face
// ViTForImageClassification files), head replacement and position-embedding resampling.
#pragma once
#include <map>
#include <string>

#include "nn/layers.h"

namespace spdlab::models {

struct ViTConfig {
  int64_t img_size = 224, in_chans = 3, patch_size = 16, embed_dim = 192, depth = 12, num_heads = 3;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;
  double eps = 1e-6;
  double drop_rate = 0.0;
  std::vector<float> mean{0.5f}, std{0.5f};  // input normalization the model was trained with, per channel

  void validate() const;
  std::map<std::string, std::string> to_metadata() const;  // written into checkpoints
  static ViTConfig from_metadata(const std::map<std::string, std::string>& meta, const std::string& file);
};

// Known presets: vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224 (timm's dims, ImageNet
// normalization) and vit_fmnist_{tiny,small} for 28x28 grayscale (patch 4).
ViTConfig vit_preset(const std::string& name);
std::vector<std::string> vit_preset_names();

class VisionTransformer : public nn::Module {
 public:
  VisionTransformer(const ViTConfig& cfg, uint64_t seed = 0);

  Tensor forward(const Tensor& x);           // images [B, C, H, W] (normalized) -> logits [B, num_classes]
  Tensor forward_features(const Tensor& x);  // -> the normed class token [B, D]
  const ViTConfig& config() const { return cfg_; }
  // Replaces the head with a fresh trunc-normal one for a new number of classes.
  void reset_head(int64_t num_classes, uint64_t seed);
  // The generator every dropout layer of the model draws from (a resumed run restores its state).
  Generator& dropout_generator() { return drop_gen_; }

  std::shared_ptr<nn::PatchEmbed> patch_embed;
  Tensor& cls_token;  // [1, 1, D]
  Tensor& pos_embed;  // [1, 1 + N, D]
  std::vector<std::shared_ptr<nn::Block>> blocks;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> head;

 private:
  ViTConfig cfg_;
  Generator drop_gen_;
  std::shared_ptr<nn::Linear> make_head(int64_t num_classes, Generator& gen);
};

// Maps Hugging Face ViTForImageClassification keys to timm's (q, k, v concatenated into qkv). Keys already in
// timm's form pass through unchanged.
std::map<std::string, Tensor> hf_to_timm(const std::map<std::string, Tensor>& state);

// Bilinear resampling (align_corners=False) of pos_embed [1, 1 + g0*g0, D] to a new grid g1 x g1; the class
// token's embedding is kept.
Tensor resample_pos_embed(const Tensor& pos_embed, int64_t new_grid);

struct LoadOptions {
  std::vector<std::string> ignore;  // key patterns left at their fresh values (e.g. "head.*")
  bool strict = true;
  // A pos_embed for another grid is resampled (bilinear, as timm does) to the model's; off, it is an error.
  bool resample_pos_embed = true;
};

// Loads a checkpoint into `model`: HF names are mapped, pos_embed is resampled when the grid differs.
void load_checkpoint(VisionTransformer& model, const std::map<std::string, Tensor>& state, const LoadOptions& opt = {});

// Reads config and weights from a file spdlab wrote (its metadata holds the config). For a timm or HF file
// without spdlab metadata, pass the preset (and num_classes via cfg) explicitly.
// `device`: where the weights go (the model is moved there before loading, and each tensor is copied from the
// file straight into its device slot).
std::shared_ptr<VisionTransformer> load_vit(const std::string& path, Device device = Device::cpu);
std::shared_ptr<VisionTransformer> load_vit(const std::string& path, const ViTConfig& cfg, const LoadOptions& opt,
                                            Device device = Device::cpu);
// Atomic save with the config (and any extra metadata) in the header.
void save_vit(const VisionTransformer& model, const std::string& path,
              const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace spdlab::models
