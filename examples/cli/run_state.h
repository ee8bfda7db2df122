// What lets a training command be interrupted and resumed without losing or mixing anything:
//   - RunDir: a directory that holds one run's state, locked by the process that writes it (a second writer
//     gets an error naming the holder), with a manifest (run.json) of the command line and what is complete;
//   - SIGINT/SIGTERM: the first one asks the training loop to stop after its current step and checkpoint
//     (a second one kills the process as usual); SIGXFSZ is ignored so an over-size write is an error;
//   - resume_command_line: `spdlab CMD --resume DIR` becomes the command line recorded in DIR.
#pragma once
#include <csignal>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/io/json.h"

namespace spdlab::cli {

class RunDir {
 public:
  // Creates `dir` if needed and takes its lock (dir/lock, held until destruction or the process's death).
  // In a data-parallel run only rank 0 creates, locks, writes and removes; the other ranks read (a shared
  // file system is assumed, as with any MPI job that reads its inputs by path).
  // A training run's directory (`transient`) is removed on destruction unless it holds a state to resume from,
  // so a run that fails before its first checkpoint leaves nothing behind.
  explicit RunDir(std::string dir, bool transient = true);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& dir() const { return dir_; }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  bool exists(const std::string& name) const;

  // run.json: {"command": ..., "args": [...], "status": "running" | "complete", ...}; null when absent.
  json::Value manifest() const;
  void write_manifest(const json::Value& m);

  // After a run completes: removes the files this run dir holds and the directory itself.
  void remove_all();

 private:
  std::string dir_;
  bool transient_;
  bool follower_ = false;  // a rank other than 0 of a data-parallel run: reads, never writes
  int lock_fd_ = -1;
};

// Thrown by the training loop when a signal stopped it after a checkpoint; main exits with 128 + signal.
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& what) : Error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Installs the SIGINT/SIGTERM handlers (idempotent) and ignores SIGXFSZ.
void install_stop_handlers();
// The signal that asked the run to stop, or 0.
int stop_requested();
// The same, agreed by every rank of a data-parallel run (one collective): nonzero on all ranks when any was
// asked to stop, so they stop at the same point.
int stop_agreed();
const char* signal_name(int sig);

// The command line of a training command. With --resume DIR (and at most --threads N or --device D beside
// it), the arguments recorded in DIR/run.json; otherwise the ones given.
class CommandLine {
 public:
  CommandLine(std::string command, std::vector<std::string> args, std::string resume_dir);
  const std::string& command() const { return command_; }
  const std::vector<std::string>& args() const { return args_; }  // after "spdlab COMMAND"
  const std::string& resume_dir() const { return resume_dir_; }  // empty: a new run
  // "spdlab", the command and the args, for Args; valid while this object lives.
  int argc() const { return static_cast<int>(ptrs_.size()); }
  char** argv() { return ptrs_.data(); }

 private:
  std::string command_;
  std::vector<std::string> args_, full_;
  std::string resume_dir_;
  std::vector<char*> ptrs_;
};
CommandLine resume_command_line(const std::string& command, int argc, char** argv);

// The arguments without --threads and --device (and their values): what decides a run's results.
std::vector<std::string> result_args(const std::vector<std::string>& args);

// `spdlab COMMAND --resume DIR`, the line to print when a run stops early.
std::string resume_hint(const std::string& command, const std::string& dir);

}  // namespace spdlab::cli
