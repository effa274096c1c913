// The cache over several tiers: placement, demotion, promotion, bounds, correct bytes.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>

#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <sys/stat.h>
#include <numeric>
#include <random>
#include <thread>

#include "support.hpp"

using namespace tiercache;

namespace {

struct Dataset {
    std::vector<test::Bytes> bytes;  // by sample id, once the cache is open
    std::uint64_t total = 0;
};

std::uint64_t make_files(const test::fs::path& root, int count, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uint64_t total = 0;
    for (int i = 0; i < count; ++i) {
        const std::size_t size = 16 * 1024 + rng() % (48 * 1024);
        test::write_file(root / ("c" + std::to_string(i % 6)) / ("s" + std::to_string(i)), test::make_bytes(seed * 1000 + i, size));
        total += size;
    }
    return total;
}

// Reads every sample once in a shuffled order with 4 threads; returns wrong or failed reads.
std::size_t epoch(Cache& cache, const std::vector<test::Bytes>& want, std::uint64_t seed) {
    std::vector<SampleId> order(want.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    std::atomic<std::size_t> next{0}, bad{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            for (std::size_t i; (i = next++) < order.size();) {
                test::Bytes got(want[order[i]].size());
                try {
                    if (cache.read(order[i], 0, got) != got.size() || got != want[order[i]]) ++bad;
                } catch (const std::exception&) {
                    ++bad;
                }
            }
        });
    for (auto& r : readers) r.join();
    return bad;
}

std::vector<test::Bytes> origin_bytes(const Cache& cache, const test::fs::path& root) {
    std::vector<test::Bytes> out;
    for (SampleId id = 0; id < cache.catalog().size(); ++id) out.push_back(test::slurp(root / std::string(cache.catalog().path(id))));
    return out;
}

}  // namespace

TEST_CASE("a dataset 4x dram spread over dram, pmem and cxl: read once from the origin, bounds kept", "[tiers]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 240, 1);
    test::fs::create_directories(dir / "pmem");
    const std::uint64_t dram = total / 4;
    // Together the tiers hold it all, with some room to spare for the allocators.
    auto cache = Cache::open(Config{}
                                 .origin(origin)
                                 .dram(std::to_string(dram))
                                 .pmem(dir / "pmem", std::to_string(total * 2 / 5))
                                 .cxl(0, std::to_string(total * 2 / 5)));
    const auto want = origin_bytes(cache, origin);
    for (std::uint64_t e = 0; e < 3; ++e) {
        CHECK(epoch(cache, want, 10 + e) == 0);
        for (const TierStats& t : cache.stats().tiers) {
            INFO("epoch " << e << ", tier " << t.name);
            CHECK(t.used_bytes <= t.capacity_bytes);
        }
    }
    const Stats s = cache.stats();
    REQUIRE(s.tiers.size() == 3);
    CHECK(s.tiers[0].name == "dram");
    CHECK(s.tiers[1].name == "pmem");
    CHECK(s.tiers[2].name == "cxl");
    CHECK(s.origin_bytes_read == total);  // each sample read from the origin once
    std::uint64_t resident = 0;
    for (const TierStats& t : s.tiers) {
        CHECK(t.resident_samples > 0);  // every tier took a share
        resident += t.resident_samples;
    }
    CHECK(resident == want.size());
    // Epochs 2 and 3 hit somewhere for every sample.
    CHECK(s.tiers[0].hits + s.tiers[1].hits + s.tiers[2].hits == 2 * want.size());
}

TEST_CASE("LRU over three tiers demotes instead of dropping, promotes on hits, keeps bounds and bytes", "[tiers]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 240, 2);
    test::fs::create_directories(dir / "pmem");
    auto cache = Cache::open(Config{}
                                 .origin(origin)
                                 .policy("lru")
                                 .dram(std::to_string(total / 4))
                                 .pmem(dir / "pmem", std::to_string(total / 4))
                                 .cxl(0, std::to_string(total / 4)));
    const auto want = origin_bytes(cache, origin);
    for (std::uint64_t e = 0; e < 3; ++e) CHECK(epoch(cache, want, 20 + e) == 0);
    // Random reads as well, so promotions and demotions interleave with readers.
    std::atomic<std::size_t> bad{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&, t] {
            std::mt19937_64 rng(t);
            for (int i = 0; i < 2000; ++i) {
                const SampleId id = static_cast<SampleId>(rng() % want.size());
                const std::uint64_t offset = rng() % want[id].size();
                test::Bytes got(1 + rng() % 70000);
                const std::size_t n = cache.read(id, offset, got);
                if (n != std::min<std::size_t>(got.size(), want[id].size() - offset) ||
                    !std::equal(got.begin(), got.begin() + static_cast<long>(n), want[id].begin() + static_cast<long>(offset)))
                    ++bad;
            }
        });
    for (auto& r : readers) r.join();
    CHECK(bad == 0);
    const Stats s = cache.stats();
    for (const TierStats& t : s.tiers) {
        INFO("tier " << t.name);
        CHECK(t.used_bytes <= t.capacity_bytes);
    }
    CHECK(s.tiers[0].demotions > 0);
    CHECK(s.tiers[1].demotions > 0);
    CHECK(s.tiers[0].promotions > 0);
    CHECK(s.tiers[2].evictions > 0);
}

TEST_CASE("a sample too large for dram lands in a slower tier that can hold it", "[tiers]") {
    test::TempDir dir;
    test::write_file(dir / "origin/big", test::make_bytes(1, 3 << 20));
    test::write_file(dir / "origin/small", test::make_bytes(2, 1000));
    test::fs::create_directories(dir / "pmem");
    // One extent for the 3 MiB sample (with the default 1 MiB, each of its extents fits dram).
    auto cache = Cache::open(Config{}.origin(dir / "origin").dram("1MiB").pmem(dir / "pmem", "8MiB").extent("4MiB"));
    test::Bytes got(3 << 20);
    CHECK(cache.read(cache.id_of("big"), 0, got) == got.size());
    CHECK(got == test::slurp(dir / "origin/big"));
    CHECK(cache.read(cache.id_of("big"), 0, got) == got.size());
    const Stats s = cache.stats();
    CHECK(s.tiers[1].resident_samples == 1);
    CHECK(s.tiers[1].hits == 1);
    CHECK(s.origin_bytes_read == 3u << 20);
}

namespace {

// A small tmpfs mounted for one test and unmounted on every way out (lazily as a last resort).
class SmallTmpfs {
public:
    SmallTmpfs(const test::fs::path& where, const std::string& size) : where_(where) {
        test::fs::create_directories(where_);
        const auto r = test::run({"mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", where_.string()});
        if (r.status != 0) throw std::runtime_error("cannot mount a tmpfs on " + where_.string() + ": " + r.output);
    }
    SmallTmpfs(const SmallTmpfs&) = delete;
    SmallTmpfs& operator=(const SmallTmpfs&) = delete;
    ~SmallTmpfs() {
        if (test::run({"umount", where_.string()}).status != 0) test::run({"umount", "-l", where_.string()});
    }

private:
    test::fs::path where_;
};

std::string log_text(const test::fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE("all four tiers over a dataset 4x dram: 3 epochs correct, bounds kept, the origin read once", "[tiers][nvme]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 240, 3);
    test::fs::create_directories(dir / "pmem");
    test::fs::create_directories(dir / "nvme");
    auto cache = Cache::open(Config{}
                                 .origin(origin)
                                 .dram(std::to_string(total / 4))
                                 .pmem(dir / "pmem", std::to_string(total / 4))
                                 .cxl(0, std::to_string(total / 4))
                                 .nvme(dir / "nvme", "64MiB"));
    const auto want = origin_bytes(cache, origin);
    for (std::uint64_t e = 0; e < 3; ++e) {
        CHECK(epoch(cache, want, 40 + e) == 0);
        for (const TierStats& t : cache.stats().tiers) {
            INFO("epoch " << e << ", tier " << t.name);
            CHECK(t.used_bytes <= t.capacity_bytes);
        }
    }
    const Stats s = cache.stats();
    REQUIRE(s.tiers.size() == 4);
    CHECK(s.tiers[3].name == "nvme");
    CHECK(s.origin_bytes_read == total);
    cache.wait_for_nvme_writes();  // written through in the background
    CHECK(cache.stats().tiers[3].resident_samples == want.size());  // nvme holds them all
    CHECK(s.tiers[3].hits > 0);                          // what no memory tier holds comes from nvme
}

TEST_CASE("a restart with the same nvme dir reads (almost) nothing from the origin", "[tiers][nvme]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 200, 4);
    test::fs::create_directories(dir / "nvme");
    const auto config = Config{}.origin(origin).dram(std::to_string(total / 4)).nvme(dir / "nvme", "64MiB");
    std::vector<test::Bytes> want;
    {
        auto cache = Cache::open(config);
        want = origin_bytes(cache, origin);
        CHECK(epoch(cache, want, 1) == 0);
        CHECK(cache.stats().origin_bytes_read == total);
    }  // closing saves the index
    auto cache = Cache::open(config);
    CHECK(epoch(cache, want, 2) == 0);
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read == 0);
    CHECK(s.tiers.back().hits == want.size());
    CHECK(s.tiers[0].promotions > 0);  // the empty dram tier filled from nvme
}

TEST_CASE("bits flipped in the nvme slabs: reads stay correct, failures counted, copies repaired", "[tiers][nvme]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    make_files(origin, 120, 5);
    test::fs::create_directories(dir / "nvme");
    // A tiny dram tier, so reads come from nvme.
    const auto config = Config{}.origin(origin).dram("64KiB").nvme(dir / "nvme", "32MiB");
    std::vector<test::Bytes> want;
    {
        auto cache = Cache::open(config);
        want = origin_bytes(cache, origin);
        CHECK(epoch(cache, want, 1) == 0);
    }
    // Flip a byte every 64 KiB of every slab, past each slab's 4 KiB header.
    std::size_t flipped = 0;
    for (const auto& e : test::fs::directory_iterator(dir / "nvme")) {
        if (e.path().extension() != ".tcs") continue;
        std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
        for (std::uint64_t at = 4096 + 100; at < e.file_size(); at += 64 * 1024) {
            f.seekg(static_cast<std::streamoff>(at));
            char c = 0;
            f.read(&c, 1);
            c = static_cast<char>(c ^ 0x5a);
            f.seekp(static_cast<std::streamoff>(at));
            f.write(&c, 1);
            ++flipped;
        }
    }
    REQUIRE(flipped > 10);
    auto cache = Cache::open(config);
    CHECK(epoch(cache, want, 2) == 0);  // every byte right, though many copies were bad
    const auto after_bad = cache.stats();
    const std::uint64_t failures = after_bad.tiers.back().checksum_failures;
    CHECK(failures > 0);
    CHECK(after_bad.origin_bytes_read > 0);  // the bad ones came again from the origin...
    CHECK(epoch(cache, want, 3) == 0);
    const auto repaired = cache.stats();
    CHECK(repaired.tiers.back().checksum_failures == failures);       // ...and were stored again, good
    CHECK(repaired.origin_bytes_read == after_bad.origin_bytes_read);  // so nothing more from the origin
}

TEST_CASE("the nvme dir fills up: the tier stops admitting, reads keep working, the log says why", "[tiers][nvme]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 120, 6);
    SmallTmpfs small(dir / "nvme", "4m");
    const auto log_path = dir / "log.txt";
    std::FILE* log_file = std::fopen(log_path.c_str(), "w");
    set_log_file(log_file);
    {
        // The tier is told 16 MiB (16 slabs of 1 MiB); the filesystem has 4.
        auto cache = Cache::open(Config{}.origin(origin).dram("64KiB").nvme(dir / "nvme", "16MiB"));
        const auto want = origin_bytes(cache, origin);
        CHECK(epoch(cache, want, 1) == 0);
        CHECK(epoch(cache, want, 2) == 0);
        const Stats s = cache.stats();
        CHECK(s.tiers.back().resident_samples > 0);
        CHECK(s.tiers.back().resident_samples < want.size());
        CHECK(s.origin_bytes_read > total);  // what did not fit comes from the origin each epoch
    }
    set_log_file(stderr);
    std::fclose(log_file);
    CHECK_THAT(log_text(log_path), Catch::Contains("full") && Catch::Contains("No space left on device"));
}

// ---- the nvme write-through, off the reader's thread (nvme_writer.hpp) -----------------------

namespace {

// A file rewritten with other bytes of the same size and an mtime of its own, long settled.
void rewrite_settled(const test::fs::path& p, const test::Bytes& bytes, int version) {
    test::write_file(p, bytes);
    const timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000 + version, 0}};
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), times, 0) == 0);
}

std::uint64_t nvme_resident(const Cache& cache) { return cache.stats().tiers.back().resident_samples; }

// The first sample no memory tier holds (want.size() if there is none).
SampleId first_not_in_memory(OwnerCache& cache, std::size_t samples) {
    SampleId id = 0;
    while (id < samples && cache.resident_checksum(id)) ++id;
    return id;
}

// Reads `id` while the nvme writer is paused: true if the read was still waiting 100 ms later
// (for a queued write), then resumes the writer; `got` receives the bytes once it is done.
bool read_waits_for_writer(OwnerCache& cache, SampleId id, test::Bytes& got) {
    std::atomic<bool> read_done{false};
    std::thread reader([&] {
        cache.read(id, 0, got);
        read_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const bool waited = !read_done.load();
    cache.pause_nvme_writes_for_testing(false);
    reader.join();
    return waited;
}

}  // namespace

TEST_CASE("write-through: a miss answers while its nvme write waits; the write lands later", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 60, 11);
    test::fs::create_directories(dir / "nvme");
    auto cache = Cache::open(Config{}.origin(origin).dram("64MiB").nvme(dir / "nvme", "64MiB"));
    const auto want = origin_bytes(cache, origin);
    cache.pause_nvme_writes_for_testing(true);  // as if the nvme device stalled: no write completes
    CHECK(epoch(cache, want, 1) == 0);          // every miss answered all the same
    Stats s = cache.stats();
    CHECK(s.origin_bytes_read == total);
    CHECK(s.tiers.back().resident_samples == 0);  // nothing written yet
    CHECK(s.nvme_writes_queued == want.size());
    CHECK(s.nvme_write_queue_bytes == total);     // each held by its pin in dram, no copy
    CHECK(s.tiers.front().used_bytes == total);
    cache.pause_nvme_writes_for_testing(false);
    cache.wait_for_nvme_writes();
    s = cache.stats();
    CHECK(s.tiers.back().resident_samples == want.size());
    CHECK(s.nvme_writes_written == want.size());
    CHECK(s.nvme_write_queue_bytes == 0);
}

TEST_CASE("write-through: the bytes on nvme are the origin's, read back once dram no longer holds them", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 200, 12);
    test::fs::create_directories(dir / "nvme");
    // LRU over a dram tier of a quarter of the data: each epoch evicts most of what it read.
    auto cache = Cache::open(Config{}.origin(origin).dram(std::to_string(total / 4)).policy("lru").nvme(dir / "nvme", "64MiB"));
    const auto want = origin_bytes(cache, origin);
    CHECK(epoch(cache, want, 1) == 0);
    cache.wait_for_nvme_writes();
    CHECK(nvme_resident(cache) == want.size());
    const std::uint64_t nvme_hits = cache.stats().tiers.back().hits;
    CHECK(epoch(cache, want, 2) == 0);  // compared with the origin's bytes, byte for byte
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read == total);                        // nothing read twice
    CHECK(s.tiers.back().hits - nvme_hits > want.size() / 2);   // most of it from nvme
    CHECK(s.tiers.back().checksum_failures == 0);
}

TEST_CASE("write-through: a file changed while its write is queued is not written", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    make_files(origin, 20, 13);
    test::fs::create_directories(dir / "nvme");
    auto config = Config{}.origin(origin).dram("64MiB").nvme(dir / "nvme", "64MiB");
    const SampleId changed = 7;
    test::Bytes fresh;
    std::vector<test::Bytes> want;
    {
        auto cache = Cache::open(config);
        want = origin_bytes(cache, origin);
        cache.pause_nvme_writes_for_testing(true);
        CHECK(epoch(cache, want, 1) == 0);
        const auto path = origin / std::string(cache.catalog().path(changed));
        fresh = test::make_bytes(777, want[changed].size());
        rewrite_settled(path, fresh, 1);
        REQUIRE(cache.revalidate(changed) == OwnerCache::Revalidated::changed);
        cache.pause_nvme_writes_for_testing(false);
        cache.wait_for_nvme_writes();
        const Stats s = cache.stats();
        CHECK(s.nvme_writes_dropped == 1);
        CHECK(s.tiers.back().resident_samples == want.size() - 1);
        test::Bytes got(fresh.size());
        CHECK(cache.read(changed, 0, got) == got.size());
        CHECK(got == fresh);
        cache.wait_for_nvme_writes();
        CHECK(nvme_resident(cache) == want.size());  // the new bytes, written through in turn
    }
    want[changed] = fresh;
    auto cache = Cache::open(config.dram("64KiB"));  // a restart reading from nvme: only current bytes there
    CHECK(epoch(cache, want, 2) == 0);
    CHECK(cache.stats().origin_bytes_read < 64 * 1024 * 2);
}

TEST_CASE("write-through: a full queue skips, never waits, and writes the rest once it has room", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    // 24 files of one 1 MiB extent each: more than the queue's 16 MiB.
    for (int i = 0; i < 24; ++i) test::write_file(origin / ("f" + std::to_string(i)), test::make_bytes(500 + i, test::MiB));
    test::fs::create_directories(dir / "nvme");
    auto cache = Cache::open(Config{}.origin(origin).dram("64MiB").nvme(dir / "nvme", "128MiB"));
    const auto want = origin_bytes(cache, origin);
    cache.pause_nvme_writes_for_testing(true);
    CHECK(epoch(cache, want, 1) == 0);
    Stats s = cache.stats();
    CHECK(s.nvme_write_queue_capacity == 16 * test::MiB);
    CHECK(s.nvme_writes_queued == 16);
    CHECK(s.nvme_writes_skipped == 8);
    CHECK(s.nvme_write_queue_bytes <= s.nvme_write_queue_capacity);
    cache.pause_nvme_writes_for_testing(false);
    cache.wait_for_nvme_writes();
    s = cache.stats();
    CHECK(s.nvme_writes_retried == 8);  // still in dram (noevict never demotes): written from there
    CHECK(s.tiers.back().resident_samples == want.size());
}

TEST_CASE("write-through: closing the cache with writes queued writes them; a restart finds them whole", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 120, 14);
    test::fs::create_directories(dir / "nvme");
    auto config = Config{}.origin(origin).dram("64MiB").nvme(dir / "nvme", "64MiB");
    std::vector<test::Bytes> want;
    {
        auto cache = Cache::open(config);
        want = origin_bytes(cache, origin);
        cache.pause_nvme_writes_for_testing(true);
        CHECK(epoch(cache, want, 1) == 0);
        CHECK(nvme_resident(cache) == 0);
    }  // the writer, paused, is let go and finishes before the nvme tier saves its index
    auto cache = Cache::open(config.dram("64KiB"));
    CHECK(epoch(cache, want, 2) == 0);
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read == 0);
    CHECK(s.tiers.back().hits == want.size());
    CHECK(s.tiers.back().checksum_failures == 0);
    CHECK(total > 64 * 1024);
}

TEST_CASE("write-through: with no memory tier room, a copy is queued; a reader of it meanwhile waits, then reads nvme", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 30, 15);
    test::fs::create_directories(dir / "nvme");
    auto cache = Cache::open(Config{}.origin(origin).dram("64KiB").nvme(dir / "nvme", "64MiB"));
    const auto want = origin_bytes(cache, origin);
    cache.pause_nvme_writes_for_testing(true);
    CHECK(epoch(cache, want, 1) == 0);
    CHECK(cache.stats().nvme_writes_queued > 0);
    // A read of a sample whose only copy waits in the queue: it waits for the write (one origin
    // read per sample, as with a fetch in flight), then reads nvme.
    const SampleId queued = first_not_in_memory(cache, want.size());  // one that only nvme will hold
    REQUIRE(queued < want.size());
    test::Bytes got(want[queued].size());
    CHECK(read_waits_for_writer(cache, queued, got));
    CHECK(got == want[queued]);
    cache.wait_for_nvme_writes();
    CHECK(epoch(cache, want, 2) == 0);
    CHECK(cache.stats().origin_bytes_read == total);
}

TEST_CASE("write-through: an extent demoted with no copy on nvme is read from its queued copy, not the origin", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    for (int i = 0; i < 48; ++i) test::write_file(origin / ("f" + std::to_string(100 + i)), test::make_bytes(1700 + i, 8192));
    test::fs::create_directories(dir / "nvme");
    // dram holds 32 files (LRU); nvme 16 slabs of 16 KiB, one file each, the oldest evicted.
    auto cache = Cache::open(Config{}.origin(origin).dram("256KiB").policy("lru").nvme(dir / "nvme", "256KiB"));
    const auto want = origin_bytes(cache, origin);
    test::Bytes got(8192);
    for (SampleId id = 0; id < 48; ++id) {  // each written before the next read: no write lags
        REQUIRE(cache.read(id, 0, got) == got.size());
        cache.wait_for_nvme_writes();
    }
    // dram holds 16..47; nvme the last 16 writes (8..15 demoted, 40..47 written through), so
    // 16..31 are in dram only. Reading 0 demotes 16: its copy waits in the paused queue, 16 on
    // no tier. Its reader waits for that write (demote marked it in flight) and reads nvme.
    cache.pause_nvme_writes_for_testing(true);
    REQUIRE(cache.read(0, 0, got) == got.size());
    CHECK(got == want[0]);
    REQUIRE(!cache.resident_checksum(16));
    const std::uint64_t origin_before = cache.stats().origin_bytes_read;
    CHECK(read_waits_for_writer(cache, 16, got));
    CHECK(got == want[16]);
    CHECK(cache.stats().origin_bytes_read == origin_before);
    CHECK(cache.stats().tiers.back().hits > 0);
}

TEST_CASE("write-through: an extent demoted while its write is queued is read from that write, not the origin", "[tiers][nvme][writer]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_files(origin, 80, 16);
    test::fs::create_directories(dir / "nvme");
    // LRU over a quarter of the data: the epoch demotes what it read while the writes wait.
    auto cache = Cache::open(Config{}.origin(origin).dram(std::to_string(total / 4)).policy("lru").nvme(dir / "nvme", "64MiB"));
    const auto want = origin_bytes(cache, origin);
    cache.pause_nvme_writes_for_testing(true);
    CHECK(epoch(cache, want, 1) == 0);
    Stats s = cache.stats();
    CHECK(s.nvme_writes_awaited > 0);           // demotions handed to their queued writes
    CHECK(s.tiers.front().demotions > 0);
    CHECK(s.tiers.front().used_bytes <= s.tiers.front().capacity_bytes);
    CHECK(s.tiers.front().resident_samples > 0);  // not emptied for extents it could not make room for
    // A demoted extent, on no tier while its write waits: its reader waits for the write.
    const SampleId demoted = first_not_in_memory(cache, want.size());
    REQUIRE(demoted < want.size());
    test::Bytes got(want[demoted].size());
    CHECK(read_waits_for_writer(cache, demoted, got));
    CHECK(got == want[demoted]);
    cache.wait_for_nvme_writes();
    CHECK(epoch(cache, want, 2) == 0);
    s = cache.stats();
    CHECK(s.origin_bytes_read == total);  // every extent read from the origin once
    CHECK(s.nvme_writes_dropped == 0);
    CHECK(nvme_resident(cache) == want.size());
}
