// `tiercache warm`: read files through a mount so that the cache holds them.
#pragma once

#include <filesystem>
#include <vector>

namespace tiercache::cli {

struct WarmOptions {
    std::filesystem::path mountpoint;
    // Files or folders to warm, relative to the mount point (or absolute inside it);
    // empty means the whole mount.
    std::vector<std::filesystem::path> paths;
    unsigned readers = 4;
};

// Returns the exit status: 0 when every file was read, 1 when some could not be.
// Throws std::runtime_error when the mount or a path cannot be listed.
int run_warm(const WarmOptions& options);

}  // namespace tiercache::cli
