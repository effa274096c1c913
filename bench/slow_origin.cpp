// Epochs over a slow origin (issue 6, workload d): the EpochLoader over one Cache whose origin
// sleeps --latency-ms before every read, EPOCHS epochs of a shuffled EpochPlan each (epoch 1
// cold, then warm from the DRAM tier, sized to hold the dataset), a fixed "compute" sleep per
// batch while the batch is held. bench/slow_origin.sh runs it beside a PyTorch DataLoader
// (bench/slow_origin.py) over the same files, latency, batch and compute.
//
//   tiercache-bench-slow-origin --dataset DIR [--latency-ms 2] [--epochs 3] [--batch 32]
//       [--compute-ms 16] [--threads 8] [--depth 8] [--prefetch-window 0] [--dram auto]
//       [--seed 1] [--json FILE]
//
// Per epoch: epoch_s from the loader's construction (the plan installed, the ring allocated,
// the threads started) to its last batch released; wait_s, the consumer's time inside next();
// stall = wait_s / epoch_s, the same as the PyTorch side's (time blocked in next(iterator) /
// epoch time). The loader's own stall_fraction() (wait / (wait + held)) is reported beside it.
// Also the origin reads and the DRAM hits of the epoch, so that a warm epoch that was not
// served from memory shows.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::slow_origin {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using tiercache::bench::SlowOrigin;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The bytes of the regular files under `root` (symlinks not followed): the size of the DRAM
// budget that holds the dataset, before the cache has scanned it.
std::uint64_t dataset_bytes(const fs::path& root) {
    std::uint64_t total = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        if (it->is_regular_file(ec) && !it->is_symlink(ec)) total += it->file_size(ec);
    if (ec) throw std::runtime_error("cannot list the dataset '" + root.string() + "': " + ec.message());
    return total;
}

std::uint64_t dram_hits(const tiercache::Stats& s) { return s.tiers.empty() ? 0 : s.tiers.front().hits; }

}  // namespace

// tiercache-bench-slow-origin (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    CLI::App app{"EpochLoader epochs over an origin with a fixed latency per read (cold, then warm)"};
    std::string dataset, dram = "auto", json_path, segment_dir = "/dev/shm";
    double latency_ms = 2, compute_ms = 16;
    std::size_t epochs = 3, batch = 32, threads = 8, depth = 8, prefetch_window = 0;
    std::uint64_t seed = 1;
    app.add_option("--dataset", dataset, "the dataset directory (e.g. from tiercache gen), read only")->required()->check(CLI::ExistingDirectory);
    app.add_option("--latency-ms", latency_ms, "sleep before every origin read")->check(CLI::NonNegativeNumber);
    app.add_option("--epochs", epochs, "epochs, each over a new shuffled plan")->check(CLI::PositiveNumber);
    app.add_option("--batch", batch, "samples per batch")->check(CLI::PositiveNumber);
    app.add_option("--compute-ms", compute_ms, "the consumer's time per batch, holding it")->check(CLI::NonNegativeNumber);
    app.add_option("--threads", threads, "the loader's I/O threads")->check(CLI::PositiveNumber);
    app.add_option("--depth", depth, "the loader's batch buffers")->check(CLI::PositiveNumber);
    app.add_option("--prefetch-window", prefetch_window, "samples beyond the ring the cache prefetches (0: off)");
    app.add_option("--dram", dram, "the DRAM tier's budget; auto: the dataset's bytes + 1/8 + 64 MiB");
    app.add_option("--segment-dir", segment_dir, "where the cache's segment lives")->check(CLI::ExistingDirectory);
    app.add_option("--seed", seed, "the plans' seed");
    app.add_option("--json", json_path, "write the per-epoch figures here as JSON");
    CLI11_PARSE(app, argc, argv);
    tiercache::set_log_level(tiercache::LogLevel::warn);

    const fs::path root = fs::absolute(dataset);
    const std::uint64_t bytes_on_disk = dataset_bytes(root);
    if (dram == "auto") dram = std::to_string(bytes_on_disk + bytes_on_disk / 8 + (64ull << 20));
    const auto latency = std::chrono::microseconds(static_cast<long>(latency_ms * 1000));
    const auto compute = std::chrono::microseconds(static_cast<long>(compute_ms * 1000));

    tiercache::OwnerCache cache(tiercache::Config{}.origin(root).dram(dram).segment_dir(segment_dir),
                           std::make_unique<SlowOrigin>(root, latency));
    const std::size_t samples = cache.catalog().size();
    if (samples == 0) throw std::runtime_error("the dataset '" + root.string() + "' holds no files");
    const std::uint64_t total = cache.catalog().total_bytes();
    const std::uint64_t budget = cache.config().dram_bytes();
    if (budget < total)
        std::fprintf(stderr, "warning: --dram %s is less than the dataset (%s): warm epochs will read the origin\n",
                     tiercache::format_size(budget).c_str(), tiercache::format_size(total).c_str());
    const tiercache::LoaderOptions options{.batch = batch, .depth = depth, .threads = threads, .prefetch_window = prefetch_window};

    const std::size_t batches = (samples + batch - 1) / batch;
    std::printf("%zu samples (%s), %.1f ms per origin read; batch %zu, %.1f ms compute a batch (no-stall floor %.3f s); "
                "loader threads %zu, depth %zu, prefetch window %zu; dram %s\n",
                samples, tiercache::format_size(total).c_str(), latency_ms, batch, compute_ms,
                static_cast<double>(batches) * compute_ms / 1000, threads, depth, prefetch_window,
                tiercache::format_size(budget).c_str());
    std::printf("%-6s %9s %9s %9s %8s %8s %9s %13s %10s\n", "epoch", "epoch_s", "setup_s", "wait_s", "stall", "loader", "first_s",
                "origin_reads", "dram_hits");

    nlohmann::ordered_json per_epoch = nlohmann::ordered_json::array();
    for (std::size_t e = 0; e < epochs; ++e) {
        const tiercache::EpochPlan plan(samples, seed, e);
        const tiercache::Stats before = cache.stats();
        const auto start = Clock::now();
        double setup_s;
        tiercache::LoaderStats got;
        {
            tiercache::EpochLoader loader(cache, plan, options);
            setup_s = seconds_since(start);
            while (auto b = loader.next()) std::this_thread::sleep_for(compute);  // the model's step, batch held
            got = loader.stats();
        }
        const double epoch_s = seconds_since(start);
        const tiercache::Stats after = cache.stats();
        const std::uint64_t origin_reads = after.origin_reads - before.origin_reads;
        const std::uint64_t hits = dram_hits(after) - dram_hits(before);
        const double stall = got.wait_seconds / epoch_s;
        std::printf("%-6zu %9.3f %9.3f %9.3f %7.1f%% %7.1f%% %9.3f %13llu %10llu\n", e + 1, epoch_s, setup_s, got.wait_seconds,
                    100 * stall, 100 * got.stall_fraction(), got.first_wait_seconds,
                    static_cast<unsigned long long>(origin_reads), static_cast<unsigned long long>(hits));
        std::fflush(stdout);
        per_epoch.push_back({{"epoch", e + 1},
                             {"samples", got.samples},
                             {"batches", got.batches},
                             {"epoch_s", epoch_s},
                             {"setup_s", setup_s},
                             {"wait_s", got.wait_seconds},
                             {"first_wait_s", got.first_wait_seconds},
                             {"held_s", got.held_seconds},
                             {"stall", stall},
                             {"loader_stall_fraction", got.stall_fraction()},
                             {"origin_reads", origin_reads},
                             {"origin_bytes", after.origin_bytes_read - before.origin_bytes_read},
                             {"dram_hits", hits},
                             {"prefetch_fetched", after.prefetch_fetched - before.prefetch_fetched}});
    }

    if (!json_path.empty()) {
        const nlohmann::ordered_json out = {{"side", "tiercache"},
                                            {"dataset", root.string()},
                                            {"samples", samples},
                                            {"dataset_bytes", total},
                                            {"latency_ms", latency_ms},
                                            {"batch", batch},
                                            {"compute_ms", compute_ms},
                                            {"threads", threads},
                                            {"depth", depth},
                                            {"prefetch_window", prefetch_window},
                                            {"dram_bytes", budget},
                                            {"seed", seed},
                                            {"epochs", per_epoch}};
        std::ofstream f(json_path);
        f << out.dump(2) << '\n';
        if (!f.flush()) throw std::runtime_error("cannot write " + json_path);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::slow_origin
