// Output files that are either the old contents or the complete new ones, never a part of either.
// Bytes go to "<path>.tmp.<pid>"; commit() fsyncs, renames it over `path` and fsyncs the directory. Every write
// is checked: a full disk, a file-size limit (EFBIG; the CLI ignores SIGXFSZ so it arrives as an error) or any
// other failure is an spdlab::Error naming the path, and the temporary file is removed. Temporary files that
// dead processes left beside `path` (killed mid-write) are removed when the next AtomicFile for it opens.
#pragma once
#include <cstddef>
#include <string>

namespace spdlab::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // without commit(): the temporary file is removed and `path` is untouched
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// The whole file in one call.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Removes "<path>.tmp.<pid>" files whose process is gone; returns how many.
int remove_stale_temporaries(const std::string& path);

}  // namespace spdlab::io
