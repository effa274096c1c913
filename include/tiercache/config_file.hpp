// The config file (TOML): the tier list, fastest to slowest, and every command-line option.
// Errors name the file, the line and the value. Command-line flags override what it says.
//
//   origin = "/data/imagenet/train"
//   policy = "plan"
//
//   [[tier]]                 # fastest first
//   kind = "dram"
//   size = "32GiB"
//
//   [[tier]]
//   kind = "nvme"
//   path = "/nvme/tc"
//   size = "800GiB"
//
//   [mount]                  # tiercache-fuse's own options
//   mountpoint = "/mnt/ds"
//   kernel_cache = true
//   threads = 4
//   prefetch_threads = 4     # reading ahead in the plan's order; 0: off
//   prefetch_window = 1024   # samples ahead of the reader
//   prefetch_bytes = "1GiB"  # bytes ahead (default: a quarter of the dram tier, at most 1GiB)
#pragma once
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "config.hpp"

namespace tiercache {

class ConfigFile {
public:
    // Parses `path`; throws std::invalid_argument "FILE:LINE:COL: what" for a malformed file.
    static ConfigFile load(const std::filesystem::path& path) {
        ConfigFile f;
        f.path_ = path.string();
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
            throw std::invalid_argument("config '" + f.path_ + "': " + (std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
        try {
            f.table_ = toml::parse_file(f.path_);
        } catch (const toml::parse_error& e) {
            const auto& at = e.source().begin;
            throw std::invalid_argument(f.path_ + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " +
                                        std::string(e.description()));
        }
        f.check_keys(f.table_, "", {"origin", "policy", "segment_dir", "tier", "mount"});
        return f;
    }

    // The library's part, applied over `base` (so defaults stay where the file is silent).
    Config apply(Config base) const {
        if (auto v = string_at(table_, "origin")) base.origin(*v);
        if (auto v = string_at(table_, "policy")) base.policy(*v);
        if (auto v = string_at(table_, "segment_dir")) base.segment_dir(*v);
        if (const toml::node* tiers = table_.get("tier")) {
            const toml::array* list = tiers->as_array();
            if (list == nullptr) fail(*tiers, "'tier' must be an array of tables: write [[tier]]");
            std::vector<TierConfig> parsed;
            for (const toml::node& node : *list) {
                const toml::table* t = node.as_table();
                if (t == nullptr) fail(node, "each [[tier]] must be a table");
                parsed.push_back(tier(*t));
            }
            if (!parsed.empty()) base.tiers(std::move(parsed));
        }
        return base;
    }

    // A table's keys for a program's own options (e.g. "mount"), each checked against `allowed`.
    const toml::table* section(std::string_view name, std::initializer_list<std::string_view> allowed) const {
        const toml::node* node = table_.get(name);
        if (node == nullptr) return nullptr;
        const toml::table* t = node->as_table();
        if (t == nullptr) fail(*node, "'" + std::string(name) + "' must be a table: write [" + std::string(name) + "]");
        check_keys(*t, std::string(name) + ".", allowed);
        return t;
    }

    std::optional<std::string> string_at(const toml::table& t, std::string_view key) const { return get<std::string>(t, key, "a string"); }
    std::optional<std::int64_t> integer_at(const toml::table& t, std::string_view key) const { return get<std::int64_t>(t, key, "an integer"); }
    std::optional<bool> bool_at(const toml::table& t, std::string_view key) const { return get<bool>(t, key, "true or false"); }

    const std::string& path() const noexcept { return path_; }

    [[noreturn]] void fail(const toml::node& node, const std::string& what) const {
        throw std::invalid_argument(path_ + ":" + std::to_string(node.source().begin.line) + ": " + what);
    }

private:
    TierConfig tier(const toml::table& t) const {
        check_keys(t, "tier.", {"kind", "size", "path", "node"});
        const std::string line = path_ + ":" + std::to_string(t.source().begin.line);
        const auto kind_name = string_at(t, "kind");
        if (!kind_name) fail(t, "[[tier]] needs kind = \"dram\", \"pmem\", \"cxl\" or \"nvme\"");
        const auto kind = tier_kind(*kind_name);
        if (!kind) fail(*t.get("kind"), "unknown tier kind '" + *kind_name + "' (use dram, pmem, cxl or nvme)");
        TierConfig out{*kind, {}, {}, -1, line};
        const auto size = string_at(t, "size");
        if (!size) fail(t, *kind_name + " tier needs size = \"...\" (like \"64GiB\" or \"10%\")");
        out.size = *size;
        out.source = path_ + ":" + std::to_string(t.get("size")->source().begin.line);
        if (*kind == TierKind::pmem || *kind == TierKind::nvme) {
            const auto dir = string_at(t, "path");
            if (!dir) fail(t, *kind_name + " tier needs path = \"/a/directory\"");
            out.dir = *dir;
        } else if (t.contains("path")) {
            fail(*t.get("path"), *kind_name + " tier takes no path");
        }
        if (*kind == TierKind::cxl) {
            const auto node = integer_at(t, "node");
            if (!node || *node < 0 || *node > 4095) fail(t, "cxl tier needs node = N, a NUMA node number");
            out.node = static_cast<int>(*node);
        } else if (t.contains("node")) {
            fail(*t.get("node"), *kind_name + " tier takes no node");
        }
        // Check the size now, so its error names the file and line (validate() checks again).
        (void)parse_size_checked(out, *t.get("size"));
        return out;
    }

    std::uint64_t parse_size_checked(const TierConfig& t, const toml::node& at) const {
        try {
            return tier_bytes(TierConfig{t.kind, t.size, t.dir, t.node, ""});
        } catch (const std::invalid_argument& e) {
            fail(at, e.what());
        }
    }

    template <class T>
    std::optional<T> get(const toml::table& t, std::string_view key, const char* expected) const {
        const toml::node* node = t.get(key);
        if (node == nullptr) return std::nullopt;
        if (auto v = node->value_exact<T>()) return *v;
        fail(*node, "'" + std::string(key) + "' must be " + expected);
    }

    void check_keys(const toml::table& t, const std::string& prefix, std::initializer_list<std::string_view> allowed) const {
        for (const auto& [key, node] : t) {
            bool known = false;
            for (auto a : allowed) known |= key.str() == a;
            if (!known) fail(node, "unknown key '" + prefix + std::string(key.str()) + "'");
        }
    }

    std::string path_;
    toml::table table_;
};

}  // namespace tiercache
