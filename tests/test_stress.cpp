// Stress (CTest label `stress`): 8 threads each make TIERCACHE_STRESS_READS (default 250,000)
// random (sample, offset, length) reads, through the API and through a mount, while the tiers
// churn (LRU over a dram tier of a quarter of the dataset and an nvme tier behind it:
// every read may evict, promote or fetch). Every read's bytes are checked against the
// origin's by XXH3; a single mismatch fails the test. The nvme tier holds the whole dataset, so
// the origin is read once a sample and the churn is between dram and nvme (demotions, promotions,
// O_DIRECT reads), the path that moves bytes the most. Extents are 64 KiB, so the 8 large files
// (up to 700 KiB) are up to 11 extents each, and reads across extents are assembled under churn.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>
#include <tiercache/detail/xxh3.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace tiercache;

namespace {

constexpr int kThreads = 8;
constexpr std::size_t kMaxRead = 64 * 1024;  // spans whole samples and partial ones, and two extents
constexpr const char* kExtent = "64KiB";     // the smallest: the large files are many extents

// 250,000 a thread (2 million verified reads a test); under a sanitizer (10-20x slower) 20,000,
// unless TIERCACHE_STRESS_READS says otherwise. The size is set by what it finds: with evict()
// made to free bytes that a reader still copies (a mutation, built and run by hand), 800,000
// reads showed 3 to 8 wrong ones in each of 4 runs, so 2 million miss that bug about once in
// 10^5 runs, while 80,000 missed it. At 10^6 a thread (the size first asked for) the two tests
// took 14 minutes of a 2-core CI run: TIERCACHE_STRESS_READS=1000000 for a longer soak.
std::uint64_t reads_per_thread() {
    constexpr std::uint64_t kDefault = test::kSanitizerBuild ? 20'000 : 250'000;
    const char* env = std::getenv("TIERCACHE_STRESS_READS");
    return env ? std::strtoull(env, nullptr, 10) : kDefault;
}

// 400 files of 1 B to 48 KiB and 8 of 300 to 700 KiB (about 13.5 MiB) in 10 folders, and their bytes.
struct StressDataset {
    test::TempDir dir{"/var/tmp"};  // the nvme tier's O_DIRECT needs a disk filesystem beside it
    std::vector<std::string> paths;
    std::vector<test::Bytes> bytes;
    std::uint64_t total = 0;
    StressDataset() {
        std::mt19937_64 rng(11);
        for (int i = 0; i < 408; ++i) {
            const std::size_t size = i >= 400 ? 300 * 1024 + rng() % (400 * 1024) : i % 50 == 0 ? 1 + rng() % 64 : 1 + rng() % (48 * 1024);
            paths.push_back("c" + std::to_string(i % 10) + "/s" + std::to_string(i) + ".bin");
            bytes.push_back(test::make_bytes(1000 + i, size));
            test::write_file(dir / "origin" / paths.back(), bytes.back());
            total += size;
        }
        test::fs::create_directories(dir / "nvme");
    }
    test::fs::path origin() const { return dir / "origin"; }
};

// What a read of `length` bytes at `offset` of sample `i` must return, hashed.
std::uint64_t expected_hash(const test::Bytes& b, std::uint64_t offset, std::size_t length) {
    if (offset >= b.size()) return detail::xxh3({});
    const std::size_t n = std::min<std::size_t>(length, b.size() - offset);
    return detail::xxh3(std::as_bytes(std::span(b)).subspan(offset, n));
}

struct Counts {
    std::atomic<std::uint64_t> reads{0}, bytes{0}, mismatches{0}, errors{0};
};

// Runs `read(thread, i, offset, dest) -> bytes read or -1` on kThreads threads, each making
// `n` random reads, and checks each against the origin.
template <class Read>
void hammer(const StressDataset& data, std::uint64_t n, Counts& counts, Read read) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(100 + t);
            std::vector<std::byte> buf(kMaxRead);
            for (std::uint64_t k = 0; k < n; ++k) {
                const std::size_t i = rng() % data.bytes.size();
                const std::uint64_t size = data.bytes[i].size();
                const std::uint64_t offset = rng() % 8 == 0 ? 0 : rng() % (size + 1);  // whole samples often
                const std::size_t length = rng() % 4 == 0 ? kMaxRead : 1 + rng() % kMaxRead;
                const long got = read(t, i, offset, std::span(buf).first(length));
                if (got < 0) {
                    ++counts.errors;
                    continue;
                }
                ++counts.reads;
                counts.bytes += static_cast<std::uint64_t>(got);
                if (detail::xxh3(std::span(buf).first(static_cast<std::size_t>(got))) != expected_hash(data.bytes[i], offset, length))
                    ++counts.mismatches;
            }
        });
    for (auto& th : threads) th.join();
}

}  // namespace

TEST_CASE("stress: 8 threads of random reads through the API while dram and nvme churn", "[stress]") {
    const StressDataset data;
    const std::uint64_t n = reads_per_thread();
    auto cache = Cache::open(Config{}
                                 .origin(data.origin())
                                 .dram(std::to_string(data.total / 4))
                                 .nvme((data.dir / "nvme").string(), std::to_string(data.total * 2))
                                 .extent(kExtent)
                                 .policy("lru"));
    std::vector<SampleId> ids;
    for (const auto& p : data.paths) ids.push_back(cache.id_of(p));

    Counts counts;
    hammer(data, n, counts, [&](int, std::size_t i, std::uint64_t offset, std::span<std::byte> dest) -> long {
        try {
            return static_cast<long>(cache.read(ids[i], offset, dest));
        } catch (const std::exception&) {
            return -1;
        }
    });
    const Stats s = cache.stats();
    WARN("API stress: " << counts.reads.load() << " reads (" << counts.bytes.load() / (1 << 20) << " MiB) verified, "
                        << counts.mismatches.load() << " mismatches, " << counts.errors.load() << " errors; dram evictions "
                        << s.tiers[0].evictions << ", nvme hits " << s.tiers.back().hits << ", origin reads " << s.origin_reads);
    CHECK(counts.mismatches == 0);
    CHECK(counts.errors == 0);
    CHECK(counts.reads == n * kThreads);
    if (n >= 10'000) {  // the tiers did churn
        CHECK(s.tiers[0].evictions > 0);
        CHECK(s.tiers.back().hits > 0);
    }
}

TEST_CASE("stress: 8 threads of random reads through the mount while dram and nvme churn", "[stress]") {
    const StressDataset data;
    const std::uint64_t n = reads_per_thread();
    // Kernel cache off: every read reaches the daemon and its churning tiers.
    test::Mount mount(data.origin(), data.dir / "mnt",
                      {"--dram", std::to_string(data.total / 4), "--nvme", (data.dir / "nvme").string() + ":" + std::to_string(data.total * 2),
                       "--extent", kExtent, "--policy", "lru", "--kernel-cache", "off", "--threads", "8"});
    // One descriptor per file and thread: reads race on the same files from every thread.
    std::vector<std::vector<int>> fds(kThreads);
    for (auto& per_thread : fds)
        for (const auto& p : data.paths) {
            per_thread.push_back(::open((mount / p).c_str(), O_RDONLY | O_CLOEXEC));
            REQUIRE(per_thread.back() >= 0);
        }

    Counts counts;
    hammer(data, n, counts, [&](int t, std::size_t i, std::uint64_t offset, std::span<std::byte> dest) -> long {
        std::size_t done = 0;
        while (done < dest.size()) {  // a short read is only at the end of the file
            const ssize_t got = ::pread(fds[t][i], dest.data() + done, dest.size() - done, static_cast<off_t>(offset + done));
            if (got < 0) return -1;
            if (got == 0) break;
            done += static_cast<std::size_t>(got);
        }
        return static_cast<long>(done);
    });
    for (auto& per_thread : fds)
        for (int fd : per_thread) ::close(fd);
    const auto s = mount.stats();
    WARN("mount stress: " << counts.reads.load() << " reads (" << counts.bytes.load() / (1 << 20) << " MiB) verified, "
                          << counts.mismatches.load() << " mismatches, " << counts.errors.load() << " errors; dram evictions "
                          << s["tiers"]["dram"]["evictions"] << ", nvme hits " << s["tiers"]["nvme"]["hits"] << ", origin reads "
                          << s["origin"]["reads"]);
    CHECK(counts.mismatches == 0);
    CHECK(counts.errors == 0);
    CHECK(counts.reads == n * kThreads);
    if (n >= 10'000) {
        CHECK(s["tiers"]["dram"]["evictions"].get<std::uint64_t>() > 0);
        CHECK(s["tiers"]["nvme"]["hits"].get<std::uint64_t>() > 0);
    }
    CHECK(mount.stop() == 0);
}
