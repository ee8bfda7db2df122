// The study's commands: pretrain the foundation ViT, fine-tune it on a new domain, evaluate it per domain.
// `compare` (the whole study) lives in compare.cpp.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "core/io/svg.h"
#include "data/image_folder.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "examples/cli/data_source.h"
#include "examples/cli/run_state.h"
#include "examples/cli/study.h"
#include "examples/cli/train.h"
#include "kernels/threads.h"

namespace spdlab::cli {

std::string command_line(int argc, char** argv) {
  std::string s = "spdlab";
  for (int i = 1; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

std::pair<int64_t, int64_t> parse_range(const std::string& flag, const std::string& s, int64_t n) {
  size_t colon = s.find(':');
  SPDLAB_CHECK(colon != std::string::npos, "--", flag, " expects BEGIN:END, got '", s, "'");
  char* e1 = nullptr;
  char* e2 = nullptr;
  long long b = std::strtoll(s.c_str(), &e1, 10), e = std::strtoll(s.c_str() + colon + 1, &e2, 10);
  SPDLAB_CHECK(e1 == s.c_str() + colon && *e2 == '\0' && 0 <= b && b < e && e <= n, "--", flag, " '", s,
               "' must be BEGIN:END with 0 <= BEGIN < END <= ", n);
  return {b, e};
}

std::vector<data::Domain> parse_domains(const std::vector<std::string>& names) {
  std::vector<data::Domain> out;
  for (const auto& n : names) out.push_back(data::parse_domain(n));
  return out;
}

void check_optimizer_name(const std::string& kind) {
  std::string all;
  for (const auto& k : optim::optimizer_kinds()) {
    if (k == kind) return;
    all += (all.empty() ? "" : ", ") + k;
  }
  SPDLAB_FAIL("--optim: unknown optimizer '", kind, "'; expected one of: ", all);
}

const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v = optim::optimizer_kinds();
    for (const char* m : {"lp", "bitfit", "llrd", "lpft", "lora", "lora_spd"}) v.push_back(m);
    return v;
  }();
  return names;
}

std::string method_color(const std::string& name) {
  if (name == "pretrained") return "#555555";
  // Fourteen methods, the palette's fourteen colours; AdamW (the baseline) and SPD get the two most distinct.
  static const std::vector<std::string> order = {"adamw", "adam", "spd",  "l2sp", "mars_sp", "lp",   "bitfit",
                                                 "llrd",  "lpft", "sgd",  "ftp",  "lora",    "lora_spd"};
  const size_t i = std::find(order.begin(), order.end(), name) - order.begin();
  return svg::palette(i);
}

Method method_named(const std::string& name) {
  for (const auto& k : optim::optimizer_kinds())
    if (k == name) return {name, "all", false};
  if (name == "lp") return {"adamw", "head", false};
  if (name == "bitfit") return {"adamw", "bitfit", false};
  if (name == "llrd") return {"adamw", "llrd", false};
  if (name == "lpft") return {"adamw", "all", true};
  if (name == "lora") return {"adamw", "lora", false};
  if (name == "lora_spd") return {"spd", "lora", false};
  std::string all;
  for (const auto& m : method_names()) all += (all.empty() ? "" : ", ") + m;
  SPDLAB_FAIL("--optims: unknown method '", name, "'; expected one of: ", all);
}

optim::Hyperparams hyperparams_for(const std::string& kind, double lr, const Regularizers& r) {
  optim::Hyperparams h;
  h.lr = lr;
  if (kind == "adamw" || kind == "sgd") h.weight_decay = r.wd;
  h.lambda = r.lambda;
  h.alpha = r.alpha;
  h.beta = r.beta;
  h.gamma = r.gamma;
  h.kappa = r.kappa;
  return h;
}

std::vector<Flag> regularizer_flags() {
  const Regularizers d;
  auto g = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return std::string(b);
  };
  return {{"wd", "W", "weight decay: decoupled for adamw, coupled for sgd (adam: none)", g(d.wd)},
          {"lambda", "L", "SPD's projection strength", g(d.lambda)},
          {"alpha", "A", "L2-SP's pull towards the pre-trained weights", g(d.alpha)},
          {"beta", "B", "L2-SP's decay of tensors without an anchor", g(d.beta)},
          {"gamma", "G", "MARS-SP's radius: each row's L1 distance from the pre-trained row", g(d.gamma)},
          {"layer-decay", "D", "layer-wise lr decay: each block below the head trains D times slower (llrd)",
           g(d.layer_decay)},
          {"kappa", "K", "FTP's annealing of its radii's positive gradients, in [0, 1]", g(d.kappa)},
          {"lora-rank", "R", "LoRA adapters' rank (lora, lora_spd; finetune --params lora)", std::to_string(d.lora_rank)},
          {"lora-alpha", "A", "LoRA's alpha: the adapters' scale is alpha / rank", g(d.lora_alpha)}};
}

Regularizers regularizers_from(const Args& a) {
  const double kappa = a.nonneg("kappa");
  SPDLAB_CHECK(kappa <= 1, "--kappa must be in [0, 1]; got ", kappa);
  return {.wd = a.nonneg("wd"), .lambda = a.nonneg("lambda"), .alpha = a.nonneg("alpha"), .beta = a.nonneg("beta"),
          .gamma = a.positive("gamma"), .layer_decay = a.positive("layer-decay"), .kappa = kappa,
          .lora_rank = a.integer("lora-rank", 1, 1 << 20), .lora_alpha = a.positive("lora-alpha")};
}

models::ModelInfo probe_model(const std::string& path, const models::ModelSpec& spec) {
  models::ModelSpec probe = spec;
  try {
    return models::inspect_model(path, probe);
  } catch (const Error&) {
    if (spec.num_classes > 0) throw;
    probe.num_classes = 1;  // a tower without a head: its classes come from the data
    return models::inspect_model(path, probe);
  }
}

data::SampleTransform augment_transform_for(const std::string& name) {
  if (name == "rrc") return data::random_resized_crop_transform({});
  SPDLAB_CHECK(name == "none", "--augment: expected rrc or none, got '", name, "'");
  return {};
}

std::vector<std::string> checkpoint_classes(const std::string& path) {
  io::SafetensorsFile f(path);
  auto it = f.metadata().find("spdlab.classes");
  std::vector<std::string> out;
  if (it == f.metadata().end()) return out;
  const json::Value v = json::parse(it->second, path + ": metadata spdlab.classes");
  SPDLAB_CHECK(v.is_array(), path, ": metadata spdlab.classes should be a JSON array of names");
  for (const auto& c : v.as_array()) out.push_back(c.as_string());
  return out;
}

void align_to_checkpoint(data::Dataset& d, const std::string& checkpoint, const std::string& what) {
  const std::vector<std::string> trained = checkpoint_classes(checkpoint);
  if (trained.empty() || d.class_names.empty()) return;
  if (std::set<std::string>(trained.begin(), trained.end()) ==
      std::set<std::string>(d.class_names.begin(), d.class_names.end()))
    data::align_classes(d, trained, what, checkpoint);
}

std::string adapter_path(const std::string& model_path) {
  const std::string ext = ".safetensors";
  const bool has_ext = model_path.size() > ext.size() && model_path.compare(model_path.size() - ext.size(), ext.size(), ext) == 0;
  return (has_ext ? model_path.substr(0, model_path.size() - ext.size()) : model_path) + ".lora" + ext;
}

void save_lora_run(nn::Module& model, const nn::LoRAOptions& o, const std::string& path,
                   const std::map<std::string, std::string>& meta) {
  nn::NamedTensors head;
  for (auto& [n, t] : model.named_parameters())
    if (n.rfind("head.", 0) == 0) head.emplace_back(n, t);
  on_root(path, [&] { nn::save_lora(model, o, path, head, meta); });
}

std::map<std::string, std::string> with_classes(std::map<std::string, std::string> meta, const data::Dataset& d) {
  if (d.class_names.empty()) return meta;
  json::Value::Array names;
  for (const auto& c : d.class_names) names.push_back(json::Value::string(c));
  meta["spdlab.classes"] = json::dump(json::Value::array(names));
  return meta;
}

namespace {

std::vector<Flag> common_train_flags() {
  return {{"data", "SRC", "fmnist[:ROOT], idx:IMAGES,LABELS or folder:DIR", "fmnist"},
          {"epochs", "E", "epochs", "5"},
          {"batch-size", "B", "batch size", "64"},
          {"lr", "LR", "peak learning rate (cosine schedule after a linear warmup)", "0.001"},
          {"warmup", "F", "fraction of the steps spent warming up", "0.05"},
          {"seed", "S", "seed for initialization, data order and augmentation", "0"},
          {"clip", "C", "global gradient-norm clip (0 = off)", "0"},
          {"threads", "N", "CPU threads (default: SPDLAB_NUM_THREADS or all cores)", ""},
          device_flag(),
          {"out", "FILE", "where to write the checkpoint (.safetensors)", ""},
          {"metrics", "FILE", "per-step metrics as JSON lines", ""},
          {"checkpoint-every", "N", "save a resumable state every N steps (SIGINT/SIGTERM always save one)", "0"},
          {"run-dir", "DIR", "where the resumable state and the lock live (default: OUT.run, removed on success)", ""},
          {"resume", "DIR", "continue the interrupted run in DIR with the flags recorded there", ""}};
}

// The run directory of a training command, opened (and locked) once the inputs are known to be good, so a
// bad flag or file leaves nothing behind. A new run refuses a directory holding an interrupted run's state.
std::unique_ptr<RunDir> open_run_dir(const CommandLine& cl, const Args& a, const std::string& out) {
  const bool resume = !cl.resume_dir().empty();
  const std::string dir = resume ? cl.resume_dir() : a.has("run-dir") ? a.str("run-dir") : out + ".run";
  auto run = std::make_unique<RunDir>(dir);
  if (!resume) {
    SPDLAB_CHECK(!run->exists("state.safetensors"), dir, " holds the state of an interrupted run; continue it with `",
                 resume_hint(cl.command(), dir), "`, or remove ", dir, " to start over");
    json::Value::Array args;
    for (const auto& s : cl.args()) args.push_back(json::Value::string(s));
    run->write_manifest(json::Value::object({{"command", json::Value::string(cl.command())},
                                             {"args", json::Value::array(args)},
                                             {"out", json::Value::string(out)}}));
  }
  return run;
}

// Trains with the run directory; an interrupted run says how to resume. A failed one keeps its last state (or,
// having none, leaves no directory behind: see RunDir).
TrainResult train_in_run_dir(models::VisionTransformer& model, const data::Dataset& data,
                             data::SampleTransform transform, TrainOptions opt, RunDir& run, const CommandLine& cl) {
  opt.run = &run;
  opt.resume = !cl.resume_dir().empty();
  try {
    return train(model, data, std::move(transform), opt);
  } catch (const Interrupted& e) {
    throw Interrupted(e.signal(), std::string(e.what()) + "; resume with: " + resume_hint(cl.command(), run.dir()));
  }
}

// Fails early, before any training, when the checkpoint could not be written.
void check_out_path(const std::string& path) {
  std::error_code ec;
  SPDLAB_CHECK(!std::filesystem::is_directory(path, ec), "'", path, "' is a directory; expected a file name");
  ensure_writable_dir(dir_of(path));
}

void apply_threads(const Args& a) {
  if (a.has("threads")) set_num_threads(static_cast<int>(a.integer("threads", 1, kMaxThreads)));
}

// The options every training command reads from common_train_flags().
TrainOptions train_options(const Args& a, const std::string& kind, const optim::Hyperparams& hp,
                           const std::string& label) {
  TrainOptions opt;
  opt.optim = kind;
  opt.hp = hp;
  opt.epochs = a.integer("epochs", 1, kMaxEpochs);
  opt.batch_size = a.integer("batch-size", 1, kMaxBatch);
  opt.warmup_frac = a.nonneg("warmup");
  opt.clip = a.nonneg("clip");
  opt.seed = a.seed("seed");
  opt.metrics_path = a.has("metrics") ? a.str("metrics") : "";
  if (!opt.metrics_path.empty()) check_out_path(opt.metrics_path);
  opt.checkpoint_every = a.integer("checkpoint-every", 0, kMaxEpochs * kMaxImages);
  opt.label = label;
  return opt;
}

}  // namespace

int run_pretrain(int argc, char** argv) {
  std::vector<Flag> flags = {{"arch", "NAME", "architecture preset (vit_fmnist_tiny, vit_fmnist_small, ...)", "vit_fmnist_tiny"},
                             {"domains", "LIST", "pre-training domains, one drawn per sample",
                              "clean,noise,blur,contrast,invert,rotate"},
                             {"range", "B:E", "training images used", "0:50000"},
                             {"wd", "W", "AdamW weight decay", "0.05"}};
  for (auto& f : common_train_flags()) flags.push_back(f);
  CommandLine cl = resume_command_line("pretrain", argc, argv);
  Args a("pretrain", "Pre-trains a foundation ViT with AdamW on several domains (PROTOCOL.md step 1).", flags,
         cl.argc(), cl.argv());
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  apply_threads(a);
  models::ViTConfig cfg = models::vit_preset(a.str("arch"));
  auto domains = parse_domains(a.list("domains"));
  TrainOptions opt =
      train_options(a, "adamw", hyperparams_for("adamw", a.positive("lr"), {.wd = a.nonneg("wd")}), "pretrain");
  opt.anchor_to_init = false;
  std::string out = a.str("out");
  check_out_path(out);
  data::Dataset all = load_data(a.str("data"), true, cfg.in_chans, cfg.img_size, cfg.num_classes);
  auto [b, e] = parse_range("range", a.str("range"), all.size());
  models::VisionTransformer model(cfg, opt.seed);
  model.to(apply_device(a));
  auto run = open_run_dir(cl, a, out);
  TrainResult r = train_in_run_dir(model, data::subset(all, b, e), data::random_domain_transform(domains), opt, *run, cl);
  on_root(out, [&] {
    save_vit(model, out,
             {{"spdlab.command", command_line(cl.argc(), cl.argv())},
              {"spdlab.seed", std::to_string(opt.seed)},
              {"spdlab.commit", SPDLAB_GIT_COMMIT},
              {"spdlab.train_seconds", std::to_string(r.seconds)}});
  });
  run->remove_all();
  std::fprintf(stderr, "pretrain: %lld steps in %.0f s, final loss %.4f; wrote %s\n", static_cast<long long>(r.steps),
               r.seconds, r.final_loss, out.c_str());
  return 0;
}

int run_finetune(int argc, char** argv) {
  std::vector<Flag> flags = {{"init", "FILE", "the pre-trained checkpoint (spdlab, timm, Hugging Face or CLIP safetensors)", ""},
                             {"train", "SRC", "your own images, folder:DIR or cache:FILE (instead of --data, --domain, --range)", ""},
                             {"augment", "A", "with --train: rrc (timm's random resized crop and flip) or none", "rrc"},
                             {"domain", "D", "the fine-tuning domain", "edge"},
                             {"range", "B:E", "training images used", "50000:60000"},
                             {"optim", "NAME", "adam, adamw, l2sp, spd, mars_sp, ftp or sgd", "spd"},
                             {"params", "WHICH", "what trains: all, head (linear probing), bitfit (biases and head), "
                                                 "llrd (all, with layer-wise lr decay --layer-decay) or lora (LoRA "
                                                 "adapters and the head; the merged model goes to --out, the adapters "
                                                 "and head to OUT.lora.safetensors)", "all"}};
  for (auto& f : regularizer_flags()) flags.push_back(f);
  for (auto& f : common_train_flags()) flags.push_back(f);
  for (auto& f : model_flags()) flags.push_back(f);
  for (auto& f : flags)
    if (f.name == "epochs") f.default_value = "2";
  CommandLine cl = resume_command_line("finetune", argc, argv);
  Args a("finetune", "Fine-tunes a pre-trained ViT on one domain with the chosen optimizer (PROTOCOL.md step 2).",
         flags, cl.argc(), cl.argv());
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  apply_threads(a);
  std::string kind = a.str("optim");
  check_optimizer_name(kind);
  const Regularizers reg = regularizers_from(a);
  TrainOptions opt = train_options(a, kind, hyperparams_for(kind, a.positive("lr"), reg), "finetune " + kind);
  opt.params = a.str("params");
  opt.layer_decay = reg.layer_decay;
  opt.lora_rank = reg.lora_rank;
  opt.lora_alpha = reg.lora_alpha;
  check_params_name(opt.params);  // before any data is read
  data::Domain domain = data::parse_domain(a.str("domain"));
  std::string out = a.str("out");
  check_out_path(out);
  const std::string init = a.str("init");
  models::ModelSpec spec = model_spec(a);
  const Device device = apply_device(a);
  // The input size first (from the header), then the data at that size, then the model with a head for its classes.
  const models::ModelInfo probe = probe_model(init, spec);
  data::Dataset train_set;
  data::SampleTransform transform;
  if (a.has("train")) {
    for (const char* f : {"data", "domain", "range"})
      SPDLAB_CHECK(!a.has(f), "finetune: --", f, " is for Fashion-MNIST; --train brings its own images");
    train_set = load_image_source(a.str("train"), probe.cfg.in_chans, probe.cfg.img_size, "--train");
    if (spec.num_classes == 0) align_to_checkpoint(train_set, init, "--train");
    transform = augment_transform_for(a.str("augment"));
    if (spec.num_classes == 0) spec.num_classes = train_set.num_classes;
  } else {
    data::Dataset all = load_data(a.str("data"), true, probe.cfg.in_chans, probe.cfg.img_size,
                                  spec.num_classes > 0 ? spec.num_classes : std::max<int64_t>(probe.file_classes, 1));
    auto [b, e] = parse_range("range", a.str("range"), all.size());
    train_set = data::subset(all, b, e);
    transform = data::domain_transform(domain);
  }
  models::ModelInfo info;
  auto model = models::load_model(init, spec, device, &info);
  print_model_info("finetune", init, info);
  auto run = open_run_dir(cl, a, out);
  TrainResult r = train_in_run_dir(*model, train_set, transform, opt, *run, cl);
  const auto meta = with_classes({{"spdlab.command", command_line(cl.argc(), cl.argv())},
                                  {"spdlab.commit", SPDLAB_GIT_COMMIT}},
                                 train_set);
  if (opt.params == "lora") {  // the adapters with the head they were trained with, then the merged model
    save_lora_run(*model, lora_options(opt), adapter_path(out), meta);
    nn::remove_lora(*model, /*merge=*/true);
  }
  on_root(out, [&] { save_vit(*model, out, meta); });
  run->remove_all();
  std::fprintf(stderr, "finetune: %lld steps in %.0f s, final loss %.4f; wrote %s\n",
               static_cast<long long>(r.steps), r.seconds, r.final_loss, out.c_str());
  return 0;
}

int run_eval(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"model", "FILE", "checkpoint (spdlab, timm, Hugging Face or CLIP safetensors)", ""},
      {"data", "SRC", "fmnist[:ROOT] (its test split), idx:IMAGES,LABELS or folder:DIR", "fmnist"},
      {"domain", "LIST", "domains to evaluate", "clean,noise,blur,contrast,invert,rotate,edge"},
      {"eval", "LIST", "your own test sets, NAME=folder:DIR or NAME=cache:FILE, comma-separated (instead of --data, "
                       "--domain)", ""},
      {"seed", "S", "seed of the noise domain", "0"},
      {"threads", "N", "CPU threads", ""},
      device_flag(),
      {"json", "FILE", "also write the accuracies as JSON", ""}};
  for (auto& f : model_flags()) flags.push_back(f);
  Args a("eval", "Accuracy of a model on a test set, per domain, or on each of your own test sets (--eval).", flags,
         argc, argv);
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  apply_threads(a);
  std::string json_path = a.has("json") ? a.str("json") : "";
  if (!json_path.empty()) check_out_path(json_path);
  const std::string model_path = a.str("model");
  const Device device = apply_device(a);
  models::ModelSpec spec = model_spec(a);
  // Every set is named and scored with identity transforms (--eval), or is one domain of the --data test split.
  struct Set {
    std::string name;
    data::Dataset data;
    data::SampleTransform transform;
  };
  std::vector<Set> sets;
  const models::ModelInfo probe = probe_model(model_path, spec);
  if (a.has("eval")) {
    for (const char* f : {"data", "domain"})
      SPDLAB_CHECK(!a.has(f), "eval: --", f, " is for Fashion-MNIST; --eval brings its own images");
    const std::vector<std::string> trained = checkpoint_classes(model_path);
    for (const auto& ns : parse_eval_sets(a.list("eval"))) {
      data::Dataset d = load_image_source(ns.spec, probe.cfg.in_chans, probe.cfg.img_size, "--eval " + ns.name);
      if (!trained.empty()) data::align_classes(d, trained, "--eval " + ns.name, model_path + " (its training classes)");
      else if (!sets.empty()) data::align_classes(d, sets.front().data.class_names, "--eval " + ns.name, "--eval " + sets.front().name);
      sets.push_back({ns.name, std::move(d), {}});
    }
  } else {
    data::Dataset test = load_data(a.str("data"), false, probe.cfg.in_chans, probe.cfg.img_size,
                                   std::max<int64_t>(probe.cfg.num_classes, 1));
    for (auto d : parse_domains(a.list("domain"))) sets.push_back({data::domain_name(d), test, data::domain_transform(d)});
  }
  models::ModelInfo info;
  auto model = models::load_model(model_path, spec, device, &info);
  print_model_info("eval", model_path, info);
  int64_t batches = 0, step = 0;
  for (const auto& s : sets) batches += (s.data.size() + kEvalBatch - 1) / kEvalBatch;
  Progress progress("eval", batches);
  json::Value::Object accs;
  std::vector<std::pair<std::string, double>> rows;
  for (const auto& s : sets) {
    double acc = evaluate(*model, s.data, s.transform, a.seed("seed"), &progress, &step);
    rows.emplace_back(s.name, acc);
    accs.emplace_back(s.name, json::Value::number(acc));
  }
  progress.finish();
  std::printf("%-10s %s\n", a.has("eval") ? "set" : "domain", "accuracy");
  for (auto& [d, acc] : rows) std::printf("%-10s %.2f%%\n", d.c_str(), 100 * acc);
  if (!json_path.empty())
    write_text_atomic(json_path, json::dump(json::Value::object(
                                     {{"model", json::Value::string(model_path)},
                                      {"data", json::Value::string(a.has("eval") ? a.str("eval") : a.str("data"))},
                                      {"images", json::Value::integer(sets.front().data.size())},
                                      {"accuracy", json::Value::object(accs)}})) +
                                     "\n");
  return 0;
}


}  // namespace spdlab::cli
