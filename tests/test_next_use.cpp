// NextUse over several jobs' plans: the union rule, read attribution, the shared timeline,
// and what the plan policy makes of it for jobs sharing a memory tier.
#include <catch2/catch.hpp>
#include <tiercache/epoch_plan.hpp>
#include <tiercache/next_use.hpp>
#include <tiercache/policy.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <vector>

using namespace tiercache;

namespace {

using Order = std::vector<SampleId>;

// A memory tier of `capacity` equal-sized samples placed by the real PlanPolicy, as the
// cache's admit_into does: admit, then evict victim_for(incoming) until there is room.
class ToyTier {
public:
    ToyTier(NextUse& next_use, std::size_t samples, std::size_t capacity)
        : policy_(next_use), capacity_(capacity), resident_(samples, 0) {}

    // A read of `id` (consumed by the caller first, as Cache::read does); true on a hit.
    bool read(SampleId id) {
        std::lock_guard lock(placement_);
        if (resident_[id]) return true;
        if (!policy_.admit(id, 1, capacity_ - used_)) return false;
        while (used_ >= capacity_) {
            const auto victim = policy_.victim_for(id);
            if (!victim) return false;
            resident_[*victim] = 0;
            --used_;
            policy_.on_evict(*victim);
        }
        resident_[id] = 1;
        ++used_;
        policy_.on_insert(id);
        return false;
    }
    std::size_t used() {
        std::lock_guard lock(placement_);
        return used_;
    }
    std::size_t counted() {
        std::lock_guard lock(placement_);
        return static_cast<std::size_t>(std::count(resident_.begin(), resident_.end(), 1));
    }

private:
    PlanPolicy policy_;
    const std::size_t capacity_;
    std::mutex placement_;
    std::size_t used_ = 0;                // protected by placement_
    std::vector<std::uint8_t> resident_;  // protected by placement_
};

// Empties `tier` by asking for the furthest resident until none is left: the eviction order.
std::vector<SampleId> drain(NextUse& next_use, std::size_t tier) {
    std::vector<SampleId> out;
    while (const auto victim = next_use.furthest(tier)) {
        out.push_back(*victim);
        next_use.evicted(tier, *victim);
    }
    return out;
}

Order shuffled(std::size_t n, std::uint64_t seed) {
    Order order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    return order;
}

}  // namespace

TEST_CASE("one job through the single-plan API ranks by its plan as before", "[nextuse]") {
    NextUse next_use(12);
    const std::size_t tier = next_use.add_tier();
    for (SampleId id = 0; id < 12; ++id) next_use.inserted(tier, id);
    CHECK_FALSE(next_use.active());
    CHECK_FALSE(next_use.furthest(tier));  // no plan: no-evict

    const Order order{4, 6, 3, 2, 7, 1, 9, 8, 5, 0};  // 10 and 11 are another rank's
    const Order next{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    next_use.set(order, next);
    CHECK(next_use.active());
    CHECK(next_use.planned_samples() == 10);
    for (std::size_t p = 0; p < order.size(); ++p) CHECK(next_use.key(order[p]) == p);
    CHECK(next_use.key(10) == NextUse::kNotPlanned + 10);
    CHECK(next_use.furthest(tier) == SampleId{11});  // the unplanned first
    CHECK(next_use.furthest_after(tier, 4) == SampleId{11});
    CHECK(next_use.sooner_than_furthest(tier, 0));

    next_use.consume(4);  // read: its next use is the next epoch's
    next_use.consume(4);  // a second chunk: nothing more
    next_use.consume(10);  // unplanned: nothing
    CHECK(next_use.key(4) == 10 + 4);
    CHECK(next_use.key(10) == NextUse::kNotPlanned + 10);
    REQUIRE(next_use.jobs().size() == 1);
    CHECK(next_use.jobs()[0].job == NextUse::kLocalJob);
    CHECK(next_use.jobs()[0].samples == 10);
    CHECK(next_use.jobs()[0].read == 1);

    // Without a next order, read samples go furthest (after every planned one), the most
    // recently read first, and before the unplanned.
    next_use.set(order);
    for (std::size_t p = 0; p < order.size(); ++p) CHECK(next_use.key(order[p]) == 1 + p);  // "now" is 1 read on
    next_use.consume(4);
    next_use.consume(6);
    CHECK(next_use.key(4) >= NextUse::kFar);
    CHECK(next_use.key(4) < next_use.key(6));
    CHECK(drain(next_use, tier) == Order{11, 10, 6, 4, 0, 5, 8, 9, 1, 7, 2, 3});
    CHECK(next_use.consistent());
}

TEST_CASE("two jobs: the victim is the sample both need last", "[nextuse]") {
    NextUse next_use(6);
    const std::size_t tier = next_use.add_tier();
    const Order a{0, 1, 2, 3, 4, 5}, b{5, 4, 0, 1, 3, 2};
    next_use.set(1, a);
    next_use.set(2, b);
    // Union keys (soonest of the two positions): 0:0 1:1 2:2 3:3 4:1 5:0.
    for (SampleId id = 0; id < 6; ++id) next_use.inserted(tier, id);
    CHECK(next_use.furthest(tier) == SampleId{3});
    // Evicting one by one: the order of the union, never one that either job needs soon.
    CHECK(drain(next_use, tier) == Order{3, 2, 4, 1, 5, 0});

    for (SampleId id = 0; id < 6; ++id) next_use.inserted(tier, id);
    CHECK(next_use.planned_samples() == 12);
    next_use.remove(2);  // B ended: A's order alone
    CHECK(next_use.planned_samples() == 6);
    REQUIRE(next_use.jobs().size() == 1);
    CHECK(next_use.jobs()[0].job == 1);
    for (SampleId id = 0; id < 6; ++id) CHECK(next_use.key(id) == id);
    CHECK(drain(next_use, tier) == Order{5, 4, 3, 2, 1, 0});
    next_use.remove(2);  // unknown now: nothing
    CHECK(next_use.active());

    for (SampleId id = 0; id < 6; ++id) next_use.inserted(tier, id);
    next_use.set(2, b);
    next_use.clear();
    CHECK_FALSE(next_use.active());
    CHECK(next_use.planned_samples() == 0);
    CHECK(next_use.jobs().empty());
    CHECK_FALSE(next_use.furthest(tier));
    CHECK(next_use.consistent());

    next_use.set(3, b);  // back: the tier's residents are ranked again
    CHECK(drain(next_use, tier) == Order{2, 3, 1, 0, 4, 5});
    next_use.remove(3);  // the last plan going is a clear
    CHECK_FALSE(next_use.active());
    CHECK(next_use.consistent());
}

TEST_CASE("two jobs over random orders: every victim is the furthest by the soonest of both", "[nextuse]") {
    constexpr std::size_t kSamples = 1000;
    NextUse next_use(kSamples);
    const std::size_t tier = next_use.add_tier();
    const Order a = shuffled(kSamples, 1), b = shuffled(kSamples, 2);
    std::vector<std::uint64_t> soonest(kSamples, ~std::uint64_t{0});
    for (std::size_t p = 0; p < kSamples; ++p) {
        soonest[a[p]] = std::min<std::uint64_t>(soonest[a[p]], p);
        soonest[b[p]] = std::min<std::uint64_t>(soonest[b[p]], p);
    }
    std::mt19937_64 rng(3);
    std::vector<SampleId> held;
    for (SampleId id = 0; id < kSamples; ++id)
        if (rng() % 2) {
            next_use.inserted(tier, id);
            held.push_back(id);
        }
    next_use.set(7, a);
    next_use.set(9, b);
    const std::vector<SampleId> evicted = drain(next_use, tier);
    REQUIRE(evicted.size() == held.size());
    std::uint64_t previous = ~std::uint64_t{0};
    std::size_t out_of_order = 0;
    for (SampleId id : evicted) {
        CHECK(next_use.key(id) == soonest[id]);
        out_of_order += soonest[id] > previous;
        previous = soonest[id];
    }
    CHECK(out_of_order == 0);
}

TEST_CASE("a read uses up the soonest pending use, whichever job it was for", "[nextuse]") {
    NextUse next_use(10);
    const Order a{0, 1, 2, 4, 6, 3, 5, 7, 8, 9};  // x = 3 at position 5
    const Order b{3, 0, 1, 2, 4, 5, 6, 7, 8, 9};  // and at position 0
    next_use.set(1, a);
    next_use.set(2, b);
    CHECK(next_use.key(3) == 0);

    next_use.consume(3);  // B's use: it is B that needs it now
    auto jobs = next_use.jobs();
    REQUIRE(jobs.size() == 2);
    CHECK(jobs[0].job == 1);
    CHECK(jobs[0].read == 0);
    CHECK(jobs[1].job == 2);
    CHECK(jobs[1].read == 1);
    CHECK(next_use.key(3) == 5);  // A's use is next

    next_use.consume(3);  // then A's
    CHECK(next_use.jobs()[0].read == 1);
    CHECK(next_use.key(3) >= NextUse::kFar);  // no job knows its next epoch
    const std::uint64_t far = next_use.key(3);
    next_use.consume(3);  // used up in both: nothing changes
    CHECK(next_use.key(3) == far);
    CHECK(next_use.jobs()[0].read == 1);
    CHECK(next_use.jobs()[1].read == 1);
    CHECK(next_use.consistent());
}

TEST_CASE("a job registered after others have read starts at now", "[nextuse]") {
    NextUse next_use(30);
    Order a(10), b(10), c(10);
    std::iota(a.begin(), a.end(), 0);   // 0-9
    std::iota(b.begin(), b.end(), 10);  // 10-19
    std::iota(c.begin(), c.end(), 20);  // 20-29
    next_use.set(1, a);
    for (SampleId id = 0; id < 4; ++id) next_use.consume(id);  // A has read 4
    next_use.set(2, b);
    for (std::size_t p = 0; p < b.size(); ++p) CHECK(next_use.key(b[p]) == 4 + p);
    for (std::size_t p = 4; p < a.size(); ++p) CHECK(next_use.key(a[p]) == p);  // A's next read and B's first are level

    next_use.consume(10);
    next_use.consume(11);
    next_use.consume(12);  // B: 4 + 3 = 7 beats A's 0 + 4
    next_use.set(3, c);
    CHECK(next_use.key(20) == 7);
    next_use.set(1, a);  // A's next epoch starts at now too
    CHECK(next_use.key(0) == 7);
    CHECK(next_use.jobs()[0].read == 0);  // a new plan, no reads yet
    next_use.clear();
    next_use.set(1, a);  // nothing left: the timeline starts over
    CHECK(next_use.key(0) == 0);
}

TEST_CASE("at most 64 jobs hold plans", "[nextuse]") {
    NextUse next_use(4);
    const Order order{0, 1, 2, 3};
    for (NextUse::JobId job = 100; job < 100 + NextUse::kMaxJobs; ++job) next_use.set(job, order);
    CHECK_THROWS_AS(next_use.set(7, order), std::length_error);
    CHECK_THROWS_WITH(next_use.set(7, order), Catch::Contains("at most 64 jobs") && Catch::Contains("job 7"));
    CHECK(next_use.jobs().size() == NextUse::kMaxJobs);
    CHECK_NOTHROW(next_use.set(100, order));  // a known job's new plan is no new job
    next_use.remove(150);
    CHECK_NOTHROW(next_use.set(7, order));
    CHECK(next_use.planned_samples() == 4 * NextUse::kMaxJobs);
    CHECK(next_use.consistent());
}

namespace {

// Two jobs, each reading its own shuffled epochs (EpochPlan), one read each in turn, B
// starting a third of an epoch after A, over one ToyTier of half the dataset. A job registers
// each epoch's plan (with the next one's) as it starts, if `registered` says so. The hit rate
// of epochs 2-4, both jobs' reads together.
double two_job_hit_rate(bool register_a, bool register_b) {
    constexpr std::size_t kSamples = 2000;
    constexpr int kEpochs = 4;
    NextUse next_use(kSamples);
    ToyTier tier(next_use, kSamples, kSamples / 2);
    struct Reader {
        NextUse::JobId job;
        std::uint64_t seed;
        bool registered;
        std::size_t read = 0;  // over all epochs
        std::optional<EpochPlan> plan = {};  // this epoch's
    };
    Reader jobs[2] = {{1, 11, register_a}, {2, 22, register_b}};
    std::size_t hits = 0, counted = 0;
    const std::size_t lead = kSamples / 3;
    for (std::size_t step = 0;; ++step) {
        bool reading = false;
        for (Reader& r : jobs) {
            if (&r == &jobs[1] && step < lead) continue;
            if (r.read == kEpochs * kSamples) continue;
            reading = true;
            const std::size_t epoch = r.read / kSamples, position = r.read % kSamples;
            if (position == 0) {
                r.plan.emplace(kSamples, r.seed, epoch);
                if (r.registered) next_use.set(r.job, r.plan->order(), r.plan->next_epoch()->order());
            }
            const SampleId id = (*r.plan)[position];
            next_use.consume(id);
            const bool hit = tier.read(id);
            if (epoch >= 1) {
                ++counted;
                hits += hit;
            }
            ++r.read;
        }
        if (!reading) break;
    }
    REQUIRE(tier.used() <= kSamples / 2);
    REQUIRE(next_use.consistent());
    return static_cast<double>(hits) / static_cast<double>(counted);
}

}  // namespace

TEST_CASE("two jobs sharing a tier of half the dataset hit more with both plans than with one", "[nextuse][policy]") {
    const double both = two_job_hit_rate(true, true);
    const double one = two_job_hit_rate(true, false);
    const double none = two_job_hit_rate(false, false);  // no plan: no-evict
    CAPTURE(both, one, none);
    // No-evict keeps half the dataset: half of each job's reads hit.
    CHECK(none == Approx(0.5).margin(0.03));
    // With both plans, MIN keeps what either job wants next: well above what one plan gets,
    // whose reads of B's samples use up A's uses and whose keys ignore B.
    CHECK(both > 0.6);
    CHECK(both > one + 0.05);
    CHECK(both > none + 0.1);
}

TEST_CASE("plans set and removed while readers consume and place keep NextUse consistent", "[nextuse][policy]") {
    // Large enough that a rebuild takes a while: reads and placements land between its
    // snapshot and its swap, in numbers that take its catch-up rounds.
    constexpr std::size_t kSamples = 10000;
    NextUse next_use(kSamples);
    ToyTier dram(next_use, kSamples, kSamples / 4), pmem(next_use, kSamples, kSamples / 3);
    std::atomic<bool> done{false};
    std::atomic<std::size_t> plans{0}, inconsistent{0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t)
        readers.emplace_back([&, t] {
            // Two rounds at least, and 40 plans go by (within reason: the planner contends for the lock).
            for (int round = 0; round < 2 || (plans < 40 && std::chrono::steady_clock::now() < deadline); ++round) {
                const EpochPlan plan(kSamples, 100 + t, round);  // alive while its order is read
                for (SampleId id : plan.order()) {
                    next_use.consume(id);
                    next_use.consume(id);  // a second chunk
                    if (!dram.read(id)) pmem.read(id);
                }
            }
        });
    std::thread planner([&] {
        std::mt19937_64 rng(5);
        for (std::uint64_t epoch = 0; !done; ++epoch) {
            const NextUse::JobId job = rng() % 5;
            switch (rng() % 8) {
                case 0: next_use.remove(job); break;
                case 1: if (epoch % 5 == 0) next_use.clear(); break;
                default: {
                    const EpochPlan plan(kSamples, job, epoch);
                    if (rng() % 2) next_use.set(job, plan.order(), plan.next_epoch()->order());
                    else next_use.set(job, plan.order());
                }
            }
            if (epoch % 8 == 0 && !next_use.consistent()) ++inconsistent;  // between rebuilds
            ++plans;
        }
    });
    {
        // A tier added while plans come and go, filled from this thread.
        ToyTier extra(next_use, kSamples, kSamples / 5);
        const EpochPlan plan(kSamples, 77, 0);
        for (SampleId id : plan.order()) extra.read(id);
        CHECK(extra.used() == kSamples / 5);
        for (auto& r : readers) r.join();
        done = true;
        planner.join();
        CHECK(extra.used() == extra.counted());
    }
    CHECK(plans >= 40);
    CHECK(inconsistent == 0);
    CHECK(next_use.consistent());
    CHECK(dram.used() == dram.counted());
    CHECK(dram.used() <= kSamples / 4);
    CHECK(pmem.used() <= kSamples / 3);
    next_use.set(9, EpochPlan(kSamples, 9, 0).order());
    CHECK(next_use.consistent());
    CHECK(next_use.furthest(0).has_value());
}
