// The subcommands of the spdlab tool: one function per command, listed in one table (kCommands) that main looks
// up by name. A command takes the full argv (argv[1] is its name) and returns the exit status; errors are thrown
// as spdlab::Error and main turns them into one message and status 1.
#pragma once
#include <string>

namespace spdlab::cli {

int run_pretrain(int argc, char** argv);  // study.cpp
int run_finetune(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_compare(int argc, char** argv);   // compare.cpp
int run_replay(int argc, char** argv);    // replay.cpp
int run_inspect(int argc, char** argv);   // tools.cpp
int run_predict(int argc, char** argv);
int run_cache(int argc, char** argv);
int run_export(int argc, char** argv);
int run_interpolate(int argc, char** argv);

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
  // Runs as one of several ranks under mpirun (data parallel: training split by batch, evaluation by batch
  // range, rank 0 writing); the other commands refuse to.
  bool data_parallel = false;
};

// Every command, in the order `spdlab --help` lists them.
inline constexpr Command kCommands[] = {
    {"pretrain", "pre-train a foundation ViT on several domains", run_pretrain, true},
    {"finetune", "fine-tune a checkpoint on one domain or on your images, with adam/adamw/l2sp/spd/sgd", run_finetune,
     true},
    {"eval", "accuracy of a checkpoint per domain, or on each of your test sets", run_eval, true},
    {"compare", "the robust fine-tuning study: every optimizer, seeds, domains or sets, report and plots", run_compare,
     true},
    {"replay", "apply a gradient trace through an optimizer (check against PyTorch)", run_replay},
    {"inspect", "print a checkpoint's architecture, metadata and tensors", run_inspect},
    {"predict", "classify image files or a tensor of images with a checkpoint", run_predict},
    {"cache", "decode an image folder once into a memory-mapped cache file", run_cache},
    {"export", "write Fashion-MNIST in a domain as an image folder", run_export},
    {"interpolate", "WiSE-FT: mix a pre-trained and a fine-tuned checkpoint, (1 - alpha) A + alpha B", run_interpolate},
};

}  // namespace spdlab::cli
