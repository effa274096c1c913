// Epoch plans, the plan-aware policy and the prefetcher.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "support.hpp"

using namespace tiercache;
using namespace std::chrono_literals;

namespace {

// `count` samples of `size` bytes each, so that a capacity fraction is exact.
void make_uniform_dataset(const test::fs::path& root, int count, std::size_t size) {
    for (int i = 0; i < count; ++i)
        test::write_file(root / ("c" + std::to_string(i % 4)) / ("s" + std::to_string(i) + ".bin"), test::make_bytes(i, size));
}

std::vector<SampleId> as_vector(std::span<const SampleId> s) { return {s.begin(), s.end()}; }

// An origin whose reads of every file but one block until the gate opens.
class GatedOrigin : public Origin {
public:
    GatedOrigin(std::filesystem::path root, std::string free_path) : Origin(std::move(root)), free_(std::move(free_path)) {}
    void open_gate() {
        {
            std::lock_guard lock(mutex_);
            open_ = true;
        }
        opened_.notify_all();
    }
    int blocked() {
        std::lock_guard lock(mutex_);
        return blocked_;
    }

protected:
    std::size_t read_impl(const std::string& path, std::uint64_t offset, std::span<std::byte> dest,
                          tiercache::AfterRead after) override {
        if (path != free_) {
            std::unique_lock lock(mutex_);
            ++blocked_;
            opened_.wait(lock, [&] { return open_; });
        }
        return Origin::read_impl(path, offset, dest, after);
    }

private:
    const std::string free_;
    std::mutex mutex_;
    std::condition_variable opened_;
    bool open_ = false;  // protected by mutex_
    int blocked_ = 0;    // protected by mutex_
};

}  // namespace

TEST_CASE("an epoch plan is pinned for a known seed and the same in every process", "[plan]") {
    // xoshiro256** Fisher-Yates from (seed 42, epoch 0): changing these breaks every
    // process that shares a cache with an older build, so never change them.
    const EpochPlan plan(10, 42, 0);
    CHECK(as_vector(plan.order()) == std::vector<SampleId>{4, 6, 3, 2, 7, 1, 9, 8, 5, 0});
    CHECK(as_vector(EpochPlan(10, 42, 0).order()) == as_vector(plan.order()));
    CHECK(as_vector(EpochPlan(10, 42, 1).order()) != as_vector(plan.order()));
    CHECK(as_vector(EpochPlan(10, 43, 0).order()) != as_vector(plan.order()));

    const EpochPlan big(100000, 7, 3);
    std::vector<SampleId> sorted = as_vector(big.order());
    std::sort(sorted.begin(), sorted.end());
    std::vector<SampleId> all(100000);
    std::iota(all.begin(), all.end(), 0);
    CHECK(sorted == all);  // a permutation
    CHECK(big.next_epoch()->epoch() == 4);
    CHECK(as_vector(big.next_epoch()->order()) == as_vector(EpochPlan(100000, 7, 4).order()));
}

TEST_CASE("plans shard as PyTorch's DistributedSampler does", "[plan]") {
    const EpochPlan whole(10, 42, 0);
    // Padding: 10 samples over 3 ranks is 4 each; the shuffled list repeats its start.
    std::vector<SampleId> padded = as_vector(whole.order());
    padded.push_back(whole[0]);
    padded.push_back(whole[1]);
    std::multiset<SampleId> seen;
    for (std::uint32_t rank = 0; rank < 3; ++rank) {
        const EpochPlan shard(10, 42, 0, rank, 3);
        REQUIRE(shard.size() == 4);
        for (std::size_t i = 0; i < shard.size(); ++i) CHECK(shard[i] == padded[rank + 3 * i]);
        seen.insert(shard.order().begin(), shard.order().end());
    }
    CHECK(seen.size() == 12);
    for (SampleId id = 0; id < 10; ++id) CHECK(seen.count(id) >= 1);

    // drop_last: ceil((10 - 3) / 3) = 3 each, the last sample of the shuffle dropped.
    for (std::uint32_t rank = 0; rank < 3; ++rank) {
        const EpochPlan shard(10, 42, 0, rank, 3, true);
        REQUIRE(shard.size() == 3);
        for (std::size_t i = 0; i < shard.size(); ++i) CHECK(shard[i] == whole[rank + 3 * i]);
    }
    CHECK(EpochPlan::per_rank(10, 3, false) == 4);
    CHECK(EpochPlan::per_rank(10, 3, true) == 3);
    CHECK(EpochPlan::per_rank(9, 3, true) == 3);
    CHECK(EpochPlan(2, 1, 0, 4, 5).size() == 1);  // padding past the list's own length
    // A hostile world size costs nothing: the padded list is never built.
    const EpochPlan huge(10, 42, 0, 4'000'000'000u, 4'294'967'295u);
    REQUIRE(huge.size() == 1);
    CHECK(huge[0] == whole[4'000'000'000u % 10]);

    CHECK_THROWS_WITH(EpochPlan(10, 1, 0, 3, 3), Catch::Contains("rank 3 is outside a world of 3"));
    CHECK_THROWS_WITH(EpochPlan(10, 1, 0, 0, 0), Catch::Contains("world size"));
    CHECK_THROWS_WITH(EpochPlan(2, 1, 0, 0, 3, true), Catch::Contains("cannot be split"));
    CHECK_THROWS_WITH(EpochPlan::from_order({1, 5}, 3), Catch::Contains("sample id 5 outside"));
    CHECK_FALSE(EpochPlan::from_order({2, 0}, 3).next_epoch());
}

namespace {

// The policy simulation: the real cache over a uniform synthetic dataset, epochs read in
// their plan's order, every policy on the same traces. Demand-only: each sample is read once
// an epoch, so a hit needs the sample held across the epoch's start, and no policy can hit
// more than a fraction f (MIN included: plan = no-evict = f, LRU far below). With a lookahead
// (what the Prefetcher does, here in step so the figures are exact) the plan policy makes
// room for the window by dropping what is needed latest, so the reader almost always hits
// while the origin still reads only the 1 - f not kept; no-evict cannot make room, and LRU
// hits but drops what the next epoch wants first.
struct SimResult {
    double hit_rate = 0;      // reads served by a memory tier, epochs 2..4
    double origin_share = 0;  // origin bytes per epoch / dataset bytes, epochs 2..4
    double dram_hit_rate = 0;
};

SimResult simulate(const test::fs::path& origin, const char* policy, int samples, std::size_t size, Config config,
                   std::size_t lookahead) {
    constexpr int kEpochs = 4;
    auto cache = Cache::open(config.origin(origin).policy(policy));
    test::Bytes buf(size);
    Stats before;
    for (int epoch = 0; epoch < kEpochs; ++epoch) {
        const EpochPlan plan(samples, 99, epoch);
        if (std::string(policy) == "plan") cache.set_plan(plan);
        if (epoch == 1) before = cache.stats();
        for (std::size_t p = 0; p < plan.size(); ++p) {
            if (lookahead > 0) {
                for (std::size_t q = p == 0 ? 0 : p + lookahead - 1; q < std::min(plan.size(), p + lookahead); ++q)
                    cache.prefetch(plan[q]);
            }
            REQUIRE(cache.read(plan[p], 0, buf) == size);
        }
    }
    const Stats after = cache.stats();
    const double reads = (kEpochs - 1.0) * samples;
    SimResult r;
    std::uint64_t hits = 0;
    for (std::size_t t = 0; t < after.tiers.size(); ++t) {
        hits += after.tiers[t].hits - before.tiers[t].hits;
        CHECK(after.tiers[t].used_bytes <= after.tiers[t].capacity_bytes);
    }
    r.hit_rate = static_cast<double>(hits) / reads;
    r.dram_hit_rate = static_cast<double>(after.tiers[0].hits - before.tiers[0].hits) / reads;
    r.origin_share = static_cast<double>(after.origin_bytes_read - before.origin_bytes_read) / (reads * static_cast<double>(size));
    return r;
}

std::string percent(double x) { return std::to_string(static_cast<int>(x * 1000 + 0.5) / 10.0).substr(0, 4); }

}  // namespace

TEST_CASE("plan-aware placement: plan >= no-evict >= LRU at f = 0.25, 0.5, 0.75", "[plan][policy]") {
    constexpr int kSamples = 400;
    constexpr std::size_t kSize = 8192;
    constexpr std::size_t kLookahead = 20;  // 5% of the dataset
    test::TempDir dir;
    make_uniform_dataset(dir.path(), kSamples, kSize);

    std::string report = "f     policy   demand-only hits  with lookahead: hits  origin/epoch\n";
    for (double f : {0.25, 0.5, 0.75}) {
        const std::string budget = std::to_string(static_cast<std::uint64_t>(f * kSamples * kSize));
        std::map<std::string, SimResult> demand, ahead;
        for (const char* policy : {"plan", "noevict", "lru"}) {
            demand[policy] = simulate(dir.path(), policy, kSamples, kSize, Config{}.dram(budget), 0);
            ahead[policy] = simulate(dir.path(), policy, kSamples, kSize, Config{}.dram(budget), kLookahead);
            report += std::to_string(f).substr(0, 4) + "  " + policy + std::string(9 - std::strlen(policy), ' ') +
                      percent(demand[policy].hit_rate) + "%             " + percent(ahead[policy].hit_rate) + "%                 " +
                      percent(ahead[policy].origin_share) + "%\n";
        }
        // Demand-only: MIN's bound is f, which no-evict reaches too.
        CHECK(demand["plan"].hit_rate >= demand["noevict"].hit_rate - 0.005);
        CHECK(demand["noevict"].hit_rate >= demand["lru"].hit_rate);
        CHECK(demand["noevict"].hit_rate == Approx(f).margin(0.03));
        // With the plan's lookahead: the reader hits nearly always, and the origin reads only
        // what could not be kept across the epoch's start.
        CHECK(ahead["plan"].hit_rate > 0.97);
        CHECK(ahead["plan"].hit_rate >= ahead["lru"].hit_rate);
        CHECK(ahead["plan"].hit_rate > ahead["noevict"].hit_rate + 0.2);
        CHECK(ahead["plan"].origin_share <= ahead["noevict"].origin_share + 0.06);  // the window's room: lookahead / n
        CHECK(ahead["plan"].origin_share < ahead["lru"].origin_share - 0.1);
    }
    WARN("hit rates and origin reads, epochs 2-4, each read in its plan's order:\n" << report);
}

TEST_CASE("plan-aware placement across two tiers serves the reader from dram", "[plan][policy]") {
    constexpr int kSamples = 300;
    constexpr std::size_t kSize = 8192;
    test::TempDir dir, pmem;
    make_uniform_dataset(dir.path(), kSamples, kSize);
    const std::string quarter = std::to_string(kSamples * kSize / 4);
    std::map<std::string, SimResult> r;
    for (const char* policy : {"plan", "noevict"})
        r[policy] = simulate(dir.path(), policy, kSamples, kSize, Config{}.dram(quarter).pmem(pmem.path(), quarter), 15);
    WARN("dram and pmem of f = 0.25 each, with lookahead: plan: dram hits " << percent(r["plan"].dram_hit_rate) << "%, all "
         << percent(r["plan"].hit_rate) << "%, origin " << percent(r["plan"].origin_share) << "%; noevict: dram hits "
         << percent(r["noevict"].dram_hit_rate) << "%, all " << percent(r["noevict"].hit_rate) << "%, origin "
         << percent(r["noevict"].origin_share) << "%");
    CHECK(r["plan"].dram_hit_rate > 0.95);  // soonest in the fastest tier
    CHECK(r["plan"].dram_hit_rate > r["noevict"].dram_hit_rate + 0.5);
    CHECK(r["plan"].origin_share <= r["noevict"].origin_share + 0.06);
}

TEST_CASE("without a plan the plan policy is no-evict", "[plan][policy]") {
    test::TempDir dir;
    make_uniform_dataset(dir.path(), 100, 4096);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram(std::to_string(50 * 4096)));
    CHECK(cache.stats().policy == "plan");
    test::Bytes buf(4096);
    for (int epoch = 0; epoch < 2; ++epoch) {
        const EpochPlan plan(100, 1, epoch);
        for (SampleId id : plan.order()) cache.read(id, 0, buf);
    }
    const Stats s = cache.stats();
    CHECK(s.tiers[0].evictions == 0);
    CHECK(s.tiers[0].hits == Approx(50).margin(2));
    CHECK_FALSE(cache.stats().plan_samples);
    cache.set_plan(EpochPlan(100, 1, 2));
    CHECK(cache.stats().plan_samples == 100);
    cache.clear_plan();
    CHECK(cache.stats().plan_samples == 0);
}

TEST_CASE("the prefetcher brings the plan in ahead of the reader, within its window", "[plan][prefetch]") {
    constexpr int kSamples = 200;
    constexpr std::size_t kSize = 16384;
    test::TempDir dir;
    make_uniform_dataset(dir.path(), kSamples, kSize);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    const EpochPlan plan(kSamples, 3, 0);
    cache.set_plan(plan);

    SECTION("the window stops at its sample count and its bytes") {
        for (auto [samples, bytes] : {std::pair<std::size_t, std::uint64_t>{10, 1 << 30}, {1000, 5 * kSize}}) {
            auto fresh = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
            Prefetcher prefetcher(fresh, PrefetchOptions{}.threads(3).window_samples(samples).window_bytes(bytes));
            prefetcher.start(as_vector(plan.order()));
            const std::size_t expect = std::min<std::size_t>(samples, bytes / kSize);
            for (int i = 0; i < 2500 && fresh.stats().origin_bytes_read < expect * kSize; ++i) std::this_thread::sleep_for(2ms);
            std::this_thread::sleep_for(20ms);  // would it go past the window?
            CHECK(fresh.stats().prefetch_issued == expect);
            CHECK(fresh.stats().origin_bytes_read == expect * kSize);
            prefetcher.advance_to(4);  // the reader moved on: four more
            for (int i = 0; i < 500 && fresh.stats().prefetch_issued < expect + 4; ++i) std::this_thread::sleep_for(2ms);
            std::this_thread::sleep_for(20ms);
            CHECK(fresh.stats().prefetch_issued == expect + 4);
        }
    }
    SECTION("a reader in plan order then hits, and reads the origin's bytes") {
        auto prefetcher = std::make_unique<Prefetcher>(cache, PrefetchOptions{}.threads(4).window_samples(64));
        prefetcher->start(as_vector(plan.order()));
        test::Bytes buf(kSize);
        for (std::size_t p = 0; p < plan.size(); ++p) {
            if (p == 0)  // give the window time to fill once
                for (int i = 0; i < 500 && cache.stats().prefetch_fetched < 64; ++i) std::this_thread::sleep_for(2ms);
            const SampleId id = plan[p];
            REQUIRE(cache.read(id, 0, buf) == kSize);
            REQUIRE(buf == test::slurp(dir.path() / std::string(cache.catalog().path(id))));
            prefetcher->consumed(id);
        }
        const std::size_t position = prefetcher->position();
        prefetcher.reset();  // joins its threads: no fetch is still in flight when we count
        const Stats s = cache.stats();
        CHECK(s.origin_bytes_read == kSamples * kSize);  // each sample once, by whoever came first
        CHECK(s.prefetch_fetched + s.prefetch_raced + s.prefetch_resident == s.prefetch_issued);
        CHECK(s.tiers[0].hits >= 64);
        CHECK(position == kSamples);
    }
}

TEST_CASE("a reader does not wait behind the prefetch of other samples", "[plan][prefetch]") {
    // Every prefetch thread is stuck inside an origin read of another sample; the reader's
    // miss still completes: it goes to the origin itself, not behind them.
    constexpr int kSamples = 64;
    test::TempDir dir;
    make_uniform_dataset(dir.path(), kSamples, 4096);
    const EpochPlan plan(kSamples, 1, 0);
    // The catalog's ids follow sorted paths; find the last planned sample's path first.
    const std::string last_path = std::string(Cache::open(Config{}.origin(dir.path()).dram("1MiB")).catalog().path(plan[kSamples - 1]));
    auto gated = std::make_unique<GatedOrigin>(dir.path(), last_path);
    GatedOrigin& origin = *gated;
    OwnerCache cache(Config{}.origin(dir.path()).dram("16MiB"), std::move(gated));
    cache.set_plan(plan);
    {
        Prefetcher prefetcher(cache, PrefetchOptions{}.threads(2).window_samples(8));
        prefetcher.start(as_vector(plan.order()));
        for (int i = 0; i < 2000 && origin.blocked() < 2; ++i) std::this_thread::sleep_for(1ms);
        REQUIRE(origin.blocked() == 2);  // both threads are stuck

        const SampleId last = plan[kSamples - 1];  // outside the window
        test::Bytes buf(4096);
        REQUIRE(cache.read(last, 0, buf) == 4096);  // returns while the gate is still shut
        CHECK(buf == test::slurp(dir.path() / last_path));
        CHECK(origin.blocked() == 2);
        origin.open_gate();
    }  // the prefetcher joins its threads
}

TEST_CASE("new plans arriving while readers and a prefetcher work keep bytes and bounds right", "[plan][policy]") {
    constexpr int kSamples = 300;
    constexpr std::size_t kSize = 4096;
    test::TempDir dir;
    make_uniform_dataset(dir.path(), kSamples, kSize);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram(std::to_string(kSamples * kSize / 3)));
    Prefetcher prefetcher(cache, PrefetchOptions{}.threads(2).window_samples(32));
    std::atomic<bool> done{false};
    std::atomic<std::size_t> mismatches{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t)
        readers.emplace_back([&, t] {
            test::Bytes buf(kSize);
            for (int round = 0; round < 4; ++round) {
                const EpochPlan plan(kSamples, 50 + t, round);
                for (SampleId id : plan.order()) {
                    cache.read(id, 0, buf);
                    if (buf != test::slurp(dir.path() / std::string(cache.catalog().path(id)))) ++mismatches;
                    prefetcher.consumed(id);
                }
            }
        });
    std::thread planner([&] {
        for (int epoch = 0; !done; ++epoch) {
            const EpochPlan plan(kSamples, 9, epoch);
            cache.set_plan(plan);
            prefetcher.start(plan.order());
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    });
    for (auto& r : readers) r.join();
    done = true;
    planner.join();
    CHECK(mismatches == 0);
    const Stats s = cache.stats();
    CHECK(s.tiers[0].used_bytes <= s.tiers[0].capacity_bytes);
    CHECK(s.tiers[0].evictions > 0);
}
