// `spdlab compare`: the robust fine-tuning study of PROTOCOL.md. Fine-tunes the shipped foundation ViT on the
// edge domain with each method and seed, evaluates every domain, and writes results.json, results.csv,
// report.md, SVG plots and every fine-tuned checkpoint into one directory. With --train and --eval it runs the
// same study on a user's own checkpoint and image folders: fine-tune on one set, test on all (the first --eval
// set is in-distribution, the rest out-of-distribution). With --tune, each method's hyperparameter is first chosen
// on a validation split held out of the training images; --wise-ft adds WiSE-FT curves. The outputs are written by
// compare_report.cpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "data/image_folder.h"
#include "dist/communicator.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "examples/cli/compare_report.h"
#include "examples/cli/data_source.h"
#include "examples/cli/run_state.h"
#include "examples/cli/study.h"
#include "examples/cli/train.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"
#include "nn/interpolate.h"

namespace spdlab::cli {
namespace {

using json::Value;

const char* kDefaultInit = "models/pretrained/fmnist_foundation.safetensors";

std::string resolve_init(const std::string& given, bool explicit_flag) {
  if (explicit_flag || std::filesystem::exists(given)) return given;
  std::string in_source = std::string(SPDLAB_SOURCE_DIR) + "/" + given;
  return std::filesystem::exists(in_source) ? in_source : given;
}

// A test set of the study: a Fashion-MNIST domain (the test split seen through a transform), or a user's folder.
struct EvalSet {
  std::string name;
  data::Dataset data;
  data::SampleTransform transform;  // empty: the images as stored
};

// The hyperparameter --tune sweeps for a method, and its values: the method's own regularizer (or the lr where
// the method has none that matters). Methods without one run once, with the flags' values. The two LoRA methods
// run at --lora-lr and tune their decay of the adapters: AdamW's weight decay, SPD's lambda.
struct Grid {
  std::string hp;  // wd, lambda, alpha, gamma, layer_decay, kappa or lr; empty: nothing to tune
  std::vector<double> values;
};

Grid default_grid(const std::string& method) {
  if (method == "adamw") return {"wd", {0.01, 0.1, 1}};
  if (method == "l2sp") return {"alpha", {0.01, 0.1, 1}};
  if (method == "spd") return {"lambda", {0.5, 1, 2}};
  if (method == "mars_sp") return {"gamma", {0.1, 0.3, 1}};
  if (method == "llrd") return {"layer_decay", {0.5, 0.65, 0.8}};
  if (method == "lp" || method == "bitfit") return {"lr", {1e-3, 3e-3, 1e-2}};
  if (method == "ftp") return {"kappa", {0.1, 0.5, 1}};
  if (method == "lora") return {"wd", {0.01, 0.1, 1}};  // AdamW's decay of the adapters towards zero ...
  if (method == "lora_spd") return {"lambda", {0.5, 1, 2}};  // ... and SPD's, selective, at the same lr
  return {};  // adam, sgd, lpft: the flags' values
}

// --grid spd=0.5:1:2,l2sp=0.01:0.1: each named method's values replace its default grid.
void apply_grid_flag(const std::vector<std::string>& items, const std::vector<std::string>& methods,
                     std::map<std::string, Grid>& grids) {
  for (const auto& item : items) {
    const size_t eq = item.find('=');
    SPDLAB_CHECK(eq != std::string::npos && eq > 0, "--grid: expected METHOD=V1:V2:..., got '", item, "'");
    const std::string m = item.substr(0, eq);
    SPDLAB_CHECK(std::find(methods.begin(), methods.end(), m) != methods.end(), "--grid: '", m,
                 "' is not among --optims");
    SPDLAB_CHECK(!grids[m].hp.empty(), "--grid: ", m, " has no hyperparameter to tune (adam, sgd and lpft run with "
                 "the flags' values)");
    std::vector<double> values;
    std::stringstream ss(item.substr(eq + 1));
    std::string v;
    while (std::getline(ss, v, ':')) {
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      SPDLAB_CHECK(!v.empty() && end && *end == '\0' && std::isfinite(x) && x > 0, "--grid: ", m,
                   ": expected positive numbers separated by ':', got '", v, "'");
      values.push_back(x);
    }
    SPDLAB_CHECK(!values.empty(), "--grid: ", m, ": no values");
    grids[m].values = values;
  }
}

std::string value_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// A run's file stem in the study directory: <method>-seed<N>, or <method>-<hp><value>-seed<N> when tuned.
std::string run_name(const std::string& method, const std::string& hp, double value, int64_t seed) {
  return method + (hp.empty() ? "" : "-" + hp + value_text(value)) + "-seed" + std::to_string(seed);
}

// The regularizers and lr with one hyperparameter set.
void apply_hp(const std::string& hp, double v, Regularizers& reg, double& lr) {
  if (hp == "wd") reg.wd = v;
  else if (hp == "lambda") reg.lambda = v;
  else if (hp == "alpha") reg.alpha = v;
  else if (hp == "gamma") reg.gamma = v;
  else if (hp == "layer_decay") reg.layer_decay = v;
  else if (hp == "kappa") reg.kappa = v;
  else if (hp == "lr") lr = v;
}

// A method's row label in the report, with the hyperparameter values it ran with.
std::string method_label(const std::string& k, const Regularizers& reg, double lr, double base_lr) {
  char b[96];
  const std::string at_lr = lr != base_lr ? ", lr " + value_text(lr) : "";
  if (k == "adamw") std::snprintf(b, sizeof b, "AdamW (wd %g)", reg.wd);
  else if (k == "l2sp") std::snprintf(b, sizeof b, "L2-SP (α %g)", reg.alpha);
  else if (k == "spd") std::snprintf(b, sizeof b, "SPD (λ %g)", reg.lambda);
  else if (k == "mars_sp") std::snprintf(b, sizeof b, "MARS-SP (γ %g)", reg.gamma);
  else if (k == "adam") std::snprintf(b, sizeof b, "Adam");
  else if (k == "sgd") std::snprintf(b, sizeof b, "SGD (wd %g)", reg.wd);
  else if (k == "lp") std::snprintf(b, sizeof b, "LP (AdamW, head only%s)", at_lr.c_str());
  else if (k == "bitfit") std::snprintf(b, sizeof b, "BitFit (AdamW, biases and head%s)", at_lr.c_str());
  else if (k == "llrd") std::snprintf(b, sizeof b, "AdamW + LLRD (decay %g)", reg.layer_decay);
  else if (k == "lpft") std::snprintf(b, sizeof b, "LP-FT (AdamW)");
  else if (k == "ftp") std::snprintf(b, sizeof b, "FTP (κ %g)", reg.kappa);
  else if (k == "lora")
    std::snprintf(b, sizeof b, "LoRA r%lld (AdamW, wd %g, lr %g)", static_cast<long long>(reg.lora_rank), reg.wd, lr);
  else if (k == "lora_spd")
    std::snprintf(b, sizeof b, "LoRA r%lld + SPD (λ %g, lr %g)", static_cast<long long>(reg.lora_rank), reg.lambda, lr);
  else std::snprintf(b, sizeof b, "%s", k.c_str());
  return b;
}

}  // namespace

int run_compare(int argc, char** argv) {
  CommandLine cl = resume_command_line("compare", argc, argv);
  std::vector<Flag> flags = {
          {"quick", "", "1 seed, 2000 test images per domain (the default)", ""},
          {"full", "", "3 seeds, the whole test set", ""},
          {"seeds", "N", "number of seeds (overrides the mode)", ""},
          {"optims", "LIST", "methods to compare: optimizers (sgd, adam, adamw, l2sp, spd, mars_sp, ftp) and lp, "
                             "bitfit, llrd, lpft (AdamW on the head, the biases, with layer-wise lr decay, or after a "
                             "linear probe), lora (AdamW on LoRA adapters and the head), lora_spd (SPD on them, PEFT mode)",
           "adam,adamw,l2sp,spd"},
          {"init", "FILE", "the pre-trained checkpoint (spdlab, timm, Hugging Face or CLIP safetensors)", kDefaultInit},
          {"train", "SRC", "your own training images, folder:DIR or cache:FILE (instead of --data, --domain, --range)", ""},
          {"eval", "LIST", "with --train: NAME=folder:DIR or NAME=cache:FILE, comma-separated; the first is the "
                           "in-distribution test set, the rest out-of-distribution", ""},
          {"augment", "A", "with --train: rrc (timm's random resized crop and flip) or none", "rrc"},
          {"data", "SRC", "fmnist[:ROOT]", "fmnist"},
          {"domain", "D", "the fine-tuning (in-distribution) domain", "edge"},
          {"range", "B:E", "training images for fine-tuning", "50000:60000"},
          {"eval-images", "N", "test images per domain (overrides the mode)", ""},
          {"epochs", "E", "fine-tuning epochs", "2"},
          {"batch-size", "B", "batch size", "64"},
          {"lr", "LR", "peak learning rate, the same for every optimizer", "0.001"},
          {"lora-lr", "LR", "peak learning rate of the LoRA methods (lora, lora_spd)", "0.01"},
          {"warmup", "F", "fraction of the steps spent warming up", "0.05"},
          {"threads", "N", "CPU threads", ""},
          device_flag(),
          {"out", "DIR", "output directory", ""},
          {"tune", "", "choose each method's hyperparameter on a validation split held out of the training images, "
                       "at seed 0, over a small grid (--grid); then run every seed with the choice", ""},
          {"grid", "LIST", "with --tune: METHOD=V1:V2:..., comma-separated, replacing a method's default grid "
                           "(e.g. spd=0.5:1:2; the values are of the method's hyperparameter: see the README)", ""},
          {"val-images", "N", "with --tune: training images held out for validation (default: a tenth, at most 2000)",
           ""},
          {"wise-ft", "ALPHAS", "WiSE-FT: also evaluate (1 - a) theta0 + a theta_ft for each a, e.g. 0.25,0.5,0.75, "
                                "for the methods in --wise-ft-methods", ""},
          {"wise-ft-methods", "LIST", "the methods whose fine-tuned models get a WiSE-FT curve", "adamw"},
          {"all-domains", "", "the all-pairs protocol: the whole study once per domain as the fine-tuning domain (each "
                              "in OUT/<domain>/), then the matrix of every method's accuracy by training and test "
                              "domain (OUT/all_domains.md, .json, .svg); rerun the same command to continue", ""},
          {"checkpoint-every", "N", "save a resumable state of the current run every N steps (SIGINT/SIGTERM always do)",
           "0"},
          {"split", "HOW", "with several ranks (mpirun): batches (every run data parallel over all ranks) or runs (each "
                           "rank trains whole runs alone, as one process would; evaluation stays split)", "batches"},
          {"resume", "DIR", "continue the study in DIR: finished runs are kept, the rest is done", ""}};
  for (auto& f : regularizer_flags()) flags.push_back(f);
  for (auto& f : model_flags()) flags.push_back(f);
  Args a("compare",
         "The robust fine-tuning study (PROTOCOL.md): fine-tune the foundation ViT on the edge domain with each\n"
         "optimizer and seed, evaluate every domain, and write results.json, results.csv, report.md and plots.\n"
         "--quick: 1 seed, 2000 test images per domain. --full: 3 seeds, all 10000 test images.\n"
         "With --train folder:DIR --eval ID=folder:DIR1,OOD=folder:DIR2,...: the same study on your own data and\n"
         "checkpoint (--init); every test set is used whole.",
         flags, cl.argc(), cl.argv());
  if (a.help_requested()) return std::fputs(a.usage().c_str(), stdout), 0;
  SPDLAB_CHECK(!(a.flag("quick") && a.flag("full")), "compare: pass --quick or --full, not both");
  if (a.has("threads")) set_num_threads(static_cast<int>(a.integer("threads", 1, kMaxThreads)));
  const Device device = apply_device(a);
  bool full = a.flag("full");
  int64_t seeds = a.has("seeds") ? a.integer("seeds", 1, 1000) : (full ? 3 : 1);
  int64_t eval_images = a.has("eval-images") ? a.integer("eval-images", 1, kMaxImages) : (full ? 10000 : 2000);
  std::vector<std::string> optims = a.list("optims");
  for (const auto& o : optims) method_named(o);  // an unknown name fails before any data is read
  const bool tune = a.flag("tune");
  for (const char* f : {"grid", "val-images"})
    SPDLAB_CHECK(tune || !a.has(f), "compare: --", f, " goes with --tune");
  std::map<std::string, Grid> grids;
  for (const auto& m : optims) grids[m] = default_grid(m);
  if (a.has("grid")) apply_grid_flag(a.list("grid"), optims, grids);
  std::vector<double> wise_alphas;
  if (a.has("wise-ft"))
    for (double x : a.num_list("wise-ft")) {
      SPDLAB_CHECK(x > 0 && x < 1, "--wise-ft: each alpha must be strictly between 0 and 1 (0 and 1 are the two "
                                   "models themselves); got ", x);
      wise_alphas.push_back(x);
    }
  std::vector<std::string> wise_methods = a.list("wise-ft-methods");
  SPDLAB_CHECK(a.has("wise-ft") || !a.has("wise-ft-methods"), "compare: --wise-ft-methods goes with --wise-ft");
  for (const auto& m : wise_alphas.empty() ? std::vector<std::string>{} : wise_methods)
    SPDLAB_CHECK(std::find(optims.begin(), optims.end(), m) != optims.end(), "--wise-ft-methods: '", m,
                 "' is not among --optims");
  data::Domain id_domain = data::parse_domain(a.str("domain"));
  const bool own_data = a.has("train");
  SPDLAB_CHECK(own_data == a.has("eval"), "compare: --train and --eval go together (your own training and test sets)");
  if (own_data)
    for (const char* f : {"data", "domain", "range", "eval-images"})
      SPDLAB_CHECK(!a.has(f), "compare: --", f, " is for the Fashion-MNIST study; --train and --eval bring their own images");
  const data::SampleTransform train_augment = own_data ? augment_transform_for(a.str("augment")) : nullptr;
  const std::vector<NamedSource> eval_sources = own_data ? parse_eval_sets(a.list("eval")) : std::vector<NamedSource>{};
  const Regularizers reg = regularizers_from(a);
  double lr = a.positive("lr"), lora_lr = a.positive("lora-lr"), warmup = a.nonneg("warmup");
  int64_t epochs = a.integer("epochs", 1, kMaxEpochs), batch = a.integer("batch-size", 1, kMaxBatch);
  std::string out = a.str("out");
  const int64_t checkpoint_every = a.integer("checkpoint-every", 0, kMaxEpochs * kMaxImages);
  check_out_dir(out);  // created only once every input has loaded
  std::string init_path = resolve_init(a.str("init"), a.has("init"));
  const std::string split = a.str("split");
  SPDLAB_CHECK(split == "batches" || split == "runs", "--split: expected batches or runs, got '", split, "'");
  const bool split_runs = split == "runs" && dist::world().size() > 1;

  if (a.flag("all-domains")) {
    // Each domain's study is an ordinary compare into OUT/<domain> (locked, resumable, kept when finished), with
    // the same flags; then the matrix is read from their results.
    SPDLAB_CHECK(!own_data, "compare: --all-domains is the Fashion-MNIST study's protocol; with --train and --eval, "
                            "run one study per training set");
    SPDLAB_CHECK(!a.has("domain"), "compare: --all-domains fine-tunes on every domain in turn; drop --domain");
    std::vector<std::string> domains, base;
    for (auto d : data::all_domains()) domains.push_back(data::domain_name(d));
    const std::vector<std::string>& given = cl.args();
    for (size_t i = 0; i < given.size(); ++i) {
      if (given[i] == "--all-domains") continue;
      if (given[i] == "--out") {
        ++i;
        continue;
      }
      if (given[i].rfind("--out=", 0) == 0) continue;
      base.push_back(given[i]);
    }
    const double t0 = now_seconds();  // OUT itself is made by the first study, once its inputs have loaded
    for (size_t k = 0; k < domains.size(); ++k) {
      std::fprintf(stderr, "compare --all-domains: [%zu/%zu] fine-tuning on %s (%.0f s elapsed)\n", k + 1,
                   domains.size(), domains[k].c_str(), now_seconds() - t0);
      std::vector<std::string> sub = base;
      for (const std::string& s : {std::string("--domain"), domains[k], std::string("--out"), out + "/" + domains[k]})
        sub.push_back(s);
      CommandLine sub_cl("compare", sub, "");
      try {
        run_compare(sub_cl.argc(), sub_cl.argv());
      } catch (const Interrupted& e) {
        throw Interrupted(e.signal(), std::string(e.what()) + "; or run the --all-domains command again to continue "
                                                              "with every domain");
      }
    }
    std::fputs(write_all_domains(out, domains, optims).c_str(), stdout);
    std::fprintf(stderr, "compare --all-domains: done in %.0f s; the matrix is in %s/all_domains.md\n",
                 now_seconds() - t0, out.c_str());
    return 0;
  }

  // Every input is read before the output directory is made: the model's input size from the header, the data at
  // that size, then the model with a head for the data's classes.
  models::ModelSpec spec = model_spec(a);
  const models::ModelInfo probe = probe_model(init_path, spec);
  const int64_t in_chans = probe.cfg.in_chans, img_size = probe.cfg.img_size;
  data::Dataset train_set;
  std::vector<EvalSet> sets;  // in report order
  std::string id_name;
  if (own_data) {
    train_set = load_image_source(a.str("train"), in_chans, img_size, "--train");
    if (spec.num_classes == 0) align_to_checkpoint(train_set, init_path, "--train");
    for (const auto& ns : eval_sources) {
      data::Dataset d = load_image_source(ns.spec, in_chans, img_size, "--eval " + ns.name);
      data::align_classes(d, train_set.class_names, "--eval " + ns.name, "--train");
      sets.push_back({ns.name, std::move(d), {}});
    }
    id_name = sets.front().name;
    if (spec.num_classes == 0) spec.num_classes = train_set.num_classes;
  } else {
    const int64_t classes = spec.num_classes > 0 ? spec.num_classes : std::max<int64_t>(probe.file_classes, 1);
    data::Dataset train_all = load_data(a.str("data"), true, in_chans, img_size, classes);
    auto [rb, re] = parse_range("range", a.str("range"), train_all.size());
    train_set = data::subset(train_all, rb, re);
    data::Dataset test_all = load_data(a.str("data"), false, in_chans, img_size, classes);
    SPDLAB_CHECK(eval_images <= test_all.size(), "compare: --eval-images ", eval_images, " exceeds the ",
                 test_all.size(), " test images");
    data::Dataset test = data::subset(test_all, 0, eval_images);
    for (auto d : data::all_domains()) sets.push_back({data::domain_name(d), test, data::domain_transform(d)});
    id_name = data::domain_name(id_domain);
  }
  // With --tune, a validation split is held out of the training images (the same draw for every method and
  // seed); every run then trains on the rest, and only the choice of hyperparameter looks at the split.
  data::Dataset val_set;
  if (tune) {
    const int64_t n = a.has("val-images") ? a.integer("val-images", 1, kMaxImages)
                                          : std::min<int64_t>(2000, std::max<int64_t>(1, train_set.size() / 10));
    SPDLAB_CHECK(n < train_set.size(), "compare: --val-images ", n, " leaves no training images of ", train_set.size());
    std::tie(train_set, val_set) = data::split_holdout(train_set, n, /*seed=*/20241203);
  }
  models::ModelInfo init_info;
  auto init = models::load_model(init_path, spec, device, &init_info);
  print_model_info("compare", init_path, init_info);
  const auto& cfg = init->config();
  std::vector<std::string> set_names, ood;
  for (const auto& st : sets) {
    set_names.push_back(st.name);
    if (st.name != id_name) ood.push_back(st.name);
  }
  const uint64_t eval_seed = 0;  // every model sees the same noisy test images

  // The study directory: locked, with a manifest of the flags. A directory holding a study with the same flags
  // is continued (finished runs are kept); one with other flags, or other files, is refused.
  RunDir study(out, /*transient=*/false);
  const json::Value manifest = study.manifest();
  std::vector<std::string> recorded;
  if (!manifest.is_null()) {
    const json::Value* args = manifest.find("args");
    SPDLAB_CHECK(args && args->is_array(), out, "/run.json: expected \"args\"");
    for (const auto& v : args->as_array()) recorded.push_back(v.as_string());
    SPDLAB_CHECK(result_args(recorded) == result_args(cl.args()), out,
                 " holds a study made with other flags; continue it with `", resume_hint("compare", out),
                 "`, or pick another --out");
    std::fprintf(stderr, "compare: continuing the study in %s (finished runs are kept)\n", out.c_str());
  } else {
    for (const auto& e : std::filesystem::directory_iterator(out))
      SPDLAB_CHECK(e.path().filename() == "lock", out, " is not empty and holds no study (no run.json); pick an "
                   "empty or new --out");
  }
  Value::Array args_json;
  for (const auto& s : cl.args()) args_json.push_back(Value::string(s));
  // run.json: the flags, the study's status, and the runs complete so far (each also has its <run>.json).
  auto write_manifest = [&](const char* status, const std::vector<Run>& done) {
    Value::Array complete;
    for (const Run& r : done) complete.push_back(Value::string(run_name(r.optim, r.hp, r.hp_value, r.seed)));
    study.write_manifest(Value::object({{"command", Value::string("compare")},
                                        {"args", Value::array(manifest.is_null() ? args_json : Value::Array(
                                                                  manifest.find("args")->as_array()))},
                                        {"status", Value::string(status)},
                                        {"complete", Value::array(complete)}}));
  };
  dist::world().barrier();  // every rank has read the directory as it was before rank 0 writes to it
  write_manifest("running", {});
  // Outputs of the whole study are written at the end; until then none from an earlier attempt may remain.
  if (dist::world().is_root())
    for (const char* f : {"results.json", "results.csv", "report.md", "id_vs_ood.svg", "per_domain.svg",
                          "per_layer_deviation.svg", "spd_condition_rate.svg", "timing.json"})
      std::filesystem::remove(out + "/" + f);

  // The plan: seed 0 of every method at every grid value (one value without --tune), method by method; then the
  // other seeds, with each method's chosen value. Without --tune this is the study's old order (seed by seed).
  int64_t total_runs = 0;
  for (const auto& m : optims)
    total_runs += (tune && !grids[m].hp.empty() ? static_cast<int64_t>(grids[m].values.size()) : 1) + (seeds - 1);
  int64_t eval_total = 0;
  for (const auto& st : sets) eval_total += st.data.size();
  const std::string train_what = own_data ? a.str("train") : data::domain_name(id_domain);
  std::fprintf(stderr, "compare: %lld fine-tuning runs (%zu methods, %lld seeds%s), %lld epochs each on %lld %s "
               "images%s; evaluating %lld test images in %zu sets\n",
               static_cast<long long>(total_runs), optims.size(), static_cast<long long>(seeds),
               tune ? ", tuned at seed 0" : "", static_cast<long long>(epochs), static_cast<long long>(train_set.size()),
               train_what.c_str(),
               tune ? (" (" + std::to_string(val_set.size()) + " more held out for validation)").c_str() : "",
               static_cast<long long>(eval_total), sets.size());
  double t_start = now_seconds();

  auto eval_all = [&](models::VisionTransformer& m, const std::string& label) {
    int64_t batches = 0, step = 0;
    for (const auto& st : sets) batches += (st.data.size() + kEvalBatch - 1) / kEvalBatch;
    Progress p("eval " + label, batches);
    std::map<std::string, double> acc;
    for (const auto& st : sets) acc[st.name] = evaluate(m, st.data, st.transform, eval_seed, &p, &step);
    p.finish();
    return acc;
  };
  const data::SampleTransform id_transform = own_data ? data::SampleTransform{} : data::domain_transform(id_domain);
  // WiSE-FT: the fine-tuned head at every alpha when the pre-trained one was replaced (it knows nothing of these
  // classes); otherwise both heads are mixed like every other tensor.
  const std::vector<std::string> wise_take_b =
      init_info.fresh_head ? std::vector<std::string>{"head.*"} : std::vector<std::string>{};
  auto add_wise = [&](Run& r, models::VisionTransformer& ft, const std::string& label) {
    if (wise_alphas.empty() || std::find(wise_methods.begin(), wise_methods.end(), r.optim) == wise_methods.end())
      return;
    auto mix = models::load_model(init_path, spec, device);
    const nn::NamedTensors a0 = init->state_dict(), a1 = ft.state_dict();
    for (double alpha : wise_alphas) {
      std::map<std::string, Tensor> state;
      for (auto& [n, t] : nn::interpolate(a0, a1, alpha, wise_take_b)) state[n] = t;
      mix->load_state_dict(state);
      WisePoint p;
      p.alpha = alpha;
      p.acc = eval_all(*mix, label + " WiSE-FT alpha " + value_text(alpha));
      r.wise.push_back(std::move(p));
    }
  };

  std::map<std::string, double> pre_acc = eval_all(*init, "pretrained");
  std::vector<Run> runs;
  std::map<std::string, double> chosen_value;  // method -> its value (tuned methods only)
  auto run_one = [&](const std::string& kind, const std::string& hp, double value, int64_t seed, bool chosen) {
    Run r;
    r.optim = kind;
    r.hp = hp;
    r.hp_value = hp.empty() ? 0 : value;
    r.seed = seed;
    r.chosen = chosen;
    const std::string stem = out + "/" + run_name(kind, hp, value, seed);
    const std::string record = stem + ".json";
    char label[96];
    std::snprintf(label, sizeof label, "[%zu/%lld] %s%s seed %lld", runs.size() + 1,
                  static_cast<long long>(total_runs), kind.c_str(),
                  hp.empty() ? "" : (" " + hp + " " + value_text(value)).c_str(), static_cast<long long>(seed));
    if (std::filesystem::exists(record)) {  // finished by an earlier attempt (or, --split runs, by a rank)
      Run done = read_run_record(record);
      SPDLAB_CHECK(done.optim == kind && done.seed == seed && done.hp == hp, record, " is the record of ", done.optim,
                   " seed ", done.seed, ", not ", kind, " seed ", seed);
      done.chosen = chosen;
      derive(done, id_name, ood);
      std::fprintf(stderr, "%s: finished %s (ID %.1f%%, OOD mean %.1f%%)\n", label,
                   split_runs ? "(by a rank, or earlier)" : "earlier", 100 * done.id, 100 * done.ood_mean);
      return done;
    }
    if (const int sig = stop_agreed())
      throw Interrupted(sig, detail::cat("compare: stopped by ", signal_name(sig), " before ", label,
                                         "; resume with: ", resume_hint("compare", out)));
    auto run_dir = std::make_unique<RunDir>(stem + ".run");
    auto model = models::load_model(init_path, spec, device);
    const Method method = method_named(kind);
    Regularizers r_reg = reg;
    double r_lr = method.params == "lora" ? lora_lr : lr;
    apply_hp(hp, value, r_reg, r_lr);
    TrainOptions opt;
    opt.optim = method.optim;
    opt.params = method.params;
    opt.layer_decay = r_reg.layer_decay;
    opt.lora_rank = r_reg.lora_rank;
    opt.lora_alpha = r_reg.lora_alpha;
    opt.hp = hyperparams_for(method.optim, r_lr, r_reg);
    opt.epochs = epochs;
    opt.batch_size = batch;
    opt.warmup_frac = warmup;
    opt.seed = static_cast<uint64_t>(seed);
    opt.metrics_path = stem + ".jsonl";
    opt.label = label;
    opt.run = run_dir.get();
    opt.resume = true;  // where an earlier attempt left a state, go on from it
    opt.checkpoint_every = checkpoint_every;
    const data::SampleTransform transform = own_data ? train_augment : data::domain_transform(id_domain);
    TrainResult tr;
    try {
      if (method.probe_first) {
        // LP-FT: the head is probed first (its own run directory and checkpoint, kept as <run>.lp.safetensors);
        // a resumed study loads that checkpoint instead of probing again.
        const std::string probed = stem + ".lp.safetensors";
        if (!std::filesystem::exists(probed)) {
          auto lp_dir = std::make_unique<RunDir>(stem + ".lp.run");
          TrainOptions lp = opt;
          lp.params = "head";
          lp.label = std::string(label) + " linear probe";
          lp.metrics_path = stem + ".lp.jsonl";
          lp.run = lp_dir.get();
          train(*model, train_set, transform, lp);
          on_root(probed, [&] {
            save_vit(*model, probed, with_classes({{"spdlab.command", command_line(cl.argc(), cl.argv())},
                                                   {"spdlab.optim", "lp"}, {"spdlab.seed", std::to_string(seed)},
                                                   {"spdlab.commit", SPDLAB_GIT_COMMIT}},
                                                  train_set));
          });
          lp_dir->remove_all();
        } else {
          model->load_state_dict(io::load_safetensors(probed));
        }
      }
      tr = train(*model, train_set, transform, opt);
    } catch (const Interrupted& e) {
      throw Interrupted(e.signal(), std::string(e.what()) + "; resume with: " + resume_hint("compare", out));
    }
    r.final_loss = tr.final_loss;
    r.seconds = tr.seconds;
    r.spd = tr.spd_stats;
    if (!r.spd.empty()) r.fired_by_step = read_fired_by_step(opt.metrics_path);
    const auto meta = with_classes({{"spdlab.command", command_line(cl.argc(), cl.argv())}, {"spdlab.optim", kind},
                                    {"spdlab.seed", std::to_string(seed)}, {"spdlab.commit", SPDLAB_GIT_COMMIT}},
                                   train_set);
    if (method.params == "lora") {  // the adapters (and head) are kept; the model is evaluated merged
      save_lora_run(*model, lora_options(opt), adapter_path(stem + ".safetensors"), meta);
      nn::remove_lora(*model, /*merge=*/true);
    }
    on_root(stem + ".safetensors", [&] { save_vit(*model, stem + ".safetensors", meta); });
    if (tune) {
      Progress p(std::string("validate ") + label, 1);
      r.val_acc = evaluate(*model, val_set, id_transform, eval_seed);
      p.finish();
    }
    r.acc = eval_all(*model, kind);
    r.dev_tensor = deviation_per_tensor(*model, *init);
    if (chosen) add_wise(r, *model, label);
    derive(r, id_name, ood);
    write_text_atomic(record, json::dump(run_record(r)) + "\n");  // the run is complete once this exists
    run_dir->remove_all();
    const double done = now_seconds() - t_start;
    const double per_run = done / (runs.size() + 1);
    char val[48] = "";
    if (tune) std::snprintf(val, sizeof val, "validation %.1f%%, ", 100 * r.val_acc);
    std::fprintf(stderr, "%s: %sID %.1f%%, OOD mean %.1f%%, |theta - theta0| %.2f; %.0f s elapsed, about %.0f s left\n",
                 label, val,
                 100 * r.id, 100 * r.ood_mean, r.deviation, done,
                 per_run * (total_runs - static_cast<int64_t>(runs.size()) - 1));
    return r;
  };

  // --split runs: before each stage of the plan is walked, every rank trains its share of the stage's runs (the
  // i-th run goes to rank i mod N) alone, as one process, writing each run's record; the walk below then finds
  // every run done and reads its record, in the plan's order, as a resumed study does.
  struct Planned {
    std::string kind, hp;
    double value;
    int64_t seed;
    bool chosen;
  };
  auto run_share = [&](const std::vector<Planned>& stage) {
    if (!split_runs) return;
    const int n = dist::world().size(), me = dist::world().rank();
    {
      struct Alone {  // this rank's world is itself until its share is done, however it ends
        std::unique_ptr<dist::Communicator> group = dist::swap_world(std::make_unique<dist::SingleProcess>());
        ~Alone() { dist::swap_world(std::move(group)); }
      } alone;
      for (size_t i = static_cast<size_t>(me); i < stage.size(); i += static_cast<size_t>(n))
        run_one(stage[i].kind, stage[i].hp, stage[i].value, stage[i].seed, stage[i].chosen);
    }
    dist::world().barrier();  // every record of the stage is written
  };
  if (split_runs) {
    std::vector<Planned> stage;
    for (const auto& kind : optims) {
      const Grid& g = grids[kind];
      if (!tune || g.hp.empty()) stage.push_back({kind, "", 0, 0, true});
      else
        for (double v : g.values) stage.push_back({kind, g.hp, v, 0, false});
    }
    std::fprintf(stderr, "compare: --split runs: %zu runs at seed 0 over %d ranks\n", stage.size(),
                 dist::world().size());
    run_share(stage);
  }
  for (const auto& kind : optims) {  // seed 0, every grid value
    const Grid& g = grids[kind];
    if (!tune || g.hp.empty()) {
      runs.push_back(run_one(kind, "", 0, 0, true));
      write_manifest("running", runs);
      continue;
    }
    const size_t first = runs.size();
    for (double v : g.values) {
      runs.push_back(run_one(kind, g.hp, v, 0, false));
      write_manifest("running", runs);
    }
    size_t best = first;  // the highest validation accuracy; ties go to the earlier value in the grid
    for (size_t i = first; i < runs.size(); ++i)
      if (runs[i].val_acc > runs[best].val_acc) best = i;
    runs[best].chosen = true;
    chosen_value[kind] = runs[best].hp_value;
    std::fprintf(stderr, "compare: %s: %s %s chosen on validation (%.1f%%)\n", kind.c_str(), g.hp.c_str(),
                 value_text(runs[best].hp_value).c_str(), 100 * runs[best].val_acc);
    if (!wise_alphas.empty() && runs[best].wise.empty() &&
        std::find(wise_methods.begin(), wise_methods.end(), kind) != wise_methods.end()) {
      const std::string stem = out + "/" + run_name(kind, g.hp, runs[best].hp_value, 0);
      auto ft = models::load_model(stem + ".safetensors", spec, device);
      add_wise(runs[best], *ft, kind + " seed 0");
      derive(runs[best], id_name, ood);
      write_text_atomic(stem + ".json", json::dump(run_record(runs[best])) + "\n");
    }
  }
  if (split_runs && seeds > 1) {
    std::vector<Planned> stage;
    for (int64_t seed = 1; seed < seeds; ++seed)
      for (const auto& kind : optims) {
        const bool tuned = tune && !grids[kind].hp.empty();
        stage.push_back({kind, tuned ? grids[kind].hp : "", tuned ? chosen_value[kind] : 0, seed, true});
      }
    std::fprintf(stderr, "compare: --split runs: %zu runs at seeds 1-%lld over %d ranks\n", stage.size(),
                 static_cast<long long>(seeds - 1), dist::world().size());
    run_share(stage);
  }
  for (int64_t seed = 1; seed < seeds; ++seed)
    for (const auto& kind : optims) {
      const bool tuned = tune && !grids[kind].hp.empty();
      runs.push_back(run_one(kind, tuned ? grids[kind].hp : "", tuned ? chosen_value[kind] : 0, seed, true));
      write_manifest("running", runs);
    }

  // ---- outputs ----
  StudySetup setup;
  setup.out = out;
  setup.methods = optims;
  setup.set_names = set_names;
  setup.ood = ood;
  setup.id_name = id_name;
  setup.pre_acc = pre_acc;
  setup.seeds = seeds;
  setup.tuned = tune;
  for (const auto& kind : optims) {
    Regularizers r_reg = reg;
    double r_lr = method_named(kind).params == "lora" ? lora_lr : lr;
    if (chosen_value.count(kind)) apply_hp(grids[kind].hp, chosen_value[kind], r_reg, r_lr);
    setup.label[kind] = method_label(kind, r_reg, r_lr, method_named(kind).params == "lora" ? lora_lr : lr);
  }
  std::ostringstream intro;
  intro << "Fine-tuned on **" << train_what << "** (" << train_set.size() << " images, " << epochs << " epochs, batch "
        << batch << ", lr " << lr << ", warmup then cosine";
  if (own_data) {
    intro << ", augmentation " << a.str("augment") << "), evaluated on";
    for (size_t i = 0; i < sets.size(); ++i)
      intro << (i ? ", " : " ") << sets[i].name << " (" << sets[i].data.size() << " images)";
    intro << ". ";
  } else {
    intro << "), evaluated on " << eval_images << " test images per domain. ";
  }
  intro << seeds << (seeds > 1 ? " seeds, mean ± std" : " seed") << ". Accuracy in %.";
  if (tune)
    intro << " Hyperparameters were chosen on " << val_set.size()
          << " training images held out for validation (in the in-distribution domain), one value per method at "
             "seed 0; the tuning table below lists every value tried.";
  if (init_info.fresh_head)
    intro << " The pre-trained model's head was replaced by a fresh " << cfg.num_classes
          << "-class head, so its row is at chance level: it measures nothing about the features.";
  setup.intro = intro.str();
  if (!wise_alphas.empty()) {
    std::string alphas;
    for (double x : wise_alphas) alphas += (alphas.empty() ? "" : ", ") + value_text(x);
    std::string who;
    for (const auto& m : wise_methods) who += (who.empty() ? "" : ", ") + m;
    setup.wise_note = "θ(α) = (1 − α) θ0 + α θft for α = " + alphas + ", from the pre-trained model to each chosen " +
                      who + " run; " +
                      (init_info.fresh_head ? "the fine-tuned head at every α (the pre-trained model's head was "
                                              "replaced, so it knows nothing of these classes)."
                                            : "both heads mixed like every other tensor (the pre-trained head "
                                              "already predicts these classes).") +
                      " The curves are means over seeds.";
  }
  Value::Object protocol{{"init", Value::string(a.str("init"))},
                         {"architecture", Value::object({{"embed_dim", Value::integer(cfg.embed_dim)},
                                                         {"depth", Value::integer(cfg.depth)},
                                                         {"num_heads", Value::integer(cfg.num_heads)},
                                                         {"patch_size", Value::integer(cfg.patch_size)},
                                                         {"parameters", Value::integer(init->num_parameters())}})}};
  if (own_data) {
    Value::Object eval_specs;
    for (const auto& ns : eval_sources) eval_specs.emplace_back(ns.name, Value::string(ns.spec));
    protocol.emplace_back("train_data", Value::string(a.str("train")));
    protocol.emplace_back("augment", Value::string(a.str("augment")));
    protocol.emplace_back("eval_sets", Value::object(eval_specs));
    protocol.emplace_back("in_distribution", Value::string(id_name));
    protocol.emplace_back("fresh_head", Value::boolean(init_info.fresh_head));
  } else {
    protocol.emplace_back("finetune_domain", Value::string(data::domain_name(id_domain)));
    protocol.emplace_back("train_range", Value::string(a.str("range")));
  }
  for (auto& kv : Value::Object{{"epochs", Value::integer(epochs)},
                                {"batch_size", Value::integer(batch)},
                                {"lr", Value::number(lr)},
                                {"schedule", Value::string("linear warmup then cosine to 0")},
                                {"warmup_fraction", Value::number(warmup)},
                                {"adamw_weight_decay", Value::number(reg.wd)},
                                {"spd_lambda", Value::number(reg.lambda)},
                                {"l2sp_alpha", Value::number(reg.alpha)},
                                {"l2sp_beta", Value::number(reg.beta)},
                                {"mars_sp_gamma", Value::number(reg.gamma)},
                                {"layer_decay", Value::number(reg.layer_decay)},
                                {"ftp_kappa", Value::number(reg.kappa)},
                                {"lora_rank", Value::integer(reg.lora_rank)},
                                {"lora_alpha", Value::number(reg.lora_alpha)},
                                {"lora_lr", Value::number(lora_lr)},
                                {"seeds", Value::integer(seeds)}})
    protocol.push_back(kv);
  if (!own_data) protocol.emplace_back("eval_images_per_domain", Value::integer(eval_images));
  protocol.emplace_back("eval_noise_seed", Value::integer(static_cast<int64_t>(eval_seed)));
  if (tune) {
    Value::Object g;
    for (const auto& kind : optims) {
      if (grids[kind].hp.empty()) continue;
      Value::Array vals;
      for (double v : grids[kind].values) vals.push_back(Value::number(v));
      g.emplace_back(kind, Value::object({{"hp", Value::string(grids[kind].hp)}, {"values", Value::array(vals)},
                                          {"chosen", Value::number(chosen_value[kind])}}));
    }
    protocol.emplace_back("tuning", Value::object({{"validation_images", Value::integer(val_set.size())},
                                                   {"validation_split_seed", Value::integer(20241203)},
                                                   {"grids", Value::object(g)}}));
  }
  if (!wise_alphas.empty()) {
    Value::Array al, wm;
    for (double x : wise_alphas) al.push_back(Value::number(x));
    for (const auto& m : wise_methods) wm.push_back(Value::string(m));
    protocol.emplace_back("wise_ft", Value::object({{"alphas", Value::array(al)}, {"methods", Value::array(wm)},
                                                    {"fine_tuned_head", Value::boolean(init_info.fresh_head)}}));
  }
  setup.protocol = Value::object(protocol);
  const std::string report = write_study_outputs(setup, runs);

  double total = now_seconds() - t_start;
  write_text_atomic(out + "/timing.json",
                    json::dump(Value::object({{"seconds", Value::number(total)},
                                              {"threads", Value::integer(get_num_threads())},
                                              {"device", Value::string(device.str())},
                                              {"device_name", Value::string(kernels::get(device).name())},
                                              {"cpu_isa", Value::string(kernels::cpu_isa())}})) +
                        "\n");
  write_manifest("complete", runs);
  std::fputs(report.c_str(), stdout);
  std::fprintf(stderr, "compare: done in %.0f s; results in %s\n", total, out.c_str());
  return 0;
}

}  // namespace spdlab::cli
