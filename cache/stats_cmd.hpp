// `tiercache stats`: the counters of a running mount, from MOUNTPOINT/.tiercache/stats.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace tiercache::cli {

struct StatsOptions {
    std::filesystem::path mountpoint;
    bool json = false;  // print the JSON itself (pretty) instead of the report
    std::string attach;  // a shared cache's name, instead of a mount
    std::string segment_dir = "/dev/shm";
    bool watch = false;      // a live view (watch.hpp), redrawn every interval_s
    double interval_s = 1.0;
    std::uint64_t count = 0;  // with watch: stop after this many frames; 0: until Ctrl-C
};

// Throws std::runtime_error when the mount or its stats cannot be read.
void run_stats(const StatsOptions& options);

// The stats JSON keeps the daemon's order: tiers fastest first.
using StatsJson = nlohmann::ordered_json;

// MOUNTPOINT/.tiercache/stats, parsed. Throws std::runtime_error naming the problem: no such
// path, not a tiercache mount, the daemon gone (ENOTCONN), not a JSON object.
StatsJson read_mount_stats(const std::filesystem::path& mount);

// object[key] when it is a number; nullopt when object is not an object or has no such number.
std::optional<double> stats_number(const StatsJson& object, const char* key);

// 100 * part / whole with one decimal and '%'; "-" when whole is 0.
std::string percent_text(double part, double whole);

}  // namespace tiercache::cli
