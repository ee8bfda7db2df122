// See run_state.h.
#include "examples/cli/run_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/io/atomic_file.h"
#include "dist/communicator.h"

namespace spdlab::cli {

namespace fs = std::filesystem;

RunDir::RunDir(std::string dir, bool transient) : dir_(std::move(dir)), transient_(transient) {
  // With several ranks, rank 0 owns the directory (creates, locks, writes, removes); the others only read it.
  follower_ = !dist::world().is_root();
  if (follower_) {
    dist::world().barrier();  // rank 0 has made the directory
    return;
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SPDLAB_CHECK(!ec && fs::is_directory(dir_), "cannot create the run directory '", dir_, "': ",
               ec ? ec.message() : "a file of that name exists");
  const std::string lock = file("lock");
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SPDLAB_CHECK(lock_fd_ >= 0, "cannot open the lock file '", lock, "': ", std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    ::close(lock_fd_);
    lock_fd_ = -1;
    SPDLAB_FAIL("'", dir_, "' is in use by another spdlab process (pid ", holder,
                "); two runs must not write the same outputs: wait for it, stop it, or pick another --out");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    // the pid is only for the message a second writer sees; the lock itself is held
  }
  dist::world().barrier();
}

RunDir::~RunDir() {
  if (lock_fd_ < 0) return;
  if (transient_ && !exists("state.safetensors")) remove_all();
  ::close(lock_fd_);  // releases the lock
}

bool RunDir::exists(const std::string& name) const {
  std::error_code ec;
  return fs::exists(file(name), ec);
}

json::Value RunDir::manifest() const {
  if (!exists("run.json")) return json::Value{};
  std::ifstream f(file("run.json"), std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  SPDLAB_CHECK(f.good() || f.eof(), "cannot read '", file("run.json"), "'");
  return json::parse(ss.str(), file("run.json"));
}

void RunDir::write_manifest(const json::Value& m) {
  if (!follower_) io::write_file_atomic(file("run.json"), json::dump(m) + "\n");
}

void RunDir::remove_all() {
  if (follower_) return;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec))
    if (e.path().filename() != "lock") fs::remove_all(e.path(), ec);
  fs::remove(file("lock"), ec);
  fs::remove(dir_, ec);
}

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
  static const char msg[] = "\nspdlab: stopping after this step to save the state (signal again to stop at once)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);  // async-signal-safe, unlike stdio
  (void)ignored;
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
  std::signal(SIGXFSZ, SIG_IGN);  // a write past the file-size limit then fails with EFBIG, and is reported
}

int stop_requested() { return g_stop_signal; }

int stop_agreed() {
  const int sig = g_stop_signal;
  dist::Communicator& comm = dist::world();
  if (comm.size() == 1) return sig;
  double any = sig ? 1 : 0;
  comm.all_reduce_sum(&any, 1);
  return any > 0 ? (sig ? sig : SIGTERM) : 0;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
  }
}

CommandLine::CommandLine(std::string command, std::vector<std::string> args, std::string resume_dir)
    : command_(std::move(command)), args_(std::move(args)), resume_dir_(std::move(resume_dir)) {
  full_ = {"spdlab", command_};
  full_.insert(full_.end(), args_.begin(), args_.end());
  for (auto& s : full_) ptrs_.push_back(s.data());
}

CommandLine resume_command_line(const std::string& command, int argc, char** argv) {
  std::vector<std::string> given(argv + 2, argv + argc);
  std::string dir;
  std::vector<std::string> extra;  // flags allowed beside --resume
  bool resume = false;
  for (size_t i = 0; i < given.size(); ++i) {
    const std::string& a = given[i];
    auto value = [&](const std::string& flag) {
      if (a.rfind("--" + flag + "=", 0) == 0) return a.substr(flag.size() + 3);
      SPDLAB_CHECK(i + 1 < given.size(), command, ": --", flag, " expects a value");
      return given[++i];
    };
    if (a == "--resume" || a.rfind("--resume=", 0) == 0) {
      resume = true;
      dir = value("resume");
    } else if (a == "--threads" || a.rfind("--threads=", 0) == 0 || a == "--device" || a.rfind("--device=", 0) == 0) {
      const std::string flag = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      extra.push_back("--" + flag);
      extra.push_back(value(flag));
    } else {
      extra.push_back(a);
    }
  }
  if (!resume) return CommandLine(command, given, "");
  for (size_t i = 0; i < extra.size(); i += 2)
    SPDLAB_CHECK(extra[i] == "--threads" || extra[i] == "--device", command, ": --resume takes the run's flags from ",
                 dir, "/run.json; only --threads and --device may be given beside it, not ", extra[i]);
  SPDLAB_CHECK(fs::exists(dir + "/run.json"), command, ": --resume ", dir,
               ": no run.json there; expected the run directory of an interrupted spdlab ", command);
  std::ifstream f(dir + "/run.json", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  json::Value m = json::parse(ss.str(), dir + "/run.json");
  const json::Value* cmd = m.find("command");
  const json::Value* args = m.find("args");
  SPDLAB_CHECK(cmd && cmd->is_string() && args && args->is_array(), dir, "/run.json: expected \"command\" and \"args\"");
  SPDLAB_CHECK(cmd->as_string() == command, command, ": --resume ", dir, " holds a run of spdlab ", cmd->as_string(),
               ", not ", command);
  std::vector<std::string> recorded;
  for (const auto& v : args->as_array()) recorded.push_back(v.as_string());
  recorded.insert(recorded.end(), extra.begin(), extra.end());  // --threads/--device: later values win
  return CommandLine(command, recorded, dir);
}

std::vector<std::string> result_args(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--threads" || a == "--device" || a == "--split") {
      ++i;  // and its value
      continue;
    }
    if (a.rfind("--threads=", 0) == 0 || a.rfind("--device=", 0) == 0 || a.rfind("--split=", 0) == 0) continue;
    out.push_back(a);
  }
  return out;
}

std::string resume_hint(const std::string& command, const std::string& dir) {
  return "spdlab " + command + " --resume " + dir;
}

}  // namespace spdlab::cli
