// Image files to tensors (stb_image, built with its PNG, JPEG and BMP decoders only) and the resampling,
// cropping and normalization that image models expect. Images are f32 [C, H, W] on the CPU.
// Writing is for making datasets (PNG, JPEG, BMP through stb_image_write); no color management; batches of
// images are the data/ layer's job.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace spdlab::io {

// f32 [channels, H, W] in [0, 1] (8-bit / 255). channels is 1 or 3; stb_image converts RGB to gray
// with its integer weights (77 R + 150 G + 29 B) / 256, and gray to RGB by repeating the plane.
Tensor load_image(const std::string& path, int channels = 3);
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // larger headers are refused before decoding

// img f32 [C, H, W] (C 1 or 3) in [0, 1], rounded to 8 bits -> a .png, .jpg / .jpeg (quality 95) or .bmp file,
// chosen by the extension; written atomically (a temporary file, then a rename).
void save_image(const std::string& path, const Tensor& img);

enum class Interp { bilinear, bicubic };

// img [C, H, W] f32 -> [C, out_h, out_w], separable (rows first, then columns), accumulated in double.
// Both filters sample at pixel centers (align_corners=False) and renormalize the taps that fall
// inside the image, which is PIL's scheme. They match, up to float rounding:
//   bilinear, antialias=false  == torch.nn.functional.interpolate(mode="bilinear", align_corners=False),
//                                 also when shrinking (only the 2 nearest taps per axis)
//   bilinear, antialias=true   == PIL Image.resize(BILINEAR) on float ("F") images and torch's
//                                 interpolate(..., antialias=True): when shrinking by s the triangle
//                                 widens by s; identical to antialias=false when enlarging
//   bicubic,  antialias=true   == PIL Image.resize(BICUBIC) on "F" images (Keys cubic, a = -0.5);
//                                 PIL rounds 8-bit images after each pass, so on "L"/"RGB" images it
//                                 differs by up to 1/255. Not torch's bicubic, which uses a = -0.75.
//   bicubic,  antialias=false  the same cubic with the fixed 4-tap support
// Bicubic can overshoot [0, 1]; nothing is clipped.
Tensor resize(const Tensor& img, int64_t out_h, int64_t out_w, Interp interp = Interp::bilinear,
              bool antialias = true);

// The central h x w window of img [C, H, W], like torchvision's center_crop (offsets round half to
// even, as Python's round does). Returns a copy.
Tensor center_crop(const Tensor& img, int64_t h, int64_t w);

// (img[c] - mean[c]) / std[c] for img [C, H, W]; mean and std have C entries (or 1, for all channels).
Tensor normalize(const Tensor& img, const std::vector<double>& mean, const std::vector<double>& std);

}  // namespace spdlab::io
