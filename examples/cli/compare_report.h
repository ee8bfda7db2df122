// The study's results (spdlab compare): one record per fine-tuning run, kept on disk as it finishes, and what is
// written from all of them at the end: results.json, results.csv, report.md and the plots. compare.cpp runs the
// study; this file only reads its runs.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/io/json.h"
#include "optim/optim.h"

namespace spdlab::cli {

// One model of a WiSE-FT curve: theta(alpha) = (1 - alpha) theta0 + alpha theta_ft, evaluated on every test set.
struct WisePoint {
  double alpha = 0;
  std::map<std::string, double> acc;
  double id = 0, ood_mean = 0;  // derived
};

struct Run {
  std::string optim;    // the method ("adamw", "spd", "lp", ...)
  std::string hp;       // the hyperparameter tuned for it ("lambda", "wd", ...); empty: none
  double hp_value = 0;  // its value in this run
  int64_t seed = 0;
  bool chosen = true;    // the value the study reports (every run of an untuned study)
  double val_acc = -1;   // accuracy on the in-distribution validation split; -1: the study has none
  std::map<std::string, double> acc;  // per test set
  double final_loss = 0, seconds = 0;
  std::vector<std::pair<std::string, double>> dev_tensor;  // ||theta - theta0|| per tensor
  std::vector<optim::SpdTensorStats> spd;
  std::vector<WisePoint> wise;
  // SPD: per layer, the fraction of its tensors whose condition fired, step by step (from the run's metrics).
  std::map<std::string, std::vector<double>> fired_by_step;
  // Derived (derive()):
  double id = 0, ood_mean = 0, deviation = 0;
  std::map<std::string, double> dev_layer;       // sqrt of the sum of squares over the layer's tensors
  std::map<std::string, double> spd_rate_layer;  // fired / steps, pooled over the layer's tensors
};

// What a finished run leaves in DIR/<run>.json: everything results.json needs from it, exactly (JSON numbers
// round-trip), so a resumed study writes the same bytes as an uninterrupted one.
json::Value run_record(const Run& r);
Run read_run_record(const std::string& path);
// The per-step "fired" fractions a run's metrics file (JSON lines written by train()) holds, by layer.
std::map<std::string, std::vector<double>> read_fired_by_step(const std::string& metrics_path);
// The measures computed from a run's accuracies, deviations and SPD statistics (and its WiSE-FT points').
void derive(Run& r, const std::string& id_name, const std::vector<std::string>& ood);
double mean_over(const std::map<std::string, double>& acc, const std::vector<std::string>& names);

// Everything the outputs say about how the study ran.
struct StudySetup {
  std::string out;                                    // the study directory
  std::vector<std::string> methods;                   // in report order
  std::map<std::string, std::string> label;           // a method's row label, with its (chosen) hyperparameter
  std::vector<std::string> set_names, ood;            // every test set; the out-of-distribution ones
  std::string id_name;                                // the in-distribution test set
  std::map<std::string, double> pre_acc;              // the pre-trained model's accuracies
  int64_t seeds = 1;
  bool tuned = false;                                 // hyperparameters chosen on a validation split
  std::string intro;                                  // the report's first paragraph
  std::string wise_note;                              // how WiSE-FT's head was handled; empty: no WiSE-FT
  json::Value protocol;                               // results.json's "protocol"
};

// Writes results.json, results.csv, report.md, id_vs_ood.svg, per_domain.svg and per_layer_deviation.svg (each
// atomically) and returns report.md's text.
std::string write_study_outputs(const StudySetup& s, const std::vector<Run>& runs);

}  // namespace spdlab::cli

namespace spdlab::cli {

// compare --all-domains: every domain's study is in DIR/<domain>/ (its results.json); from them this writes
// DIR/all_domains.json, all_domains.md (per method, the matrix of accuracy by training domain (rows) and test
// domain (columns), each cell the mean over seeds; then each method's mean of the diagonal (in-distribution)
// and of the rest (out-of-distribution)) and all_domains.svg (those two means, one point per method). Returns
// the markdown.
std::string write_all_domains(const std::string& dir, const std::vector<std::string>& domains,
                              const std::vector<std::string>& methods);

}  // namespace spdlab::cli
