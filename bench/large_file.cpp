// One large file read by byte range through the API, against native reads of the same file
// measured in the same run (issue 16's targets):
//   cold first 4 KiB read      a fresh cache, the origin's pages dropped: the first read's time
//                              against pread() of one extent, its pages dropped too
//   warm random 4 KiB, 128 KiB  Cache::read from dram against pread() from the page cache
//   nvme random 128 KiB         dram smaller than the file, nvme behind it: reads/s once nvme holds it
//   origin bytes, 3 passes      the same setup: bytes read from the origin over 3 shuffled passes
//   a stream over a slow origin front to back in 128 KiB reads, 2 ms per origin read: readahead
//                              (the default window) against none
//   tiercache-bench-large-file [--size 1GiB] [--extent 1MiB] [--runs 5] [--reads 4000] [--dir /var/tmp] [--json FILE]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::large_file {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void drop_pages(const std::filesystem::path& file) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + file.string());
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
}

void write_random_file(const std::filesystem::path& file, std::uint64_t size) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    std::mt19937_64 rng(1);
    std::vector<std::uint64_t> block(1 << 17);  // 1 MiB
    for (std::uint64_t done = 0; done < size;) {
        for (auto& w : block) w = rng();
        const std::uint64_t n = std::min<std::uint64_t>(size - done, block.size() * 8);
        out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(n));
        done += n;
    }
    if (!out) throw std::runtime_error("cannot write " + file.string());
}

// `reads` random reads of `n` bytes at offsets aligned to n, by `read(offset, dest)`: reads/s.
template <class Read>
double random_reads(std::uint64_t size, std::size_t n, int reads, std::uint64_t seed, Read read) {
    std::mt19937_64 rng(seed);
    std::vector<std::byte> buf(n);
    const std::uint64_t slots = size / n;
    const auto t0 = Clock::now();
    for (int i = 0; i < reads; ++i) {
        const std::uint64_t at = (rng() % slots) * n;
        if (read(at, std::span(buf)) != n) throw std::runtime_error("short read at " + std::to_string(at));
    }
    return reads / seconds(Clock::now() - t0);
}

nlohmann::ordered_json row(std::string measure, double ours, std::optional<double> baseline, std::string unit, std::string target,
                           std::optional<bool> met, std::string better = "") {
    nlohmann::ordered_json r;
    r["measure"] = std::move(measure);
    r["ours"] = ours;
    r["baseline"] = baseline ? nlohmann::ordered_json(*baseline) : nlohmann::ordered_json(nullptr);
    r["unit"] = std::move(unit);
    r["ratio"] = baseline && *baseline > 0 ? nlohmann::ordered_json(ours / *baseline) : nlohmann::ordered_json(nullptr);
    r["target"] = std::move(target);
    r["met"] = met ? nlohmann::ordered_json(*met) : nlohmann::ordered_json(nullptr);
    if (!better.empty()) r["better"] = std::move(better);
    return r;
}

}  // namespace

// tiercache-bench-large-file (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    std::string size_text = "1GiB", extent = "1MiB", dir = "/var/tmp", json_path;
    int runs = 5, reads = 4000;
    CLI::App app{"One large file read by byte range through the API, against native reads"};
    app.add_option("--size", size_text, "the file's size")->capture_default_str();
    app.add_option("--extent", extent, "the cache's extent size")->capture_default_str();
    app.add_option("--runs", runs, "runs of each measure (medians are quoted)")->capture_default_str()->check(CLI::Range(1, 100));
    app.add_option("--reads", reads, "random reads per run")->capture_default_str()->check(CLI::Range(10, 10'000'000));
    app.add_option("--dir", dir, "where the file and the nvme tier go (a disk filesystem)")->capture_default_str();
    app.add_option("--json", json_path, "also write the rows as JSON here (the bench orchestrator's format)");
    CLI11_PARSE(app, argc, argv);

    const std::uint64_t size = parse_size(size_text);
    const std::uint64_t extent_bytes = parse_size(extent);
    TempFolder work(std::filesystem::path(dir) / "tiercache-bench-large");
    const auto origin = work.path / "origin";
    std::filesystem::create_directories(origin);
    const auto file = origin / "data.bin";
    write_random_file(file, size);
    std::printf("a file of %s of random bytes in %s; extents of %s; %d runs, medians\n\n", format_size(size).c_str(), dir.c_str(),
                extent.c_str(), runs);
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    std::mt19937_64 rng(2);

    // Cold: a fresh cache's first read, against one extent's pread, both from dropped pages.
    std::vector<double> ours_cold, native_cold;
    for (int r = 0; r < runs; ++r) {
        const std::uint64_t at = (rng() % (size / extent_bytes)) * extent_bytes + 4096 * (rng() % (extent_bytes / 4096));
        drop_pages(file);
        {
            auto cache = Cache::open(Config{}.origin(origin).dram("256MiB").extent(extent).readahead(0));
            std::vector<std::byte> buf(4096);
            const auto t0 = Clock::now();
            cache.read(cache.id_of("data.bin"), at, buf);
            ours_cold.push_back(seconds(Clock::now() - t0) * 1e6);
        }
        drop_pages(file);
        const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        std::vector<std::byte> buf(extent_bytes);
        const auto t0 = Clock::now();
        if (::pread(fd, buf.data(), buf.size(), static_cast<off_t>(at / extent_bytes * extent_bytes)) < 0) throw std::runtime_error("pread");
        native_cold.push_back(seconds(Clock::now() - t0) * 1e6);
        ::close(fd);
    }
    const double cold = median(ours_cold), cold_base = median(native_cold);
    rows.push_back(row("cold first 4 KiB read (vs pread of one extent)", cold, cold_base, "us", "<= 2x", cold <= 2 * cold_base, "lower"));

    // Warm: every byte in dram (and in the page cache for the native reads).
    {
        auto cache = Cache::open(Config{}.origin(origin).dram(std::to_string(size + (64 << 20))).extent(extent));
        const SampleId id = cache.id_of("data.bin");
        std::vector<std::byte> all(extent_bytes);
        for (std::uint64_t at = 0; at < size; at += all.size()) cache.read(id, at, all);
        const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        for (std::uint64_t at = 0; at < size; at += all.size()) (void)::pread(fd, all.data(), all.size(), static_cast<off_t>(at));
        for (const std::size_t n : {std::size_t{4096}, std::size_t{128 * 1024}}) {
            std::vector<double> ours, native;
            for (int r = 0; r < runs; ++r) {
                ours.push_back(random_reads(size, n, reads, 10 + r, [&](std::uint64_t at, std::span<std::byte> b) { return cache.read(id, at, b); }));
                native.push_back(random_reads(size, n, reads, 10 + r, [&](std::uint64_t at, std::span<std::byte> b) {
                    return static_cast<std::size_t>(::pread(fd, b.data(), b.size(), static_cast<off_t>(at)));
                }));
            }
            const double o = median(ours), b = median(native);
            rows.push_back(row("warm random " + std::to_string(n / 1024) + " KiB reads (vs pread from the page cache)", o, b, "reads/s",
                               ">= 0.9x", o >= 0.9 * b));
        }
        ::close(fd);
    }

    // dram smaller than the file, nvme behind it: 3 shuffled passes of 128 KiB reads, then reads/s.
    {
        const auto nvme = work.path / "nvme";
        std::filesystem::create_directories(nvme);
        drop_pages(file);
        auto cache = Cache::open(Config{}.origin(origin).dram(std::to_string(size / 4)).nvme(nvme, std::to_string(size * 2)).extent(extent));
        const SampleId id = cache.id_of("data.bin");
        std::vector<std::uint64_t> chunks;
        for (std::uint64_t at = 0; at < size; at += 128 * 1024) chunks.push_back(at);
        std::vector<std::byte> buf(128 * 1024);
        for (int pass = 0; pass < 3; ++pass) {
            std::shuffle(chunks.begin(), chunks.end(), rng);
            for (const std::uint64_t at : chunks) cache.read(id, at, buf);
        }
        const double origin_ratio = static_cast<double>(cache.stats().origin_bytes_read) / static_cast<double>(size);
        rows.push_back(row("origin bytes over 3 passes, dram 1/4 of the file + nvme (x the file)", origin_ratio, 1.0, "x file",
                           "<= 1.05x", origin_ratio <= 1.05, "lower"));
        std::vector<double> per_s;
        for (int r = 0; r < runs; ++r)
            per_s.push_back(random_reads(size, 128 * 1024, reads, 20 + r, [&](std::uint64_t at, std::span<std::byte> b) { return cache.read(id, at, b); }));
        const double rate = median(per_s);
        const Stats s = cache.stats();
        rows.push_back(row("random 128 KiB reads/s, dram 1/4 of the file + nvme", rate, std::nullopt, "reads/s", ">= 1000/s", rate >= 1000));
        std::printf("(nvme: %llu hits, dram %llu hits, origin %s)\n\n", static_cast<unsigned long long>(s.tiers.back().hits),
                    static_cast<unsigned long long>(s.tiers[0].hits), format_size(s.origin_bytes_read).c_str());
    }

    // A stream over an origin with 2 ms per read: readahead against none (at most 256 MiB of it).
    {
        const std::uint64_t stream = std::min<std::uint64_t>(size, 256 << 20);
        std::vector<double> on, off;
        for (int r = 0; r < runs; ++r) {
            for (const std::uint32_t window : {8u, 0u}) {
                drop_pages(file);
                OwnerCache cache(Config{}.origin(origin).dram(std::to_string(size + (64 << 20))).extent(extent).readahead(window),
                            std::make_unique<SlowOrigin>(origin, std::chrono::milliseconds(2)));
                const SampleId id = cache.id_of("data.bin");
                std::vector<std::byte> buf(128 * 1024);
                const auto t0 = Clock::now();
                for (std::uint64_t at = 0; at < stream; at += buf.size()) cache.read(id, at, buf);
                (window ? on : off).push_back(static_cast<double>(stream) / seconds(Clock::now() - t0) / 1e6);
            }
        }
        const double a = median(on), b = median(off);
        rows.push_back(row("a stream in 128 KiB reads, 2 ms per origin read: readahead 8 (vs none)", a, b, "MB/s", ">= 2x", a >= 2 * b));
    }

    std::printf("| measure | tiercache | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n");
    for (const auto& r : rows) {
        const std::string base = r["baseline"].is_null() ? "-" : std::to_string(r["baseline"].get<double>());
        const std::string ratio = r["ratio"].is_null() ? "-" : std::to_string(r["ratio"].get<double>()) + "x";
        std::printf("| %s | %.1f %s | %s | %s | %s | %s |\n", r["measure"].get<std::string>().c_str(), r["ours"].get<double>(),
                    r["unit"].get<std::string>().c_str(), base.c_str(), ratio.c_str(), r["target"].get<std::string>().c_str(),
                    r["met"].is_null() ? "" : r["met"].get<bool>() ? "yes" : "NO");
    }
    if (!json_path.empty())
        write_result_json(json_path, "large_file", "A large file by byte range, API",
                          format_size(size) + " file, extents of " + extent + ", " + std::to_string(runs) + " runs, medians",
                          std::move(rows));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::large_file
