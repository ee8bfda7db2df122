// Labelled datasets from a directory tree root/<class>/<image> (torchvision's ImageFolder layout), decoded once
// to 8-bit pixels at the model's resolution, and the decode cache: the same pixels in a safetensors file that
// is memory-mapped when read, so a large folder is decoded once, not once per run.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "data/idx.h"

namespace spdlab::data {

// The classes (subdirectories of root, sorted by name; label = position) and the images (files ending in .png,
// .jpg, .jpeg or .bmp, any case, sorted by name within a class). Errors name the root on a missing root, a root
// without class directories, and a class directory without images.
struct FolderListing {
  std::vector<std::string> classes;
  std::vector<std::string> files;  // every image, class by class
  std::vector<int64_t> labels;     // the class of each file
};
FolderListing list_image_folder(const std::string& root);

// Called from the calling thread while decoding: images done so far, of total.
using DecodeProgress = std::function<void(int64_t done, int64_t total)>;

// Every image of the folder loaded with `channels` (1 or 3), its shorter side resized to `size` (bilinear,
// antialiased), the central size x size square kept (torchvision's Resize(size) + CenterCrop(size)), then
// rounded to 8 bits. Decoding runs on get_num_threads() threads; the result does not depend on their number.
// An unreadable image stops it with an error that names the file.
Dataset load_image_folder(const std::string& root, int channels, int64_t size, const DecodeProgress& progress = {});

// The decode cache: a safetensors file with `labels` (I64 [N]) and `pixels` (U8 [N, C, S, S]), and metadata
// format = spdlab-image-cache, classes (a JSON array of names), source, size and channels. Written atomically.
void write_image_cache(const std::string& path, const Dataset& d, const std::string& source);
// Reads a cache written by write_image_cache: the pixels stay in the memory-mapped file. Checks the format, the
// shapes and every label.
Dataset load_image_cache(const std::string& path);

// Relabels `d` so that each class gets its position in `classes` (the training set's), matching by name. Sets
// with other class names are refused with one error that lists what each side lacks.
void align_classes(Dataset& d, const std::vector<std::string>& classes, const std::string& what,
                   const std::string& reference_what);

}  // namespace spdlab::data
