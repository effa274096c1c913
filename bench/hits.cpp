// API hits against memcpy (issue 6, workload (a)): single-thread reads of samples the dram tier
// holds, in a shuffled order, side by side with memcpy of the same bytes (same sizes, same
// order) from a buffer of the same total size, so that both miss the CPU caches alike. Each
// sample lies in the baseline's buffer at the same offset within a page as in the dram tier,
// and every path copies into one page-aligned destination, so that each copy meets the same
// alignments as the baseline's (memcpy's speed depends on them).
//   tiercache-bench-hits [--sizes 16KiB,128KiB,1MiB] [--bytes 256MiB] [--runs 5] [--passes 4]
//                        [--dataset DIR] [--clock cpu|wall] [--json FILE]
// Rows, per sample size:
//   memcpy                   the baseline: memcpy from the buffer into one destination buffer
//   Cache::read              the copy path, into the same destination buffer
//   Cache::read_chunk        the zero-copy path: a pinned span of the tier's memory, whose bytes
//                            are then summed 8 at a time (so they are read once, not copied)
//   sum in place             for that row: the same summing over the baseline's buffer
//   attached Cache::read     a client (Cache::attach) of the same cache, shared: what co-located
//                            jobs use (a copy from the shared segment checked by the slot's
//                            generation, the hit reported to the owner in batches)
//   memcpy from the tier     memcpy straight from where the dram tier holds each sample, no API
//                            call: Cache::read against it is what the API costs; it against the
//                            baseline is where the bytes lie. That second gap is the same for
//                            every row reading the tier in a run, and moves from one run to the
//                            next (0.76x to 1.1x at 1 MiB on a 2-CPU VM); laying the baseline out
//                            as the tier is, or in shared memory, did not reproduce it.
// A run times --passes passes per row over every sample, each pass in a new shuffled order
// that all rows follow, the rows interleaved; figures are medians of --runs runs.
// Generated data: --bytes of samples per size, in a scratch folder. With --dataset DIR, the
// first --bytes of DIR's samples (by catalog id), whatever their sizes, instead.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::hits {

namespace {

using tiercache::bench::median;
using tiercache::bench::TempFolder;

namespace fs = std::filesystem;
// What a pass is timed by: the thread's CPU time (--clock cpu, the default: these hosts are
// shared, and wall time would count the turns other processes take while the pass waits to
// run), or wall time.
double now_s(clockid_t clock) {
    timespec ts{};
    ::clock_gettime(clock, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

constexpr std::size_t kPage = 4096;

struct FreeDeleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
};
using PageBuffer = std::unique_ptr<std::byte[], FreeDeleter>;

// `bytes` (rounded up to pages) of page-aligned memory, every page touched.
PageBuffer page_buffer(std::size_t bytes) {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + kPage - 1) / kPage * kPage;
    PageBuffer b(static_cast<std::byte*>(std::aligned_alloc(kPage, rounded)));
    if (!b) throw std::bad_alloc();
    std::memset(b.get(), 0, rounded);
    return b;
}

// Keeps the compiler from dropping stores it cannot see used.
void clobber_memory() { asm volatile("" ::: "memory"); }

// "16 KiB", "1 MiB": sizes as the rows name them.
std::string size_label(std::uint64_t bytes) {
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
    if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
    return tiercache::format_size(bytes);
}

// Reads every byte once: four independent sums of 8-byte words (and the tail's bytes).
std::uint64_t sum_words(std::span<const std::byte> b) {
    std::uint64_t s[4] = {0, 0, 0, 0};
    const std::byte* p = b.data();
    const std::size_t words = b.size() / 8;
    std::size_t i = 0;
    for (; i + 4 <= words; i += 4)
        for (int k = 0; k < 4; ++k) {
            std::uint64_t w;
            std::memcpy(&w, p + 8 * (i + k), 8);
            s[k] += w;
        }
    for (; i < words; ++i) {
        std::uint64_t w;
        std::memcpy(&w, p + 8 * i, 8);
        s[0] += w;
    }
    for (std::size_t j = words * 8; j < b.size(); ++j) s[1] += static_cast<std::uint8_t>(b[j]);
    return s[0] + s[1] + s[2] + s[3];
}

// The samples timed: the origin folder, their paths, and their bytes laid end to end (what
// every read is checked against).
struct SampleSet {
    std::string label;  // "128 KiB", or "DIR (mean 110 KiB)"
    fs::path root;
    std::vector<std::string> paths;     // relative to root
    std::vector<std::uint64_t> sizes;
    std::vector<std::uint64_t> offsets; // in buffer
    std::unique_ptr<std::byte[]> buffer;
    std::uint64_t total = 0, largest = 0;
};

// The baseline's source: each sample at the same offset within a page as `where[i]` (its
// bytes in the dram tier), one page apart at least.
struct Baseline {
    PageBuffer buffer;
    std::vector<const std::byte*> at;

    Baseline(const SampleSet& set, const std::vector<const std::byte*>& where) {
        std::vector<std::size_t> offsets(set.paths.size());
        std::size_t end = 0;
        for (std::size_t i = 0; i < set.paths.size(); ++i) {
            offsets[i] = end + reinterpret_cast<std::uintptr_t>(where[i]) % kPage;
            end = (offsets[i] + set.sizes[i] + kPage - 1) / kPage * kPage;
        }
        buffer = page_buffer(end);
        for (std::size_t i = 0; i < set.paths.size(); ++i) {
            at.push_back(buffer.get() + offsets[i]);
            std::memcpy(buffer.get() + offsets[i], set.buffer.get() + set.offsets[i], set.sizes[i]);
        }
    }
};

// `count` files of `size` random bytes under `root`.
SampleSet generate(const fs::path& root, std::uint64_t size, std::size_t count, std::uint64_t seed) {
    SampleSet set;
    set.label = size_label(size);
    set.root = root;
    set.total = size * count;
    set.largest = size;
    set.buffer.reset(new std::byte[set.total]);
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < count; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "s%06zu.bin", i);
        std::byte* at = set.buffer.get() + i * size;
        for (std::uint64_t j = 0; j < size; j += 8) {
            const std::uint64_t w = rng();
            std::memcpy(at + j, &w, std::min<std::uint64_t>(8, size - j));
        }
        std::FILE* f = std::fopen((root / name).c_str(), "wb");
        if (!f || std::fwrite(at, 1, size, f) != size || std::fclose(f) != 0)
            throw std::runtime_error("cannot write the data set in " + root.string());
        set.paths.push_back(name);
        set.sizes.push_back(size);
        set.offsets.push_back(i * size);
    }
    return set;
}

// The first `budget` bytes of samples (by catalog id) of the dataset at `root`.
SampleSet from_dataset(const fs::path& root, std::uint64_t budget) {
    const tiercache::ScanResult scan = tiercache::scan_origin(root);
    SampleSet set;
    set.root = root;
    for (const auto& s : scan.samples) {
        if (s.size == 0) continue;
        if (set.total + s.size > budget && !set.paths.empty()) break;
        set.paths.push_back(s.path);
        set.sizes.push_back(s.size);
        set.offsets.push_back(set.total);
        set.total += s.size;
        set.largest = std::max(set.largest, s.size);
    }
    if (set.paths.empty()) throw std::runtime_error("dataset '" + root.string() + "' holds no non-empty samples");
    set.buffer.reset(new std::byte[set.total]);
    for (std::size_t i = 0; i < set.paths.size(); ++i) {
        std::ifstream in(root / set.paths[i], std::ios::binary);
        if (!in.read(reinterpret_cast<char*>(set.buffer.get() + set.offsets[i]), static_cast<std::streamsize>(set.sizes[i])))
            throw std::runtime_error("cannot read '" + (root / set.paths[i]).string() + "'");
    }
    const fs::path name = root.filename().empty() ? root.parent_path().filename() : root.filename();  // "DIR/" too
    set.label = name.string() + " (mean " + tiercache::format_size(set.total / set.paths.size()) + ")";
    return set;
}

enum Row { kMemcpy, kRead, kChunk, kSum, kClient, kTierMemcpy, kRows };
constexpr const char* kRowNames[kRows] = {"memcpy (baseline)", "Cache::read", "Cache::read_chunk (zero-copy, bytes summed)",
                                          "sum in place (no copy)", "attached client Cache::read",
                                          "memcpy from the dram tier's bytes (no API)"};

struct Figures {
    double gbps[kRows] = {};
    double samples_per_s[kRows] = {};
};

// Opens a shared cache over `set` whose dram tier holds all of it, checks that it does, and
// times every row. Throws std::runtime_error when the cache does not hold the samples or a
// read returns other bytes.
Figures measure(const SampleSet& set, int runs, int passes, std::uint64_t seed, clockid_t clock) {
    const std::size_t n = set.paths.size();
    const std::uint64_t dram = set.total + set.total / 8 + (64u << 20);
    const std::string name = "bench-hits-" + std::to_string(::getpid());
    tiercache::OwnerCache owner = tiercache::Cache::open(tiercache::Config{}.origin(set.root).dram(std::to_string(dram)).share(name));
    tiercache::AttachedCache client = tiercache::Cache::attach(name);
    std::vector<tiercache::SampleId> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = owner.id_of(set.paths[i]);

    // Warm: one read of each sample brings it in from the origin; the second must not reach it.
    const PageBuffer dest_buffer = page_buffer(set.largest);
    const std::span<std::byte> dest(dest_buffer.get(), set.largest);
    auto check_bytes = [&](std::size_t i, std::size_t got, const char* who) {
        if (got != set.sizes[i] || std::memcmp(dest.data(), set.buffer.get() + set.offsets[i], got) != 0)
            throw std::runtime_error(std::string(who) + " returned other bytes for '" + set.paths[i] + "'");
    };
    for (std::size_t i = 0; i < n; ++i) check_bytes(i, owner.read(ids[i], 0, {dest.data(), set.sizes[i]}), "a cold Cache::read");
    const tiercache::Stats warm = owner.stats();
    const tiercache::TierStats& d = warm.tiers.at(0);
    if (d.resident_samples < n || d.used_bytes < set.total)
        throw std::runtime_error("the dram tier holds " + std::to_string(d.resident_samples) + " samples (" +
                                 tiercache::format_size(d.used_bytes) + ") of " + std::to_string(n) + " (" +
                                 tiercache::format_size(set.total) + ") after a pass");
    std::vector<const std::byte*> where(n);  // each sample's bytes in the dram tier
    for (std::size_t i = 0; i < n; ++i) {
        check_bytes(i, owner.read(ids[i], 0, {dest.data(), set.sizes[i]}), "Cache::read");
        std::fill(dest.begin(), dest.end(), std::byte{0});
        check_bytes(i, client.read(ids[i], 0, {dest.data(), set.sizes[i]}), "an attached client's Cache::read");
        const tiercache::Chunk chunk = owner.read_chunk(ids[i], 0, dest);
        if (!chunk.ref || chunk.bytes.size() != set.sizes[i] ||
            std::memcmp(chunk.bytes.data(), set.buffer.get() + set.offsets[i], set.sizes[i]) != 0)
            throw std::runtime_error("Cache::read_chunk did not hand out the dram tier's bytes of '" + set.paths[i] + "'");
        where[i] = chunk.bytes.data();
    }
    const Baseline baseline(set, where);
    const tiercache::Stats checked = client.stats();  // reports the client's hits first
    if (checked.origin_reads != warm.origin_reads || checked.tiers.at(0).hits < d.hits + 3 * n)
        throw std::runtime_error("warm reads still reach the origin (" + std::to_string(checked.origin_reads - warm.origin_reads) +
                                 " reads) or miss the dram tier");

    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::mt19937_64 rng(seed);
    std::vector<double> gbps[kRows];
    std::uint64_t sink = 0;
    for (int r = 0; r < runs; ++r) {
        double seconds[kRows] = {};
        for (int p = 0; p < passes; ++p) {
            std::shuffle(order.begin(), order.end(), rng);
            for (int k = 0; k < kRows; ++k) {
                const Row row = static_cast<Row>((k + r + p) % kRows);  // none always first, or always after another
                std::uint64_t bytes = 0;
                const double start = now_s(clock);
                switch (row) {
                    case kMemcpy:
                        for (std::size_t i : order) {
                            std::memcpy(dest.data(), baseline.at[i], set.sizes[i]);
                            clobber_memory();
                            bytes += set.sizes[i];
                        }
                        break;
                    case kRead:
                        for (std::size_t i : order) bytes += owner.read(ids[i], 0, {dest.data(), set.sizes[i]});
                        break;
                    case kChunk:
                        for (std::size_t i : order) {
                            const tiercache::Chunk chunk = owner.read_chunk(ids[i], 0, {dest.data(), set.sizes[i]});
                            sink += sum_words(chunk.bytes);
                            bytes += chunk.bytes.size();
                        }
                        break;
                    case kSum:
                        for (std::size_t i : order) {
                            sink += sum_words({baseline.at[i], set.sizes[i]});
                            bytes += set.sizes[i];
                        }
                        break;
                    case kClient:
                        for (std::size_t i : order) bytes += client.read(ids[i], 0, {dest.data(), set.sizes[i]});
                        break;
                    case kTierMemcpy:
                        for (std::size_t i : order) {
                            std::memcpy(dest.data(), where[i], set.sizes[i]);
                            clobber_memory();
                            bytes += set.sizes[i];
                        }
                        break;
                    case kRows: break;
                }
                seconds[row] += now_s(clock) - start;
                if (bytes != set.total) throw std::runtime_error(std::string(kRowNames[row]) + " read " + std::to_string(bytes) +
                                                                 " bytes in a pass, not " + std::to_string(set.total));
            }
        }
        for (int k = 0; k < kRows; ++k) gbps[k].push_back(static_cast<double>(set.total) * passes / seconds[k] / 1e9);
    }
    const tiercache::Stats after = client.stats();
    if (after.origin_reads != warm.origin_reads) throw std::runtime_error("timed reads reached the origin");
    asm volatile("" : : "r"(sink));  // the sums must be computed

    Figures f;
    const double mean_size = static_cast<double>(set.total) / static_cast<double>(n);
    for (int k = 0; k < kRows; ++k) {
        f.gbps[k] = median(gbps[k]);
        f.samples_per_s[k] = f.gbps[k] * 1e9 / mean_size;
    }
    return f;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    return "unknown CPU";
}

// 1234567 -> "1,234,567".
std::string with_commas(double v) {
    std::string digits = std::to_string(static_cast<long long>(v + 0.5));
    for (int at = static_cast<int>(digits.size()) - 3; at > 0; at -= 3) digits.insert(static_cast<std::size_t>(at), ",");
    return digits;
}

// To 3 decimals, as the JSON shows them.
double rounded(double v) { return std::round(v * 1000) / 1000; }

}  // namespace

// tiercache-bench-hits (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    CLI::App app{"API reads of dram-tier samples (Cache::read, read_chunk, an attached client) against memcpy of the same bytes"};
    std::vector<std::string> sizes{"16KiB", "128KiB", "1MiB"};
    std::string bytes_text = "256MiB", dataset, json_path, clock_name = "cpu";
    int runs = 5, passes = 4;
    std::uint64_t seed = 1;
    app.add_option("--sizes", sizes, "sample sizes to generate, comma-separated")->delimiter(',')->capture_default_str();
    app.add_option("--bytes", bytes_text, "bytes of samples per size: the working set, well above the LLC")->capture_default_str();
    app.add_option("--dataset", dataset, "time the first --bytes of this folder's samples instead of generated ones")
        ->check(CLI::ExistingDirectory);
    app.add_option("--runs", runs, "runs per size (the median is shown)")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--passes", passes, "passes over every sample per row in a run")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--seed", seed, "seed of the data and the shuffles")->capture_default_str();
    app.add_option("--clock", clock_name, "what passes are timed by: the reading thread's cpu time, or wall time")
        ->check(CLI::IsMember({"cpu", "wall"}))
        ->capture_default_str();
    app.add_option("--json", json_path, "also write the rows as JSON here (the bench orchestrator's format)");
    CLI11_PARSE(app, argc, argv);

    const std::uint64_t budget = tiercache::parse_size(bytes_text);
    tiercache::set_log_level(tiercache::LogLevel::warn);
    const unsigned cpus = std::thread::hardware_concurrency();
    const clockid_t clock = clock_name == "cpu" ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;

    struct Result {
        std::string label;
        std::size_t samples;
        std::uint64_t bytes;
        Figures f;
    };
    std::vector<Result> results;
    if (!dataset.empty()) {
        const SampleSet set = from_dataset(dataset, budget);
        std::fprintf(stderr, "%s: %zu samples, %s\n", set.label.c_str(), set.paths.size(), tiercache::format_size(set.total).c_str());
        results.push_back({set.label, set.paths.size(), set.total, measure(set, runs, passes, seed, clock)});
    } else {
        for (const std::string& text : sizes) {
            const std::uint64_t size = tiercache::parse_size(text);
            if (size == 0) throw std::invalid_argument("--sizes: a sample size must be above 0");
            const std::size_t count = static_cast<std::size_t>(std::max<std::uint64_t>(budget / size, 1));
            TempFolder data("tiercache-bench-hits");
            const SampleSet set = generate(data.path, size, count, seed);
            std::fprintf(stderr, "%s: %zu samples, %s\n", set.label.c_str(), count, tiercache::format_size(set.total).c_str());
            results.push_back({set.label, count, set.total, measure(set, runs, passes, seed, clock)});
        }
    }

    std::string size_list;
    for (const Result& r : results) size_list += (size_list.empty() ? "" : ", ") + r.label;
    const std::string setup = size_list + " samples, " + size_label(results.front().bytes) + (dataset.empty() ? " of them per size, " : ", ") +
                              "one thread in a shuffled order; medians of " + std::to_string(runs) + " runs of " +
                              std::to_string(passes) + " passes, timed by " + (clock_name == "cpu" ? "the thread's CPU time" : "wall time") +
                              "; " + std::to_string(cpus) + " host CPUs (" + cpu_model() + ")";

    std::printf("API hits vs memcpy: %s\n\n", setup.c_str());
    std::printf("| samples | path | GB/s | samples/s | memcpy GB/s | vs memcpy | target |\n");
    std::printf("|---|---|---:|---:|---:|---:|---|\n");
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    constexpr double kTarget = 0.8;
    for (const Result& r : results) {
        const double base = r.f.gbps[kMemcpy];
        for (int k = 0; k < kRows; ++k) {
            const double ratio = r.f.gbps[k] / base;
            const bool targeted = k == kRead;
            std::printf("| %s | %s | %.2f | %s | %.2f | %.2fx | %s |\n", r.label.c_str(), kRowNames[k], r.f.gbps[k],
                        with_commas(r.f.samples_per_s[k]).c_str(), base, ratio,
                        targeted ? (ratio >= kTarget ? ">= 0.8x: met" : ">= 0.8x: NOT met") : "");
            if (k == kMemcpy || k == kSum || k == kTierMemcpy) continue;  // baselines, not rows of ours
            nlohmann::ordered_json row;
            row["measure"] = std::string(kRowNames[k]) + ", " + r.label + " samples";
            row["ours"] = rounded(r.f.gbps[k]);
            row["baseline"] = rounded(base);
            row["unit"] = "GB/s";
            row["ratio"] = rounded(ratio);
            row["target"] = targeted ? ">= 0.8x" : "";
            row["met"] = targeted ? nlohmann::ordered_json(ratio >= kTarget) : nlohmann::ordered_json(nullptr);
            rows.push_back(std::move(row));
        }
    }
    std::printf("\nread_chunk hands out a pinned span of the dram tier and copies nothing; its row then sums the\n"
                "bytes (8 at a time), as a consumer reading them in place would: compare it with \"sum in place\".\n"
                "\"memcpy from the dram tier's bytes\" copies from the tier's memory without the API: Cache::read\n"
                "against it is what the API costs, it against the baseline is where the bytes lie.\n");

    if (!json_path.empty()) write_result_json(json_path, "hits", "API hits vs memcpy", setup, std::move(rows));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::hits
