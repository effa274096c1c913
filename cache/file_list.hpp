// Listing the regular files of a dataset tree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace tiercache::cli {

struct ListedFile {
    std::filesystem::path path;
    std::uint64_t size = 0;  // 0 unless asked for
};

// Every regular file under `root` (root itself if it is a file), recursively, sorted by
// the bytes of the path so that the order is the same on every machine. `skip` (e.g. a
// mount's .tiercache control folder) is left out with everything under it. Symbolic links
// to files count as files; links to directories are not followed. With `with_sizes`
// each file is stat'ed (on a FUSE mount that may cost a request per file, so bench
// listings leave it off). Throws std::runtime_error naming the path that failed.
std::vector<ListedFile> list_files(const std::filesystem::path& root,
                                   const std::filesystem::path& skip, bool with_sizes);

}  // namespace tiercache::cli
