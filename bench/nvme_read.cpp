// The nvme tier's read speed, O_DIRECT against the page cache: fills a tier with ImageNet-
// sized samples (~110 KiB), drops the page cache, then times shuffled whole-sample get()s
// with 1 and 4 threads, cold (first pass after the drop) and warm (the pass right after).
// Medians of --runs runs. Every get() is checked to hit (and so to verify its checksum).
//   tiercache-bench-nvme [DIR] [--bytes 2GiB] [--sample-size 110KiB] [--runs 3] [--keep]
//                        [--memory-limit 256MiB]
// --memory-limit runs the whole bench in a memory cgroup (v1, as these machines mount it) of
// that size, so the page cache can hold only that much: what a buffered tier gets on a host
// whose DRAM tier owns the memory. Without it, buffered reads may use all free RAM.
// DIR defaults to a new folder under /var/tmp (the real disk; /tmp may be tmpfs elsewhere);
// it is removed at the end unless --keep. The data set should be larger than what a
// cache drop frees, or "cold" is not cold: 2 GiB by default.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <unistd.h>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <tiercache/catalog.hpp>
#include <tiercache/nvme_tier.hpp>
#include <tiercache/segment.hpp>
#include <tiercache/size.hpp>

namespace tiercache::bench::nvme {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// N samples of about `mean` bytes (uniform within +-30%, as JPEGs vary), in 1000 classes.
tiercache::ScanResult synthetic(std::uint64_t total, std::uint64_t mean) {
    tiercache::ScanResult scan;
    scan.dirs.push_back({.path = ""});
    std::mt19937_64 rng(1);
    char name[64];
    std::uint64_t bytes = 0;
    for (std::uint32_t i = 0; bytes < total; ++i) {
        const std::uint64_t size = mean * 7 / 10 + rng() % (mean * 6 / 10);
        std::snprintf(name, sizeof name, "n%08u/img_%07u.JPEG", i % 1000, i);
        scan.samples.push_back({.path = name, .dir = 0, .size = size, .mtime_ns = 0});
        scan.path_bytes += scan.samples.back().path.size();
        bytes += size;
    }
    scan.total_bytes = bytes;
    scan.dirs[0].sample_count = static_cast<std::uint32_t>(scan.samples.size());
    return scan;
}

std::vector<std::byte> sample_bytes(std::uint64_t seed, std::size_t n) {
    std::vector<std::byte> out(n);
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, n - i));
    }
    return out;
}

// This process inside a new memory cgroup (v1) limited to `bytes`; moved back and the group
// removed when it goes.
class MemoryCgroup {
public:
    explicit MemoryCgroup(std::uint64_t bytes)
        : path_("/sys/fs/cgroup/memory/tiercache-bench-nvme-" + std::to_string(::getpid())) {
        if (!std::filesystem::is_directory("/sys/fs/cgroup/memory"))
            throw std::runtime_error("no cgroup v1 memory controller at /sys/fs/cgroup/memory");
        std::filesystem::create_directory(path_);
        write(path_ / "memory.limit_in_bytes", std::to_string(bytes));
        write(path_ / "cgroup.procs", std::to_string(::getpid()));
    }
    MemoryCgroup(const MemoryCgroup&) = delete;
    MemoryCgroup& operator=(const MemoryCgroup&) = delete;
    ~MemoryCgroup() {
        try {
            write("/sys/fs/cgroup/memory/cgroup.procs", std::to_string(::getpid()));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s\n", e.what());
        }
        ::rmdir(path_.c_str());
    }

private:
    static void write(const std::filesystem::path& file, const std::string& text) {
        std::ofstream out(file);
        out << text << '\n';
        out.flush();
        if (!out) throw std::runtime_error("cannot write '" + text + "' to " + file.string());
    }
    std::filesystem::path path_;
};

std::uint64_t page_cache_bytes() {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0;
    while (meminfo >> key >> kib)
        if (key == "Cached:") return kib * 1024;
        else meminfo.ignore(1 << 10, '\n');
    return 0;
}

// Clean pages of the slab files out of the page cache (fadvise always works for our own
// files), then the whole page cache (needs root; says when it is not permitted).
bool drop_caches(const tiercache::NvmeTier& tier) {
    for (std::uint32_t s = 0; s < tier.slab_count(); ++s) {
        const int fd = ::open(tier.slab_path(s).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ::fdatasync(fd);
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
    }
    ::sync();
    std::ofstream drop("/proc/sys/vm/drop_caches");
    drop << "3\n";
    drop.flush();
    return static_cast<bool>(drop);
}

struct Pass {
    double seconds = 0;
    std::uint64_t samples = 0, bytes = 0, failures = 0;
    double samples_per_s() const { return static_cast<double>(samples) / seconds; }
    double mb_per_s() const { return static_cast<double>(bytes) / seconds / 1e6; }
};

// One shuffled pass over every sample, split among `threads`.
Pass read_pass(tiercache::NvmeTier& tier, const tiercache::Catalog& catalog, unsigned threads, std::uint64_t seed) {
    std::vector<tiercache::SampleId> order(catalog.size());
    for (tiercache::SampleId i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    std::atomic<std::size_t> next{0};
    std::atomic<std::uint64_t> bytes{0}, failures{0};
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            std::vector<std::byte> buf;
            for (std::size_t i; (i = next.fetch_add(1)) < order.size();) {
                const tiercache::SampleId id = order[i];
                buf.resize(catalog.size_of(id));
                if (tier.get(id, buf) == tiercache::NvmeRead::hit) bytes += buf.size();
                else ++failures;
            }
        });
    for (auto& th : pool) th.join();
    return {seconds_since(start), order.size(), bytes.load(), failures.load()};
}

Pass median(std::vector<Pass> runs) {
    std::sort(runs.begin(), runs.end(), [](const Pass& a, const Pass& b) { return a.seconds < b.seconds; });
    return runs[runs.size() / 2];
}

}  // namespace

// tiercache-bench-nvme (bench/main.cpp runs it)
int run(int argc, char** argv) {
    std::string dir_arg;
    std::string total_text = "2GiB", mean_text = "110KiB", limit_text;
    unsigned runs = 3;
    bool keep = false;
    CLI::App app{"nvme tier: random whole-sample reads, O_DIRECT against buffered, cold and warm"};
    app.add_option("dir", dir_arg, "where the tier's files go (default: a new folder under /var/tmp)");
    app.add_option("--bytes", total_text, "sample bytes to store")->capture_default_str();
    app.add_option("--sample-size", mean_text, "mean sample size")->capture_default_str();
    app.add_option("--runs", runs, "runs per figure; the median is shown")->capture_default_str()->check(CLI::Range(1u, 99u));
    app.add_flag("--keep", keep, "leave the tier's files behind");
    app.add_option("--memory-limit", limit_text, "run inside a memory cgroup of this size (limits the page cache)");
    CLI11_PARSE(app, argc, argv);

    std::filesystem::path root;
    if (dir_arg.empty()) {
        std::string tmpl = "/var/tmp/tiercache-bench-nvme-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) {
            std::perror("mkdtemp /var/tmp");
            return 1;
        }
        root = tmpl;
    } else {
        root = dir_arg;
    }
    const std::uint64_t total = tiercache::parse_size(total_text);
    const std::uint64_t mean = tiercache::parse_size(mean_text);

    std::unique_ptr<MemoryCgroup> cgroup;
    if (!limit_text.empty()) {
        cgroup = std::make_unique<MemoryCgroup>(tiercache::parse_size(limit_text));
        std::printf("inside a memory cgroup of %s\n", limit_text.c_str());
    }
    const tiercache::ScanResult scan = synthetic(total, mean);
    tiercache::Segment segment("/dev/shm", scan.segment_bytes() + (1 << 20));
    const tiercache::Catalog catalog = tiercache::Catalog::place(segment, scan);
    // Room for the samples, their rounding to 4 KiB, and the half-empty tail of each slab.
    const std::uint64_t capacity = total + total / 4 + (256ull << 20);
    std::printf("%zu samples, %s, mean %s; tier in %s\n", catalog.size(), tiercache::format_size(catalog.total_bytes()).c_str(),
                tiercache::format_size(mean).c_str(), root.string().c_str());

    bool drop_permitted = true;
    struct Row {
        bool direct;
        unsigned threads;
        Pass cold, warm;
        std::uint64_t cached_growth;
    };
    std::vector<Row> rows;
    for (const bool direct : {true, false}) {
        const std::filesystem::path dir = root / (direct ? "direct" : "buffered");
        std::filesystem::remove_all(dir);
        auto tier_ptr = std::make_unique<tiercache::NvmeTier>(catalog, dir, capacity, tiercache::NvmeOptions{.direct_io = direct});
        tiercache::NvmeTier& tier = *tier_ptr;
        const auto fill_start = Clock::now();
        for (tiercache::SampleId id = 0; id < catalog.size(); ++id) {
            const auto bytes = sample_bytes(id, catalog.size_of(id));
            if (!tier.put(id, bytes, tiercache::detail::xxh3(bytes))) {
                std::fprintf(stderr, "put of sample %u failed (%s)\n", id, tier.describe().c_str());
                return 1;
            }
        }
        tier.flush();
        const double fill_s = seconds_since(fill_start);
        std::printf("%s: filled in %.1f s (%.0f MB/s, including generating and hashing the bytes)\n", tier.describe().c_str(),
                    fill_s, static_cast<double>(catalog.total_bytes()) / fill_s / 1e6);
        for (const unsigned threads : {1u, 4u}) {
            std::vector<Pass> colds, warms;
            std::uint64_t growth = 0;
            for (unsigned r = 0; r < runs; ++r) {
                drop_permitted &= drop_caches(tier);
                const std::uint64_t cached0 = page_cache_bytes();
                colds.push_back(read_pass(tier, catalog, threads, 100 + r));
                warms.push_back(read_pass(tier, catalog, threads, 200 + r));
                const std::uint64_t cached1 = page_cache_bytes();
                growth = cached1 > cached0 ? cached1 - cached0 : 0;
                if (colds.back().failures + warms.back().failures > 0) {
                    std::fprintf(stderr, "%llu reads did not hit\n",
                                 static_cast<unsigned long long>(colds.back().failures + warms.back().failures));
                    return 1;
                }
            }
            rows.push_back({direct, threads, median(colds), median(warms), growth});
            const Row& row = rows.back();
            std::printf("  %-9s %u thread%s  cold %7.0f samples/s %6.0f MB/s   warm %7.0f samples/s %6.0f MB/s   page cache +%s\n",
                        direct ? "O_DIRECT" : "buffered", threads, threads == 1 ? " " : "s", row.cold.samples_per_s(),
                        row.cold.mb_per_s(), row.warm.samples_per_s(), row.warm.mb_per_s(),
                        tiercache::format_size(row.cached_growth).c_str());
            std::fflush(stdout);
        }
        tier_ptr.reset();
        if (!keep) std::filesystem::remove_all(dir);  // one mode's files on disk at a time
    }
    if (!drop_permitted)
        std::printf("note: writing /proc/sys/vm/drop_caches was not permitted; the slab files' own pages were dropped "
                    "with posix_fadvise(DONTNEED), which is enough for them\n");
    std::printf("\n| mode | threads | cold samples/s | cold MB/s | warm samples/s | warm MB/s | page cache growth |\n|---|---|---|---|---|---|---|\n");
    for (const Row& row : rows)
        std::printf("| %s | %u | %.0f | %.0f | %.0f | %.0f | %s |\n", row.direct ? "O_DIRECT" : "buffered", row.threads,
                    row.cold.samples_per_s(), row.cold.mb_per_s(), row.warm.samples_per_s(), row.warm.mb_per_s(),
                    tiercache::format_size(row.cached_growth).c_str());
    if (!keep && dir_arg.empty()) std::filesystem::remove(root);  // ours: made by mkdtemp above
    return 0;
}

}  // namespace tiercache::bench::nvme
