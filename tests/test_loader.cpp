// EpochLoader and PinnedBuffer: batches in plan order with the origin's bytes, the ring's
// memory, stall accounting, errors, and shutdown mid-epoch.
#include <catch2/catch.hpp>
#include <tiercache/tiercache.hpp>

#include <linux/capability.h>
#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "fake_cuda.hpp"
#include "support.hpp"

using namespace tiercache;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// How many times `needle` is in `text`.
std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
    return n;
}

// `count` files of mixed sizes: empty ones, 1-byte ones, a few of 1-3 MiB, the rest up to
// 200 KiB, in 4 class folders.
void make_mixed_dataset(const test::fs::path& root, int count, std::uint64_t seed = 11) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < count; ++i) {
        std::size_t size;
        if (i % 10 == 0) size = 0;
        else if (i % 10 == 1) size = 1;
        else if (i % 17 == 5) size = (1u << 20) + rng() % (2u << 20);
        else size = 100 + rng() % (200 * 1024);
        test::write_file(root / ("class" + std::to_string(i % 4)) / ("s" + std::to_string(i) + ".bin"), test::make_bytes(seed + i, size));
    }
}

// `count` files of `size` bytes.
void make_flat_dataset(const test::fs::path& root, int count, std::size_t size) {
    for (int i = 0; i < count; ++i) test::write_file(root / ("f" + std::to_string(i)), test::make_bytes(i, size));
}

// An origin that takes `delay` for every read, and fails reads of `failing` with EIO.
class SlowOrigin : public Origin {
public:
    SlowOrigin(test::fs::path root, std::chrono::microseconds delay, std::string failing = {})
        : Origin(std::move(root)), delay_(delay), failing_(std::move(failing)) {}

protected:
    std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest,
                          tiercache::AfterRead after) override {
        if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
        if (relpath == failing_) fail(EIO, relpath, "injected failure");
        return Origin::read_impl(relpath, offset, dest, after);
    }

private:
    std::chrono::microseconds delay_;
    std::string failing_;
};

std::unique_ptr<OwnerCache> slow_cache(const test::fs::path& root, std::chrono::microseconds delay, std::string failing = {},
                                  std::string dram = "64MiB") {
    return std::make_unique<OwnerCache>(Config{}.origin(root).dram(std::move(dram)),
                                   std::make_unique<SlowOrigin>(root, delay, std::move(failing)));
}

// Reads a whole epoch; checks ids and bytes against the origin and the plan. Returns the
// number of batches.
std::size_t check_epoch(Cache& cache, const test::fs::path& root, const EpochPlan& plan, const LoaderOptions& options) {
    INFO("batch " << options.batch << ", depth " << options.depth << ", threads " << options.threads << ", drop_last "
                  << options.drop_last << ", plan of " << plan.size());
    EpochLoader loader(cache, plan, options);
    const std::size_t b = options.batch;
    const std::size_t positions = options.drop_last ? plan.size() / b * b : plan.size();
    const std::size_t expect_batches = (positions + b - 1) / b;
    CHECK(loader.batches() == expect_batches);

    std::vector<SampleId> seen;
    std::size_t batches = 0, mismatches = 0, layout_errors = 0;
    while (auto batch = loader.next()) {
        REQUIRE(batch->index() == batches);
        const std::size_t want = std::min(b, positions - batches * b);
        REQUIRE(batch->size() == want);
        std::uint64_t offset = 0;
        for (std::size_t i = 0; i < batch->size(); ++i) {
            const SampleId id = batch->ids()[i];
            seen.push_back(id);
            if (batch->offsets()[i] != offset || batch->sizes()[i] != cache.size(id)) ++layout_errors;
            offset += batch->sizes()[i];
            const auto got = batch->sample(i);
            const test::Bytes want_bytes = test::slurp(root / std::string(cache.catalog().path(id)));
            if (!std::equal(got.begin(), got.end(), want_bytes.begin(), want_bytes.end())) ++mismatches;
        }
        CHECK(batch->bytes().size() == offset);  // contiguous, nothing between samples
        ++batches;
    }
    CHECK_FALSE(loader.next());  // and stays at the end
    CHECK(mismatches == 0);
    CHECK(layout_errors == 0);
    CHECK(batches == expect_batches);
    const std::vector<SampleId> want(plan.order().begin(), plan.order().begin() + static_cast<std::ptrdiff_t>(positions));
    CHECK(seen == want);
    return batches;
}

// ASan and TSan intercept mlock and ignore it (return 0, lock nothing), so what mlock really
// does can only be seen without them.
constexpr bool kMlockIntercepted = test::kSanitizerBuild;

// This process's locked memory (VmLck in /proc/self/status), in bytes.
std::uint64_t locked_bytes() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmLck:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    return 0;
}

}  // namespace

TEST_CASE("loader: batches equal the origin's bytes in plan order, over batch sizes, depths and threads", "[loader]") {
    test::TempDir dir;
    make_mixed_dataset(dir.path(), 61);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    const EpochPlan plan(cache.catalog().size(), 42, 0);
    REQUIRE(plan.size() == 61);

    SECTION("batch 1, depth 1, one thread") { check_epoch(cache, dir.path(), plan, {.batch = 1, .depth = 1, .threads = 1}); }
    SECTION("batch 7, depth 2, 3 threads: a partial last batch of 5") {
        CHECK(check_epoch(cache, dir.path(), plan, {.batch = 7, .depth = 2, .threads = 3}) == 9);
    }
    SECTION("batch 7 with drop_last: the partial batch is dropped") {
        CHECK(check_epoch(cache, dir.path(), plan, {.batch = 7, .depth = 3, .threads = 2, .drop_last = true}) == 8);
    }
    SECTION("batch 16, depth 8, 4 threads, two epochs (misses, then hits)") {
        check_epoch(cache, dir.path(), plan, {.batch = 16, .depth = 8, .threads = 4});
        check_epoch(cache, dir.path(), *plan.next_epoch(), {.batch = 16, .depth = 8, .threads = 4});
        CHECK(cache.stats().tiers[0].hits > 0);
    }
    SECTION("a batch larger than the plan") { CHECK(check_epoch(cache, dir.path(), plan, {.batch = 100, .depth = 4, .threads = 8}) == 1); }
    SECTION("a batch larger than the plan with drop_last: no batches") {
        CHECK(check_epoch(cache, dir.path(), plan, {.batch = 100, .depth = 4, .threads = 2, .drop_last = true}) == 0);
    }
    SECTION("an exact multiple: batch 61") { CHECK(check_epoch(cache, dir.path(), plan, {.batch = 61, .depth = 2, .threads = 2}) == 1); }
}

TEST_CASE("loader: a dram tier smaller than the dataset still gives the origin's bytes", "[loader]") {
    test::TempDir dir;
    make_mixed_dataset(dir.path(), 61, 5);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("2MiB"));
    const EpochPlan plan(cache.catalog().size(), 7, 3);
    check_epoch(cache, dir.path(), plan, {.batch = 5, .depth = 3, .threads = 4});
    check_epoch(cache, dir.path(), plan, {.batch = 5, .depth = 3, .threads = 4, .prefetch_window = 16});
}

TEST_CASE("loader: a sharded plan, rank 1 of 3, gives that rank's samples in order", "[loader]") {
    test::TempDir dir;
    make_mixed_dataset(dir.path(), 50, 3);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    const EpochPlan plan(cache.catalog().size(), 9, 2, 1, 3);
    REQUIRE(plan.size() == 17);  // 50 padded to 51, a third each
    CHECK(check_epoch(cache, dir.path(), plan, {.batch = 4, .depth = 2, .threads = 3}) == 5);
    CHECK(check_epoch(cache, dir.path(), plan, {.batch = 4, .depth = 2, .threads = 3, .drop_last = true}) == 4);
}

TEST_CASE("loader: batches of only empty samples, and an empty plan", "[loader]") {
    test::TempDir dir;
    for (int i = 0; i < 5; ++i) test::write_file(dir / ("empty" + std::to_string(i)), {});
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    const EpochPlan plan(cache.catalog().size(), 1, 0);
    CHECK(check_epoch(cache, dir.path(), plan, {.batch = 2, .depth = 2, .threads = 2}) == 3);

    const EpochPlan none = EpochPlan::from_order({}, cache.catalog().size());
    EpochLoader loader(cache, none, {.batch = 2});
    CHECK(loader.batches() == 0);
    CHECK_FALSE(loader.next());
}

TEST_CASE("loader: options are validated, naming the bad value", "[loader]") {
    CHECK_THROWS_WITH((LoaderOptions{.batch = 0}.validate()), Catch::Contains("batch") && Catch::Contains("got 0"));
    CHECK_THROWS_WITH((LoaderOptions{.depth = 0}.validate()), Catch::Contains("depth") && Catch::Contains("got 0"));
    CHECK_THROWS_WITH((LoaderOptions{.threads = 0}.validate()), Catch::Contains("threads"));
    CHECK_THROWS_WITH((LoaderOptions{.threads = 5000}.validate()), Catch::Contains("threads 5000"));
    CHECK_NOTHROW(LoaderOptions{.batch = 32, .depth = 8}.validate());

    test::TempDir dir;
    make_flat_dataset(dir.path(), 3, 10);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    const EpochPlan plan(cache.catalog().size(), 1, 0);
    CHECK_THROWS_AS(EpochLoader(cache, plan, {.batch = 0}), std::invalid_argument);
    // A plan naming a sample the cache does not hold fails up front, not in a thread.
    const EpochPlan alien = EpochPlan::from_order({0, 7}, 10);
    CHECK_THROWS_AS(EpochLoader(cache, alien, {.batch = 2}), UnknownSample);
}

TEST_CASE("loader: with a slow origin, enough threads and depth hide the latency and one thread does not", "[loader][stall]") {
    // 2 ms a read, 8 samples a batch, 10 ms of "compute" a batch. One thread with one buffer
    // needs 16 ms to fill a batch and cannot start before the last is released: the consumer
    // waits most of the time. 8 threads with 4 buffers fill a batch in ~2 ms, while the
    // consumer computes: after the first batch it should hardly wait at all.
    test::TempDir dir;
    make_flat_dataset(dir.path(), 160, 4096);
    auto run = [&](LoaderOptions options) {
        auto cache = slow_cache(dir.path(), 2ms);  // a cold cache each time: every read is slow
        const EpochPlan plan(cache->catalog().size(), 5, 0);
        EpochLoader loader(*cache, plan, options);
        const auto start = Clock::now();
        std::size_t batches = 0;
        while (auto batch = loader.next()) {
            std::this_thread::sleep_for(10ms);
            ++batches;
        }
        const double elapsed = seconds_since(start);
        const LoaderStats s = loader.stats();
        return std::tuple{s, elapsed, batches};
    };
    const auto [fast, fast_elapsed, fast_batches] = run({.batch = 8, .depth = 4, .threads = 8});
    const auto [slow, slow_elapsed, slow_batches] = run({.batch = 8, .depth = 1, .threads = 1});
    REQUIRE(fast_batches == 20);
    REQUIRE(slow_batches == 20);
    const double fast_wait = fast.wait_seconds - fast.first_wait_seconds;
    const double slow_wait = slow.wait_seconds - slow.first_wait_seconds;
    INFO("8 threads x 4 buffers: waited " << fast_wait << " s after the first batch, of " << fast_elapsed << " s");
    INFO("1 thread x 1 buffer:   waited " << slow_wait << " s after the first batch, of " << slow_elapsed << " s");
    CHECK(fast_wait < 0.25 * fast_elapsed);
    CHECK(slow_wait > 3 * fast_wait);
    CHECK(slow.stall_fraction() > 0.3);
    CHECK(slow.stall_fraction() > fast.stall_fraction());
}

TEST_CASE("loader: stats count batches, samples and bytes, and wait plus held add up to the loop", "[loader]") {
    test::TempDir dir;
    make_mixed_dataset(dir.path(), 40, 21);
    auto cache = slow_cache(dir.path(), 1ms);
    const EpochPlan plan(cache->catalog().size(), 3, 0);
    EpochLoader loader(*cache, plan, {.batch = 6, .depth = 2, .threads = 2});
    const auto start = Clock::now();
    std::uint64_t bytes = 0;
    std::size_t batches = 0;
    while (auto batch = loader.next()) {
        bytes += batch->bytes().size();
        std::this_thread::sleep_for(5ms);
        ++batches;
    }
    const double loop = seconds_since(start);
    const LoaderStats s = loader.stats();
    CHECK(s.batches == 7);
    CHECK(batches == 7);
    CHECK(s.samples == 40);
    CHECK(s.bytes == bytes);
    CHECK(s.bytes == cache->catalog().total_bytes());
    CHECK(s.held_seconds >= 7 * 0.005 * 0.9);
    CHECK(s.wait_seconds >= s.first_wait_seconds);
    // One consumer that releases each batch before the next: the two never overlap.
    CHECK(s.wait_seconds + s.held_seconds <= loop * 1.01 + 0.001);
    CHECK(s.wait_seconds + s.held_seconds >= loop * 0.8);
    CHECK(s.stall_fraction() > 0.0);
    CHECK(s.stall_fraction() < 1.0);

    // The cache's shared counters, and its JSON, have the same.
    const Stats cs = cache->stats();
    CHECK(cs.loader_batches == 7);
    CHECK(cs.loader_samples == 40);
    CHECK(cs.loader_bytes == bytes);
    CHECK(cs.loader_wait_ns > 0);
    CHECK(cs.loader_held_ns >= 7 * 5'000'000ull * 9 / 10);
    const auto json = to_json(cs);
    REQUIRE(json.contains("loader"));
    CHECK(json["loader"]["batches"] == 7);
    CHECK(json["loader"]["samples"] == 40);
    CHECK(json["loader"]["bytes"] == bytes);
    CHECK(json["loader"]["stall_fraction"].get<double>() > 0.0);
    CHECK(json["plan"]["samples"] == 40);  // the loader installed its plan
}

TEST_CASE("loader: a prefetch window warms the cache beyond the ring", "[loader]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 64, 8192);
    auto cache = slow_cache(dir.path(), 1ms);
    const EpochPlan plan(cache->catalog().size(), 4, 0);
    check_epoch(*cache, dir.path(), plan, {.batch = 4, .depth = 2, .threads = 2, .prefetch_window = 16});
    const Stats s = cache->stats();
    CHECK(s.prefetch_issued > 0);
    CHECK(s.prefetch_fetched > 0);
    CHECK(s.origin_reads == 64);  // each sample once: prefetched or read by the ring, never both
}

TEST_CASE("loader: an origin error surfaces from next() for its batch, and the epoch goes on", "[loader]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 30, 1000);
    auto cache = slow_cache(dir.path(), 0us, "f17");
    const EpochPlan plan(cache->catalog().size(), 8, 0);
    const SampleId bad = cache->id_of("f17");
    std::size_t bad_position = 0;
    while (plan[bad_position] != bad) ++bad_position;
    const std::size_t bad_batch = bad_position / 4;

    EpochLoader loader(*cache, plan, {.batch = 4, .depth = 3, .threads = 3});
    std::size_t k = 0, good = 0, failed = 0;
    for (;; ++k) {
        try {
            auto batch = loader.next();
            if (!batch) break;
            CHECK(batch->index() == k);
            ++good;
        } catch (const OriginError& e) {
            CHECK(k == bad_batch);
            CHECK(e.errno_value() == EIO);
            CHECK_THAT(e.what(), Catch::Contains("f17"));
            ++failed;
        }
    }
    CHECK(failed == 1);
    CHECK(good == 7);  // 8 batches of 30 samples, one lost
    CHECK(loader.stats().batches == 7);
}

TEST_CASE("loader: destroying it mid-epoch with batches held and threads blocked returns, and held batches stay valid", "[loader]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 40, 3000);

    SECTION("threads blocked on a full ring") {
        auto cache = slow_cache(dir.path(), 1ms);
        const EpochPlan plan(cache->catalog().size(), 2, 0);
        std::optional<EpochLoader> loader;
        loader.emplace(*cache, plan, LoaderOptions{.batch = 4, .depth = 2, .threads = 4});
        std::optional<Batch> first = loader->next();
        std::optional<Batch> second = loader->next();  // both buffers out: every thread waits
        REQUIRE(first);
        REQUIRE(second);
        std::this_thread::sleep_for(30ms);
        const auto start = Clock::now();
        loader.reset();
        CHECK(seconds_since(start) < 5.0);
        // The held batches outlive the loader: their bytes are still there.
        for (std::size_t i = 0; i < first->size(); ++i) {
            const test::Bytes want = test::slurp(dir.path() / std::string(cache->catalog().path(first->ids()[i])));
            const auto got = first->sample(i);
            CHECK(std::equal(got.begin(), got.end(), want.begin(), want.end()));
        }
        first->release();
        CHECK(first->bytes().empty());
        second.reset();
    }
    SECTION("threads inside slow reads") {
        auto cache = slow_cache(dir.path(), 50ms);
        const EpochPlan plan(cache->catalog().size(), 2, 0);
        const auto start = Clock::now();
        { EpochLoader loader(*cache, plan, {.batch = 8, .depth = 4, .threads = 4, .prefetch_window = 8}); }
        CHECK(seconds_since(start) < 5.0);  // one read per thread at most, not the epoch
    }
    SECTION("the consumer stops after one batch and keeps it") {
        auto cache = slow_cache(dir.path(), 0us);
        const EpochPlan plan(cache->catalog().size(), 2, 0);
        std::optional<Batch> kept;
        {
            EpochLoader loader(*cache, plan, {.batch = 3, .depth = 3, .threads = 2});
            kept = loader.next();
        }
        REQUIRE(kept);
        CHECK(kept->size() == 3);
    }
}

TEST_CASE("pinned buffers: page-locked host memory without a GPU, and the loader logs which", "[loader][pinned]") {
    const std::uint64_t locked_before = locked_bytes();
    PinnedBuffer buffer(1 << 20);
    REQUIRE(buffer);
    CHECK(buffer.size() == 1u << 20);
    CHECK(reinterpret_cast<std::uintptr_t>(buffer.data()) % 4096 == 0);
    std::fill(buffer.span().begin(), buffer.span().end(), std::byte{0x5a});
    PinnedBuffer moved = std::move(buffer);
    CHECK_FALSE(buffer);
    CHECK(moved.span()[12345] == std::byte{0x5a});
    if (current_cuda_device() >= 0) {
        CHECK(moved.kind() == PinnedKind::cuda_host);
    } else {
        // No GPU (or no CUDA): mlock, which root or a 1 MiB RLIMIT_MEMLOCK allows.
        CHECK((moved.kind() == PinnedKind::mlock || moved.kind() == PinnedKind::pageable));
        if (moved.kind() == PinnedKind::mlock && !kMlockIntercepted) CHECK(locked_bytes() >= locked_before + (1u << 20));
    }

    test::TempDir dir;
    make_flat_dataset(dir.path(), 10, 100 * 1024);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    const EpochPlan plan(cache.catalog().size(), 1, 0);
    std::string logged;
    {
        test::LogCapture capture;
        EpochLoader loader(cache, plan, {.batch = 4, .depth = 2, .threads = 2});
        logged = capture.text();
        CHECK(loader.memory_kind() == moved.kind());
        CHECK_THAT(loader.memory_description(), Catch::StartsWith("2 batch buffers of 400.0 KiB in "));
    }
    INFO(logged);
    CHECK_THAT(logged, Catch::Contains("loader: 2 batch buffers of 400.0 KiB in "));
    if (moved.kind() == PinnedKind::cuda_host) CHECK_THAT(logged, Catch::Contains("pinned memory (cudaHostAlloc, device "));
    if (moved.kind() == PinnedKind::mlock) CHECK_THAT(logged, Catch::Contains("page-locked host memory (mlock; "));
    CHECK(std::count(logged.begin(), logged.end(), '\n') == 1);  // one line
}

TEST_CASE("pinned buffers: when mlock is refused the memory stays usable and pageable, and says so", "[loader][pinned]") {
    if (current_cuda_device() >= 0) return;  // cudaHostAlloc, not mlock
    if (kMlockIntercepted) {
        WARN("the sanitizer ignores mlock: the refusal cannot be shown in this build");
        return;
    }
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_MEMLOCK, &limit) == 0);
    if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (256u << 20)) {
        WARN("RLIMIT_MEMLOCK is unlimited or large here: the refusal cannot be shown");
        return;
    }
    // Capabilities are per thread: a thread without CAP_IPC_LOCK is held to RLIMIT_MEMLOCK
    // even when the process runs as root.
    PinnedKind kind = PinnedKind::none;
    bool dropped = false, written = false;
    std::thread t([&] {
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2]{};
        if (::syscall(SYS_capget, &header, data) == 0) {
            data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
            dropped = ::syscall(SYS_capset, &header, data) == 0;
        }
        PinnedBuffer big(static_cast<std::size_t>(limit.rlim_cur) + (1u << 20));
        kind = big.kind();
        std::fill(big.span().begin(), big.span().end(), std::byte{1});
        written = big.span().back() == std::byte{1};
    });
    t.join();
    REQUIRE(dropped);
    CHECK(kind == PinnedKind::pageable);
    CHECK(written);
    CHECK_THAT(describe(PinnedKind::pageable), Catch::Contains("pageable host memory (mlock refused: RLIMIT_MEMLOCK is "));
}

TEST_CASE("loader: a PinnedRing is allocated once for a run of epochs, grows only for a larger batch, one loader at a time",
          "[loader][ring]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 40, 10 * 1024);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    PinnedRing ring;
    CHECK(ring.allocations() == 0);
    std::string logged;
    {
        test::LogCapture capture;
        for (std::uint64_t epoch = 0; epoch < 6; ++epoch)
            check_epoch(cache, dir.path(), EpochPlan(cache.catalog().size(), 3, epoch), {.batch = 4, .depth = 2, .threads = 3, .ring = &ring});
        logged = capture.text();
    }
    INFO(logged);
    CHECK(ring.allocations() == 1);
    CHECK(ring.depth() == 2);
    CHECK(ring.buffer_bytes() == 40 * 1024 + 5 * 1024);  // the largest batch and 1/8 to spare
    CHECK_THAT(logged, Catch::Contains("loader: the run's ring, allocated: 2 batch buffers of 45.0 KiB in "));
    CHECK(count_of(logged, "the run's ring, reused (allocated 1 time): 2 batch buffers of 45.0 KiB") == 5);

    SECTION("a larger batch grows it, and says so; a smaller one and a deeper ring reuse or add") {
        test::LogCapture capture;
        check_epoch(cache, dir.path(), EpochPlan(cache.catalog().size(), 3, 6), {.batch = 8, .depth = 2, .ring = &ring});
        CHECK(ring.allocations() == 2);
        CHECK(ring.buffer_bytes() == 80 * 1024 + 10 * 1024);
        check_epoch(cache, dir.path(), EpochPlan(cache.catalog().size(), 3, 7), {.batch = 2, .depth = 2, .ring = &ring});
        CHECK(ring.allocations() == 2);
        check_epoch(cache, dir.path(), EpochPlan(cache.catalog().size(), 3, 8), {.batch = 2, .depth = 3, .ring = &ring});
        CHECK(ring.allocations() == 3);
        CHECK(ring.depth() == 3);
        const std::string text = capture.text();
        INFO(text);
        CHECK_THAT(text, Catch::Contains("the run's ring, grown from 45.0 KiB to 90.0 KiB a buffer for this epoch's largest batch (80.0 KiB)"));
        CHECK_THAT(text, Catch::Contains("the run's ring, deepened from 2 buffers: 3 batch buffers of 90.0 KiB"));
    }
    SECTION("a second loader while the first has it is refused; after it, fine") {
        std::optional<EpochLoader> first;
        first.emplace(cache, EpochPlan(cache.catalog().size(), 3, 6), LoaderOptions{.batch = 4, .depth = 2, .ring = &ring});
        CHECK_THROWS_WITH(EpochLoader(cache, EpochPlan(cache.catalog().size(), 3, 7), {.batch = 4, .depth = 2, .ring = &ring}),
                          Catch::Contains("in use by another EpochLoader"));
        first.reset();
        CHECK(check_epoch(cache, dir.path(), EpochPlan(cache.catalog().size(), 3, 7), {.batch = 4, .depth = 2, .ring = &ring}) == 10);
        CHECK(ring.allocations() == 1);
    }
    SECTION("a Batch of the last epoch still held: the next epoch starts after its buffer, waits for it there; growing is refused") {
        std::optional<Batch> kept;
        {
            EpochLoader last(cache, EpochPlan(cache.catalog().size(), 3, 6), {.batch = 4, .depth = 2, .ring = &ring});
            kept = last.next();  // buffer 0
        }
        REQUIRE(kept);
        CHECK(kept->buffer() == 0);
        const std::vector<std::byte> kept_bytes(kept->bytes().begin(), kept->bytes().end());
        CHECK_THROWS_WITH(EpochLoader(cache, EpochPlan(cache.catalog().size(), 3, 7), {.batch = 8, .depth = 2, .ring = &ring}),
                          Catch::Contains("still holds buffer 0: release it first"));
        EpochLoader next(cache, EpochPlan(cache.catalog().size(), 3, 7), {.batch = 4, .depth = 2, .ring = &ring});
        CHECK(next.buffer_of(0) == 1);  // a loop's variable keeps the last batch until the next one comes
        CHECK(next.buffer_of(1) == 0);
        auto first = next.next();  // not waiting for the kept batch
        REQUIRE(first);
        CHECK(first->buffer() == 1);
        first.reset();
        std::this_thread::sleep_for(50ms);  // the threads would have filled buffer 0 by now, were it free
        CHECK(std::equal(kept->bytes().begin(), kept->bytes().end(), kept_bytes.begin(), kept_bytes.end()));
        std::thread releaser([&] {
            std::this_thread::sleep_for(50ms);
            kept->release();
        });
        const auto t0 = Clock::now();
        auto second = next.next();
        const double waited = seconds_since(t0);
        releaser.join();
        REQUIRE(second);
        CHECK(waited >= 0.04);
        const test::Bytes want = test::slurp(dir.path() / std::string(cache.catalog().path(second->ids()[0])));
        CHECK(std::equal(want.begin(), want.end(), second->sample(0).begin(), second->sample(0).end()));
        CHECK(ring.allocations() == 1);
    }
}

TEST_CASE("loader: the device option is validated, and without a device the ring is mlock'ed host memory, saying why",
          "[loader][device]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 8, 1000);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    const EpochPlan plan(cache.catalog().size(), 1, 0);
    CHECK_THROWS_WITH((LoaderOptions{.device = -3}.validate()),
                      "loader: device -3 is neither a device index nor kCurrentDevice (-1) nor kHostOnly (-2)");
    CHECK_THROWS_AS(EpochLoader(cache, plan, {.device = -7}), std::invalid_argument);
    if (current_cuda_device() >= 0) {
        WARN("a CUDA device is present: the no-device paths are not shown here");
        CHECK_THROWS_WITH(EpochLoader(cache, plan, {.device = 1000}), Catch::Contains("loader: device 1000 is not there: this host has "));
        return;
    }
    std::string why;
    CHECK(current_cuda_device(&why) == -1);
    INFO(why);
#ifdef TIERCACHE_HAVE_CUDA
    CHECK((why.rfind("no CUDA device (", 0) == 0 || why.rfind("no CUDA runtime (", 0) == 0));
#else
    CHECK(why == "built without CUDA");
#endif
    // An index asked for is an error without a device: never a silent fallback.
    CHECK_THROWS_WITH(EpochLoader(cache, plan, {.device = 0}), "loader: device 0 asked for, but " + why);
    CHECK_THROWS_AS(EpochLoader(cache, plan, {.device = 3}), std::invalid_argument);
    for (const int device : {LoaderOptions::kCurrentDevice, LoaderOptions::kHostOnly}) {
        INFO("device " << device);
        test::LogCapture capture;
        EpochLoader loader(cache, plan, {.batch = 4, .depth = 2, .device = device});
        CHECK(loader.device() == -1);
        CHECK((loader.memory_kind() == PinnedKind::mlock || loader.memory_kind() == PinnedKind::pageable));
        const std::string text = capture.text();
        if (loader.memory_kind() == PinnedKind::mlock)
            CHECK_THAT(text, Catch::Contains("loader: 2 batch buffers of 3.9 KiB in page-locked host memory (mlock; " +
                                             (device == LoaderOptions::kHostOnly ? std::string("host memory asked for (kHostOnly)") : why) + ")"));
#ifdef TIERCACHE_HAVE_CUDA
        auto batch = loader.next();
        REQUIRE(batch);
        CHECK_THROWS_WITH(batch->copy_to_device(nullptr, nullptr), Catch::Contains("cannot be copied to a device: the ring is in host memory"));
#endif
    }
}

TEST_CASE("pinned buffers: a PCI device's NUMA node comes from sysfs, -1 where it is not known", "[loader][pinned]") {
    test::TempDir dir;
    test::write_file(dir.path() / "0000:3b:00.0" / "numa_node", test::Bytes{std::byte{'1'}, std::byte{'\n'}});
    test::write_file(dir.path() / "0000:5e:00.0" / "numa_node", test::Bytes{std::byte{'-'}, std::byte{'1'}});
    CHECK(detail::pci_numa_node("0000:3B:00.0", dir.path()) == 1);  // as cudaDeviceGetPCIBusId writes it
    CHECK(detail::pci_numa_node("0000:5e:00.0", dir.path()) == -1);
    CHECK(detail::pci_numa_node("0000:af:00.0", dir.path()) == -1);
    CHECK(detail::numa_nodes() >= 1);
}

#ifdef TIERCACHE_HAVE_CUDA
namespace {

// README's loop over `epochs` epochs with a ring of depth 2 kept for the run: copy_to_device,
// and the Batch dropped at once, the copy still queued. Each batch goes to its own place on the
// device; at each epoch's end all of it comes back and is compared with the origin's bytes.
// With the runtime in place: the real one, or a FakeCuda.
void readme_loop_to_device(Cache& cache, const test::fs::path& root, int epochs, std::size_t batch_size) {
    const detail::cuda::Runtime& rt = *detail::cuda::runtime();
    std::uint64_t total = 0;
    for (SampleId id = 0; id < cache.catalog().size(); ++id) total += cache.size(id);
    void* device = nullptr;
    cudaStream_t stream = nullptr;
    REQUIRE(rt.Malloc(&device, total) == cudaSuccess);
    REQUIRE(rt.StreamCreate(&stream) == cudaSuccess);
    std::size_t mismatches = 0, samples = 0, batches = 0;
    PinnedRing ring;
    for (int epoch = 0; epoch < epochs; ++epoch) {
        const EpochPlan plan(cache.catalog().size(), 5, static_cast<std::uint64_t>(epoch));
        EpochLoader loader(cache, plan, {.batch = batch_size, .depth = 2, .threads = 3, .ring = &ring});
        std::vector<SampleId> order;
        std::uint64_t at = 0;
        while (auto b = loader.next()) {
            b->copy_to_device(static_cast<std::byte*>(device) + at, stream);  // one cudaMemcpyAsync
            order.insert(order.end(), b->ids().begin(), b->ids().end());
            at += b->bytes().size();
            ++batches;
        }  // the Batch goes here; the ring waits for its copy before refilling the buffer
        std::vector<std::byte> back(at);
        REQUIRE(rt.StreamSynchronize(stream) == cudaSuccess);
        REQUIRE(rt.Memcpy(back.data(), device, at, cudaMemcpyDeviceToHost) == cudaSuccess);
        std::uint64_t offset = 0;
        for (const SampleId id : order) {
            const test::Bytes want = test::slurp(root / std::string(cache.catalog().path(id)));
            if (!std::equal(want.begin(), want.end(), back.begin() + static_cast<std::ptrdiff_t>(offset))) ++mismatches;
            offset += want.size();
            ++samples;
        }
        CHECK(offset == at);
    }
    (void)rt.StreamDestroy(stream);
    (void)rt.Free(device);
    INFO(batches << " batches, " << samples << " samples over " << epochs << " epochs");
    CHECK(mismatches == 0);
    CHECK(samples == static_cast<std::size_t>(epochs) * cache.catalog().size());
    CHECK(ring.allocations() == 1);
}

}  // namespace

TEST_CASE("loader on a fake device: README's loop, Batches dropped with copies still queued, gives the origin's bytes",
          "[loader][cuda][fake]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 48, 20 * 1024);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("64MiB"));
    test::FakeCuda fake(std::chrono::microseconds(500));
    readme_loop_to_device(cache, dir.path(), 12, 4);
    // The ring did find copies still running, and waited: a ring that did not would have
    // refilled those buffers under them, and the bytes on the device would differ.
    CHECK(fake.not_ready > 0);
    CHECK(fake.host_allocs == 2);  // one ring of 2 buffers for the 12 epochs
}

TEST_CASE("loader on a fake device: an earlier kernel's error is not blamed on the batch", "[loader][cuda][fake]") {
    test::TempDir dir;
    make_flat_dataset(dir.path(), 12, 1000);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("16MiB"));
    test::FakeCuda fake;
    const detail::cuda::Runtime& rt = *detail::cuda::runtime();
    {
        test::LogCapture capture;
        EpochLoader loader(cache, EpochPlan(cache.catalog().size(), 1, 0), {.batch = 4, .depth = 2});
        CHECK(loader.device() == 0);
        CHECK(loader.memory_kind() == PinnedKind::cuda_host);
        CHECK_THAT(capture.text(), Catch::Contains("loader: 2 batch buffers of 3.9 KiB in pinned memory (cudaHostAlloc, device 0 "
                                                   "(the current device), PCI 0000:00:00.0"));
        void* device = nullptr;
        REQUIRE(rt.Malloc(&device, 4096) == cudaSuccess);

        // An error of its own (a bad destination): this copy's, cleared for the caller.
        auto b0 = loader.next();
        REQUIRE(b0);
        try {
            b0->copy_to_device(nullptr, nullptr);
            FAIL("no error");
        } catch (const CudaError& e) {
            CHECK_FALSE(e.earlier());
            CHECK(e.code() == cudaErrorInvalidValue);
            CHECK_THAT(e.what(), Catch::StartsWith("loader: copying batch 0 (3.9 KiB) to the device: cudaErrorInvalidValue"));
        }
        CHECK(rt.PeekAtLastError() == cudaSuccess);

        // A non-sticky error an earlier launch left pending: the copy works, the error stays the caller's.
        test::FakeCuda::set_last_error(cudaErrorInvalidConfiguration);
        CHECK_NOTHROW(b0->copy_to_device(device, nullptr));
        CHECK(rt.GetLastError() == cudaErrorInvalidConfiguration);

        // A faulted kernel (sticky): every call fails with it; the message says it is not the batch's.
        fake.sticky = cudaErrorIllegalAddress;
        try {
            b0->copy_to_device(device, nullptr);
            FAIL("no error");
        } catch (const CudaError& e) {
            CHECK(e.earlier());
            CHECK_THAT(e.what(), Catch::Contains("the device already had an error from earlier work"));
            CHECK_THAT(e.what(), Catch::Contains("not from this batch: cudaErrorIllegalAddress"));
        }
        fake.sticky = 0;
        (void)rt.DeviceSynchronize();
        (void)rt.Free(device);
    }
    SECTION("a failed wait for a buffer's copies fails the batch that was to refill it, without writing the buffer") {
        EpochLoader loader(cache, EpochPlan(cache.catalog().size(), 1, 0), {.batch = 2, .depth = 1, .threads = 1});
        void* device = nullptr;
        REQUIRE(rt.Malloc(&device, 4096) == cudaSuccess);
        fake.event_error = cudaErrorIllegalAddress;
        {
            auto b0 = loader.next();
            REQUIRE(b0);
            b0->copy_to_device(device, nullptr);
        }
        try {
            (void)loader.next();
            FAIL("no error");
        } catch (const CudaError& e) {
            CHECK(e.earlier());
            CHECK_THAT(e.what(), Catch::StartsWith("loader: batch 1 was not filled: waiting for the copies queued from its buffer "
                                                   "failed: cudaErrorIllegalAddress"));
        }
        fake.event_error = 0;
        // The epoch goes on (batch 2 may have raced the reset and failed the same way), and the
        // buffer is refilled only once batch 0's copy is known to be done.
        std::optional<Batch> b2;
        for (int tries = 0; tries < 2 && !b2; ++tries) try {
                b2 = loader.next();
            } catch (const CudaError& e) {
                CHECK(e.earlier());
            }
        REQUIRE(b2);
        CHECK(b2->index() >= 2);
        const test::Bytes want = test::slurp(dir.path() / std::string(cache.catalog().path(b2->ids()[0])));
        CHECK(std::equal(want.begin(), want.end(), b2->sample(0).begin(), b2->sample(0).end()));
        (void)rt.DeviceSynchronize();
        (void)rt.Free(device);
    }
    SECTION("a device index the host does not have is an error; a ring pinned for one device is refused for host memory") {
        CHECK_THROWS_WITH(EpochLoader(cache, EpochPlan(cache.catalog().size(), 1, 0), {.device = 1}),
                          "loader: device 1 is not there: this host has 1 CUDA device (0)");
        PinnedRing ring;
        { EpochLoader first(cache, EpochPlan(cache.catalog().size(), 1, 0), {.device = 0, .ring = &ring}); }
        CHECK(ring.device() == 0);
        CHECK_THROWS_WITH(EpochLoader(cache, EpochPlan(cache.catalog().size(), 1, 1), {.device = LoaderOptions::kHostOnly, .ring = &ring}),
                          Catch::Contains("the PinnedRing is pinned for device 0, this loader is for host memory"));
    }
}

TEST_CASE("loader on the GPU: README's loop over many epochs with a ring of depth 2, copied back and compared with the origin",
          "[loader][cuda][device]") {
    std::string why;
    if (current_cuda_device(&why) < 0) {
        WARN("SKIPPED: this test needs a CUDA device: " << why);
        return;
    }
    test::TempDir dir;
    make_mixed_dataset(dir.path(), 300, 41);
    auto cache = Cache::open(Config{}.origin(dir.path()).dram("256MiB"));
    test::LogCapture capture;
    readme_loop_to_device(cache, dir.path(), 1, 16);  // the first epoch sizes the ring: the rest reuse it
    INFO(capture.text());
    CHECK_THAT(capture.text(), Catch::Contains("pinned memory (c"));
    // A flat data set, so that no epoch's largest batch outgrows the first's: many epochs, one ring.
    test::TempDir flat;
    make_flat_dataset(flat.path(), 256, 96 * 1024);
    auto flat_cache = Cache::open(Config{}.origin(flat.path()).dram("256MiB"));
    readme_loop_to_device(flat_cache, flat.path(), 30, 8);
}
#endif
