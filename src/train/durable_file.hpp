// Files that survive a crash once written: fsync of files and folders,
// checksummed reads, and the renames a checkpoint moves into place with.
// Every failure throws embtrain::Error naming the path and the system's
// reason ("No space left on device").
#pragma once

#include <cstdint>
#include <string>

namespace embtrain {

struct FileSum {
  int64_t bytes = 0;
  uint32_t crc32c = 0;
};

// The size and CRC-32C of the file at `path`, read in chunks.
FileSum sum_file(const std::string& path);

// The same, then fsync: the bytes summed are the ones on the disk.
FileSum seal_file(const std::string& path);

// fsync of a folder, so that the names created or renamed in it persist.
void sync_folder(const std::string& path);

// Writes `text` to `path` through PATH.tmp, fsync and a rename, then syncs
// the folder: readers see the old file or the whole new one.
void write_text_durable(const std::string& path, const std::string& text);

// Output files name their folder, which need not exist yet: a run checks
// up front that it could be made (what stands in the way, or "" when
// nothing does: the nearest part of the path that exists is a folder), and
// makes it only when it writes, so a run that fails to start creates
// nothing. Both take the file's path.
std::string output_folder_problem(const std::string& file);
void make_output_folder(const std::string& file);  // throws Error naming the folder

// Swaps two existing paths atomically (renameat2 RENAME_EXCHANGE). False,
// with nothing changed, where the file system cannot (then rename aside).
bool exchange_paths(const std::string& a, const std::string& b);

}  // namespace embtrain
