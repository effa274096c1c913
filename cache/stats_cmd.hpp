// `tiercache stats`: the counters of a running mount, from MOUNTPOINT/.tiercache/stats.
#pragma once

#include <filesystem>
#include <string>

namespace tiercache::cli {

struct StatsOptions {
    std::filesystem::path mountpoint;
    bool json = false;  // print the JSON itself (pretty) instead of the report
    std::string attach;  // a shared cache's name, instead of a mount
    std::string segment_dir = "/dev/shm";
};

// Throws std::runtime_error when the mount or its stats cannot be read.
void run_stats(const StatsOptions& options);

}  // namespace tiercache::cli
