#include "durable_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/crc32c.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

// An open file descriptor, closed on scope exit.
class Fd {
 public:
  Fd(const std::string& path, int flags, const char* what, mode_t mode = 0644)
      : fd_(::open(path.c_str(), flags | O_CLOEXEC, mode)) {
    EMBTRAIN_REQUIRE(fd_ >= 0, path, ": cannot open ", what, ": ", std::strerror(errno));
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // close() can report a write-back error that write() did not.
  void close_checked(const std::string& path) {
    const int rc = ::close(fd_);
    fd_ = -1;
    EMBTRAIN_REQUIRE(rc == 0, path, ": close failed: ", std::strerror(errno));
  }

 private:
  int fd_;
};

FileSum sum_fd(int fd, const std::string& path) {
  FileSum sum;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    EMBTRAIN_REQUIRE(n >= 0, path, ": read failed: ", std::strerror(errno));
    if (n == 0) return sum;
    sum.crc32c = crc32c(buffer.data(), static_cast<size_t>(n), sum.crc32c);
    sum.bytes += n;
  }
}

void sync_fd(int fd, const std::string& path) {
  EMBTRAIN_REQUIRE(::fsync(fd) == 0, path, ": fsync failed: ", std::strerror(errno));
}

void write_all(int fd, const std::string& text, const std::string& path) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    EMBTRAIN_REQUIRE(n > 0, path, ": write failed: ", std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

}  // namespace

FileSum sum_file(const std::string& path) {
  Fd fd(path, O_RDONLY, "for reading");
  return sum_fd(fd.get(), path);
}

FileSum seal_file(const std::string& path) {
  Fd fd(path, O_RDONLY, "for reading");
  const FileSum sum = sum_fd(fd.get(), path);
  sync_fd(fd.get(), path);
  return sum;
}

void sync_folder(const std::string& path) {
  Fd fd(path, O_RDONLY | O_DIRECTORY, "folder");
  sync_fd(fd.get(), path);
}

void write_text_durable(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  try {
    Fd fd(tmp, O_WRONLY | O_CREAT | O_TRUNC, "for writing");
    write_all(fd.get(), text, tmp);
    sync_fd(fd.get(), tmp);
    fd.close_checked(tmp);
  } catch (const Error&) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw make_error(path, ": cannot rename into place: ", std::strerror(err));
  }
  const std::string folder = std::filesystem::path(path).parent_path().string();
  sync_folder(folder.empty() ? "." : folder);
}

bool exchange_paths(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  const int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP || err == EOPNOTSUPP) return false;
  throw make_error(b, ": cannot swap with ", a, ": ", std::strerror(err));
}

std::string output_folder_problem(const std::string& file) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::path(file).parent_path();
  std::error_code ec;
  for (fs::path p = folder; !p.empty(); p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);
    if (st.type() == fs::file_type::not_found) {
      if (p == p.parent_path()) break;  // a root that is not there: let the write say why
      continue;
    }
    if (fs::is_directory(st)) {
      // The nearest folder that exists must let us make (or write) in it.
      if (::access(p.c_str(), W_OK | X_OK) == 0) return "";
      return "folder '" + p.string() + "' is not writable";
    }
    return p == folder ? "'" + p.string() + "' is not a folder"
                       : "folder '" + folder.string() + "' cannot be made: '" + p.string() +
                             "' is not a folder";
  }
  return "";
}

void make_output_folder(const std::string& file) {
  const std::filesystem::path folder = std::filesystem::path(file).parent_path();
  if (folder.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  EMBTRAIN_REQUIRE(!ec, "cannot make folder '", folder.string(), "' for '", file, "': ",
                   ec.message());
}

}  // namespace embtrain
