// The image domains of PROTOCOL.md as deterministic transforms of one grayscale image, plus the
// seeded training augmentations (random crop with zero padding, horizontal flip).
// Every random choice comes from the seed passed in, never from global state or the thread schedule.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace spdlab::data {

enum class Domain { clean, noise, blur, contrast, invert, rotate, edge };

// "clean", "noise", ... exactly the enum's names; anything else is an error that lists them.
Domain parse_domain(const std::string& name);
std::string domain_name(Domain d);
const std::vector<Domain>& all_domains();       // the enum's order
const std::vector<Domain>& pretrain_domains();  // all but edge, the fine-tuning domain

// The constants of the protocol, public so tests and reports quote the same numbers.
inline constexpr double kNoiseSigma = 0.3;
inline constexpr double kContrastScale = 0.3;
inline constexpr double kRotateDegrees = 30.0;

// SplitMix64's finalizer: spreads nearby seeds (0, 1, 2, ...) into unrelated generator states.
uint64_t seed_hash(uint64_t x);

// in, out: [H, W] floats in [0, 1]; out must not be `in`. Results depend only on (d, in, H, W, seed):
//   clean     out = in
//   noise     out = clip(in + 0.3 n, 0, 1), n ~ N(0, 1) from Generator(seed_hash(seed)), row-major order
//   blur      the 5x5 binomial kernel ([1 4 6 4 1]/16, separable: rows then columns), applied twice;
//             borders replicate the edge pixel (so a constant image stays constant)
//   contrast  out = 0.5 + 0.3 (in - 0.5)
//   invert    out = 1 - in
//   rotate    30 degrees counter-clockwise as displayed (row 0 at the top, like PIL's Image.rotate(30)
//             and torchvision's rotate(img, 30)) about the center ((W-1)/2, (H-1)/2); bilinear, with
//             taps outside the image reading 0
//   edge      Sobel gradient magnitude sqrt(gx^2 + gy^2) with the unnormalized 3x3 kernels, clipped
//             to [0, 1]; borders replicate
void apply_domain(Domain d, const float* in, float* out, int64_t H, int64_t W, uint64_t seed);

// images: f32 [N, 1, H, W] -> a new [N, 1, H, W]. Image i uses seed ^ seed_hash(i), so a sample's
// result does not depend on the batch it is in or on the number of OpenMP threads.
Tensor apply_domain(Domain d, const Tensor& images, uint64_t seed);

struct AugmentOptions {
  int64_t crop_padding = 0;  // pad every side with zeros by this much, then crop H x W at a random offset
  bool hflip = false;        // mirror left-right with probability 1/2
};
// in, out: [C, H, W], out must not be `in`; the same crop and flip for every channel.
void augment(const float* in, float* out, int64_t C, int64_t H, int64_t W, const AugmentOptions& opt,
             uint64_t seed);

// timm's default fine-tuning augmentation (RandomResizedCropAndInterpolation, then a horizontal flip): a window
// of a random share `scale` of the area and aspect ratio `ratio` (log-uniform), 10 tries and then the central
// crop of the nearest allowed ratio, as torchvision's get_params; resized back to H x W bilinearly with
// antialiasing (io::resize). in, out: [C, H, W], distinct; every choice comes from `seed`.
struct ResizedCropOptions {
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  bool hflip = true;
};
struct CropWindow {
  int64_t top = 0, left = 0, height = 0, width = 0;
};
CropWindow random_resized_crop_window(int64_t H, int64_t W, const ResizedCropOptions& opt, uint64_t seed);
void random_resized_crop(const float* in, float* out, int64_t C, int64_t H, int64_t W, const ResizedCropOptions& opt,
                         uint64_t seed);

}  // namespace spdlab::data
