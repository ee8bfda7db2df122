// `spdlab replay`: applies a gradient trace through one optimizer and writes the resulting parameters, so any
// implementation can be checked against any other (tests/reference/gen_optim.py writes PyTorch's side).
// The trace format and the anchor rules are in optim/replay.h; this file only maps flags to options.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "core/io/safetensors.h"
#include "examples/cli/args.h"
#include "examples/cli/commands.h"
#include "optim/replay.h"

namespace spdlab::cli {
namespace {

}  // namespace

int run_replay(int argc, char** argv) {
  Args args("replay",
            "Applies the gradients of a trace (param.<name>, optional anchor.<name>, grad.<t>.<name>) with one "
            "optimizer at a constant lr,\nin sorted name order, and writes param.<name> after the last step.",
            {
                {"trace", "PATH", "input trace (safetensors)", ""},
                {"optim", "NAME", "sgd, adam, adamw, l2sp, spd, mars_sp or ftp", ""},
                {"out", "PATH", "output file (safetensors), written atomically", ""},
                {"lr", "F", "learning rate", "1e-3"},
                {"betas", "B1,B2", "Adam betas (every kind but sgd)", "0.9,0.999"},
                {"eps", "F", "Adam eps (every kind but sgd)", "1e-8"},
                {"wd", "F", "weight decay: coupled (sgd, adam, l2sp), decoupled (adamw, ftp)", "0"},
                {"lambda", "F", "SPD's projection strength (spd's only decay)", "1"},
                {"momentum", "F", "SGD momentum", "0"},
                {"dampening", "F", "SGD dampening", "0"},
                {"nesterov", "", "SGD with Nesterov momentum", ""},
                {"amsgrad", "", "AMSGrad (adam, adamw, l2sp)", ""},
                {"alpha", "F", "L2-SP pull towards the anchor", "0.1"},
                {"beta", "F", "L2-SP decay of tensors without an anchor", "0.01"},
                {"gamma", "F", "MARS-SP's radius", "1"},
                {"kappa", "F", "FTP's annealing of the radii's positive gradients, in [0, 1]", "1"},
                {"no-anchor", "", "no anchors at all (spd: w0 = 0; l2sp: beta on every tensor)", ""},
                {"unanchored", "GLOBS", "comma-separated name patterns without an anchor, e.g. 'head.*'", ""},
                {"every-step", "", "also write step.<t>.<name> after every step", ""},
            },
            argc, argv);
  if (args.help_requested()) {
    std::printf("%s", args.usage().c_str());
    return 0;
  }
  const std::string kind = args.str("optim");
  const std::vector<std::string>& kinds = optim::optimizer_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
    std::string valid;
    for (const std::string& k : kinds) valid += (valid.empty() ? "" : ", ") + k;
    SPDLAB_FAIL("replay: unknown --optim '", kind, "'; valid names: ", valid);
  }
  // A flag the chosen optimizer would ignore is a mistake in the command line, not a no-op.
  const std::map<std::string, std::set<std::string>> applies = {
      {"betas", {"adam", "adamw", "l2sp", "spd", "mars_sp", "ftp"}},
      {"eps", {"adam", "adamw", "l2sp", "spd", "mars_sp", "ftp"}}, {"wd", {"sgd", "adam", "adamw", "l2sp", "ftp"}}, {"lambda", {"spd"}}, {"momentum", {"sgd"}}, {"dampening", {"sgd"}}, {"nesterov", {"sgd"}},
      {"amsgrad", {"adam", "adamw", "l2sp"}}, {"alpha", {"l2sp"}}, {"beta", {"l2sp"}},
      {"gamma", {"mars_sp"}}, {"kappa", {"ftp"}}, {"no-anchor", {"l2sp", "spd", "mars_sp", "ftp"}},
      {"unanchored", {"l2sp", "spd", "mars_sp", "ftp"}}};
  for (const auto& [flag, ok] : applies)
    SPDLAB_CHECK(!args.has(flag) || ok.count(kind), "replay: --", flag, " does not apply to --optim ", kind);
  SPDLAB_CHECK(!(args.has("no-anchor") && args.has("unanchored")),
               "replay: --no-anchor already leaves every tensor unanchored; drop --unanchored");

  optim::Hyperparams h;
  h.lr = args.nonneg("lr");
  std::vector<double> betas = args.num_list("betas");
  SPDLAB_CHECK(betas.size() == 2, "replay: --betas expects two numbers B1,B2; got ", betas.size());
  h.beta1 = betas[0];
  h.beta2 = betas[1];
  h.eps = args.positive("eps");
  if (kind == "spd")
    h.lambda = args.nonneg("lambda");
  else if (kind != "mars_sp")
    h.weight_decay = args.nonneg("wd");
  h.gamma = args.positive("gamma");
  h.kappa = args.nonneg("kappa");
  h.momentum = args.nonneg("momentum");
  h.dampening = args.nonneg("dampening");
  h.nesterov = args.flag("nesterov");
  h.amsgrad = args.flag("amsgrad");
  h.alpha = args.nonneg("alpha");
  h.beta = args.nonneg("beta");
  optim::ReplayOptions o;
  o.use_anchors = !args.flag("no-anchor");
  if (args.has("unanchored")) o.unanchored = args.list("unanchored");
  o.every_step = args.flag("every-step");

  const std::string trace_path = args.str("trace"), out_path = args.str("out");
  optim::Trace trace = optim::load_trace(trace_path);
  optim::ReplayResult result = optim::replay(trace, kind, h, o);
  io::save_safetensors(out_path, result.tensors,
                       {{"optimizer", kind}, {"steps", std::to_string(trace.grads.size())}, {"trace", trace_path}});
  std::printf("replayed %zu steps of %zu tensors with %s -> %s\n", trace.grads.size(), trace.names.size(),
              kind.c_str(), out_path.c_str());
  for (const optim::SpdTensorStats& s : result.spd_stats)
    std::printf("  %-28s fired %3lld/%-3lld  last r %.4f  ||w - w0|| %.6g\n", s.name.c_str(),
                static_cast<long long>(s.fired), static_cast<long long>(s.steps), s.last_r, s.dev_norm);
  return 0;
}


}  // namespace spdlab::cli
