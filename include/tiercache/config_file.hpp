// The config file (TOML): the tier list, fastest to slowest, and every command-line option.
// Errors name the file, the line and the value. Command-line flags override what it says.
//
//   origin = "/data/imagenet/train"
//   policy = "plan"
//   extent = "1MiB"          # the unit of caching (extent.hpp)
//   readahead = 8            # extents read ahead of a sequential stream (readahead.hpp); 0: off
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
//   kernel_cache = "auto"    # or true, false (--kernel-cache)
//   threads = 4
//   prefetch_threads = 4     # reading ahead in the plan's order; 0: off
//   prefetch_window = 1024   # samples ahead of the reader
//   prefetch_bytes = "1GiB"  # bytes ahead (default: a quarter of the dram tier, at most 1GiB)
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "config.hpp"

namespace tiercache {

namespace detail {

// Inputs on which toml++ 3.3 (Debian 12's) misbehaves, found by fuzz/fuzz_config:
//  - It tests characters for whitespace where a token may end, in its error paths too; for
//    code points in U+00A1..U+0499 and U+FB26..U+FEFE is_non_ascii_horizontal_whitespace()
//    then reaches __builtin_unreachable(): undefined behaviour (marzer/tomlplusplus#295).
//    It never does inside strings and comments, but for the byte after a backslash in a
//    multi-line basic string and, after a line-ending backslash, the first one past the
//    whitespace.
//  - A table header whose first character is no key's ('[~]') fails an assertion in
//    parse_key(): an abort where NDEBUG is not defined, __builtin_assume(false) under clang.
// This finds, before toml++ reads the text, a non-ASCII character outside strings and comments
// or in that place, and such a header: `at` is the byte offset + 1 (0: none) and `what` says
// which. Its view of strings holds up to the text's first error, where toml++ stops; what
// toml++'s error path reads beyond it ConfigFile::parse() covers by masking.
struct TomlHazard {
    std::size_t at = 0;
    const char* what = "";
};
inline TomlHazard toml_hazard(std::string_view text) {
    enum { outside, comment, basic, literal, ml_basic, ml_literal } state = outside;
    auto at = [&](std::size_t i, std::string_view s) { return text.substr(i, s.size()) == s; };
    auto non_ascii = [](char c) { return static_cast<unsigned char>(c) >= 0x80; };
    auto key_start = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '"' || c == '\'';
    };
    bool line_start = true;  // outside: only spaces and tabs so far on this line
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        switch (state) {
            case outside:
                if (non_ascii(c)) return {i + 1, "a non-ASCII character outside a string or comment"};
                if (c == '[' && line_start) {
                    std::size_t j = i + 1;
                    if (j < text.size() && text[j] == '[') ++j;
                    while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j;
                    if (j < text.size() && !key_start(text[j]) && text[j] != ']')
                        return {j + 1, "a table header must begin with a key: a bare key (A-Za-z0-9_-) or a quoted one"};
                }
                if (c == '#') {
                    state = comment;
                } else if (at(i, R"(""")")) {
                    state = ml_basic;
                    i += 2;
                } else if (at(i, "'''")) {
                    state = ml_literal;
                    i += 2;
                } else if (c == '"') {
                    state = basic;
                } else if (c == '\'') {
                    state = literal;
                }
                line_start = c == '\n' || (line_start && (c == ' ' || c == '\t' || c == '\r'));
                break;
            case comment:
                if (c == '\n') state = outside, line_start = true;
                break;
            case basic:
                if (c == '\\') ++i;  // an escape: the next byte does not end the string
                else if (c == '"') state = outside;
                else if (c == '\n') state = outside, line_start = true;
                break;
            case literal:
                if (c == '\'') state = outside;
                else if (c == '\n') state = outside, line_start = true;
                break;
            case ml_basic:
                if (c == '\\') {
                    std::size_t j = i + 1;
                    while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r' || text[j] == '\n')) ++j;
                    if (j < text.size() && non_ascii(text[j]))
                        return {j + 1, "a non-ASCII character right after a backslash (write it as \\uXXXX)"};
                    i = j == i + 1 ? j : j - 1;  // past the escaped byte, or onto the last whitespace
                } else if (at(i, R"(""")")) {
                    state = outside;
                    i += 2;
                    while (i + 1 < text.size() && text[i + 1] == '"') ++i;  // a quote or two may end the content
                }
                break;
            case ml_literal:
                if (at(i, "'''")) {
                    state = outside;
                    i += 2;
                    while (i + 1 < text.size() && text[i + 1] == '\'') ++i;
                }
                break;
        }
    }
    return {};
}

}  // namespace detail

class ConfigFile {
public:
    // Parses `path`; throws std::invalid_argument "FILE:LINE:COL: what" for a malformed file.
    static ConfigFile load(const std::filesystem::path& path) {
        const std::string name = path.string();
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
            throw std::invalid_argument("config '" + name + "': " + (std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
        std::ifstream in(path, std::ios::binary);
        std::string text((std::istreambuf_iterator<char>(in)), {});
        if (!in && !in.eof()) throw std::invalid_argument("config '" + name + "': cannot read it");
        return parse(text, name);
    }

    // Parses TOML `text` as if it were the file `name` (errors name it); the same checks as
    // load(). Throws std::invalid_argument "NAME:LINE:COL: what" for a malformed text.
    static ConfigFile parse(std::string_view text, std::string name) {
        ConfigFile f;
        f.path_ = std::move(name);
        auto error_at = [&](std::size_t line, std::size_t column, std::string_view what) {
            return std::invalid_argument(f.path_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + std::string(what));
        };
        // toml++ 3.3 misreads some texts (see detail::toml_hazard): they are refused first.
        if (const auto hazard = detail::toml_hazard(text); hazard.at != 0) {
            const std::string_view before = text.substr(0, hazard.at - 1);
            const std::size_t line_start = before.rfind('\n') + 1;  // npos + 1 == 0
            std::size_t column = 1;
            for (std::size_t i = line_start; i < before.size(); ++i) column += (static_cast<unsigned char>(before[i]) & 0xC0) != 0x80;
            throw error_at(static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n')) + 1, column, hazard.what);
        }
        // Its error paths read on past the first error, where toml_hazard() cannot follow: a text
        // with non-ASCII characters is parsed first with each as '~' (invalid outside strings
        // and comments). An error there is the text's; success proves that every one of them
        // lies inside a string or a comment.
        if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
            std::string masked;
            masked.reserve(text.size());
            bool in_character = false;  // one '~' for a character's lead byte and its continuation bytes
            for (const char c : text) {
                const auto b = static_cast<unsigned char>(c);
                if (b < 0x80) masked += c;
                else if (!in_character || (b & 0xC0) != 0x80) masked += '~';
                in_character = b >= 0x80;
            }
            try {
                (void)toml::parse(masked, f.path_);
            } catch (const toml::parse_error& e) {
                throw error_at(e.source().begin.line, e.source().begin.column,
                               std::string(e.description()) + " (non-ASCII characters shown as '~')");
            }
        }
        try {
            f.table_ = toml::parse(text, f.path_);
        } catch (const toml::parse_error& e) {
            throw error_at(e.source().begin.line, e.source().begin.column, e.description());
        }
        f.check_keys(f.table_, "", {"origin", "policy", "extent", "readahead", "segment_dir", "tier", "mount"});
        return f;
    }

    // The library's part, applied over `base` (so defaults stay where the file is silent).
    Config apply(Config base) const {
        if (auto v = string_at(table_, "origin")) base.origin(*v);
        if (auto v = string_at(table_, "policy")) base.policy(*v);
        if (auto v = string_at(table_, "extent")) {
            base.extent(*v);
            try {
                (void)base.extent_bytes();  // now, so that the error names the file and line
            } catch (const std::invalid_argument& e) {
                fail(*table_.get("extent"), e.what());
            }
        }
        if (auto v = integer_at(table_, "readahead")) {
            if (*v < 0 || *v > Config::kMaxReadahead)
                fail(*table_.get("readahead"), "readahead " + std::to_string(*v) + ": from 0 to " + std::to_string(Config::kMaxReadahead) + " extents");
            base.readahead(static_cast<std::uint32_t>(*v));
        }
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
        return section(name, std::span(allowed.begin(), allowed.size()));
    }

    // [mount], tiercache-fuse's own options. One list for the daemon, which reads them all, and
    // for `tiercache`, which reads only the mountpoint but must take every file the daemon does.
    static constexpr std::string_view kMountKeys[] = {
        "mountpoint",       "foreground",      "kernel_cache", "threads", "log",    "allow_other",      "prefetch_threads",
        "prefetch_window",  "prefetch_bytes",  "share",        "group",   "revalidate", "metrics_textfile", "metrics_interval"};
    const toml::table* mount_section() const { return section("mount", kMountKeys); }

    const toml::table* section(std::string_view name, std::span<const std::string_view> allowed) const {
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
        check_keys(t, prefix, std::span(allowed.begin(), allowed.size()));
    }
    void check_keys(const toml::table& t, const std::string& prefix, std::span<const std::string_view> allowed) const {
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
