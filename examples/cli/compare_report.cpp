// The study's outputs from its runs: results.json, results.csv, report.md and the plots (compare_report.h).
#include "examples/cli/compare_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "core/io/svg.h"
#include "core/stats.h"
#include "examples/cli/study.h"
#include "examples/cli/train.h"

namespace spdlab::cli {

using json::Value;
using stats::MeanStd;
using stats::PairedDiff;
using stats::mean_std;
using stats::paired_difference;
using stats::pareto_front;

namespace {

Value acc_object(const std::map<std::string, double>& acc, const std::vector<std::string>& order) {
  Value::Object o;
  for (const auto& n : order)
    if (acc.count(n)) o.emplace_back(n, Value::number(acc.at(n)));
  return Value::object(o);
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

// A paired difference in accuracy points: "+1.2 [+0.4, +2.0]", or "+1.2" for one pair.
std::string points(const PairedDiff& d) {
  char b[96];
  if (d.half_width < 0) std::snprintf(b, sizeof b, "%+.1f", 100 * d.mean);
  else
    std::snprintf(b, sizeof b, "%+.1f [%+.1f, %+.1f]", 100 * d.mean, 100 * (d.mean - d.half_width),
                  100 * (d.mean + d.half_width));
  return b;
}

std::string value_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// The chosen runs of a method, by seed.
std::vector<const Run*> chosen_runs(const std::vector<Run>& runs, const std::string& method) {
  std::vector<const Run*> out;
  for (const auto& r : runs)
    if (r.optim == method && r.chosen) out.push_back(&r);
  std::sort(out.begin(), out.end(), [](const Run* a, const Run* b) { return a->seed < b->seed; });
  return out;
}

// A method's WiSE-FT curve, averaged over its chosen runs' seeds: (alpha, OOD mean, ID) per alpha.
struct CurvePoint {
  double alpha, ood, id;
};
std::vector<CurvePoint> wise_curve(const std::vector<const Run*>& chosen) {
  std::map<double, std::pair<std::vector<double>, std::vector<double>>> by_alpha;
  for (const Run* r : chosen)
    for (const auto& w : r->wise) {
      by_alpha[w.alpha].first.push_back(w.ood_mean);
      by_alpha[w.alpha].second.push_back(w.id);
    }
  std::vector<CurvePoint> out;
  for (auto& [a, v] : by_alpha) out.push_back({a, mean_std(v.first).mean, mean_std(v.second).mean});
  return out;
}

}  // namespace

double mean_over(const std::map<std::string, double>& acc, const std::vector<std::string>& names) {
  double s = 0;
  for (const auto& n : names) s += acc.at(n);
  return names.empty() ? 0.0 : s / names.size();
}

Value run_record(const Run& r) {
  Value::Object acc, dev;
  for (auto& [d, v] : r.acc) acc.emplace_back(d, Value::number(v));
  for (auto& [n, d] : r.dev_tensor) dev.emplace_back(n, Value::number(d));
  Value::Array spd, wise;
  for (const auto& s : r.spd)
    spd.push_back(Value::object({{"name", Value::string(s.name)},
                                 {"steps", Value::integer(s.steps)},
                                 {"fired", Value::integer(s.fired)},
                                 {"fired_last", Value::boolean(s.fired_last)},
                                 {"last_r", Value::number(s.last_r)},
                                 {"r_sum", Value::number(s.r_sum)},
                                 {"dev_norm", Value::number(s.dev_norm)}}));
  for (const auto& w : r.wise) {
    Value::Object wa;
    for (auto& [d, v] : w.acc) wa.emplace_back(d, Value::number(v));
    wise.push_back(Value::object({{"alpha", Value::number(w.alpha)}, {"accuracy", Value::object(wa)}}));
  }
  Value::Object fired;
  for (const auto& [layer, v] : r.fired_by_step) {
    Value::Array a;
    for (double x : v) a.push_back(Value::number(x));
    fired.emplace_back(layer, Value::array(a));
  }
  return Value::object({{"optim", Value::string(r.optim)},
                        {"hp", Value::string(r.hp)},
                        {"hp_value", Value::number(r.hp_value)},
                        {"seed", Value::integer(r.seed)},
                        {"val_accuracy", Value::number(r.val_acc)},
                        {"final_loss", Value::number(r.final_loss)},
                        {"seconds", Value::number(r.seconds)},
                        {"accuracy", Value::object(acc)},
                        {"deviation_per_tensor", Value::object(dev)},
                        {"spd", Value::array(spd)},
                        {"wise_ft", Value::array(wise)},
                        {"fired_by_step", Value::object(fired)}});
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
  r.hp = get(v, "hp").as_string();
  r.hp_value = get(v, "hp_value").as_double();
  r.seed = get(v, "seed").as_int();
  r.val_acc = get(v, "val_accuracy").as_double();
  r.final_loss = get(v, "final_loss").as_double();
  r.seconds = get(v, "seconds").as_double();
  for (auto& [d, x] : get(v, "accuracy").as_object()) r.acc[d] = x.as_double();
  for (auto& [n, x] : get(v, "deviation_per_tensor").as_object()) r.dev_tensor.emplace_back(n, x.as_double());
  for (const auto& s : get(v, "spd").as_array())
    r.spd.push_back({get(s, "name").as_string(), get(s, "steps").as_int(), get(s, "fired").as_int(),
                     get(s, "fired_last").as_bool(), get(s, "last_r").as_double(), get(s, "r_sum").as_double(),
                     get(s, "dev_norm").as_double()});
  for (const auto& [layer, a] : get(v, "fired_by_step").as_object())
    for (const auto& x : a.as_array()) r.fired_by_step[layer].push_back(x.as_double());
  for (const auto& w : get(v, "wise_ft").as_array()) {
    WisePoint p;
    p.alpha = get(w, "alpha").as_double();
    for (auto& [d, x] : get(w, "accuracy").as_object()) p.acc[d] = x.as_double();
    r.wise.push_back(std::move(p));
  }
  return r;
}

std::map<std::string, std::vector<double>> read_fired_by_step(const std::string& metrics_path) {
  std::map<std::string, std::vector<double>> out;
  std::ifstream f(metrics_path);
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.empty()) continue;
    const Value v = json::parse(line, metrics_path + " line " + std::to_string(n));
    if (const Value* fired = v.find("fired"))
      for (const auto& [layer, x] : fired->as_object()) out[layer].push_back(x.as_double());
  }
  return out;
}

void derive(Run& r, const std::string& id_name, const std::vector<std::string>& ood) {
  r.id = r.acc.at(id_name);
  r.ood_mean = mean_over(r.acc, ood);
  for (auto& w : r.wise) {
    w.id = w.acc.at(id_name);
    w.ood_mean = mean_over(w.acc, ood);
  }
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

std::string write_study_outputs(const StudySetup& s, const std::vector<Run>& runs) {
  SPDLAB_CHECK(!runs.empty(), "compare: no runs to report");
  const bool with_std = s.seeds > 1;
  auto ood_mean = [&](const std::map<std::string, double>& acc) { return mean_over(acc, s.ood); };

  // ---- results.json ----
  std::vector<std::string> layers;
  for (auto& [n, d] : runs.front().dev_tensor)
    if (std::find(layers.begin(), layers.end(), layer_of(n)) == layers.end()) layers.push_back(layer_of(n));
  Value::Array run_values;
  for (const auto& r : runs) {
    Value::Object dl, dt, rate;
    for (auto& l : layers) dl.emplace_back(l, Value::number(r.dev_layer.at(l)));
    for (auto& [n, d] : r.dev_tensor) dt.emplace_back(n, Value::number(d));
    Value::Object run{{"optim", Value::string(r.optim)}, {"seed", Value::integer(r.seed)}};
    if (s.tuned) {
      run.emplace_back("hp", Value::string(r.hp));
      run.emplace_back("hp_value", Value::number(r.hp_value));
      run.emplace_back("chosen", Value::boolean(r.chosen));
      run.emplace_back("val_accuracy", Value::number(r.val_acc));
    }
    for (auto& kv : Value::Object{{"accuracy", acc_object(r.acc, s.set_names)},
                                  {"id", Value::number(r.id)},
                                  {"ood_mean", Value::number(r.ood_mean)},
                                  {"deviation", Value::number(r.deviation)},
                                  {"deviation_per_layer", Value::object(dl)},
                                  {"deviation_per_tensor", Value::object(dt)},
                                  {"final_loss", Value::number(r.final_loss)}})
      run.push_back(kv);
    if (!r.spd.empty()) {
      Value::Array per;
      double r_sum = 0;
      int64_t r_count = 0;
      for (const auto& st : r.spd) {
        per.push_back(Value::object(Value::Object{{"name", Value::string(st.name)},
                                                  {"steps", Value::integer(st.steps)},
                                                  {"fired", Value::integer(st.fired)},
                                                  {"mean_r", Value::number(st.fired ? st.r_sum / st.fired : 0.0)},
                                                  {"deviation", Value::number(st.dev_norm)}}));
        r_sum += st.r_sum;
        r_count += st.fired;
      }
      for (auto& l : layers)
        if (r.spd_rate_layer.count(l)) rate.emplace_back(l, Value::number(r.spd_rate_layer.at(l)));
      run.emplace_back("spd", Value::object({{"condition_rate_per_layer", Value::object(rate)},
                                             {"mean_r", Value::number(r_count ? r_sum / r_count : 0.0)},
                                             {"per_tensor", Value::array(per)}}));
    }
    if (!r.wise.empty()) {
      Value::Array wise;
      for (const auto& w : r.wise)
        wise.push_back(Value::object({{"alpha", Value::number(w.alpha)},
                                      {"accuracy", acc_object(w.acc, s.set_names)},
                                      {"id", Value::number(w.id)},
                                      {"ood_mean", Value::number(w.ood_mean)}}));
      run.emplace_back("wise_ft", Value::array(wise));
    }
    run_values.push_back(Value::object(run));
  }
  // Summary: mean and std over seeds per method, of its chosen runs.
  Value::Object summary;
  std::map<std::string, std::map<std::string, MeanStd>> sm;  // method -> metric -> stats
  for (const auto& kind : s.methods) {
    std::map<std::string, std::vector<double>> cols;
    for (const Run* r : chosen_runs(runs, kind)) {
      for (auto& [d, v] : r->acc) cols[d].push_back(v);
      cols["ood_mean"].push_back(r->ood_mean);
      cols["deviation"].push_back(r->deviation);
      for (auto& [l, v] : r->dev_layer) cols["dev:" + l].push_back(v);
      for (auto& [l, v] : r->spd_rate_layer) cols["rate:" + l].push_back(v);
    }
    Value::Object o;
    if (s.tuned) {
      const auto chosen = chosen_runs(runs, kind);
      if (!chosen.empty() && !chosen.front()->hp.empty())
        o.emplace_back(chosen.front()->hp, Value::number(chosen.front()->hp_value));
    }
    for (auto& [k, v] : cols) {
      MeanStd m = mean_std(v);
      sm[kind][k] = m;
      if (k.rfind("dev:", 0) == 0 || k.rfind("rate:", 0) == 0) continue;
      o.emplace_back(k, Value::object({{"mean", Value::number(m.mean)}, {"std", Value::number(m.std)}}));
    }
    summary.emplace_back(kind, Value::object(o));
  }
  // Paired differences against AdamW, seed by seed (only where both ran every seed).
  const bool have_adamw = std::find(s.methods.begin(), s.methods.end(), "adamw") != s.methods.end();
  std::map<std::string, std::pair<PairedDiff, PairedDiff>> vs_adamw;  // method -> (ID, OOD mean)
  if (have_adamw) {
    const auto base = chosen_runs(runs, "adamw");
    for (const auto& kind : s.methods) {
      if (kind == "adamw") continue;
      const auto mine = chosen_runs(runs, kind);
      if (mine.size() != base.size() || base.empty()) continue;
      std::vector<double> a_id, b_id, a_ood, b_ood;
      for (size_t i = 0; i < base.size(); ++i) {
        a_id.push_back(mine[i]->id);
        b_id.push_back(base[i]->id);
        a_ood.push_back(mine[i]->ood_mean);
        b_ood.push_back(base[i]->ood_mean);
      }
      vs_adamw[kind] = {paired_difference(a_id, b_id), paired_difference(a_ood, b_ood)};
    }
  }
  Value::Object paired;
  for (const auto& [kind, d] : vs_adamw) {
    auto one = [](const PairedDiff& p) {
      return Value::object({{"mean", Value::number(p.mean)},
                            {"ci95_half_width", p.half_width < 0 ? Value() : Value::number(p.half_width)},
                            {"pairs", Value::integer(p.n)}});
    };
    paired.emplace_back(kind, Value::object({{"id", one(d.first)}, {"ood_mean", one(d.second)}}));
  }

  // Every point of the ID-OOD plane: the pretrained model, each method's mean, its sweep (seed 0) and WiSE-FT.
  struct PlanePoint {
    std::string method, what;  // what: "mean", "sweep <hp> <value>", "wise <alpha>", "pretrained"
    double ood, id;
  };
  std::vector<PlanePoint> plane{{"pretrained", "pretrained", ood_mean(s.pre_acc), s.pre_acc.at(s.id_name)}};
  for (const auto& kind : s.methods) {
    plane.push_back({kind, "mean", sm[kind]["ood_mean"].mean, sm[kind][s.id_name].mean});
    for (const auto& r : runs)
      if (r.optim == kind && r.seed == 0 && !r.hp.empty() && s.tuned)
        plane.push_back({kind, "sweep " + r.hp + " " + value_text(r.hp_value), r.ood_mean, r.id});
    for (const auto& c : wise_curve(chosen_runs(runs, kind)))
      plane.push_back({kind, "WiSE-FT alpha " + value_text(c.alpha), c.ood, c.id});
  }
  std::vector<std::pair<double, double>> all_xy;
  for (const auto& p : plane) all_xy.push_back({p.ood, p.id});
  const auto front = pareto_front(all_xy);
  // The best OOD mean each method reaches at an ID accuracy no lower than AdamW's minus 0.5 points.
  Value::Object matched;
  std::map<std::string, const PlanePoint*> best_matched;
  const double id_floor = have_adamw ? sm["adamw"][s.id_name].mean - 0.005 : 0;
  if (have_adamw)
    for (const auto& kind : s.methods) {
      const PlanePoint* best = nullptr;
      for (const auto& p : plane)
        if (p.method == kind && p.id >= id_floor && (!best || p.ood > best->ood)) best = &p;
      best_matched[kind] = best;
      matched.emplace_back(kind, best ? Value::object({{"ood_mean", Value::number(best->ood)},
                                                       {"id", Value::number(best->id)},
                                                       {"point", Value::string(best->what)}})
                                      : Value());
    }

  Value::Object pre{{"accuracy", acc_object(s.pre_acc, s.set_names)}, {"ood_mean", Value::number(ood_mean(s.pre_acc))}};
  Value::Object top{{"protocol", s.protocol}, {"pretrained", Value::object(pre)}, {"summary", Value::object(summary)}};
  if (!paired.empty()) top.emplace_back("paired_vs_adamw", Value::object(paired));
  if (!matched.empty()) {
    top.emplace_back("best_ood_at_adamw_id_minus_0.5", Value::object(matched));
    Value::Array f;
    for (const auto& [x, y] : front)
      f.push_back(Value::object({{"ood_mean", Value::number(x)}, {"id", Value::number(y)}}));
    top.emplace_back("pareto_front", Value::array(f));
  }
  top.emplace_back("runs", Value::array(run_values));
  write_text_atomic(s.out + "/results.json", json::dump(Value::object(top)) + "\n");

  // ---- results.csv ----
  std::ostringstream csv;
  csv << "optim,seed";
  if (s.tuned) csv << ",hp,hp_value,chosen,val_accuracy";
  for (const auto& n : s.set_names) csv << "," << n;
  csv << ",id,ood_mean,deviation\n";
  csv.precision(6);
  auto csv_accs = [&](const std::map<std::string, double>& acc, double id, double om, const std::string& dev) {
    for (const auto& n : s.set_names) csv << "," << acc.at(n);
    csv << "," << id << "," << om << "," << dev << "\n";
  };
  csv << "pretrained,";
  if (s.tuned) csv << ",,,,";
  csv_accs(s.pre_acc, s.pre_acc.at(s.id_name), ood_mean(s.pre_acc), "0");
  for (const auto& r : runs) {
    std::ostringstream dev;
    dev.precision(6);
    dev << r.deviation;
    csv << r.optim << "," << r.seed;
    if (s.tuned) csv << "," << r.hp << "," << r.hp_value << "," << (r.chosen ? 1 : 0) << "," << r.val_acc;
    csv_accs(r.acc, r.id, r.ood_mean, dev.str());
  }
  write_text_atomic(s.out + "/results.csv", csv.str());

  // ---- report.md ----
  std::ostringstream md;
  md << "# Robust fine-tuning study\n\n" << s.intro << "\n\n| model | ID (" << s.id_name << ")";
  for (const auto& n : s.ood) md << " | " << n;
  md << " | OOD mean | ‖θ−θ0‖ |\n|---|---";
  for (size_t i = 0; i < s.ood.size(); ++i) md << "|---";
  md << "|---|---|\n| pretrained | " << pct({s.pre_acc.at(s.id_name), 0}, false);
  for (const auto& n : s.ood) md << " | " << pct({s.pre_acc.at(n), 0}, false);
  md << " | " << pct({ood_mean(s.pre_acc), 0}, false) << " | — |\n";
  for (const auto& kind : s.methods) {
    auto& m = sm[kind];
    md << "| " << s.label.at(kind) << " | " << pct(m[s.id_name], with_std);
    for (const auto& n : s.ood) md << " | " << pct(m[n], with_std);
    md << " | " << pct(m["ood_mean"], with_std) << " | " << fixed(m["deviation"], with_std) << " |\n";
  }
  if (s.tuned) {
    md << "\n## Tuning on the in-distribution validation split\n\nEach method's hyperparameter was chosen by its "
          "accuracy on the validation split (held out of the training images, never the test sets), at seed 0; "
          "the rows above are that value over every seed. Validation accuracy in %, test accuracies of the same "
          "seed-0 runs beside it (the sweep points of the plot).\n\n| method | value | validation ID | test ID | "
          "test OOD mean | chosen |\n|---|---|---|---|---|---|\n";
    for (const auto& kind : s.methods)
      for (const auto& r : runs)
        if (r.optim == kind && r.seed == 0)
          md << "| " << kind << " | " << (r.hp.empty() ? "—" : r.hp + " " + value_text(r.hp_value)) << " | "
             << pct({r.val_acc, 0}, false) << " | " << pct({r.id, 0}, false) << " | " << pct({r.ood_mean, 0}, false)
             << " | " << (r.chosen ? "✓" : "") << " |\n";
  }
  if (!vs_adamw.empty()) {
    md << "\n## Against AdamW, seed by seed\n\nMean difference in accuracy points over " << chosen_runs(runs, "adamw").size()
       << " paired seed(s), with a 95% t interval where there are at least two pairs.\n\n| method | ID − AdamW | "
          "OOD mean − AdamW |\n|---|---|---|\n";
    for (const auto& kind : s.methods)
      if (vs_adamw.count(kind))
        md << "| " << s.label.at(kind) << " | " << points(vs_adamw[kind].first) << " | "
           << points(vs_adamw[kind].second) << " |\n";
  }
  if (!best_matched.empty()) {
    md << "\n## Robustness at matched in-distribution accuracy\n\nThe best OOD mean each method reaches at an ID "
          "accuracy no lower than AdamW's minus 0.5 points ("
       << pct({id_floor, 0}, false)
       << "%), over its reported mean, its sweep points (seed 0) and its WiSE-FT curve (mean over seeds).\n\n"
          "| method | best OOD mean | at ID | from |\n|---|---|---|---|\n";
    for (const auto& kind : s.methods) {
      const PlanePoint* b = best_matched[kind];
      if (b)
        md << "| " << s.label.at(kind) << " | " << pct({b->ood, 0}, false) << " | " << pct({b->id, 0}, false)
           << " | " << b->what << " |\n";
      else
        md << "| " << s.label.at(kind) << " | — | — | no point reaches that ID |\n";
    }
  }
  if (!s.wise_note.empty()) md << "\nWiSE-FT: " << s.wise_note << "\n";
  md << "\n## Deviation from the pre-trained weights per layer (‖θ−θ0‖)\n\n| layer";
  for (const auto& kind : s.methods) md << " | " << kind;
  if (sm.count("spd")) md << " | SPD condition rate";
  md << " |\n|---";
  for (size_t i = 0; i < s.methods.size(); ++i) md << "|---";
  if (sm.count("spd")) md << "|---";
  md << "|\n";
  for (const auto& l : layers) {
    md << "| " << l;
    for (const auto& kind : s.methods) md << " | " << fixed(sm[kind]["dev:" + l], false);
    if (sm.count("spd")) md << " | " << fixed(sm["spd"]["rate:" + l], false);
    md << " |\n";
  }
  const bool rate_plot = !chosen_runs(runs, "spd").empty() && !chosen_runs(runs, "spd").front()->fired_by_step.empty();
  md << "\nPlots: `id_vs_ood.svg`, `per_domain.svg`, `per_layer_deviation.svg`"
     << (rate_plot ? ", `spd_condition_rate.svg` (SPD's condition rate over training)" : "")
     << ". Raw numbers: `results.json`, `results.csv`; per run, `<run>.json` and its metrics `<run>.jsonl`.\n";
  write_text_atomic(s.out + "/report.md", md.str());

  // ---- plots: accuracy in %, one colour per method in every plot (method_color) ----
  std::vector<svg::Point> pts{{"pretrained", 100 * ood_mean(s.pre_acc), 100 * s.pre_acc.at(s.id_name), 0, 0,
                               method_color("pretrained")}};
  std::vector<svg::Line> curves;
  for (const auto& kind : s.methods) {
    auto& m = sm[kind];
    pts.push_back({kind, 100 * m["ood_mean"].mean, 100 * m[s.id_name].mean, 100 * m["ood_mean"].std,
                   100 * m[s.id_name].std, method_color(kind)});
    svg::Line sweep{kind + " sweep", {}, {}, {}, method_color(kind), false, true};
    svg::Line wise{kind + " WiSE-FT", {}, {}, {}, method_color(kind), true, true};
    for (const auto& p : plane) {
      if (p.method != kind) continue;
      if (p.what.rfind("sweep", 0) == 0) {
        sweep.x.push_back(100 * p.ood);
        sweep.y.push_back(100 * p.id);
      }
    }
    for (const auto& c : wise_curve(chosen_runs(runs, kind))) {
      wise.x.push_back(100 * c.ood);
      wise.y.push_back(100 * c.id);
    }
    if (sweep.x.size() > 1) curves.push_back(sweep);
    if (!wise.x.empty()) {  // from the pre-trained model to the fine-tuned one, through each alpha
      wise.x.insert(wise.x.begin(), 100 * ood_mean(s.pre_acc));
      wise.y.insert(wise.y.begin(), 100 * s.pre_acc.at(s.id_name));
      wise.x.push_back(100 * m["ood_mean"].mean);
      wise.y.push_back(100 * m[s.id_name].mean);
      curves.push_back(wise);
    }
  }
  if (!curves.empty()) {
    svg::Line f{"Pareto front", {}, {}, {}, "#000000", true, false};
    for (const auto& [x, y] : front) {
      f.x.push_back(100 * x);
      f.y.push_back(100 * y);
    }
    curves.push_back(f);
  }
  write_text_atomic(s.out + "/id_vs_ood.svg",
                    svg::scatter(with_std ? "ID vs OOD accuracy (mean ± std over seeds)" : "ID vs OOD accuracy",
                                 "OOD mean accuracy (%)", "ID accuracy, " + s.id_name + " (%)", pts, curves));
  std::vector<std::string> dnames(s.set_names.begin(), s.set_names.end());
  std::vector<svg::Series> bars{{"pretrained", {}, {}, method_color("pretrained")}};
  for (const auto& n : s.set_names) bars[0].values.push_back(100 * s.pre_acc.at(n));
  for (const auto& kind : s.methods) {
    svg::Series ser{kind, {}, {}, method_color(kind)};
    for (const auto& n : s.set_names) {
      ser.values.push_back(100 * sm[kind][n].mean);
      ser.errors.push_back(100 * sm[kind][n].std);
    }
    bars.push_back(ser);
  }
  write_text_atomic(s.out + "/per_domain.svg", svg::grouped_bars("Accuracy per domain", "accuracy (%)", dnames, bars));
  std::vector<svg::Series> devs;
  for (const auto& kind : s.methods) {
    svg::Series ser{kind, {}, {}, method_color(kind)};
    for (const auto& l : layers) ser.values.push_back(sm[kind]["dev:" + l].mean);
    devs.push_back(ser);
  }
  svg::Series rate{"SPD condition rate", {}, {}};
  for (const auto& l : layers) rate.values.push_back(sm.count("spd") ? sm["spd"]["rate:" + l].mean : 0.0);
  write_text_atomic(s.out + "/per_layer_deviation.svg",
                    svg::grouped_bars("Deviation from the pre-trained weights per layer", "||theta - theta0||", layers,
                                      devs, sm.count("spd") ? &rate : nullptr));
  // SPD's condition rate over training for four layers (the patch embedding, the first and last blocks, the
  // head): the fraction of the layer's tensors that fired, averaged over the chosen runs' seeds and over a
  // window of 20 steps.
  const auto spd_runs = chosen_runs(runs, "spd");
  if (!spd_runs.empty() && !spd_runs.front()->fired_by_step.empty()) {
    std::vector<std::string> blocks;
    for (const auto& l : layers)
      if (l.rfind("blocks.", 0) == 0) blocks.push_back(l);
    std::vector<std::string> show = {"patch_embed"};
    if (!blocks.empty()) show.push_back(blocks.front());
    if (blocks.size() > 1) show.push_back(blocks.back());
    show.push_back("head");
    std::vector<svg::Line> rate_lines;
    for (size_t k = 0; k < show.size(); ++k) {
      std::vector<double> mean;  // over seeds, step by step
      size_t seeds_with = 0;
      for (const Run* r : spd_runs) {
        auto it = r->fired_by_step.find(show[k]);
        if (it == r->fired_by_step.end()) continue;
        if (mean.size() < it->second.size()) mean.resize(it->second.size(), 0.0);
        for (size_t i = 0; i < it->second.size(); ++i) mean[i] += it->second[i];
        ++seeds_with;
      }
      if (!seeds_with) continue;
      svg::Line line{show[k], {}, {}, {}, svg::palette(k), false, false};
      const size_t window = 20;
      double acc = 0;
      for (size_t i = 0; i < mean.size(); ++i) {
        acc += mean[i] / seeds_with;
        if (i >= window) acc -= mean[i - window] / seeds_with;
        if (i + 1 >= window) {
          line.x.push_back(static_cast<double>(i + 1));
          line.y.push_back(acc / window);
        }
      }
      rate_lines.push_back(line);
    }
    write_text_atomic(s.out + "/spd_condition_rate.svg",
                      svg::lines("SPD: fraction of a layer's tensors whose condition fired (20-step mean)",
                                 "training step", "condition rate", rate_lines));
  }
  return md.str();
}

}  // namespace spdlab::cli

namespace spdlab::cli {

std::string write_all_domains(const std::string& dir, const std::vector<std::string>& domains,
                              const std::vector<std::string>& methods) {
  const size_t n = domains.size();
  // acc[method][train][test]: the mean over seeds; pretrained: one row, the same for every training domain.
  std::map<std::string, std::vector<std::vector<double>>> acc;
  std::vector<double> pre(n, 0);
  for (size_t t = 0; t < n; ++t) {
    const std::string path = dir + "/" + domains[t] + "/results.json";
    std::ifstream f(path, std::ios::binary);
    SPDLAB_CHECK(f.good(), "compare --all-domains: cannot read ", path);
    std::stringstream ss;
    ss << f.rdbuf();
    const Value v = json::parse(ss.str(), path);
    const Value* summary = v.find("summary");
    const Value* pretrained = v.find("pretrained");
    SPDLAB_CHECK(summary && pretrained && pretrained->find("accuracy"), path, ": expected \"summary\" and \"pretrained\"");
    for (size_t e = 0; e < n; ++e) {
      const Value* p = pretrained->find("accuracy")->find(domains[e]);
      SPDLAB_CHECK(p, path, ": no pretrained accuracy on ", domains[e]);
      pre[e] = p->as_double();
    }
    for (const auto& m : methods) {
      const Value* s = summary->find(m);
      SPDLAB_CHECK(s, path, ": no summary for ", m);
      auto& rows = acc[m];
      rows.resize(n, std::vector<double>(n, 0));
      for (size_t e = 0; e < n; ++e) {
        const Value* cell = s->find(domains[e]);
        SPDLAB_CHECK(cell && cell->find("mean"), path, ": no ", m, " accuracy on ", domains[e]);
        rows[t][e] = cell->find("mean")->as_double();
      }
    }
  }
  auto diag_mean = [&](const std::vector<std::vector<double>>& a) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += a[i][i];
    return s / n;
  };
  auto off_mean = [&](const std::vector<std::vector<double>>& a) {
    double s = 0;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j)
        if (i != j) s += a[i][j];
    return n > 1 ? s / double(n * (n - 1)) : 0.0;
  };
  auto pct = [](double x) {
    char b[16];
    std::snprintf(b, sizeof b, "%.1f", 100 * x);
    return std::string(b);
  };
  std::ostringstream md;
  md << "# All pairs of domains\n\nEach method fine-tuned on every domain in turn (rows) and tested on every domain "
        "(columns); accuracy in %, the mean over seeds of each study in `<domain>/`. The diagonal is in-distribution.\n\n";
  md << "| method | mean ID (diagonal) | mean OOD (off the diagonal) |\n|---|---|---|\n";
  // The pre-trained model has no training domain: its ID is its accuracy on each domain, averaged.
  double pre_mean = 0;
  for (double x : pre) pre_mean += x / n;
  md << "| pretrained | " << pct(pre_mean) << " | " << pct(pre_mean) << " |\n";
  for (const auto& m : methods) md << "| " << m << " | " << pct(diag_mean(acc[m])) << " | " << pct(off_mean(acc[m])) << " |\n";
  for (const auto& m : methods) {
    md << "\n## " << m << "\n\n| trained on \\ tested on |";
    for (const auto& d : domains) md << " " << d << " |";
    md << "\n|---|";
    for (size_t e = 0; e < n; ++e) md << "---|";
    md << "\n";
    for (size_t t = 0; t < n; ++t) {
      md << "| " << domains[t] << " |";
      for (size_t e = 0; e < n; ++e) md << " " << (t == e ? "**" + pct(acc[m][t][e]) + "**" : pct(acc[m][t][e])) << " |";
      md << "\n";
    }
  }
  md << "\nPlot: `all_domains.svg`. Numbers: `all_domains.json`.\n";

  Value::Object methods_json;
  std::vector<svg::Point> points = {{"pretrained", 100 * pre_mean, 100 * pre_mean, 0, 0, method_color("pretrained")}};
  for (const auto& m : methods) {
    Value::Array rows;
    for (size_t t = 0; t < n; ++t) {
      Value::Object row;
      for (size_t e = 0; e < n; ++e) row.emplace_back(domains[e], Value::number(acc[m][t][e]));
      rows.push_back(Value::object(row));
    }
    methods_json.emplace_back(m, Value::object({{"id_mean", Value::number(diag_mean(acc[m]))},
                                                {"ood_mean", Value::number(off_mean(acc[m]))},
                                                {"matrix", Value::array(rows)}}));
    points.push_back({m, 100 * off_mean(acc[m]), 100 * diag_mean(acc[m]), 0, 0, method_color(m)});
  }
  Value::Array dom;
  for (const auto& d : domains) dom.push_back(Value::string(d));
  Value::Object pre_json;
  for (size_t e = 0; e < n; ++e) pre_json.emplace_back(domains[e], Value::number(pre[e]));
  write_text_atomic(dir + "/all_domains.json",
                    json::dump(Value::object({{"domains", Value::array(dom)},
                                              {"rows_are", Value::string("the fine-tuning domain")},
                                              {"pretrained", Value::object(pre_json)},
                                              {"methods", Value::object(methods_json)}})) +
                        "\n");
  write_text_atomic(dir + "/all_domains.md", md.str());
  write_text_atomic(dir + "/all_domains.svg",
                    svg::scatter("Every domain as the fine-tuning domain: mean ID vs mean OOD",
                                 "OOD accuracy, mean off the diagonal (%)", "ID accuracy, mean of the diagonal (%)",
                                 points));
  return md.str();
}

}  // namespace spdlab::cli
