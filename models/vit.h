// VisionTransformer with timm's state_dict names, presets, checkpoint loading (spdlab, timm, Hugging Face
// ViTForImageClassification, OpenAI / open_clip CLIP and Hugging Face CLIPVisionModel files, the last four
// with their config read from the tensor shapes), head replacement and position-embedding resampling.
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
  // CLIP image towers (timm's vit_*_clip_* models): no bias on the patch projection, a LayerNorm `norm_pre`
  // before the blocks, QuickGELU in the MLPs (OpenAI's weights), and a bias-free projection `proj` from
  // embed_dim to proj_dim between the final norm and the head.
  bool patch_bias = true;
  bool pre_norm = false;
  nn::Activation act = nn::Activation::gelu;
  int64_t proj_dim = 0;  // 0: no projection; the head reads embed_dim features

  int64_t feature_dim() const { return proj_dim > 0 ? proj_dim : embed_dim; }  // what the head reads
  std::string describe() const;  // one line: "embed_dim 192, depth 12, heads 3, ..."

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

  // Images [B, C, H, W], normalized as timm's models expect: preprocess() does that from [0, 1] pixels, and
  // is the one place spdlab normalizes (the training and evaluation loops, predict and the benchmarks call it).
  Tensor forward(const Tensor& x);           // -> logits [B, num_classes]
  Tensor forward_features(const Tensor& x);  // -> the normed class token, projected if proj_dim > 0 [B, F]
  // Pixels in [0, 1], [B, C, H, W] on any device -> (x - mean) / std per channel with the config's values, on
  // the same device. forward(preprocess(x)) is what a model trained on [0, 1] images by spdlab sees.
  Tensor preprocess(const Tensor& pixels) const;
  const ViTConfig& config() const { return cfg_; }
  // Replaces the head with a fresh trunc-normal one for a new number of classes.
  void reset_head(int64_t num_classes, uint64_t seed);
  // The generator every dropout layer of the model draws from (a resumed run restores its state).
  Generator& dropout_generator() { return drop_gen_; }

  std::shared_ptr<nn::PatchEmbed> patch_embed;
  Tensor& cls_token;  // [1, 1, D]
  Tensor& pos_embed;  // [1, 1 + N, D]
  std::shared_ptr<nn::LayerNorm> norm_pre;  // pre_norm only
  std::vector<std::shared_ptr<nn::Block>> blocks;
  std::shared_ptr<nn::LayerNorm> norm;
  std::shared_ptr<nn::Linear> proj;  // proj_dim > 0 only: weight [proj_dim, D], no bias
  std::shared_ptr<nn::Linear> head;

 private:
  ViTConfig cfg_;
  Generator drop_gen_;
  std::shared_ptr<nn::Linear> make_head(int64_t num_classes, Generator& gen);
};

// Maps Hugging Face ViTForImageClassification keys to timm's (q, k, v concatenated into qkv). Keys already in
// timm's form pass through unchanged.
std::map<std::string, Tensor> hf_to_timm(const std::map<std::string, Tensor>& state);

// The naming scheme of a checkpoint's tensors, told from its keys.
enum class Layout {
  timm,         // cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv, ...}, norm, head (spdlab's too)
  hf_vit,       // vit.embeddings.*, vit.encoder.layer.N.*, classifier (ViTForImageClassification)
  openai_clip,  // visual.conv1, visual.class_embedding, visual.transformer.resblocks.N.*, visual.proj
  hf_clip,      // vision_model.embeddings.*, vision_model.encoder.layers.N.*, visual_projection
};
std::string layout_name(Layout l);
// Fails, naming `file` and a few of its keys, when no layout fits.
Layout detect_layout(const std::vector<std::string>& keys, const std::string& file);

// Renames a checkpoint of any layout into timm's names (q, k, v joined into qkv; CLIP's class and position
// embeddings reshaped to cls_token [1, 1, D] and pos_embed [1, 1 + N, D]; visual.proj [D, E] transposed into
// proj.weight [E, D]). A CLIP file's text tower (and HF's position_ids buffer) is dropped and counted in
// `dropped`. Unknown keys pass through for load_state_dict to report.
std::map<std::string, Tensor> to_timm_names(const std::map<std::string, Tensor>& state, Layout layout,
                                            int64_t* dropped = nullptr);

// A checkpoint's architecture read from the shapes of its tensors (already in timm's names): patch size and
// channels from patch_embed.proj.weight, width from it too, image size from pos_embed's grid, depth from the
// blocks, MLP width from fc1, classes from the head (0 when there is none), a norm_pre, a patch bias and a
// projection when present. What shapes cannot tell is taken as follows, and each is listed in `assumed`:
// heads = width / 64 unless `num_heads` > 0; LayerNorm eps, activation and normalization from the layout
// (timm: 1e-6, GELU, mean = std = 0.5 as its augreg ViTs; HF ViT: 1e-12; CLIP: 1e-5, QuickGELU as OpenAI's
// weights, OpenAI's mean/std).
ViTConfig infer_config(const std::map<std::string, Shape>& shapes, Layout layout, int64_t num_heads,
                       const std::string& file, std::vector<std::string>* assumed = nullptr);

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

// What a checkpoint file is and how it would load: the layout, the config (from spdlab's metadata, a preset,
// or the shapes), and the lines a command prints about it. Reads the header only.
struct ModelSpec {
  std::string arch;         // a preset name; empty: spdlab's metadata, or else the shapes
  int64_t num_heads = 0;    // > 0: overrides the metadata or the width / 64 default
  int64_t num_classes = 0;  // > 0 and unlike the file's: the head is replaced by a fresh one of this size
  std::string act;          // "gelu" or "quick_gelu": overrides the layout's default
  std::vector<float> mean, std;  // non-empty: override the input normalization
  std::vector<std::string> ignore;  // key patterns in the file left unloaded
  uint64_t head_seed = 0;   // the fresh head's initialization
};
struct ModelInfo {
  Layout layout = Layout::timm;
  bool spdlab_metadata = false;
  ViTConfig cfg;               // the model that will be built (num_classes after any replacement)
  int64_t file_classes = 0;    // the head in the file (0: none, as in a CLIP tower)
  bool fresh_head = false;     // the head is initialized, not loaded
  std::vector<std::string> notes;  // what was inferred, assumed or replaced, for the console
};
ModelInfo inspect_model(const std::string& path, const ModelSpec& spec = {});
// Builds and loads the model that inspect_model describes. A fresh head is the only part not from the file.
std::shared_ptr<VisionTransformer> load_model(const std::string& path, const ModelSpec& spec = {},
                                              Device device = Device::cpu, ModelInfo* info = nullptr);

// Reads config and weights from a file spdlab wrote (its metadata holds the config). For a timm or HF file
// without spdlab metadata, pass the preset (and num_classes via cfg) explicitly, or use load_model.
// `device`: where the weights go (the model is moved there before loading, and each tensor is copied from the
// file straight into its device slot).
std::shared_ptr<VisionTransformer> load_vit(const std::string& path, Device device = Device::cpu);
std::shared_ptr<VisionTransformer> load_vit(const std::string& path, const ViTConfig& cfg, const LoadOptions& opt,
                                            Device device = Device::cpu);
// Atomic save with the config (and any extra metadata) in the header.
void save_vit(const VisionTransformer& model, const std::string& path,
              const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace spdlab::models
