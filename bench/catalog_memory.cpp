// Catalog memory at ImageNet scale: bytes per sample in the segment (catalog records, paths,
// the cache's sample slots), the scan's transient memory, and path lookup speed; and with
// --file-bytes, the memory per extent of a cache over one sparse file of that size (a whole
// Cache with dram and nvme tiers: catalog, slots, next use, nvme index, all of it).
//   tiercache-bench-catalog [--entries N] [--classes K] [--scan DIR] [--file-bytes 1TiB --extent 1MiB]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <tiercache/tiercache.hpp>
#include <tiercache/memory_tier.hpp>

namespace tiercache::bench::catalog {

namespace {

std::uint64_t rss_bytes() {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

// An ImageNet-1K-shaped scan: K synset folders, N files named like n01440764_10026.JPEG.
tiercache::ScanResult imagenet_like(std::uint64_t entries, std::uint32_t classes) {
    tiercache::ScanResult scan;
    scan.dirs.push_back({.path = "", .first_dir = 1, .dir_count = classes});
    std::mt19937_64 rng(1);
    char name[64];
    for (std::uint32_t c = 0; c < classes; ++c) {
        std::snprintf(name, sizeof name, "n%08u", 1440764u + c * 9973u);
        scan.dirs.push_back({.path = name, .parent = 0});
        scan.path_bytes += scan.dirs.back().path.size();
    }
    for (std::uint32_t c = 0; c < classes; ++c) {
        auto& dir = scan.dirs[1 + c];
        dir.first_sample = static_cast<tiercache::SampleId>(scan.samples.size());
        const std::uint64_t n = entries / classes + (c < entries % classes ? 1 : 0);
        for (std::uint64_t i = 0; i < n; ++i) {
            std::snprintf(name, sizeof name, "%s/%s_%llu.JPEG", dir.path.c_str(), dir.path.c_str(),
                          static_cast<unsigned long long>(rng() % 1300000));
            scan.samples.push_back({.path = name, .dir = 1 + c, .size = 110 * 1024, .mtime_ns = 0});
            scan.path_bytes += scan.samples.back().path.size();
            scan.total_bytes += 110 * 1024;
        }
        dir.sample_count = static_cast<std::uint32_t>(n);
        std::sort(scan.samples.begin() + dir.first_sample, scan.samples.end(),
                  [](const auto& a, const auto& b) { return a.path < b.path; });
    }
    return scan;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A cache over one sparse file of `file_bytes` in extents of `extent`: the memory it holds per
// extent (resident pages of the process, the segment's included, before any read). 0 on success.
int extent_memory(const std::string& file_bytes, const std::string& extent) {
    const std::uint64_t size = tiercache::parse_size(file_bytes);
    std::string tmpl = (std::filesystem::temp_directory_path() / "tiercache-bench-extents-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return std::perror("mkdtemp"), 1;
    const std::filesystem::path dir = tmpl;
    std::filesystem::create_directories(dir / "origin");
    std::filesystem::create_directories(dir / "nvme");
    const int fd = ::open((dir / "origin/huge.bin").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    const bool made = fd >= 0 && ::ftruncate(fd, static_cast<off_t>(size)) == 0;
    if (fd >= 0) ::close(fd);
    int rc = 0;
    if (!made) {
        std::fprintf(stderr, "cannot make a sparse file of %s in %s\n", file_bytes.c_str(), dir.c_str());
        rc = 1;
    } else {
        const std::uint64_t before = rss_bytes();
        auto cache = tiercache::Cache::open(
            tiercache::Config{}.origin(dir / "origin").dram("64MiB").nvme(dir / "nvme", "1GiB").extent(extent));
        const std::uint64_t held = rss_bytes() - before;
        const double n = static_cast<double>(cache.catalog().extent_count());
        std::printf("\none file of %s in extents of %s: %zu extents; the cache holds %s before any read: %.1f B per extent "
                    "(catalog, dram slots, single-flight, next use, nvme index)\n",
                    tiercache::format_size(size).c_str(), extent.c_str(), cache.catalog().extent_count(),
                    tiercache::format_size(held).c_str(), static_cast<double>(held) / n);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    return rc;
}

}  // namespace

// tiercache-bench-catalog (bench/main.cpp runs it)
int run(int argc, char** argv) {
    std::uint64_t entries = 1'281'167;  // ImageNet-1K train
    std::uint32_t classes = 1000;
    std::string scan_dir, file_bytes, extent = "1MiB";
    CLI::App app{"Catalog memory per sample and lookup speed at ImageNet scale"};
    app.add_option("--entries", entries, "samples")->capture_default_str()->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 31));
    app.add_option("--classes", classes, "class folders")->capture_default_str()->check(CLI::Range(1u, 1u << 20));
    app.add_option("--scan", scan_dir, "also time a real scan of this directory");
    app.add_option("--file-bytes", file_bytes, "also measure a cache over one sparse file of this size (1TiB)");
    app.add_option("--extent", extent, "with --file-bytes: the extent size")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    const std::uint64_t rss0 = rss_bytes();
    const tiercache::ScanResult scan = imagenet_like(entries, classes);
    const std::uint64_t scan_rss = rss_bytes() - rss0;

    const std::uint64_t segment_bytes = scan.segment_bytes() + entries * sizeof(tiercache::SampleSlot) + (64u << 20);  // one extent a sample
    tiercache::Segment segment("/dev/shm", segment_bytes);
    const std::uint64_t free0 = segment.free_bytes();
    const auto catalog = tiercache::Catalog::place(segment, scan);
    const std::uint64_t catalog_bytes = free0 - segment.free_bytes();
    segment.construct_array<tiercache::SampleSlot>("dram.slots", entries);
    const std::uint64_t slot_bytes = free0 - segment.free_bytes() - catalog_bytes;

    std::mt19937_64 rng(2);
    const int lookups = 1'000'000;
    std::vector<std::string> paths;
    for (int i = 0; i < 1000; ++i) paths.emplace_back(catalog.path(static_cast<tiercache::SampleId>(rng() % catalog.size())));
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t found = 0;
    for (int i = 0; i < lookups; ++i) found += catalog.find(paths[static_cast<std::size_t>(i) % paths.size()]).has_value();
    const double lookup_ns = seconds_since(t0) * 1e9 / lookups;

    const double n = static_cast<double>(entries);
    std::printf("| what | total | per sample |\n|---|---|---|\n");
    std::printf("| catalog in the segment (records + paths + extents table) | %s | %.1f B |\n", tiercache::format_size(catalog_bytes).c_str(), static_cast<double>(catalog_bytes) / n);
    std::printf("| of which paths | %s | %.1f B |\n", tiercache::format_size(scan.path_bytes).c_str(), static_cast<double>(scan.path_bytes) / n);
    std::printf("| sample slots (dram tier state) | %s | %.1f B |\n", tiercache::format_size(slot_bytes).c_str(), static_cast<double>(slot_bytes) / n);
    std::printf("| held for the life of the cache | %s | %.1f B |\n", tiercache::format_size(catalog_bytes + slot_bytes).c_str(), static_cast<double>(catalog_bytes + slot_bytes) / n);
    std::printf("| scan result (transient, freed after mount) | %s | %.1f B |\n", tiercache::format_size(scan_rss).c_str(), static_cast<double>(scan_rss) / n);
    std::printf("| lru policy (only with --policy lru) | %s | 9.0 B |\n", tiercache::format_size(entries * 9).c_str());
    std::printf("\n%llu samples in %u classes; path lookup %.0f ns (%llu/%d found)\n",
                static_cast<unsigned long long>(entries), classes, lookup_ns, static_cast<unsigned long long>(found), lookups);

    if (!scan_dir.empty()) {
        const auto t1 = std::chrono::steady_clock::now();
        const auto real = tiercache::scan_origin(scan_dir);
        const double s = seconds_since(t1);
        std::printf("scan of %s: %zu samples, %zu directories in %.2f s (%.0f entries/s)\n", scan_dir.c_str(), real.samples.size(),
                    real.dirs.size(), s, static_cast<double>(real.samples.size() + real.dirs.size()) / s);
    }
    if (!file_bytes.empty() && extent_memory(file_bytes, extent) != 0) return 1;
    return found == static_cast<std::uint64_t>(lookups) ? 0 : 1;
}

}  // namespace tiercache::bench::catalog
