// --kernel-cache auto (the default): whether the kernel keeps the mount's file pages.
//
// On, a warm read is served from the page cache without a request: the fastest path when the
// pages stay there. But the kernel reads whole pages and reads ahead past each request, so a
// shuffled reader of records inside large files asks the daemon for bytes of neighbouring
// records too (a 300 KB pread became 512 KiB of FUSE reads, measured). When the dataset fits
// neither the dram tier nor the memory beside it, those over-reads miss the tiers, read nvme
// and use up the neighbours' planned uses early: epoch 3 of a dataset twice the memory budget
// ran 0.37-0.58x native with the kernel cache on, 0.24x with it off (bench/larger_than_memory,
// webdataset). So: on when the dataset fits the dram tier or the memory left beside it, off
// otherwise; the reason goes to the log.
//
// "The memory left" is MemAvailable and, when this process is in a memory cgroup with a limit
// (a container), that limit less the cgroup's use without its inactive file pages, for this
// cgroup and each one above it, less the dram tier (its pages are not touched yet at mount).
// Readers in another cgroup than the daemon's get their own budget, which we cannot see.
#pragma once
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include <tiercache/size.hpp>

namespace tiercache::fuse {

struct KernelCacheChoice {
    bool on = true;
    std::string why;  // for the log line: "kernel cache auto: on, <why>"
};

// The decision alone, from the dataset's bytes, the dram tier's and the memory left beside it.
inline KernelCacheChoice choose_kernel_cache(std::uint64_t dataset_bytes, std::uint64_t dram_bytes, std::uint64_t room_bytes) {
    const std::string dataset = "the dataset (" + format_size(dataset_bytes) + ")";
    if (dataset_bytes <= dram_bytes) return {true, dataset + " fits the dram tier (" + format_size(dram_bytes) + ")"};
    if (dataset_bytes <= room_bytes)
        return {true, dataset + " fits the memory beside the dram tier (" + format_size(room_bytes) + ")"};
    return {false, dataset + " fits neither the dram tier (" + format_size(dram_bytes) + ") nor the memory beside it (" +
                       format_size(room_bytes) + "): every read goes to the cache, as the plan orders"};
}

namespace detail {

inline std::optional<std::uint64_t> read_number(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string text;
    if (!(in >> text) || text == "max") return std::nullopt;  // v2 writes "max" for no limit
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// `key value` lines (memory.stat), or `Key: value kB` ones (meminfo): the value of `key`.
inline std::optional<std::uint64_t> read_keyed(const std::filesystem::path& file, std::string_view key) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string name;
        std::uint64_t value = 0;
        if (!(fields >> name >> value)) continue;
        if (name.ends_with(':')) name.pop_back();
        if (name == key) return value;
    }
    return std::nullopt;
}

// limit - (usage - inactive file pages) of one cgroup directory; nullopt when it has no limit.
inline std::optional<std::uint64_t> cgroup_room(const std::filesystem::path& dir, bool v2) {
    const auto limit = read_number(dir / (v2 ? "memory.max" : "memory.limit_in_bytes"));
    // v1 writes its "no limit" as a page-rounded INT64_MAX: anything past a petabyte is none.
    if (!limit || *limit >= (std::uint64_t{1} << 50)) return std::nullopt;
    std::uint64_t used = read_number(dir / (v2 ? "memory.current" : "memory.usage_in_bytes")).value_or(0);
    used -= std::min(used, read_keyed(dir / "memory.stat", v2 ? "inactive_file" : "total_inactive_file").value_or(0));
    return *limit - std::min(*limit, used);
}

}  // namespace detail

// The memory this process could give the page cache now, less `dram_bytes` (the dram tier it
// is about to fill). `proc` and `cgroup_root` are parameters for the tests.
inline std::uint64_t page_cache_room(std::uint64_t dram_bytes, const std::filesystem::path& proc = "/proc",
                                     const std::filesystem::path& cgroup_root = "/sys/fs/cgroup") {
    namespace fs = std::filesystem;
    std::uint64_t room = std::numeric_limits<std::uint64_t>::max();
    if (auto kib = detail::read_keyed(proc / "meminfo", "MemAvailable")) room = *kib * 1024;
    std::ifstream groups(proc / "self/cgroup");
    std::string line;
    while (std::getline(groups, line)) {  // "0::/path" (v2) or "4:memory:/path" (v1)
        const auto first = line.find(':'), second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos) continue;
        const std::string controllers = line.substr(first + 1, second - first - 1);
        const fs::path group = fs::path(line.substr(second + 1)).relative_path();
        const bool v2 = controllers.empty();
        bool memory_v1 = false;
        std::string name;
        for (std::istringstream list(controllers); std::getline(list, name, ',');) memory_v1 |= name == "memory";
        if (!v2 && !memory_v1) continue;
        const fs::path base = v2 ? cgroup_root : cgroup_root / "memory";
        if (v2 && !fs::exists(base / "cgroup.controllers")) continue;  // v2 is not mounted there (a v1 host)
        // This cgroup's limit and every ancestor's: the tightest one binds.
        for (fs::path p = group;; p = p.parent_path()) {
            if (auto r = detail::cgroup_room(base / p, v2)) room = std::min(room, *r);
            if (p.empty()) break;
        }
    }
    return room - std::min(room, dram_bytes);
}

}  // namespace tiercache::fuse
