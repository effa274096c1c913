// libFuzzer target: the config file (include/tiercache/config_file.hpp) parsed from memory
// (ConfigFile::parse), applied over the defaults, its [mount] section read as tiercache-fuse
// does, then Config::validate().
// Invariants: the only exception is std::invalid_argument (the documented one) and its
// message names the file; a text that applies writes back as TOML and parses to the same tiers,
// origin, policy and segment_dir.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include <tiercache/config_file.hpp>

namespace {

constexpr const char* kName = "fuzz.toml";

[[noreturn]] void broken(const char* what, std::string_view detail) {
    std::fprintf(stderr, "fuzz_config: %s: %.*s\n", what, static_cast<int>(detail.size()), detail.data());
    std::abort();
}

// A TOML basic string. (Not toml++'s writer: 3.3 writes a string holding ''', '"' and '\\'
// as a multi-line literal string that ends early, which this target found; tiercache never
// writes TOML, so that is no bug of ours.)
std::string toml_string(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (b < 0x20 || b == 0x7F) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04X", b);
            out += esc;
        } else {
            out += c;  // UTF-8 as toml++ checked it
        }
    }
    return out + "\"";
}

// The library's part of a Config, written back as TOML.
std::string write_back(const tiercache::Config& c) {
    std::string out = "origin = " + toml_string(c.origin().string()) + "\npolicy = " + toml_string(c.policy()) +
                      "\nsegment_dir = " + toml_string(c.segment_dir().string()) + "\n";
    for (const auto& tier : c.tiers()) {
        out += "[[tier]]\nkind = " + toml_string(tier.name()) + "\nsize = " + toml_string(tier.size) + "\n";
        if (tier.kind == tiercache::TierKind::pmem || tier.kind == tiercache::TierKind::nvme) out += "path = " + toml_string(tier.dir.string()) + "\n";
        if (tier.kind == tiercache::TierKind::cxl) out += "node = " + std::to_string(tier.node) + "\n";
    }
    return out;
}

bool same(const tiercache::Config& a, const tiercache::Config& b) {
    if (a.origin() != b.origin() || a.policy() != b.policy() || a.segment_dir() != b.segment_dir()) return false;
    if (a.tiers().size() != b.tiers().size()) return false;
    for (std::size_t i = 0; i < a.tiers().size(); ++i) {
        const auto &x = a.tiers()[i], &y = b.tiers()[i];
        if (x.kind != y.kind || x.size != y.size || x.dir != y.dir || x.node != y.node) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    tiercache::set_log_level(tiercache::LogLevel::error);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    tiercache::Config config;
    bool applied = false;
    try {
        const auto file = tiercache::ConfigFile::parse(text, kName);
        config = file.apply(tiercache::Config{});
        applied = true;
        // The [mount] section, read as tiercache-fuse reads it.
        if (const toml::table* mount = file.section("mount", {"mountpoint", "foreground", "kernel_cache", "threads", "log", "allow_other",
                                                              "share", "group", "prefetch_threads", "prefetch_window", "prefetch_bytes"})) {
            (void)file.string_at(*mount, "mountpoint");
            (void)file.bool_at(*mount, "foreground");
            (void)file.integer_at(*mount, "threads");
            if (auto v = file.string_at(*mount, "prefetch_bytes")) (void)tiercache::parse_size(*v);
        }
        config.validate();
    } catch (const std::invalid_argument& e) {
        const std::string_view what = e.what();
        // parse_size's and validate()'s own messages name the value, not the file.
        if (!applied && what.find(kName) != 0) broken("an error that does not name the file", what);
    } catch (const std::exception& e) {
        broken("an exception other than std::invalid_argument", e.what());
    } catch (...) {
        broken("a non-std exception", text);
    }
    if (!applied) return 0;

    // Round trip: what applied writes back and applies to the same Config.
    const std::string back = write_back(config);
    try {
        const tiercache::Config again = tiercache::ConfigFile::parse(back, kName).apply(tiercache::Config{});
        if (!same(config, again)) broken("written back, it applies to another config", back);
    } catch (const std::exception& e) {
        broken((std::string("written back, it does not apply: ") + e.what()).c_str(), back);
    }
    return 0;
}
