#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>
#include <tiercache/detail/xxh3.hpp>

#include <sys/mman.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <random>
#include <thread>

#include "support.hpp"

using namespace tiercache;

namespace {

// `count` files of 20-80 KiB in 8 class folders; returns the dataset's total bytes.
std::uint64_t make_dataset(const test::fs::path& root, int count, std::uint64_t seed = 7) {
    std::mt19937_64 rng(seed);
    std::uint64_t total = 0;
    for (int i = 0; i < count; ++i) {
        const std::size_t size = 20 * 1024 + rng() % (60 * 1024);
        test::write_file(root / ("class" + std::to_string(i % 8)) / ("img" + std::to_string(i) + ".jpg"), test::make_bytes(seed + i, size));
        total += size;
    }
    return total;
}

std::vector<SampleId> shuffled(std::size_t n, std::uint64_t seed) {
    std::vector<SampleId> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    return order;
}

test::Bytes read_whole(Cache& cache, SampleId id) {
    test::Bytes buf(cache.size(id));
    REQUIRE(cache.read(id, 0, buf) == buf.size());
    return buf;
}

}  // namespace

TEST_CASE("API reads equal the origin, from the tier and from the origin, by 4 threads", "[cache]") {
    test::TempDir dir;
    const auto names = test::make_tricky_tree(dir.path());
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    REQUIRE(cache.catalog().size() == names.size());

    for (int epoch = 0; epoch < 2; ++epoch) {  // the first epoch misses, the second hits
        const auto order = shuffled(names.size(), 100 + epoch);
        std::atomic<std::size_t> next{0}, mismatches{0};
        std::vector<std::thread> readers;
        for (int t = 0; t < 4; ++t)
            readers.emplace_back([&] {
                for (std::size_t i; (i = next++) < order.size();) {
                    const SampleId id = order[i];
                    test::Bytes got(cache.size(id));
                    cache.read(id, 0, got);
                    if (got != test::slurp(dir.path() / std::string(cache.catalog().path(id)))) ++mismatches;
                }
            });
        for (auto& r : readers) r.join();
        CHECK(mismatches == 0);
    }
    const Stats s = cache.stats();
    // Every extent of every non-empty sample hit once in epoch 2 (the empty one has one extent);
    // in epoch 1, a read across extents may find its later ones fetched alongside already.
    CHECK(s.tiers[0].hits >= cache.catalog().extent_count() - 1);
    CHECK(s.tiers[0].hits <= (cache.catalog().extent_count() - 1) + (cache.catalog().extent_count() - names.size()));
    CHECK(s.origin_bytes_read == cache.catalog().total_bytes());
    for (const auto& name : names) {
        const SampleId id = cache.id_of(name);
        if (cache.size(id) == 0) continue;
        const auto sum = cache.resident_checksum(id);  // of its first extent
        REQUIRE(sum);
        auto first = test::slurp(dir.path() / name);
        first.resize(std::min<std::size_t>(first.size(), cache.catalog().extent_bytes()));
        CHECK(*sum == detail::xxh3(first));
    }
}

TEST_CASE("reads at any offset and length equal the origin's bytes", "[cache]") {
    test::TempDir dir;
    test::make_tricky_tree(dir.path());
    for (const char* policy : {"noevict", "lru"}) {
        auto cache = Cache::open(Config{}.origin(dir.path()).dram("1MiB").policy(policy));  // some fit, some not
        std::mt19937_64 rng(3);
        for (int i = 0; i < 2000; ++i) {
            const SampleId id = static_cast<SampleId>(rng() % cache.catalog().size());
            const test::Bytes whole = test::slurp(dir.path() / std::string(cache.catalog().path(id)));
            const std::uint64_t offset = rng() % (whole.size() + 2);
            test::Bytes got(rng() % (200 * 1024) + 1);
            const std::size_t n = cache.read(id, offset, got);
            const std::size_t want = offset >= whole.size() ? 0 : std::min<std::size_t>(got.size(), whole.size() - offset);
            INFO("policy " << policy << ", sample " << cache.catalog().path(id) << " offset " << offset);
            REQUIRE(n == want);
            CHECK(std::equal(got.begin(), got.begin() + static_cast<long>(n), whole.begin() + static_cast<long>(std::min<std::uint64_t>(offset, whole.size()))));
        }
    }
}

TEST_CASE("unknown ids and paths, and origin failures, are clear exceptions", "[cache]") {
    test::TempDir dir;
    test::write_file(dir / "a/keep.bin", test::make_bytes(1, 5000));
    test::write_file(dir / "a/gone.bin", test::make_bytes(2, 5000));
    test::write_file(dir / "a/shrinks.bin", test::make_bytes(3, 5000));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    test::Bytes buf(100);

    CHECK_THROWS_AS(cache.read(99, 0, buf), UnknownSample);
    CHECK_THROWS_WITH(cache.size(99), Catch::Contains("sample id 99 out of range"));
    CHECK_THROWS_WITH(cache.id_of("a/nope.bin"), Catch::Contains("no sample 'a/nope.bin'"));
    CHECK_THROWS_AS(cache.id_of("../a/keep.bin"), UnknownSample);

    test::fs::remove(dir / "a/gone.bin");
    try {
        cache.read(cache.id_of("a/gone.bin"), 0, buf);
        FAIL("reading a deleted origin file must throw");
    } catch (const OriginError& e) {
        CHECK(e.errno_value() == ENOENT);
        CHECK_THAT(e.what(), Catch::Contains("gone.bin"));
    }
    test::fs::resize_file(dir / "a/shrinks.bin", 10);
    CHECK_THROWS_WITH(cache.read(cache.id_of("a/shrinks.bin"), 0, buf), Catch::Contains("changed since the scan"));
    CHECK(cache.stats().origin_errors == 2);
    // The failures left nothing behind: the tier is usable and holds only good bytes.
    CHECK(read_whole(cache, cache.id_of("a/keep.bin")) == test::slurp(dir / "a/keep.bin"));
    CHECK(cache.stats().tiers[0].used_bytes == 5000);
}

TEST_CASE("a small dram tier stays within its bound under concurrent churn and serves correct bytes", "[cache][eviction]") {
    test::TempDir dir;
    const std::uint64_t total = make_dataset(dir.path(), 300);
    for (const char* policy : {"noevict", "lru"}) {
        const std::uint64_t capacity = total / 8;
        auto cache = Cache::open(Config{}.origin(dir.path()).dram(std::to_string(capacity)).policy(policy));
        std::vector<test::Bytes> origin(cache.catalog().size());
        for (SampleId id = 0; id < origin.size(); ++id) origin[id] = test::slurp(dir.path() / std::string(cache.catalog().path(id)));

        std::atomic<bool> done{false};
        std::atomic<std::uint64_t> max_used{0}, mismatches{0};
        std::thread watcher([&] {
            while (!done) {
                const auto used = cache.stats().tiers[0].used_bytes;
                if (used > max_used) max_used = used;
            }
        });
        std::vector<std::thread> readers;
        for (int t = 0; t < 4; ++t)
            readers.emplace_back([&, t] {
                std::mt19937_64 rng(t);
                for (int i = 0; i < 3000; ++i) {
                    const SampleId id = static_cast<SampleId>(rng() % origin.size());
                    test::Bytes got(origin[id].size());
                    cache.read(id, 0, got);
                    if (got != origin[id]) ++mismatches;
                }
            });
        for (auto& r : readers) r.join();
        done = true;
        watcher.join();
        INFO("policy " << policy);
        CHECK(mismatches == 0);
        CHECK(max_used <= capacity);
        const Stats s = cache.stats();
        CHECK(s.tiers[0].used_bytes <= capacity);
        CHECK(s.tiers[0].used_bytes > capacity / 2);  // it did fill
        if (std::string(policy) == "lru") CHECK(s.tiers[0].evictions > 0);
        else CHECK(s.tiers[0].evictions == 0);
    }
}

TEST_CASE("second shuffled epoch: no-evict hits about the capacity fraction, LRU less", "[cache][policy]") {
    test::TempDir dir;
    const int files = 400;
    const std::uint64_t total = make_dataset(dir.path(), files);
    const double f = 0.25;
    std::map<std::string, double> second_epoch_hit_rate;
    for (const char* policy : {"noevict", "lru"}) {
        auto cache = Cache::open(Config{}.origin(dir.path()).dram(std::to_string(static_cast<std::uint64_t>(f * total))).policy(policy));
        for (SampleId id : shuffled(files, 1)) read_whole(cache, id);
        const auto after_first = cache.stats().tiers[0];
        for (SampleId id : shuffled(files, 2)) read_whole(cache, id);
        const auto after_second = cache.stats().tiers[0];
        const double hits = static_cast<double>(after_second.hits - after_first.hits);
        second_epoch_hit_rate[policy] = hits / files;
        // What the tier holds, as a fraction of the samples: the rate no-evict should reach.
        if (std::string(policy) == "noevict") {
            const double resident = static_cast<double>(after_second.resident_samples) / files;
            CHECK(second_epoch_hit_rate[policy] == Approx(resident).margin(0.001));
        }
    }
    WARN("second-epoch hit rate at f = " << f << ": noevict " << second_epoch_hit_rate["noevict"] << ", lru "
                                         << second_epoch_hit_rate["lru"]);
    CHECK(second_epoch_hit_rate["noevict"] == Approx(f).margin(0.05));
    CHECK(second_epoch_hit_rate["lru"] < second_epoch_hit_rate["noevict"] - 0.08);
}

TEST_CASE("concurrent misses of one sample read the origin once", "[cache]") {
    test::TempDir dir;
    test::write_file(dir / "big.bin", test::make_bytes(9, 8 << 20));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    std::vector<std::thread> readers;
    std::atomic<int> mismatches{0};
    const test::Bytes want = test::slurp(dir / "big.bin");
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {  // no Catch assertions off the main thread
            test::Bytes got(want.size());
            if (cache.read(0, 0, got) != want.size() || got != want) ++mismatches;
        });
    for (auto& r : readers) r.join();
    CHECK(mismatches == 0);
    CHECK(cache.stats().origin_bytes_read == want.size());
}

TEST_CASE("acquire pins a sample zero-copy, and an evicted block waits for its readers and still counts", "[cache]") {
    test::TempDir dir;
    test::write_file(dir / "a.bin", test::make_bytes(1, 4000));
    test::write_file(dir / "b.bin", test::make_bytes(2, 4000));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("4000").policy("lru"));
    const test::Bytes want_a = test::slurp(dir / "a.bin");
    {
        SampleRef a = cache.acquire(cache.id_of("a.bin"));
        REQUIRE(a);
        // b makes LRU evict a while we hold a's bytes: they stay valid until we let go, and
        // they still count against the bound, so b is served from the origin instead.
        CHECK(read_whole(cache, cache.id_of("b.bin")) == test::slurp(dir / "b.bin"));
        CHECK(std::equal(a.bytes().begin(), a.bytes().end(), want_a.begin(), want_a.end()));
        const auto dram = cache.stats().tiers[0];
        CHECK(dram.evictions == 1);
        CHECK(dram.used_bytes == 4000);
        CHECK(dram.resident_samples == 0);
    }
    // Released: the next admission frees a's old block and b comes in.
    CHECK(read_whole(cache, cache.id_of("b.bin")) == test::slurp(dir / "b.bin"));
    const auto dram = cache.stats().tiers[0];
    CHECK(dram.used_bytes == 4000);
    CHECK(dram.resident_samples == 1);
    CHECK(cache.resident_checksum(cache.id_of("b.bin")));
}

namespace {

// How many pages of `path` the kernel page cache holds (mincore over a mapping of the file).
std::size_t cached_pages(const test::fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const std::size_t size = test::fs::file_size(path);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    REQUIRE(map != MAP_FAILED);
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> in((size + page - 1) / page);
    REQUIRE(::mincore(map, size, in.data()) == 0);
    ::munmap(map, size);
    return static_cast<std::size_t>(std::count_if(in.begin(), in.end(), [](unsigned char c) { return c & 1; }));
}

}  // namespace

TEST_CASE("a sample a tier keeps leaves no second copy in the origin's page cache", "[cache]") {
    test::TempDir dir("/var/tmp");  // a disk filesystem: tmpfs pages are the file, never dropped
    struct statfs fs {};
    REQUIRE(::statfs(dir.path().c_str(), &fs) == 0);
    if (fs.f_type == TMPFS_MAGIC) {
        WARN("/var/tmp is a tmpfs here: nothing to drop, nothing to check");
        return;
    }
    const test::Bytes kept = test::make_bytes(1, 1 << 20), too_big = test::make_bytes(2, 8 << 20);
    test::write_file(dir / "kept.bin", kept);
    test::write_file(dir / "too_big.bin", too_big);
    ::sync();  // only clean pages can be dropped
    test::slurp(dir / "kept.bin");
    test::slurp(dir / "too_big.bin");
    REQUIRE(cached_pages(dir / "kept.bin") > 0);
    REQUIRE(cached_pages(dir / "too_big.bin") > 0);

    auto cache = Cache::open(Config{}.origin(dir.path()).dram("4MiB"));
    test::Bytes buf(kept.size());
    REQUIRE(cache.read(cache.id_of("kept.bin"), 0, buf) == buf.size());
    CHECK(buf == kept);
    CHECK(cache.stats().tiers[0].used_bytes == kept.size());
    CHECK(cached_pages(dir / "kept.bin") == 0);  // the dram tier holds the one copy

    // No tier can hold too_big.bin (8 MiB > 4 MiB): its reads go to the origin, whose page
    // cache is then the only cache it has, and stays.
    test::Bytes big(too_big.size());
    REQUIRE(cache.read(cache.id_of("too_big.bin"), 0, big) == big.size());
    CHECK(big == too_big);
    CHECK(cache.stats().tiers[0].rejections > 0);
    CHECK(cached_pages(dir / "too_big.bin") > 0);
}
