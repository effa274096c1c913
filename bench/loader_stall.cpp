// How much of an epoch the consumer waits for data: the EpochLoader over an origin that takes
// a fixed latency per read (0, 1, 5 ms: local disk, NFS, an object store), for several
// (threads, depth) windows, with a fixed "compute" time per batch. Reports the epoch time
// and the stall fraction (wait / (wait + held)), medians of --runs runs, each over a cold
// cache so every read pays the latency.
//   tiercache-bench-loader-stall [--samples 256] [--sample-size 16KiB] [--batch 16]
//                                [--compute-ms 5] [--runs 3]
// The floor is samples / batch * compute: an epoch with no stall at all.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::loader_stall {

namespace {

using tiercache::bench::median;
using tiercache::bench::SlowOrigin;
using tiercache::bench::TempFolder;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Result {
    double epoch_s, stall;
};

Result run_once(const fs::path& root, std::chrono::microseconds latency, tiercache::LoaderOptions options,
                std::chrono::microseconds compute) {
    tiercache::OwnerCache cache(tiercache::Config{}.origin(root).dram("256MiB"), std::make_unique<SlowOrigin>(root, latency));
    const tiercache::EpochPlan plan(cache.catalog().size(), 1, 0);
    const auto start = Clock::now();
    tiercache::EpochLoader loader(cache, plan, options);
    while (auto batch = loader.next()) std::this_thread::sleep_for(compute);
    return {seconds_since(start), loader.stats().stall_fraction()};
}

}  // namespace

// tiercache-bench-loader-stall (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    CLI::App app{"EpochLoader stall fraction against origin latency and the loader's window"};
    std::size_t samples = 256, batch = 16;
    std::string sample_size = "16KiB";
    double compute_ms = 5;
    int runs = 3;
    app.add_option("--samples", samples, "samples in the data set");
    app.add_option("--sample-size", sample_size, "bytes per sample");
    app.add_option("--batch", batch, "samples per batch");
    app.add_option("--compute-ms", compute_ms, "the consumer's time per batch");
    app.add_option("--runs", runs, "runs per configuration (the median is shown)")->check(CLI::PositiveNumber);
    CLI11_PARSE(app, argc, argv);

    const auto size = tiercache::parse_size(sample_size);
    TempFolder data("tiercache-bench-stall");
    std::mt19937_64 rng(1);
    std::vector<char> bytes(static_cast<std::size_t>(size));
    for (std::size_t i = 0; i < samples; ++i) {
        for (char& c : bytes) c = static_cast<char>(rng());
        std::FILE* f = std::fopen((data.path / ("s" + std::to_string(i))).c_str(), "wb");
        if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0)
            throw std::runtime_error("cannot write the data set in " + data.path.string());
    }
    tiercache::set_log_level(tiercache::LogLevel::warn);

    const auto compute = std::chrono::microseconds(static_cast<long>(compute_ms * 1000));
    const double floor = static_cast<double>((samples + batch - 1) / batch) * compute_ms / 1000;
    std::printf("%zu samples of %s, batch %zu, %.1f ms compute a batch (no-stall floor %.3f s), median of %d\n", samples,
                tiercache::format_size(size).c_str(), batch, compute_ms, floor, runs);
    std::printf("%-10s %-8s %-6s %10s %8s\n", "latency", "threads", "depth", "epoch_s", "stall");
    struct Window {
        std::size_t threads, depth;
    };
    for (int latency_ms : {0, 1, 5}) {
        for (Window w : {Window{1, 1}, Window{2, 2}, Window{4, 4}, Window{8, 4}, Window{16, 8}}) {
            std::vector<double> epoch, stall;
            for (int r = 0; r < runs; ++r) {
                const Result got = run_once(data.path, std::chrono::milliseconds(latency_ms),
                                            {.batch = batch, .depth = w.depth, .threads = w.threads}, compute);
                epoch.push_back(got.epoch_s);
                stall.push_back(got.stall);
            }
            std::printf("%-10s %-8zu %-6zu %10.3f %7.1f%%\n", (std::to_string(latency_ms) + " ms").c_str(), w.threads, w.depth,
                        median(epoch), 100 * median(stall));
        }
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::loader_stall
