// Extents (extent.hpp): a large file is cached by the byte ranges read, never whole, in every
// tier, through the API and an attached client; small files stay one extent each.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "support.hpp"

using namespace tiercache;

namespace extents_test {

constexpr std::uint64_t kExtent = 256 * 1024;

// Bytes [offset, offset + n) of the origin file, as pread gives them.
test::Bytes origin_range(const test::fs::path& file, std::uint64_t offset, std::size_t n) {
    test::Bytes out(n);
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
    ::close(fd);
    REQUIRE(got >= 0);
    out.resize(static_cast<std::size_t>(got));
    return out;
}

test::Bytes read_range(Cache& cache, SampleId id, std::uint64_t offset, std::size_t n) {
    test::Bytes out(n);
    out.resize(cache.read(id, offset, out));
    return out;
}

// Offsets of every `chunk`-sized piece of a file of `size` bytes, shuffled.
std::vector<std::uint64_t> shuffled_chunks(std::uint64_t size, std::uint64_t chunk, std::uint64_t seed) {
    std::vector<std::uint64_t> offsets;
    for (std::uint64_t at = 0; at < size; at += chunk) offsets.push_back(at);
    std::shuffle(offsets.begin(), offsets.end(), std::mt19937_64(seed));
    return offsets;
}

}  // namespace extents_test

using namespace extents_test;

TEST_CASE("the extent size is checked, and the catalog cuts files into extents", "[extents][config]") {
    test::TempDir dir;
    const std::vector<std::uint64_t> sizes = {0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024, 3 * 64 * 1024 + 7};
    for (std::size_t i = 0; i < sizes.size(); ++i)
        test::write_file(dir / ("f" + std::to_string(i)), test::make_bytes(i, static_cast<std::size_t>(sizes[i])));

    CHECK_THROWS_WITH(Config{}.origin(dir.path()).extent("3KiB").validate(), Catch::Contains("extent '3KiB'"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).extent("128MiB").validate(), Catch::Contains("'128MiB'") && Catch::Contains("64.0 MiB"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).extent("100000").validate(), Catch::Contains("multiple of 4 KiB"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).extent("lots").validate(), Catch::Contains("extent 'lots'"));
    CHECK_NOTHROW(Config{}.origin(dir.path()).extent("64KiB").validate());
    CHECK(Config{}.extent_bytes() == kDefaultExtentBytes);

    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB"));
    const Catalog& c = cache.catalog();
    REQUIRE(c.extent_bytes() == 64 * 1024);
    const std::vector<std::uint32_t> expect = {1, 1, 1, 1, 2, 3, 4};
    std::size_t total = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        const SampleId id = cache.id_of("f" + std::to_string(i));
        CHECK(c.extents_of(id) == expect[i]);
        std::uint64_t covered = 0;
        for (ExtentId e = c.first_extent(id); e < c.first_extent(id) + c.extents_of(id); ++e) {
            CHECK(c.file_of(e) == id);
            CHECK(c.extent_start(e) == covered);
            covered += c.extent_length(e);
        }
        CHECK(covered == sizes[i]);
        total += expect[i];
    }
    CHECK(c.extent_count() == total);
    CHECK(cache.stats().extents == total);
}

TEST_CASE("a large file is fetched and kept by the extents a read touches, never whole", "[extents]") {
    test::TempDir dir;
    const std::uint64_t size = 12 * kExtent + 1234;
    test::write_file(dir / "big.bin", test::make_bytes(1, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB").extent("256KiB"));
    const SampleId id = cache.id_of("big.bin");
    const auto origin = dir / "big.bin";

    // 4 KiB in the middle: one extent from the origin.
    CHECK(read_range(cache, id, 8 * kExtent + 100, 4096) == origin_range(origin, 8 * kExtent + 100, 4096));
    CHECK(cache.stats().origin_bytes_read == kExtent);
    // Across an extent boundary: the two extents it touches.
    CHECK(read_range(cache, id, kExtent - 100, 200) == origin_range(origin, kExtent - 100, 200));
    CHECK(cache.stats().origin_bytes_read == 3 * kExtent);
    // The short last extent, and past the end.
    CHECK(read_range(cache, id, size - 10, 4096) == origin_range(origin, size - 10, 10));
    CHECK(read_range(cache, id, size, 4096).empty());
    CHECK(cache.stats().origin_bytes_read == 3 * kExtent + 1234);
    // The whole file in one read: the rest, once; then all from the tier.
    CHECK(read_range(cache, id, 0, size) == test::slurp(origin));
    CHECK(cache.stats().origin_bytes_read == size);
    CHECK(read_range(cache, id, 0, size) == test::slurp(origin));
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read == size);
    CHECK(s.tiers[0].resident_samples == 13);
    CHECK(s.tiers[0].used_bytes == size);
    // Reads of every length at random offsets.
    std::mt19937_64 rng(5);
    for (int i = 0; i < 200; ++i) {
        const std::uint64_t at = rng() % size;
        const std::size_t n = 1 + rng() % (3 * kExtent);
        REQUIRE(read_range(cache, id, at, n) == origin_range(origin, at, n));
    }
    // A whole pinned sample exists only for a file of one extent.
    CHECK_FALSE(cache.acquire(id));
}

TEST_CASE("a file larger than the dram tier is cached up to the tier's size", "[extents]") {
    test::TempDir dir;
    const std::uint64_t size = 24 * kExtent;  // 6 MiB over a 2 MiB tier
    test::write_file(dir / "big.bin", test::make_bytes(2, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("2MiB").extent("256KiB").policy("noevict"));
    const SampleId id = cache.id_of("big.bin");
    for (int pass = 0; pass < 2; ++pass)
        for (const std::uint64_t at : shuffled_chunks(size, 128 * 1024, pass))
            REQUIRE(read_range(cache, id, at, 128 * 1024) == origin_range(dir / "big.bin", at, 128 * 1024));
    const Stats s = cache.stats();
    CHECK(s.tiers[0].used_bytes <= s.tiers[0].capacity_bytes);
    CHECK(s.tiers[0].used_bytes >= s.tiers[0].capacity_bytes - kExtent);
    // The second pass found what the tier held: at least its size fewer bytes from the origin.
    CHECK(s.origin_bytes_read <= 2 * size - (s.tiers[0].capacity_bytes - kExtent));
}

TEST_CASE("dram smaller than a large file, plus nvme: two shuffled passes read the origin once", "[extents][nvme]") {
    test::TempDir dir, nvme;
    const std::uint64_t size = 32 * kExtent + 5;  // 8 MiB over a 1 MiB dram tier and a 64 MiB nvme tier
    test::write_file(dir / "data.mdb", test::make_bytes(3, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("1MiB").nvme(nvme.path(), "64MiB").extent("256KiB"));
    const SampleId id = cache.id_of("data.mdb");
    for (int pass = 0; pass < 2; ++pass)
        for (const std::uint64_t at : shuffled_chunks(size, 128 * 1024, 10 + pass))
            REQUIRE(read_range(cache, id, at, 128 * 1024) == origin_range(dir / "data.mdb", at, 128 * 1024));
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read == size);  // every extent once: written through to nvme
    REQUIRE(s.tiers.size() == 2);
    CHECK(s.tiers[0].used_bytes <= s.tiers[0].capacity_bytes);
    CHECK(s.tiers[1].used_bytes <= s.tiers[1].capacity_bytes);
    CHECK(s.tiers[1].hits > 0);
    CHECK(s.tiers[1].resident_samples == 33);
}

TEST_CASE("nvme keeps extents across a restart, and starts cold for another extent size", "[extents][nvme]") {
    test::TempDir dir, nvme;
    const std::uint64_t size = 10 * kExtent + 77;
    test::write_file(dir / "shard-000.tar", test::make_bytes(4, size));
    test::write_file(dir / "small.jpg", test::make_bytes(5, 5000));
    auto config = Config{}.origin(dir.path()).dram("64MiB").nvme(nvme.path(), "64MiB").extent("256KiB").readahead(0);  // counted exactly
    {
        auto cache = Cache::open(config);
        CHECK(read_range(cache, cache.id_of("shard-000.tar"), 3 * kExtent, 2 * kExtent) ==
              origin_range(dir / "shard-000.tar", 3 * kExtent, 2 * kExtent));
        CHECK(read_range(cache, cache.id_of("small.jpg"), 0, 5000) == test::slurp(dir / "small.jpg"));
    }
    {
        auto cache = Cache::open(config);
        CHECK(read_range(cache, cache.id_of("shard-000.tar"), 3 * kExtent, 2 * kExtent) ==
              origin_range(dir / "shard-000.tar", 3 * kExtent, 2 * kExtent));
        CHECK(read_range(cache, cache.id_of("small.jpg"), 0, 5000) == test::slurp(dir / "small.jpg"));
        CHECK(cache.stats().origin_bytes_read == 0);  // both extents and the small file: warm from the index
        // An extent not read before comes from the origin.
        CHECK(read_range(cache, cache.id_of("shard-000.tar"), 9 * kExtent, 100) == origin_range(dir / "shard-000.tar", 9 * kExtent, 100));
        CHECK(cache.stats().origin_bytes_read == kExtent);
    }
    {
        auto cache = Cache::open(config.extent("512KiB"));
        CHECK(read_range(cache, cache.id_of("small.jpg"), 0, 5000) == test::slurp(dir / "small.jpg"));
        CHECK(cache.stats().origin_bytes_read == 5000);  // the index was for 256 KiB extents: cold
    }
}

TEST_CASE("a sparse 64 GiB file reads at random offsets with a small dram tier and nvme", "[extents][nvme]") {
    test::TempDir dir, nvme;
    const std::uint64_t size = std::uint64_t{64} << 30;
    const auto path = dir / "sparse.npy";
    {
        const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        const test::Bytes marks = test::make_bytes(6, 8192);
        for (const std::uint64_t at : {std::uint64_t{0}, size / 3, size - 8192})  // some bytes that are not zero
            REQUIRE(::pwrite(fd, marks.data(), marks.size(), static_cast<off_t>(at)) == static_cast<ssize_t>(marks.size()));
        ::close(fd);
    }
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("4MiB").nvme(nvme.path(), "64MiB"));
    const SampleId id = cache.id_of("sparse.npy");
    std::mt19937_64 rng(7);
    std::vector<std::uint64_t> offsets = {0, size / 3 - 100, size - 4096, size - 1};
    for (int i = 0; i < 40; ++i) offsets.push_back(rng() % size);
    for (int pass = 0; pass < 2; ++pass)
        for (const std::uint64_t at : offsets) REQUIRE(read_range(cache, id, at, 4096) == origin_range(path, at, 4096));
    const Stats s = cache.stats();
    CHECK(s.origin_bytes_read <= offsets.size() * 2 * kDefaultExtentBytes);  // the extents read, never the file
    CHECK(s.tiers[0].used_bytes <= s.tiers[0].capacity_bytes);
    CHECK(s.tiers[1].used_bytes <= s.tiers[1].capacity_bytes);
}

TEST_CASE("an attached client reads a large file's extents from shared memory and the rest from the owner", "[extents][shared]") {
    test::TempDir dir;
    const std::uint64_t size = 9 * kExtent + 3;
    test::write_file(dir / "big.h5", test::make_bytes(8, size));
    const std::string name = "test-extents-" + std::to_string(::getpid());
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").extent("256KiB").share(name));
    AttachedCache client = Cache::attach(name);
    const SampleId id = client.id_of("big.h5");
    // The owner holds extents 2 and 3 to begin with: client reads copy what is resident from
    // shared memory and ask the owner for the rest.
    CHECK(read_range(owner, id, 2 * kExtent, 2 * kExtent) == origin_range(dir / "big.h5", 2 * kExtent, 2 * kExtent));
    std::mt19937_64 rng(9);
    for (int i = 0; i < 100; ++i) {
        const std::uint64_t at = rng() % size;
        const std::size_t n = 1 + rng() % (2 * kExtent);
        REQUIRE(read_range(client, id, at, n) == origin_range(dir / "big.h5", at, n));
    }
    CHECK(read_range(client, id, 0, size) == test::slurp(dir / "big.h5"));
    CHECK(owner.stats().origin_bytes_read == size);
}

TEST_CASE("a sequential reader of a large file has the next extents read ahead; a random one does not", "[extents][readahead]") {
    test::TempDir dir;
    const std::uint64_t size = 40 * kExtent;
    test::write_file(dir / "stream.tar", test::make_bytes(12, size));
    test::write_file(dir / "random.mdb", test::make_bytes(13, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB").extent("256KiB").readahead(6));
    auto resident = [&] { return cache.stats().tiers[0].resident_samples; };

    // Front to back in 64 KiB reads, as tar and cat do: after two extents, the next six are
    // fetched by the readahead threads without being read.
    const SampleId stream = cache.id_of("stream.tar");
    for (std::uint64_t at = 0; at < 2 * kExtent + 64 * 1024; at += 64 * 1024)
        REQUIRE(read_range(cache, stream, at, 64 * 1024) == origin_range(dir / "stream.tar", at, 64 * 1024));
    CHECK(test::eventually([&] { return resident() == 3 + 6; }));
    // Reading on keeps the window ahead of the reader, and every byte equals the origin's.
    for (std::uint64_t at = 2 * kExtent + 64 * 1024; at < size; at += 64 * 1024)
        REQUIRE(read_range(cache, stream, at, 64 * 1024) == origin_range(dir / "stream.tar", at, 64 * 1024));
    CHECK(test::eventually([&] { return resident() == 40; }));
    CHECK(cache.stats().origin_bytes_read == size);  // each extent once: a readahead and a read never both fetch it

    // Random 4 KiB reads never continue a stream: only the extents read are fetched.
    const SampleId random = cache.id_of("random.mdb");
    std::mt19937_64 rng(14);
    std::set<std::uint64_t> touched;
    for (int i = 0; i < 12; ++i) {
        const std::uint64_t at = (rng() % 40) * kExtent + 8192 * (1 + rng() % 16);
        touched.insert(at / kExtent);
        REQUIRE(read_range(cache, random, at, 4096) == origin_range(dir / "random.mdb", at, 4096));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a wrongly queued readahead would land by now
    CHECK(resident() == 40 + touched.size());
}

namespace extents_test {

// An origin whose reads each take 50 ms, counting how many are under way at once.
class OverlapOrigin : public Origin {
public:
    using Origin::Origin;
    std::atomic<int> in_flight{0}, most{0};

protected:
    std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest, AfterRead after) override {
        const int now = ++in_flight;
        for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {}
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const std::size_t n = Origin::read_impl(relpath, offset, dest, after);
        --in_flight;
        return n;
    }
};

}  // namespace extents_test

TEST_CASE("one read across several missing extents fetches them at once, not one after the other", "[extents]") {
    test::TempDir dir;
    const std::uint64_t size = 8 * kExtent;
    test::write_file(dir / "records.bin", test::make_bytes(15, size));
    auto origin = std::make_unique<OverlapOrigin>(dir.path());
    OverlapOrigin& seen = *origin;
    OwnerCache cache(Config{}.origin(dir.path()).dram("64MiB").extent("256KiB").readahead(0), std::move(origin));
    const SampleId id = cache.id_of("records.bin");
    CHECK(read_range(cache, id, kExtent / 2, 4 * kExtent) == origin_range(dir / "records.bin", kExtent / 2, 4 * kExtent));
    CHECK(seen.most >= 2);  // 5 extents, 50 ms each: the other threads' reads overlap the reader's
    CHECK(cache.stats().origin_bytes_read == 5 * kExtent);
}
