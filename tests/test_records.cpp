// Records (record.hpp): plans, reads, prefetches and the loader over byte ranges of files, as a
// tar shard's members are; several records share an extent, and a shuffled record plan is
// served by next use like a plan of files.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "../fuse/plan_parser.hpp"

#include "support.hpp"

using namespace tiercache;

namespace records_test {

constexpr std::uint64_t kShardExtent = 64 * 1024;
constexpr std::uint64_t kRecordBytes = 16 * 1024;  // 4 to an extent

test::Bytes shard_range(const test::fs::path& file, std::uint64_t offset, std::size_t n) {
    test::Bytes out(n);
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
    ::close(fd);
    REQUIRE(got == static_cast<ssize_t>(n));
    return out;
}

// Records of `length` bytes every `length` bytes of file `id`, up to its end.
std::vector<Record> cut(const Catalog& catalog, SampleId id, std::uint64_t length) {
    std::vector<Record> out;
    for (std::uint64_t at = 0; at < catalog.size_of(id); at += length) out.push_back({id, at, std::min(length, catalog.size_of(id) - at)});
    return out;
}

using Uses = std::vector<NextUse::PlannedUse>;

}  // namespace records_test

using namespace records_test;

TEST_CASE("records: a record's checks name the file and what is wrong", "[records]") {
    test::TempDir dir;
    test::write_file(dir / "a.tar", test::make_bytes(1, 1000));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("8MiB"));
    const Catalog& c = cache.catalog();
    CHECK(record_problem(c, {0, 0, 1000}).empty());
    CHECK(record_problem(c, {0, 1000, 0}).empty());  // empty, at the very end
    CHECK_THAT(record_problem(c, {0, 999, 2}), Catch::Contains("past the end") && Catch::Contains("'a.tar' (1000 bytes)"));
    CHECK_THAT(record_problem(c, {0, UINT64_MAX, 2}), Catch::Contains("overflows"));
    CHECK_THAT(record_problem(c, {7, 0, 1}), Catch::Contains("file id 7 is outside"));
    CHECK(whole_file(c, 0) == Record{0, 0, 1000});

    test::Bytes out(64);
    CHECK_THROWS_AS(cache.read(Record{0, 990, 20}, out), std::invalid_argument);
    CHECK_THROWS_AS(cache.read(Record{3, 0, 1}, out), UnknownSample);
    CHECK_THROWS_AS(cache.set_plan(std::vector<Record>{{0, 0, 10}, {0, 500, 501}}), std::invalid_argument);
    CHECK_THROWS_AS(cache.prefetch(Record{0, 1001, 0}), std::invalid_argument);
}

TEST_CASE("records: read(record) gives the origin's bytes, cut to the record or the buffer", "[records]") {
    test::TempDir dir;
    const std::uint64_t size = 10 * kShardExtent + 123;
    test::write_file(dir / "shard.tar", test::make_bytes(2, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB"));
    const SampleId id = cache.id_of("shard.tar");
    std::mt19937_64 rng(5);
    for (int i = 0; i < 300; ++i) {
        const std::uint64_t offset = rng() % size;
        const std::uint64_t length = rng() % std::min<std::uint64_t>(size - offset + 1, 3 * kShardExtent);
        test::Bytes out(static_cast<std::size_t>(length) + 17);  // room to spare: only the record comes
        REQUIRE(cache.read(Record{id, offset, length}, out) == length);
        out.resize(static_cast<std::size_t>(length));
        REQUIRE(out == shard_range(dir / "shard.tar", offset, static_cast<std::size_t>(length)));
    }
    test::Bytes small(10);  // a buffer shorter than the record: its first bytes
    REQUIRE(cache.read(Record{id, 5, 1000}, small) == 10);
    CHECK(small == shard_range(dir / "shard.tar", 5, 10));
}

TEST_CASE("records: an extent used several times in an epoch is ranked by its next pending use", "[records][nextuse]") {
    NextUse next_use(3);
    const std::size_t tier = next_use.add_tier();
    for (ExtentId e = 0; e < 3; ++e) next_use.inserted(tier, e);
    // Positions: 0 e0@0, 1 e1@0, 2 e0@100, 3 e2@0, 4 e0@200.
    const Uses uses{{0, 0}, {1, 0}, {0, 100}, {2, 0}, {0, 200}};
    next_use.set(NextUse::kLocalJob, uses, {}, 5);
    CHECK(next_use.key(0) == 0);
    CHECK(next_use.consistent());

    next_use.consume(0, 0, 50);  // the record at 0
    CHECK(next_use.key(0) == 2);
    next_use.consume(0, 10, 60);  // a later chunk of it: starts no use
    CHECK(next_use.key(0) == 2);
    next_use.consume(0, 150, 250);  // the record at 200 first (another worker ran ahead)
    CHECK(next_use.key(0) == 2);    // the one at 100 is still to come
    CHECK(next_use.jobs()[0].read == 2);
    next_use.consume(0, 100, 101);
    CHECK(next_use.key(0) >= NextUse::kFar);  // every use read: furthest
    next_use.consume(0, 0, 1000);  // read again: nothing left to use up
    CHECK(next_use.jobs()[0].read == 3);
    CHECK(next_use.key(1) == 1);
    CHECK(next_use.furthest(tier) == ExtentId{0});
    CHECK(next_use.consistent());

    // Two jobs: a read uses up the soonest use of the two; a tie goes to the first job.
    next_use.set(2, Uses{{2, 0}});  // its timeline starts at "now", 3 reads on: e2 at 3, as the local job's
    next_use.consume(2, 0, 1);
    CHECK(next_use.jobs()[0].read == 4);
    CHECK(next_use.jobs()[1].read == 0);
    next_use.consume(2, 0, 1);  // read again: the other job's use
    CHECK(next_use.jobs()[1].read == 1);
    CHECK(next_use.consistent());
}

TEST_CASE("records: the plan's uses start at each record's first byte in each extent it touches", "[records]") {
    test::TempDir dir;
    test::write_file(dir / "s.tar", test::make_bytes(3, 4 * kShardExtent));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB"));
    const std::vector<Record> records{{0, 100, 50}, {0, kShardExtent - 10, kShardExtent + 20}, {0, 3 * kShardExtent, 0}, {0, 2 * kShardExtent, kShardExtent}};
    CHECK(cache.uses_in_order(records) == Uses{{0, 100}, {0, static_cast<std::uint32_t>(kShardExtent - 10)}, {1, 0}, {2, 0}, {2, 0}});
}

TEST_CASE("records: a truly shuffled record plan over a shard twice the dram tier hits at least the tier's fraction", "[records][plan]") {
    test::TempDir dir;
    const std::uint64_t size = 128 * kShardExtent;  // 8 MiB, 512 records, over a 4 MiB dram tier
    test::write_file(dir / "shard-0.tar", test::make_bytes(4, size));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("4MiB").extent("64KiB"));
    const std::vector<Record> records = cut(cache.catalog(), 0, kRecordBytes);
    REQUIRE(records.size() == 512);
    const double fraction = static_cast<double>(cache.stats().tiers[0].capacity_bytes) / static_cast<double>(size);

    std::uint64_t hits_before = 0, origin_before = 0;
    for (std::uint64_t epoch = 0; epoch < 3; ++epoch) {
        const EpochPlan plan(records.size(), 7, epoch);
        cache.set_plan(plan, records);
        for (const SampleId i : plan.order()) {
            test::Bytes out(kRecordBytes);
            REQUIRE(cache.read(records[i], out) == kRecordBytes);
            REQUIRE(out == shard_range(dir / "shard-0.tar", records[i].offset, kRecordBytes));
        }
        const Stats s = cache.stats();
        const double hit_rate = static_cast<double>(s.tiers[0].hits - hits_before) / static_cast<double>(records.size());
        WARN("epoch " << epoch << ": hit rate " << hit_rate << ", origin bytes " << s.origin_bytes_read - origin_before);
        CHECK(s.tiers[0].used_bytes <= s.tiers[0].capacity_bytes);
        CHECK(hit_rate >= fraction);
        hits_before = s.tiers[0].hits, origin_before = s.origin_bytes_read;
    }
    CHECK(cache.stats().plan_samples == records.size());
}

TEST_CASE("records: the prefetcher follows a record plan, a record's window moved by the read that starts it", "[records][prefetch]") {
    test::TempDir dir;
    test::write_file(dir / "s.tar", test::make_bytes(5, 32 * kShardExtent));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB"));
    std::vector<Record> order = cut(cache.catalog(), 0, kRecordBytes);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(9));
    Prefetcher prefetcher(cache, PrefetchOptions{}.threads(2).window_samples(8));
    prefetcher.start(order);
    CHECK(prefetcher.position() == 0);
    prefetcher.consumed(0, order[3].offset, kRecordBytes);  // the reader is at position 3
    CHECK(prefetcher.position() == 4);
    prefetcher.consumed(0, order[3].offset + 4096, 4096);  // a later chunk of it: no record starts there
    CHECK(prefetcher.position() == 4);
    CHECK(test::eventually([&] { return cache.stats().prefetch_fetched > 0; }));
}

TEST_CASE("records: the kernel's page-sized reads mark records read; the window moves to the first one not read, never jumps", "[records][prefetch]") {
    test::TempDir dir;
    test::write_file(dir / "s.tar", test::make_bytes(5, 32 * kShardExtent));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB"));
    std::vector<Record> order = cut(cache.catalog(), 0, 10'000);  // records that start off the page boundaries
    std::shuffle(order.begin(), order.end(), std::mt19937_64(10));
    Prefetcher prefetcher(cache, PrefetchOptions{}.threads(1).window_samples(64));  // 4 marks past a gap move over it
    prefetcher.start(order);
    // A read inside position p's record, as the kernel's READ of a record whose first page it
    // holds already (or its readahead into a neighbour): no record starts there.
    auto inside = [&](std::size_t p) { prefetcher.consumed(0, order[p].offset + 100, 100); };
    prefetcher.consumed(0, order[0].offset, order[0].length);  // a read from a record's first byte names it
    CHECK(prefetcher.position() == 1);
    inside(5);  // a neighbour read ahead: marked, not jumped to
    CHECK(prefetcher.position() == 1);
    for (std::size_t p = 1; p <= 4; ++p) inside(p);
    CHECK(prefetcher.position() == 6);  // past 1 to 4 and the 5 marked earlier
    for (std::size_t p = 8; p <= 11; ++p) inside(p);  // 6 and 7 never asked for (their pages read ahead)
    CHECK(prefetcher.position() == 12);  // four marked past them: the reader has moved on
    inside(200);  // beyond the window: a neighbour far off in the plan, not marked
    CHECK(prefetcher.position() == 12);
    const std::uint64_t page = order[12].offset / 4096 * 4096;  // a page-aligned read over 12's first byte
    REQUIRE(page != order[12].offset);
    prefetcher.consumed(0, page, order[12].offset - page + 1);
    CHECK(prefetcher.position() >= 13);
    prefetcher.consumed(0, order[40].offset, 10);  // the API's read of a record: at once
    CHECK(prefetcher.position() == 41);
}

TEST_CASE("records: the loader batches records in plan order, each equal to its bytes in the file", "[records][loader]") {
    test::TempDir dir;
    test::write_file(dir / "a.tar", test::make_bytes(6, 7 * kShardExtent + 11));
    test::write_file(dir / "b.tar", test::make_bytes(7, 3 * kShardExtent));
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("1MiB").extent("64KiB"));
    std::vector<Record> records = cut(cache.catalog(), 0, 5000);
    for (const Record& r : cut(cache.catalog(), 1, 30000)) records.push_back(r);
    records.push_back({1, 10, 0});  // an empty member
    const EpochPlan plan(records.size(), 3, 0);
    EpochLoader loader(cache, records, plan, {.batch = 16, .depth = 2, .threads = 3, .prefetch_window = 32});
    std::size_t position = 0;
    while (auto batch = loader.next()) {
        for (std::size_t i = 0; i < batch->size(); ++i, ++position) {
            const Record& want = records[plan[position]];
            REQUIRE(batch->records()[i] == want);
            CHECK(batch->ids()[i] == want.file);
            const auto got = batch->sample(i);
            REQUIRE(test::Bytes(got.begin(), got.end()) ==
                    shard_range(dir / std::string(cache.catalog().path(want.file)), want.offset, static_cast<std::size_t>(want.length)));
        }
    }
    CHECK(position == records.size());
    CHECK_THROWS_AS(EpochLoader(cache, records, EpochPlan(records.size() + 1, 3, 0), {}), std::invalid_argument);
    std::vector<Record> bad = records;
    bad.push_back({0, 7 * kShardExtent, 12});
    CHECK_THROWS_AS(EpochLoader(cache, bad, EpochPlan(bad.size(), 3, 0), {}), std::invalid_argument);
}

TEST_CASE("records: an attached client's record plan and prefetch reach the owner", "[records][shared]") {
    test::TempDir dir;
    test::write_file(dir / "s.tar", test::make_bytes(8, 16 * kShardExtent));
    const std::string name = "test-records-" + std::to_string(::getpid());
    OwnerCache owner(Config{}.origin(dir.path()).dram("16MiB").extent("64KiB").share(name));
    AttachedCache client = Cache::attach(name);
    const std::vector<Record> records = cut(client.catalog(), 0, kRecordBytes);
    client.set_plan(records);
    CHECK(owner.stats().plan_samples == records.size());
    CHECK_THROWS_AS(client.set_plan(std::vector<Record>{{0, 16 * kShardExtent, 1}}), std::invalid_argument);
    CHECK(client.prefetch(records[5]) == Cache::Prefetched::fetched);
    CHECK(client.prefetch(records[5]) == Cache::Prefetched::resident);  // from shared memory, no round trip
    test::Bytes out(kRecordBytes);
    REQUIRE(client.read(records[9], out) == kRecordBytes);
    CHECK(out == shard_range(dir / "s.tar", records[9].offset, kRecordBytes));
}

TEST_CASE("records: plan lines `PATH OFFSET LENGTH` name records; a file named like one is that file", "[records][plan]") {
    const std::vector<std::pair<std::string, std::uint64_t>> files = {{"a.tar", 1000}, {"b c.tar", 500}, {"x 0 10", 40}, {"x", 30}};
    auto resolve = [&](std::string_view path) -> fuse::PlanTarget {
        for (std::size_t i = 0; i < files.size(); ++i)
            if (files[i].first == path) return {static_cast<SampleId>(i), false, files[i].second};
        if (path == "dir") return {std::nullopt, true, 0};
        return {};
    };
    auto parse = [&](std::string_view text) {
        fuse::PlanParser parser(files.size(), resolve);
        const int err = parser.feed(text) ? parser.error() : parser.finish();
        return std::pair{err, err ? parser.error_message() : std::string()};
    };
    {
        fuse::PlanParser parser(files.size(), resolve);
        REQUIRE(parser.feed("a.tar 512 100\nb c.tar\t0 \t 500\nx 0 10\nx 5 10  \na.tar\na.tar 1000 0\n") == 0);
        REQUIRE(parser.finish() == 0);
        const fuse::ParsedPlan plan = parser.take();
        CHECK(plan.kind == fuse::ParsedPlan::Kind::paths);
        CHECK(plan.any_record);
        CHECK(plan.records == std::vector<Record>{{0, 512, 100}, {1, 0, 500}, {2, 0, 40}, {3, 5, 10}, {0, 0, 1000}, {0, 1000, 0}});
    }
    CHECK_THAT(parse("a.tar 900 101\n").second, Catch::Contains("line 1") && Catch::Contains("past the end") && Catch::Contains("1000 bytes"));
    CHECK_THAT(parse("a.tar 18446744073709551615 2\n").second, Catch::Contains("past the end"));
    CHECK_THAT(parse("a.tar 18446744073709551616 1\n").second, Catch::Contains("offset") && Catch::Contains("64 bits"));
    CHECK_THAT(parse("a.tar 0 99999999999999999999\n").second, Catch::Contains("length") && Catch::Contains("64 bits"));
    CHECK_THAT(parse("nope.tar 0 1\n").second, Catch::Contains("a record of no file") && Catch::Contains("nope.tar"));
    CHECK_THAT(parse("dir 0 1\n").second, Catch::Contains("directory"));
    CHECK_THAT(parse("/a.tar 0 1\n").second, Catch::Contains("absolute"));
    CHECK_THAT(parse("../a.tar 0 1\n").second, Catch::Contains("'..' component"));
    CHECK_THAT(parse("a.tar 0 -5\n").second, Catch::Contains("no such file"));
    CHECK_THAT(parse("a.tar 5\n").second, Catch::Contains("no such file"));
    CHECK(parse("a.tar 0 1\n").first == 0);
}
