// What a Cache is built from. Chained setters, then one validate() that throws
// std::invalid_argument naming the bad value:
//   Config{}.origin("/data/imagenet/train").dram("32GiB").nvme("/nvme/tc", "800GiB")
// The tiers are kept fastest first. Setters put a kind in its usual place (dram, pmem, cxl,
// nvme); a config file (config_file.hpp) may order them otherwise.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/statvfs.h>
#include <system_error>
#include <vector>

#include "extent.hpp"
#include "policy.hpp"
#include "share.hpp"
#include "size.hpp"

namespace tiercache {

enum class TierKind { dram, pmem, cxl, nvme };

inline std::string_view to_string(TierKind kind) {
    switch (kind) {
        case TierKind::dram: return "dram";
        case TierKind::pmem: return "pmem";
        case TierKind::cxl: return "cxl";
        case TierKind::nvme: return "nvme";
    }
    return "?";
}

inline std::optional<TierKind> tier_kind(std::string_view name) {
    for (TierKind k : {TierKind::dram, TierKind::pmem, TierKind::cxl, TierKind::nvme})
        if (to_string(k) == name) return k;
    return std::nullopt;
}

// One tier: its kind, its size as written ("64GiB", "10%"), and where it lives.
struct TierConfig {
    TierKind kind = TierKind::dram;
    std::string size;
    std::filesystem::path dir;  // pmem, nvme
    int node = -1;              // cxl: the NUMA node
    std::string source;         // where it was set ("--nvme", "tc.toml:12"), for error messages

    std::string name() const { return std::string(to_string(kind)); }
};

namespace detail {

// What "N%" is taken of: RAM for dram, the filesystem for pmem and nvme, the node for cxl.
inline std::uint64_t percent_base(const TierConfig& t) {
    switch (t.kind) {
        case TierKind::dram: return physical_memory_bytes();
        case TierKind::pmem:
        case TierKind::nvme: {
            struct statvfs vfs {};
            if (::statvfs(t.dir.c_str(), &vfs) != 0) return 0;
            return static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
        }
        case TierKind::cxl: {
            std::ifstream meminfo("/sys/devices/system/node/node" + std::to_string(t.node) + "/meminfo");
            std::string word;
            while (meminfo >> word)
                if (word == "MemTotal:") {
                    std::uint64_t kib = 0;
                    meminfo >> kib;
                    return kib * 1024;
                }
            return 0;
        }
    }
    return 0;
}

}  // namespace detail

// The size of tier `t` in bytes. Throws std::invalid_argument naming the tier and the value.
inline std::uint64_t tier_bytes(const TierConfig& t) {
    const std::string where = (t.source.empty() ? "" : t.source + ": ") + t.name() + " tier: ";
    const bool percent = !t.size.empty() && t.size.find('%') != std::string::npos;
    const std::uint64_t base = percent ? detail::percent_base(t) : 0;
    if (percent && base == 0)
        throw std::invalid_argument(where + "cannot take '" + t.size + "' of " +
                                    (t.kind == TierKind::cxl ? "NUMA node " + std::to_string(t.node) : "'" + t.dir.string() + "'") +
                                    ": its size is unknown");
    try {
        return parse_size(t.size, base);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(where + e.what());
    }
}

class Config {
public:
    static constexpr std::uint32_t kMaxReadahead = 256;

    Config() { tiers_.push_back({TierKind::dram, "10%", {}, -1, "default"}); }

    Config& origin(std::filesystem::path dir) { origin_ = std::move(dir); return *this; }
    // "512MiB", "2GiB", or "10%" of this host's RAM.
    Config& dram(std::string size) { return tier({TierKind::dram, std::move(size), {}, -1, "dram"}); }
    // A pmem directory (a DAX filesystem, or any directory through memkind's pmem kind).
    Config& pmem(std::filesystem::path dir, std::string size) { return tier({TierKind::pmem, std::move(size), std::move(dir), -1, "pmem"}); }
    // Memory of a NUMA node: a CXL Type-3 expander shows up as a CPU-less node.
    Config& cxl(int node, std::string size) { return tier({TierKind::cxl, std::move(size), {}, node, "cxl"}); }
    // A directory on a local SSD for slab files and their index.
    Config& nvme(std::filesystem::path dir, std::string size) { return tier({TierKind::nvme, std::move(size), std::move(dir), -1, "nvme"}); }
    // Sets a tier: replaces the one of the same kind where it stands, or adds it in its usual place.
    Config& tier(TierConfig t) {
        auto same = std::find_if(tiers_.begin(), tiers_.end(), [&](const TierConfig& x) { return x.kind == t.kind; });
        if (same != tiers_.end()) {
            *same = std::move(t);
        } else {
            auto later = std::find_if(tiers_.begin(), tiers_.end(), [&](const TierConfig& x) { return x.kind > t.kind; });
            tiers_.insert(later, std::move(t));
        }
        return *this;
    }
    // Replaces the whole tier list, fastest first (a config file's order).
    Config& tiers(std::vector<TierConfig> list) { tiers_ = std::move(list); return *this; }
    // "plan" (the default: by next use once a plan is set, no-evict until then), "noevict"
    // (scan-resistant) or "lru".
    Config& policy(std::string name) { policy_ = std::move(name); return *this; }
    // The unit of caching (extent.hpp): "1MiB" (the default), a multiple of 4 KiB from 64 KiB
    // to 64 MiB. Files up to this size are cached whole; larger ones by the extents read.
    Config& extent(std::string size) { extent_ = std::move(size); return *this; }
    // Extents read ahead of a sequential stream through a large file (readahead.hpp);
    // 0: none. Default 8 (8 MiB at the default extent size).
    Config& readahead(std::uint32_t extents) { readahead_ = extents; return *this; }
    // An origin entry at the root of this name is not catalogued: the mount reserves its control
    // folder's name so. A plain name: no '/', not "." or "..", not empty.
    Config& hide_at_root(std::string name) { hidden_.push_back(std::move(name)); return *this; }
    // Where the segment's file is made: a tmpfs such as /dev/shm, or a DAX filesystem.
    Config& segment_dir(std::filesystem::path dir) { segment_dir_ = std::move(dir); return *this; }
    // Shares the cache under `name`: this process becomes its owner, and other processes on
    // the host join it with Cache::attach(name) (share.hpp). Empty: private (the default).
    Config& share(std::string name) { share_ = std::move(name); return *this; }
    // The group whose members may attach too (mode 0660); empty: the owner's user only (0600).
    Config& share_group(std::string group) { share_group_ = std::move(group); return *this; }
    // Serve attached clients only once Cache::serve() is called, not from open: for a daemon
    // that forks after opening the cache (threads do not survive a fork).
    Config& serve_later(bool later) { serve_later_ = later; return *this; }

    const std::filesystem::path& origin() const noexcept { return origin_; }
    const std::vector<TierConfig>& tiers() const noexcept { return tiers_; }
    const TierConfig* find_tier(TierKind kind) const {
        auto it = std::find_if(tiers_.begin(), tiers_.end(), [&](const TierConfig& x) { return x.kind == kind; });
        return it == tiers_.end() ? nullptr : &*it;
    }
    const std::string& dram() const { return find_tier(TierKind::dram)->size; }
    std::uint64_t dram_bytes() const { return tier_bytes(*find_tier(TierKind::dram)); }
    const std::string& policy() const noexcept { return policy_; }
    const std::string& extent() const noexcept { return extent_; }
    std::uint32_t readahead() const noexcept { return readahead_; }
    const std::vector<std::string>& hidden_at_root() const noexcept { return hidden_; }
    // Throws std::invalid_argument naming the value, as validate() does.
    std::uint64_t extent_bytes() const {
        try {
            const std::uint64_t bytes = parse_size(extent_);
            check_extent_bytes(bytes);
            return bytes;
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("extent '" + extent_ + "': " + e.what());
        }
    }
    const std::filesystem::path& segment_dir() const noexcept { return segment_dir_; }
    const std::string& share() const noexcept { return share_; }
    const std::string& share_group() const noexcept { return share_group_; }
    bool serve_later() const noexcept { return serve_later_; }

    void validate() const {
        if (origin_.empty()) throw std::invalid_argument("origin: not set");
        std::error_code ec;
        if (!std::filesystem::is_directory(origin_, ec))
            throw std::invalid_argument("origin '" + origin_.string() + "': " +
                                        (std::filesystem::exists(origin_, ec) ? "not a directory" : "no such directory"));
        if (tiers_.empty() || tiers_.front().kind != TierKind::dram)
            throw std::invalid_argument("tiers: the first (fastest) tier must be dram");
        for (std::size_t i = 0; i < tiers_.size(); ++i) {
            const TierConfig& t = tiers_[i];
            const std::string where = (t.source.empty() ? "" : t.source + ": ") + t.name() + " tier";
            for (std::size_t j = 0; j < i; ++j)
                if (tiers_[j].kind == t.kind) throw std::invalid_argument(where + ": given twice");
            if (t.kind == TierKind::nvme && i + 1 != tiers_.size())
                throw std::invalid_argument(where + ": must be the last (slowest) tier");
            if ((t.kind == TierKind::pmem || t.kind == TierKind::nvme) && !std::filesystem::is_directory(t.dir, ec))
                throw std::invalid_argument(where + ": directory '" + t.dir.string() + "': " +
                                            (std::filesystem::exists(t.dir, ec) ? "not a directory" : "no such directory"));
            if (t.kind == TierKind::cxl && (t.node < 0 || !std::filesystem::exists("/sys/devices/system/node/node" + std::to_string(t.node), ec)))
                throw std::invalid_argument(where + ": NUMA node " + std::to_string(t.node) + " does not exist on this host");
            (void)tier_bytes(t);
        }
        check_policy_name(policy_);
        (void)extent_bytes();
        for (const std::string& name : hidden_)
            if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos)
                throw std::invalid_argument("hide_at_root '" + name + "': not a plain name");
        if (readahead_ > kMaxReadahead)
            throw std::invalid_argument("readahead " + std::to_string(readahead_) + ": at most " + std::to_string(kMaxReadahead) + " extents");
        if (!std::filesystem::is_directory(segment_dir_, ec))
            throw std::invalid_argument("segment_dir '" + segment_dir_.string() + "': no such directory");
        if (!share_.empty()) check_share_name(share_);
        if (!share_group_.empty()) {
            if (share_.empty()) throw std::invalid_argument("share_group '" + share_group_ + "': only for a shared cache (set share)");
            (void)ShareAccess::for_group(share_group_);
        }
    }

private:
    std::filesystem::path origin_;
    std::vector<TierConfig> tiers_;  // fastest first; dram always first
    std::string policy_ = "plan";
    std::string extent_ = "1MiB";  // kDefaultExtentBytes
    std::uint32_t readahead_ = 8;
    std::vector<std::string> hidden_;  // root entries not catalogued
    std::filesystem::path segment_dir_ = "/dev/shm";
    std::string share_, share_group_;
    bool serve_later_ = false;
};

// "DIR:SIZE" (pmem, nvme) or "NODE:SIZE" (cxl), as the command line writes a tier. The last
// ':' splits, so a directory may contain one. Throws std::invalid_argument naming the text.
inline TierConfig parse_tier_arg(TierKind kind, std::string_view text, std::string source) {
    const auto colon = text.rfind(':');
    const std::string shape = kind == TierKind::cxl ? "NODE:SIZE, like 1:64GiB" : "DIR:SIZE, like /nvme/tc:800GiB";
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size())
        throw std::invalid_argument(source + " '" + std::string(text) + "': expected " + shape);
    TierConfig t{kind, std::string(text.substr(colon + 1)), {}, -1, std::move(source)};
    const std::string where(text.substr(0, colon));
    if (kind == TierKind::cxl) {
        std::size_t used = 0;
        try {
            t.node = std::stoi(where, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != where.size() || t.node < 0)
            throw std::invalid_argument(t.source + " '" + std::string(text) + "': '" + where + "' is not a NUMA node number");
    } else {
        t.dir = where;
    }
    return t;
}

}  // namespace tiercache
