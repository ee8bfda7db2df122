// A labelled dataset from a directory tree root/<class>/<image>, the layout of torchvision's
// ImageFolder. Every image is decoded and resized once, into memory; no lazy loading.
#pragma once
#include <string>

#include "data/idx.h"

namespace spdlab::data {

// Classes are the subdirectories of root sorted by name (label = position); images are the files with
// extension .png, .jpg, .jpeg or .bmp (any case), sorted by name. Each image is loaded with `channels`
// (1 or 3), resized bilinearly with antialiasing so its shorter side is `size`, then center-cropped to
// size x size (torchvision's Resize(size) + CenterCrop(size), so the aspect ratio is kept).
// Errors name the root on a missing root, no class directories, or a class without images.
Dataset load_image_folder(const std::string& root, int channels, int64_t size);

}  // namespace spdlab::data
