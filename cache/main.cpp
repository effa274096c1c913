// `tiercache`: the companion command of tiercache-fuse. This file only wires the command
// line (CLI11) to one function per subcommand; each lives in its own source file.
#include <CLI/CLI.hpp>
#include <tiercache/config_file.hpp>
#include <tiercache/version.hpp>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "bench_read.hpp"
#include "gen.hpp"
#include "index.hpp"
#include "serve.hpp"
#include "stats_cmd.hpp"
#include "tiers.hpp"
#include "warm.hpp"

using namespace tiercache::cli;

namespace {

// CLI11 converts "-1" to an unsigned option by wrapping it to 2^64 - 1; refuse it instead.
const CLI::Validator kNotNegative(
    [](std::string& value) { return value.starts_with('-') ? "'" + value + "' is negative" : std::string(); },
    "NOT NEGATIVE");

// MOUNTPOINT when the command line leaves it out: [mount] mountpoint of the config file.
std::string mountpoint_from(const std::string& config) {
    if (config.empty()) throw std::runtime_error("no MOUNTPOINT: give it, or --config FILE with [mount] mountpoint");
    const auto file = tiercache::ConfigFile::load(config);
    const toml::table* mount = file.mount_section();
    const auto mountpoint = mount ? file.string_at(*mount, "mountpoint") : std::nullopt;
    if (!mountpoint) throw std::runtime_error(config + ": no [mount] mountpoint to take MOUNTPOINT from");
    return *mountpoint;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"tiercache: the companion tool of tiercache-fuse (mount stats, cache warming, "
                 "synthetic datasets, record indexes of tar shards, benchmarks)"};
    app.set_version_flag("--version", std::string("tiercache ") + TIERCACHE_VERSION);
    app.require_subcommand(1);

    GenOptions gen;
    auto* gen_cmd = app.add_subcommand("gen", "Write a synthetic ImageNet-like dataset (class folders of JPEG-sized files)");
    gen_cmd->add_option("DIR", gen.dir, "Directory to create (or an empty one)")->required();
    // Ranges also reject "-3" (see kNotNegative).
    gen_cmd->add_option("--files", gen.files, "Number of files")
        ->capture_default_str()
        ->check(CLI::Range(std::uint64_t{0}, kMaxGenFiles));
    gen_cmd->add_option("--classes", gen.classes, "Number of class folders")
        ->capture_default_str()
        ->check(CLI::Range(std::uint64_t{1}, kMaxGenClasses));
    gen_cmd->add_option("--seed", gen.seed, "Seed: the same seed gives the same bytes on every machine")
        ->capture_default_str()
        ->check(kNotNegative);
    gen_cmd->add_flag("--force", gen.force, "Write into DIR even if it is not empty (same-named files are overwritten)");

    IndexOptions index;
    auto* index_cmd = app.add_subcommand(
        "index", "Write the record index of DIR's .tar shards: each regular member's path, data offset, length and name (JSON Lines)");
    index_cmd->add_option("DIR", index.dir, "The dataset directory (the mount's ORIGIN): its .tar files are indexed")->required();
    index_cmd->add_option("-o,--output", index.output, "Write the index to FILE (atomically: a temporary file, renamed) instead of stdout")
        ->option_text("FILE");

    StatsOptions stats;
    auto* stats_cmd = app.add_subcommand("stats", "Show a mount's cache counters (from MOUNTPOINT/.tiercache/stats)");
    stats_cmd->add_option("MOUNTPOINT", stats.mountpoint, "A tiercache-fuse mount point (or [mount] mountpoint of --config)");
    stats_cmd->add_option("--attach", stats.attach, "Instead of a mount: the shared cache of this name (tiercache serve, --share)");
    stats_cmd->add_option("--segment-dir", stats.segment_dir, "With --attach: where its owner keeps the segment")->capture_default_str();
    auto* stats_json = stats_cmd->add_flag("--json", stats.json, "Print the stats JSON itself");
    auto* stats_watch = stats_cmd->add_flag("--watch", stats.watch,
                                            "A live view, redrawn every --interval: per tier and per job rates (Ctrl-C ends it)");
    stats_watch->excludes(stats_json);
    stats_cmd->add_option("--interval", stats.interval_s, "With --watch: seconds between frames")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 86400.0))
        ->needs(stats_watch);
    stats_cmd->add_option("--count", stats.count, "With --watch: stop after N frames (default: until Ctrl-C)")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 62))
        ->needs(stats_watch);
    std::string stats_config;
    stats_cmd->add_option("--config", stats_config, "The mount's TOML config file: MOUNTPOINT comes from it");

    TiersOptions tiers;
    auto* tiers_cmd = app.add_subcommand(
        "tiers", "Show the memory this host has (NUMA nodes, memkind kinds) and the tiers tiercache would use by default");
    tiers_cmd->add_flag("--json", tiers.json, "Print one JSON object instead of the tables");
    tiers_cmd->add_option("--config", tiers.config, "Also check a TOML config file and show the tiers it would make");

    WarmOptions warm;
    auto* warm_cmd = app.add_subcommand("warm", "Read files through a mount so that the cache holds them");
    warm_cmd->add_option("MOUNTPOINT", warm.mountpoint, "A tiercache-fuse mount point, or a folder inside one (or from --config)");
    std::string warm_config;
    warm_cmd->add_option("--config", warm_config, "The mount's TOML config file: MOUNTPOINT comes from it");
    warm_cmd->add_option("PATHS", warm.paths, "Files or folders to warm, relative to MOUNTPOINT (default: all)");
    warm_cmd->add_option("--readers", warm.readers, "Reader threads")->capture_default_str()->check(CLI::Range(1, 1024));

    ServeOptions serve;
    auto* serve_cmd = app.add_subcommand("serve", "Own a shared cache without a mount: jobs attach to it by name (Cache::attach)");
    serve_cmd->add_option("ORIGIN", serve.origin, "the dataset directory (never written); or origin in --config");
    serve_cmd->add_option("--name", serve.name, "the cache's name, which jobs attach to")->required();
    serve_cmd->add_option("--group", serve.group, "members of this group may attach too (files 0660; default 0600, this user only)");
    serve_cmd->add_option("--dram", serve.dram, "dram tier size: 512MiB, 2GiB, or 10% of RAM")->capture_default_str();
    serve_cmd->add_option("--pmem", serve.pmem, "pmem tier: DIR:SIZE");
    serve_cmd->add_option("--cxl", serve.cxl, "cxl tier: NODE:SIZE");
    serve_cmd->add_option("--nvme", serve.nvme, "nvme tier: DIR:SIZE, warm across restarts");
    serve_cmd->add_option("--policy", serve.policy, "plan, noevict or lru")->capture_default_str();
    serve_cmd->add_option("--segment-dir", serve.segment_dir, "where the shared segment and socket live")->capture_default_str();
    serve_cmd->add_option("--config", serve.config, "a TOML file with the tier list (flags win)");
    serve_cmd->add_option("--log", serve.log_file, "append log lines to this file (default: stderr)");

    auto* bench_cmd = app.add_subcommand("bench", "Benchmarks");
    bench_cmd->require_subcommand(1);
    BenchReadOptions bench_read;
    auto* bench_read_cmd = bench_cmd->add_subcommand(
        "read", "Read every file under DIR whole, in a seeded shuffled order per epoch, with N threads");
    bench_read_cmd->add_option("DIR", bench_read.dir, "Dataset directory or mount point")->required();
    bench_read_cmd->add_option("--readers", bench_read.readers, "Reader threads")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
    bench_read_cmd->add_option("--seed", bench_read.seed, "Shuffle seed (epoch e uses (seed, e))")
        ->capture_default_str()
        ->check(kNotNegative);
    bench_read_cmd->add_option("--epochs", bench_read.epochs, "Number of epochs")
        ->capture_default_str()
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000}));
    bench_read_cmd->add_option("--records", bench_read.records,
                               "Read the records of this index (tiercache index DIR) instead of whole files, shuffled "
                               "across every shard; with --plan, the plan names them (PATH OFFSET LENGTH)")
        ->check(CLI::ExistingFile);
    bench_read_cmd->add_flag("--verify", bench_read.verify,
                             "Print the sum of the files' XXH3-64 (order-independent) to compare two trees");
    bench_read_cmd->add_flag("--progress", bench_read.progress, "Show a live progress line on stderr (if it is a terminal)");
    bench_read_cmd->add_flag("--json", bench_read.json, "Print one JSON object per epoch on stdout");
    bench_read_cmd->add_flag("--plan", bench_read.plan,
                             "Before each epoch, write its order to DIR/.tiercache/plan, so that the mount prefetches it "
                             "and places by it (DIR must be a tiercache mount)");

    CLI11_PARSE(app, argc, argv);

    // Errors are reported as "tiercache <command>: <what went wrong>" with exit status 1.
    std::string command = "tiercache";
    try {
        if (*gen_cmd) {
            command += " gen";
            run_gen(gen);
            return 0;
        }
        if (*index_cmd) {
            command += " index";
            run_index(index);
            return 0;
        }
        if (*stats_cmd) {
            command += " stats";
            if (stats.mountpoint.empty() && stats.attach.empty()) stats.mountpoint = mountpoint_from(stats_config);
            run_stats(stats);
            return 0;
        }
        if (*tiers_cmd) {
            command += " tiers";
            run_tiers(tiers);
            return 0;
        }
        if (*warm_cmd) {
            command += " warm";
            if (warm.mountpoint.empty()) warm.mountpoint = mountpoint_from(warm_config);
            return run_warm(warm);
        }
        if (*serve_cmd) {
            command += " serve";
            return run_serve(serve, serve_cmd->count("--dram") > 0, serve_cmd->count("--policy") > 0,
                             serve_cmd->count("--segment-dir") > 0);
        }
        if (*bench_read_cmd) {
            command += " bench read";
            return run_bench_read(bench_read);
        }
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: %s\n", command.c_str(), e.what());
        return 1;
    }
    return 1;  // unreachable: CLI11 requires one subcommand
}
