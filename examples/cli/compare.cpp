// `spdlab compare`: the robust fine-tuning study of PROTOCOL.md. Fine-tunes the shipped foundation ViT on the
// edge domain with each optimizer and seed, evaluates every domain, and writes results.json, results.csv,
// report.md, SVG plots and every fine-tuned checkpoint into one directory. With --train and --eval it runs the
// same study on a user's own checkpoint and image folders: fine-tune on one set, test on all (the first --eval
// set is in-distribution, the rest out-of-distribution).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <map>
#include <sstream>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "data/image_folder.h"
#include "kernels/kernels.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "examples/cli/data_source.h"
#include "examples/cli/run_state.h"
#include "examples/cli/study.h"
#include "core/io/svg.h"
#include "examples/cli/train.h"
#include "kernels/threads.h"

namespace spdlab::cli {
namespace {

using json::Value;

const char* kDefaultInit = "models/pretrained/fmnist_foundation.safetensors";

struct Run {
  std::string optim;
  int64_t seed;
  std::map<std::string, double> acc;  // per domain
  double id = 0, ood_mean = 0, deviation = 0, final_loss = 0, seconds = 0;
  std::vector<std::pair<std::string, double>> dev_tensor;
  std::map<std::string, double> dev_layer;              // sqrt of the sum of squares over the layer's tensors
  std::map<std::string, double> spd_rate_layer;          // fired / steps, pooled over the layer's tensors
  std::vector<optim::SpdTensorStats> spd;
};

struct MeanStd {
  double mean = 0, std = 0;
};
MeanStd mean_std(const std::vector<double>& v) {
  MeanStd m;
  for (double x : v) m.mean += x;
  m.mean /= std::max<size_t>(v.size(), 1);
  if (v.size() > 1) {
    for (double x : v) m.std += (x - m.mean) * (x - m.mean);
    m.std = std::sqrt(m.std / (v.size() - 1));  // sample standard deviation over seeds
  }
  return m;
}

std::string pct(MeanStd m, bool with_std) {
  char b[64];
  if (with_std) std::snprintf(b, sizeof b, "%.1f ± %.1f", 100 * m.mean, 100 * m.std);
  else std::snprintf(b, sizeof b, "%.1f", 100 * m.mean);
  return b;
}

std::string fixed(MeanStd m, bool with_std) {
  char b[64];
  if (with_std) std::snprintf(b, sizeof b, "%.2f ± %.2f", m.mean, m.std);
  else std::snprintf(b, sizeof b, "%.2f", m.mean);
  return b;
}

std::string resolve_init(const std::string& given, bool explicit_flag) {
  if (explicit_flag || std::filesystem::exists(given)) return given;
  std::string in_source = std::string(SPDLAB_SOURCE_DIR) + "/" + given;
  return std::filesystem::exists(in_source) ? in_source : given;
}

// What a finished run leaves in DIR/<optim>-seed<N>.json: everything results.json needs from it, exactly (JSON
// numbers round-trip), so a resumed study writes the same bytes as an uninterrupted one.
Value run_record(const Run& r) {
  Value::Object acc, dev;
  for (auto& [d, v] : r.acc) acc.emplace_back(d, Value::number(v));
  for (auto& [n, d] : r.dev_tensor) dev.emplace_back(n, Value::number(d));
  Value::Array spd;
  for (const auto& s : r.spd)
    spd.push_back(Value::object({{"name", Value::string(s.name)},
                                 {"steps", Value::integer(s.steps)},
                                 {"fired", Value::integer(s.fired)},
                                 {"fired_last", Value::boolean(s.fired_last)},
                                 {"last_r", Value::number(s.last_r)},
                                 {"r_sum", Value::number(s.r_sum)},
                                 {"dev_norm", Value::number(s.dev_norm)}}));
  return Value::object({{"optim", Value::string(r.optim)},
                        {"seed", Value::integer(r.seed)},
                        {"final_loss", Value::number(r.final_loss)},
                        {"seconds", Value::number(r.seconds)},
                        {"accuracy", Value::object(acc)},
                        {"deviation_per_tensor", Value::object(dev)},
                        {"spd", Value::array(spd)}});
}

Run read_run_record(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const Value v = json::parse(ss.str(), path);
  auto get = [&](const Value& o, const char* key) -> const Value& {
    const Value* x = o.find(key);
    SPDLAB_CHECK(x != nullptr, path, ": missing \"", key, "\"; expected a run record written by spdlab compare");
    return *x;
  };
  Run r;
  r.optim = get(v, "optim").as_string();
  r.seed = get(v, "seed").as_int();
  r.final_loss = get(v, "final_loss").as_double();
  r.seconds = get(v, "seconds").as_double();
  for (auto& [d, x] : get(v, "accuracy").as_object()) r.acc[d] = x.as_double();
  for (auto& [n, x] : get(v, "deviation_per_tensor").as_object()) r.dev_tensor.emplace_back(n, x.as_double());
  for (const auto& s : get(v, "spd").as_array())
    r.spd.push_back({get(s, "name").as_string(), get(s, "steps").as_int(), get(s, "fired").as_int(),
                     get(s, "fired_last").as_bool(), get(s, "last_r").as_double(), get(s, "r_sum").as_double(),
                     get(s, "dev_norm").as_double()});
  return r;
}

double mean_over(const std::map<std::string, double>& acc, const std::vector<std::string>& names) {
  double s = 0;
  for (const auto& n : names) s += acc.at(n);
  return names.empty() ? 0.0 : s / names.size();
}

// The measures computed from a run's accuracies, per-tensor deviations and SPD statistics.
void derive(Run& r, const std::string& id_name, const std::vector<std::string>& ood) {
  r.id = r.acc.at(id_name);
  r.ood_mean = mean_over(r.acc, ood);
  double total = 0;
  r.dev_layer.clear();
  for (auto& [n, d] : r.dev_tensor) {
    total += d * d;
    r.dev_layer[layer_of(n)] += d * d;
  }
  r.deviation = std::sqrt(total);
  for (auto& [l, v] : r.dev_layer) v = std::sqrt(v);
  std::map<std::string, std::pair<int64_t, int64_t>> fired;
  for (const auto& st : r.spd) {
    fired[layer_of(st.name)].first += st.fired;
    fired[layer_of(st.name)].second += st.steps;
  }
  r.spd_rate_layer.clear();
  for (auto& [l, f] : fired) r.spd_rate_layer[l] = f.second ? static_cast<double>(f.first) / f.second : 0.0;
}

Value acc_object(const std::map<std::string, double>& acc, const std::vector<std::string>& order) {
  Value::Object o;
  for (const auto& n : order) o.emplace_back(n, Value::number(acc.at(n)));
  return Value::object(o);
}

// A test set of the study: a Fashion-MNIST domain (the test split seen through a transform), or a user's folder.
struct EvalSet {
  std::string name;
  data::Dataset data;
  data::SampleTransform transform;  // empty: the images as stored
};

}  // namespace

int run_compare(int argc, char** argv) {
  CommandLine cl = resume_command_line("compare", argc, argv);
  std::vector<Flag> flags = {
          {"quick", "", "1 seed, 2000 test images per domain (the default)", ""},
          {"full", "", "3 seeds, the whole test set", ""},
          {"seeds", "N", "number of seeds (overrides the mode)", ""},
          {"optims", "LIST", "methods to compare: optimizers (sgd, adam, adamw, l2sp, spd, mars_sp) and lp, bitfit, "
                             "llrd, lpft (AdamW on the head, the biases, with layer-wise lr decay, or after a linear probe)",
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
          {"warmup", "F", "fraction of the steps spent warming up", "0.05"},
          {"threads", "N", "CPU threads", ""},
          device_flag(),
          {"out", "DIR", "output directory", ""},
          {"checkpoint-every", "N", "save a resumable state of the current run every N steps (SIGINT/SIGTERM always do)",
           "0"},
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
  data::Domain id_domain = data::parse_domain(a.str("domain"));
  const bool own_data = a.has("train");
  SPDLAB_CHECK(own_data == a.has("eval"), "compare: --train and --eval go together (your own training and test sets)");
  if (own_data)
    for (const char* f : {"data", "domain", "range", "eval-images"})
      SPDLAB_CHECK(!a.has(f), "compare: --", f, " is for the Fashion-MNIST study; --train and --eval bring their own images");
  const data::SampleTransform train_augment = own_data ? augment_transform_for(a.str("augment")) : nullptr;
  const std::vector<NamedSource> eval_sources = own_data ? parse_eval_sets(a.list("eval")) : std::vector<NamedSource>{};
  const Regularizers reg = regularizers_from(a);
  double lr = a.positive("lr"), warmup = a.nonneg("warmup");
  int64_t epochs = a.integer("epochs", 1, kMaxEpochs), batch = a.integer("batch-size", 1, kMaxBatch);
  std::string out = a.str("out");
  const int64_t checkpoint_every = a.integer("checkpoint-every", 0, kMaxEpochs * kMaxImages);
  check_out_dir(out);  // created only once every input has loaded
  std::string init_path = resolve_init(a.str("init"), a.has("init"));

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
    for (const Run& r : done) complete.push_back(Value::string(r.optim + "-seed" + std::to_string(r.seed)));
    study.write_manifest(Value::object({{"command", Value::string("compare")},
                                        {"args", Value::array(manifest.is_null() ? args_json : Value::Array(
                                                                  manifest.find("args")->as_array()))},
                                        {"status", Value::string(status)},
                                        {"complete", Value::array(complete)}}));
  };
  write_manifest("running", {});
  // Outputs of the whole study are written at the end; until then none from an earlier attempt may remain.
  for (const char* f : {"results.json", "results.csv", "report.md", "id_vs_ood.svg", "per_domain.svg",
                        "per_layer_deviation.svg", "timing.json"})
    std::filesystem::remove(out + "/" + f);

  int64_t total_runs = seeds * static_cast<int64_t>(optims.size());
  int64_t eval_total = 0;
  for (const auto& st : sets) eval_total += st.data.size();
  const std::string train_what = own_data ? a.str("train") : data::domain_name(id_domain);
  std::fprintf(stderr, "compare: %lld fine-tuning runs (%zu optimizers x %lld seeds), %lld epochs each on %lld %s images; "
               "evaluating %lld test images in %zu sets\n",
               static_cast<long long>(total_runs), optims.size(), static_cast<long long>(seeds),
               static_cast<long long>(epochs), static_cast<long long>(train_set.size()), train_what.c_str(),
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
  auto ood_mean = [&](const std::map<std::string, double>& acc) { return mean_over(acc, ood); };

  std::map<std::string, double> pre_acc = eval_all(*init, "pretrained");
  std::vector<Run> runs;
  for (int64_t seed = 0; seed < seeds; ++seed) {
    for (const auto& kind : optims) {
      Run r;
      r.optim = kind;
      r.seed = seed;
      std::string stem = out + "/" + kind + "-seed" + std::to_string(seed);
      const std::string record = stem + ".json";
      char label[64];
      std::snprintf(label, sizeof label, "[%zu/%lld] %s seed %lld", runs.size() + 1,
                    static_cast<long long>(total_runs), kind.c_str(), static_cast<long long>(seed));
      if (std::filesystem::exists(record)) {  // finished by an earlier attempt
        Run done = read_run_record(record);
        SPDLAB_CHECK(done.optim == kind && done.seed == seed, record, " is the record of ", done.optim, " seed ",
                     done.seed, ", not ", kind, " seed ", seed);
        derive(done, id_name, ood);
        std::fprintf(stderr, "%s: finished earlier (ID %.1f%%, OOD mean %.1f%%)\n", label, 100 * done.id,
                     100 * done.ood_mean);
        runs.push_back(std::move(done));
        continue;
      }
      if (const int sig = stop_requested())
        throw Interrupted(sig, detail::cat("compare: stopped by ", signal_name(sig), " before ", label,
                                           "; resume with: ", resume_hint("compare", out)));
      auto run_dir = std::make_unique<RunDir>(stem + ".run");
      auto model = models::load_model(init_path, spec, device);
      const Method method = method_named(kind);
      TrainOptions opt;
      opt.optim = method.optim;
      opt.params = method.params;
      opt.layer_decay = reg.layer_decay;
      opt.hp = hyperparams_for(method.optim, lr, reg);
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
            save_vit(*model, probed, with_classes({{"spdlab.command", command_line(cl.argc(), cl.argv())},
                                                   {"spdlab.optim", "lp"}, {"spdlab.seed", std::to_string(seed)},
                                                   {"spdlab.commit", SPDLAB_GIT_COMMIT}},
                                                  train_set));
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
      save_vit(*model, stem + ".safetensors",
               with_classes({{"spdlab.command", command_line(cl.argc(), cl.argv())}, {"spdlab.optim", kind},
                             {"spdlab.seed", std::to_string(seed)}, {"spdlab.commit", SPDLAB_GIT_COMMIT}},
                            train_set));
      r.acc = eval_all(*model, kind);
      r.dev_tensor = deviation_per_tensor(*model, *init);
      derive(r, id_name, ood);
      write_text_atomic(record, json::dump(run_record(r)) + "\n");  // the run is complete once this exists
      run_dir->remove_all();
      double done = now_seconds() - t_start;
      double per_run = done / (runs.size() + 1);
      std::fprintf(stderr, "%s: ID %.1f%%, OOD mean %.1f%%, |theta - theta0| %.2f; %.0f s elapsed, about %.0f s left\n",
                   label, 100 * r.id, 100 * r.ood_mean, r.deviation, done,
                   per_run * (total_runs - static_cast<int64_t>(runs.size()) - 1));
      runs.push_back(std::move(r));
      write_manifest("running", runs);
    }
  }

  // ---- results.json ----
  std::vector<std::string> layers;
  for (auto& [n, d] : runs.front().dev_tensor)
    if (std::find(layers.begin(), layers.end(), layer_of(n)) == layers.end()) layers.push_back(layer_of(n));
  Value::Array run_values;
  for (const auto& r : runs) {
    Value::Object dl, dt, rate;
    for (auto& l : layers) dl.emplace_back(l, Value::number(r.dev_layer.at(l)));
    for (auto& [n, d] : r.dev_tensor) dt.emplace_back(n, Value::number(d));
    Value::Object run{{"optim", Value::string(r.optim)},
                      {"seed", Value::integer(r.seed)},
                      {"accuracy", acc_object(r.acc, set_names)},
                      {"id", Value::number(r.id)},
                      {"ood_mean", Value::number(r.ood_mean)},
                      {"deviation", Value::number(r.deviation)},
                      {"deviation_per_layer", Value::object(dl)},
                      {"deviation_per_tensor", Value::object(dt)},
                      {"final_loss", Value::number(r.final_loss)}};
    if (!r.spd.empty()) {
      Value::Array per;
      double r_sum = 0;
      int64_t r_count = 0;
      for (const auto& s : r.spd) {
        per.push_back(Value::object(Value::Object{{"name", Value::string(s.name)},
                                                  {"steps", Value::integer(s.steps)},
                                                  {"fired", Value::integer(s.fired)},
                                                  {"mean_r", Value::number(s.fired ? s.r_sum / s.fired : 0.0)},
                                                  {"deviation", Value::number(s.dev_norm)}}));
        r_sum += s.r_sum;
        r_count += s.fired;
      }
      for (auto& l : layers)
        if (r.spd_rate_layer.count(l)) rate.emplace_back(l, Value::number(r.spd_rate_layer.at(l)));
      run.emplace_back("spd", Value::object({{"condition_rate_per_layer", Value::object(rate)},
                                             {"mean_r", Value::number(r_count ? r_sum / r_count : 0.0)},
                                             {"per_tensor", Value::array(per)}}));
    }
    run_values.push_back(Value::object(run));
  }
  // Summary: mean and std over seeds per optimizer.
  Value::Object summary;
  std::map<std::string, std::map<std::string, MeanStd>> sm;  // optim -> metric -> stats
  for (const auto& kind : optims) {
    std::map<std::string, std::vector<double>> cols;
    for (const auto& r : runs) {
      if (r.optim != kind) continue;
      for (auto& [d, v] : r.acc) cols[d].push_back(v);
      cols["ood_mean"].push_back(r.ood_mean);
      cols["deviation"].push_back(r.deviation);
      for (auto& [l, v] : r.dev_layer) cols["dev:" + l].push_back(v);
      for (auto& [l, v] : r.spd_rate_layer) cols["rate:" + l].push_back(v);
    }
    Value::Object o;
    for (auto& [k, v] : cols) {
      MeanStd m = mean_std(v);
      sm[kind][k] = m;
      if (k.rfind("dev:", 0) == 0 || k.rfind("rate:", 0) == 0) continue;
      o.emplace_back(k, Value::object({{"mean", Value::number(m.mean)}, {"std", Value::number(m.std)}}));
    }
    summary.emplace_back(kind, Value::object(o));
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
                                {"seeds", Value::integer(seeds)}})
    protocol.push_back(kv);
  if (!own_data) protocol.emplace_back("eval_images_per_domain", Value::integer(eval_images));
  protocol.emplace_back("eval_noise_seed", Value::integer(static_cast<int64_t>(eval_seed)));
  Value results = Value::object(
      {{"protocol", Value::object(protocol)},
       {"pretrained", Value::object({{"accuracy", acc_object(pre_acc, set_names)},
                                     {"ood_mean", Value::number(ood_mean(pre_acc))}})},
       {"summary", Value::object(summary)},
       {"runs", Value::array(run_values)}});
  write_text_atomic(out + "/results.json", json::dump(results) + "\n");


  // ---- results.csv ----
  std::ostringstream csv;
  csv << "optim,seed";
  for (const auto& n : set_names) csv << "," << n;
  csv << ",id,ood_mean,deviation\n";
  auto csv_row = [&](const std::string& name, const std::string& seed, const std::map<std::string, double>& acc,
                     double id, double om, const std::string& dev) {
    csv << name << "," << seed;
    for (const auto& n : set_names) csv << "," << acc.at(n);
    csv << "," << id << "," << om << "," << dev << "\n";
  };
  csv.precision(6);
  csv_row("pretrained", "", pre_acc, pre_acc.at(id_name), ood_mean(pre_acc), "0");
  for (const auto& r : runs) {
    std::ostringstream dev;
    dev.precision(6);
    dev << r.deviation;
    csv_row(r.optim, std::to_string(r.seed), r.acc, r.id, r.ood_mean, dev.str());
  }
  write_text_atomic(out + "/results.csv", csv.str());

  // ---- report.md ----
  bool with_std = seeds > 1;
  std::ostringstream md;
  md << "# Robust fine-tuning study\n\nFine-tuned on **" << train_what << "** (" << train_set.size() << " images, "
     << epochs << " epochs, batch " << batch << ", lr " << lr << ", warmup then cosine";
  if (own_data) {
    md << ", augmentation " << a.str("augment") << "), evaluated on";
    for (size_t i = 0; i < sets.size(); ++i)
      md << (i ? ", " : " ") << sets[i].name << " (" << sets[i].data.size() << " images)";
    md << ". ";
  } else {
    md << "), evaluated on " << eval_images << " test images per domain. ";
  }
  md << seeds << (seeds > 1 ? " seeds, mean ± std" : " seed") << ". Accuracy in %.";
  if (init_info.fresh_head)
    md << " The pre-trained model's head was replaced by a fresh " << cfg.num_classes
       << "-class head, so its row is at chance level: it measures nothing about the features.";
  md << "\n\n| model | ID (" << id_name << ")";
  for (const auto& n : ood) md << " | " << n;
  md << " | OOD mean | ‖θ−θ0‖ |\n|---|---";
  for (size_t i = 0; i < ood.size(); ++i) md << "|---";
  md << "|---|---|\n| pretrained | " << pct({pre_acc.at(id_name), 0}, false);
  for (const auto& n : ood) md << " | " << pct({pre_acc.at(n), 0}, false);
  md << " | " << pct({ood_mean(pre_acc), 0}, false) << " | — |\n";
  auto hp_note = [&](const std::string& k) -> std::string {
    char b[64];
    if (k == "adamw") std::snprintf(b, sizeof b, "AdamW (wd %g)", reg.wd);
    else if (k == "l2sp") std::snprintf(b, sizeof b, "L2-SP (α %g)", reg.alpha);
    else if (k == "spd") std::snprintf(b, sizeof b, "SPD (λ %g)", reg.lambda);
    else if (k == "mars_sp") std::snprintf(b, sizeof b, "MARS-SP (γ %g)", reg.gamma);
    else if (k == "adam") std::snprintf(b, sizeof b, "Adam");
    else if (k == "lp") std::snprintf(b, sizeof b, "LP (AdamW, head only)");
    else if (k == "bitfit") std::snprintf(b, sizeof b, "BitFit (AdamW, biases and head)");
    else if (k == "llrd") std::snprintf(b, sizeof b, "AdamW + LLRD (decay %g)", reg.layer_decay);
    else if (k == "lpft") std::snprintf(b, sizeof b, "LP-FT (AdamW)");
    else std::snprintf(b, sizeof b, "%s", k.c_str());
    return b;
  };
  for (const auto& kind : optims) {
    auto& s = sm[kind];
    md << "| " << hp_note(kind) << " | " << pct(s[id_name], with_std);
    for (const auto& n : ood) md << " | " << pct(s[n], with_std);
    md << " | " << pct(s["ood_mean"], with_std) << " | " << fixed(s["deviation"], with_std) << " |\n";
  }
  md << "\n## Deviation from the pre-trained weights per layer (‖θ−θ0‖)\n\n| layer";
  for (const auto& kind : optims) md << " | " << kind;
  if (sm.count("spd")) md << " | SPD condition rate";
  md << " |\n|---";
  for (size_t i = 0; i < optims.size(); ++i) md << "|---";
  if (sm.count("spd")) md << "|---";
  md << "|\n";
  for (const auto& l : layers) {
    md << "| " << l;
    for (const auto& kind : optims) md << " | " << fixed(sm[kind]["dev:" + l], false);
    if (sm.count("spd")) md << " | " << fixed(sm["spd"]["rate:" + l], false);
    md << " |\n";
  }
  md << "\nPlots: `id_vs_ood.svg`, `per_domain.svg`, `per_layer_deviation.svg`. Raw numbers: `results.json`, "
        "`results.csv`.\n";
  write_text_atomic(out + "/report.md", md.str());

  // ---- plots: accuracy in %, one colour per method in every plot (method_color) ----
  std::vector<svg::Point> pts{
      {"pretrained", 100 * ood_mean(pre_acc), 100 * pre_acc.at(id_name), 0, 0, method_color("pretrained")}};
  for (const auto& kind : optims) {
    auto& s = sm[kind];
    pts.push_back({kind, 100 * s["ood_mean"].mean, 100 * s[id_name].mean, 100 * s["ood_mean"].std,
                   100 * s[id_name].std, method_color(kind)});
  }
  write_text_atomic(out + "/id_vs_ood.svg",
                    svg::scatter("ID vs OOD accuracy (mean ± std over seeds)", "OOD mean accuracy (%)",
                                 "ID accuracy, " + id_name + " (%)", pts));
  std::vector<std::string> dnames;
  for (const auto& n : set_names) dnames.push_back(n);
  std::vector<svg::Series> bars{{"pretrained", {}, {}, method_color("pretrained")}};
  for (const auto& n : set_names) bars[0].values.push_back(100 * pre_acc.at(n));
  for (const auto& kind : optims) {
    svg::Series s{kind, {}, {}, method_color(kind)};
    for (const auto& n : set_names) {
      s.values.push_back(100 * sm[kind][n].mean);
      s.errors.push_back(100 * sm[kind][n].std);
    }
    bars.push_back(s);
  }
  write_text_atomic(out + "/per_domain.svg", svg::grouped_bars("Accuracy per domain", "accuracy (%)", dnames, bars));
  std::vector<svg::Series> devs;
  for (const auto& kind : optims) {
    svg::Series s{kind, {}, {}, method_color(kind)};
    for (const auto& l : layers) s.values.push_back(sm[kind]["dev:" + l].mean);
    devs.push_back(s);
  }
  svg::Series rate{"SPD condition rate", {}, {}};
  for (const auto& l : layers) rate.values.push_back(sm.count("spd") ? sm["spd"]["rate:" + l].mean : 0.0);
  write_text_atomic(out + "/per_layer_deviation.svg",
                    svg::grouped_bars("Deviation from the pre-trained weights per layer", "||theta - theta0||",
                                      layers, devs, sm.count("spd") ? &rate : nullptr));

  double total = now_seconds() - t_start;
  write_text_atomic(out + "/timing.json",
                    json::dump(Value::object({{"seconds", Value::number(total)},
                                              {"threads", Value::integer(get_num_threads())},
                                              {"device", Value::string(device.str())},
                                              {"device_name", Value::string(kernels::get(device).name())},
                                              {"cpu_isa", Value::string(kernels::cpu_isa())}})) +
                        "\n");
  write_manifest("complete", runs);
  std::fputs(md.str().c_str(), stdout);
  std::fprintf(stderr, "compare: done in %.0f s; results in %s\n", total, out.c_str());
  return 0;
}


}  // namespace spdlab::cli
