// Does the cached image loader keep up with training? Measures, on this machine:
//   decode   images/s of `spdlab cache`'s decoding (JPEG files of --src-size, to --size, on --threads threads)
//   build    ms per batch of the loader alone: 8-bit pixels from a cache file, timm's random resized crop and flip
//   step     ms per training step of the model (forward, backward, AdamW) on batches from that loader
//   wait     ms per step the training loop spent blocked in BatchLoader::next (the loader's one worker thread
//            builds the next batch while the step runs): the number that says whether training waits
// and prints one JSON line. Defaults: vit_tiny_patch16_224, batch 64, 224x224, 2 threads.
//
//   loader_bench [--config vit-tiny16|vit-micro] [--batch B] [--steps N] [--images N] [--threads T] [--src-size S]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "bench/bench_common.h"
#include "core/io/image.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "kernels/threads.h"
#include "optim/optim.h"

using namespace spdlab;

int main(int argc, char** argv) {
  std::string config = "vit-tiny16";
  int64_t batch = 64, steps = 4, images = 256, src = 400;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--config") config = v;
    else if (k == "--batch") batch = std::atoll(v);
    else if (k == "--steps") steps = std::atoll(v);
    else if (k == "--images") images = std::atoll(v);
    else if (k == "--threads") threads = std::atoi(v);
    else if (k == "--src-size") src = std::atoll(v);
    else {
      std::fprintf(stderr, "loader_bench: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  models::ViTConfig cfg = models::vit_preset("vit_tiny_patch16_224");
  if (config == "vit-micro") {  // a smoke-test size
    cfg.img_size = 32;
    cfg.patch_size = 8;
    cfg.embed_dim = 64;
    cfg.depth = 1;
    cfg.num_heads = 2;
  } else if (config != "vit-tiny16") {
    std::fprintf(stderr, "loader_bench: --config vit-tiny16 or vit-micro\n");
    return 2;
  }
  cfg.num_classes = 10;
  set_num_threads(threads);
  const int64_t S = cfg.img_size;

  // A folder of JPEGs (photo-like sizes: src x 3/4 src), decoded the way `spdlab cache` does, then cached.
  char tmpl[] = "/tmp/spdlab_loader_bench_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  Generator gen(1);
  const int64_t files = std::min<int64_t>(images, 128);  // the decode rate needs no more; the cache repeats them
  for (int64_t i = 0; i < files; ++i) {
    const std::string cls = dir + "/folder/c" + std::to_string(i % 10);
    std::filesystem::create_directories(cls);
    Tensor img = Tensor::rand({3, src * 3 / 4, src}, gen);
    io::save_image(cls + "/" + std::to_string(i) + ".jpg", img);
  }
  double t0 = bench::now_ms();
  data::Dataset decoded = data::load_image_folder(dir + "/folder", 3, S);
  const double decode_ms = bench::now_ms() - t0;
  // The cache for the loader: `images` images (the decoded ones, repeated), memory-mapped from the file.
  data::Dataset many = decoded;
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(images * 3 * S * S));
  for (int64_t i = 0; i < images; ++i)
    std::copy_n(decoded.pixels.data + (i % files) * 3 * S * S, 3 * S * S, bytes->data() + i * 3 * S * S);
  std::vector<int64_t> labels(images);
  for (int64_t i = 0; i < images; ++i) labels[i] = i % 10;
  many.labels = Tensor::from_vector(labels, {images});
  many.pixels = data::Pixels{bytes->data(), images, 3, S, S, bytes};
  data::write_image_cache(dir + "/cache.safetensors", many, "bench");
  const data::Dataset cached = data::load_image_cache(dir + "/cache.safetensors");

  const data::SampleTransform rrc = data::random_resized_crop_transform({});
  // The loader alone: batches built back to back.
  std::vector<double> build;
  {
    data::BatchLoader loader(cached, {batch, true, true, 0, rrc});
    loader.start_epoch(0);
    data::Batch b;
    double last = bench::now_ms();
    while (loader.next(b)) {
      const double now = bench::now_ms();
      build.push_back(now - last);
      last = now;
    }
  }
  // Training from the loader: the step's time, and the time blocked waiting for the next batch.
  models::VisionTransformer model(cfg, 0);
  model.train();
  auto opt = optim::make_optimizer("adamw", model.named_parameters(), {});
  std::vector<double> step_ms, wait_ms;
  data::BatchLoader loader(cached, {batch, true, true, 0, rrc});
  int64_t epoch = 0;
  loader.start_epoch(epoch);
  for (int64_t s = 0; s < steps + 1; ++s) {  // the first step warms up and is dropped
    data::Batch b;
    const double w0 = bench::now_ms();
    if (!loader.next(b)) {
      loader.start_epoch(++epoch);
      loader.next(b);
    }
    const double w1 = bench::now_ms();
    Tensor loss = cross_entropy(model.forward(model.preprocess(b.x)), b.y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    const double w2 = bench::now_ms();
    if (s > 0) {
      wait_ms.push_back(w1 - w0);
      step_ms.push_back(w2 - w1);
    }
  }
  std::filesystem::remove_all(dir);
  const bench::Timing bt = bench::summarize(build.size() > 1 ? std::vector<double>(build.begin() + 1, build.end()) : build);
  const bench::Timing st = bench::summarize(step_ms), wt = bench::summarize(wait_ms);
  std::printf("{\"bench\":\"loader\",\"config\":\"%s\",\"batch\":%lld,\"image\":%lld,\"threads\":%d,"
              "\"decode_images_per_s\":%.1f,\"decode_src\":\"%lldx%lld jpeg\",\"build_ms_median\":%.2f,"
              "\"loader_images_per_s\":%.1f,\"step_ms_median\":%.2f,\"wait_ms_median\":%.3f,\"wait_ms_max\":%.3f,"
              "\"build_over_step\":%.4f,\"wait_over_step\":%.4f,\"steps\":%lld}\n",
              config.c_str(), static_cast<long long>(batch), static_cast<long long>(S), threads,
              files / (decode_ms / 1000.0), static_cast<long long>(src), static_cast<long long>(src * 3 / 4), bt.median,
              batch / (bt.median / 1000.0), st.median, wt.median, *std::max_element(wait_ms.begin(), wait_ms.end()),
              bt.median / st.median, wt.median / st.median, static_cast<long long>(steps));
  return 0;
}
