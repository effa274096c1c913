// `tiercache warm`: read files through a mount so that the cache holds them.
#pragma once

#include <filesystem>
#include <vector>

namespace tiercache::cli {

struct WarmOptions {
    std::filesystem::path mountpoint;  // a mount point, or a folder or file inside one
    // Files or folders to warm, relative to `mountpoint` (or absolute inside it);
    // empty means all of `mountpoint`.
    std::vector<std::filesystem::path> paths;
    unsigned readers = 4;
};

// Returns the exit status: 0 when every file was read, 1 when some could not be.
// Throws std::runtime_error when the mount or a path cannot be listed.
int run_warm(const WarmOptions& options);

}  // namespace tiercache::cli
