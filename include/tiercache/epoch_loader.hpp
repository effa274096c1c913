// EpochLoader: an epoch's samples as whole batches, in plan order, in pinned memory. A sample
// is a whole file, or a record (record.hpp: a tar shard's member...) for a plan over records.
//
//   plan order ──> I/O threads: cache.read() each sample into its batch's buffer ──> next()
//                  (a ring of `depth` PinnedBuffers, each sized for the largest batch)
//
// Batch k fills buffer k % depth, contiguously, once batch k - depth has been released; the
// threads take samples one at a time in plan order, so every thread helps fill the oldest
// batch first and a slow sample delays only its own batch. next() waits for batch k, hands
// it out as a move-only Batch (a view of its buffer), and the buffer goes back to the ring
// when the Batch is destroyed or released. A Prefetcher, if asked for, warms the cache with
// the samples just beyond what the ring has taken.
//
// Stall accounting: the consumer's time inside next() (wait) against its time holding
// batches (held). stall fraction = wait / (wait + held): the share of the consumer's time
// the data pipeline cost it. Also added to the cache's shared loader counters.
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cache.hpp"
#include "epoch_plan.hpp"
#include "error.hpp"
#include "log.hpp"
#include "pinned_memory.hpp"
#include "prefetcher.hpp"
#include "size.hpp"
#include "stats.hpp"

#ifdef TIERCACHE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tiercache {

// Aggregate, so that {.batch = 32, .depth = 8} works.
struct LoaderOptions {
    std::size_t batch = 32;           // samples per batch
    std::size_t depth = 4;            // batch buffers in the ring: how far the threads may run ahead
    std::size_t threads = 4;          // I/O threads filling batches
    bool drop_last = false;           // drop a last partial batch instead of handing it out
    std::size_t prefetch_window = 0;  // samples beyond the ring the cache prefetches; 0: off

    // Throws std::invalid_argument naming the bad value.
    void validate() const {
        auto fail = [](const std::string& what) { throw std::invalid_argument("loader: " + what); };
        if (batch == 0) fail("batch must be at least 1 sample (got 0)");
        if (depth == 0) fail("depth must be at least 1 buffer (got 0)");
        if (threads == 0) fail("threads must be at least 1 (got 0)");
        if (threads > kMaxThreads) fail("threads " + std::to_string(threads) + " is more than " + std::to_string(kMaxThreads));
        if (depth > kMaxDepth) fail("depth " + std::to_string(depth) + " is more than " + std::to_string(kMaxDepth) + " buffers");
    }

    static constexpr std::size_t kMaxThreads = 1024;  // a typo guard, not a tuning limit
    static constexpr std::size_t kMaxDepth = 4096;
};

struct LoaderStats {
    std::uint64_t batches = 0, samples = 0, bytes = 0;  // handed out by next()
    double wait_seconds = 0;        // the consumer inside next()
    double first_wait_seconds = 0;  // of which for the first batch: the pipeline filling up
    double held_seconds = 0;        // from next() returning a batch to its release, summed

    // The share of the consumer's time spent waiting for data; 0 before any batch.
    double stall_fraction() const { return wait_seconds + held_seconds == 0 ? 0.0 : wait_seconds / (wait_seconds + held_seconds); }
};

namespace detail {

using LoaderClock = std::chrono::steady_clock;

inline std::uint64_t elapsed_ns(LoaderClock::time_point from, LoaderClock::time_point to) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count());
}

// What the loader, its threads and its outstanding Batches share. Held by shared_ptr so a
// Batch may outlive its loader: the buffer stays valid until the Batch goes.
struct LoaderRing {
    // Fixed at construction: the positions handed out (drop_last applied) and their layout.
    std::vector<Record> records;        // by position in the plan
    std::vector<SampleId> ids;          // by position: each record's file
    std::vector<std::uint64_t> sizes;   // by position
    std::vector<std::uint64_t> offsets; // by position: from the start of its batch's buffer
    std::size_t batch = 1;              // samples per batch
    std::size_t batches = 0;
    std::uint64_t buffer_bytes = 0;     // the largest batch's bytes
    std::vector<PinnedBuffer> buffers;  // the ring: batch k in buffers[k % size]

    std::size_t first(std::size_t k) const { return k * batch; }
    std::size_t count(std::size_t k) const { return std::min(batch, records.size() - k * batch); }

    struct Slot {
        std::size_t batch = kNone;   // the batch in this buffer (filling, ready or handed out)
        std::size_t remaining = 0;   // its samples not yet read
        std::exception_ptr error;    // the first failed read of its samples
        std::size_t free_for = 0;    // the batch that may fill it next
        bool held = false;           // handed out and not released
    };
    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

    // Lock order: just this one; the threads read the cache without it.
    std::mutex mutex;
    std::condition_variable work_cv;   // a slot came free, or stopping
    std::condition_variable ready_cv;  // a batch finished filling
    std::vector<Slot> slots;           // protected by mutex
    std::size_t next_position = 0;     // protected by mutex: the next sample a thread takes
    std::size_t next_batch = 0;        // protected by mutex: the next batch next() hands out
    bool stopping = false;             // protected by mutex
    LoaderCounters* counters = nullptr;  // protected by mutex: the cache's, null once the loader is gone
    LoaderStats stats;                 // protected by mutex

    // A Batch going back: its buffer may take batch k + depth.
    void release(std::size_t k, LoaderClock::time_point handed_out) {
        const std::uint64_t held = elapsed_ns(handed_out, LoaderClock::now());
        {
            std::lock_guard lock(mutex);
            Slot& slot = slots[k % slots.size()];
            slot.held = false;
            slot.free_for = k + slots.size();
            stats.held_seconds += static_cast<double>(held) / 1e9;
            if (counters) counters->held_ns.fetch_add(held, std::memory_order_relaxed);
        }
        work_cv.notify_all();
    }
};

}  // namespace detail

// One batch, handed out by EpochLoader::next(): a view of its ring buffer, given back when
// the Batch is destroyed or release()d. Move-only. Its spans are valid until then.
class Batch {
public:
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    Batch(Batch&& o) noexcept { take(o); }
    Batch& operator=(Batch&& o) noexcept {
        if (this != &o) {
            release();
            take(o);
        }
        return *this;
    }
    ~Batch() { release(); }

    std::size_t index() const noexcept { return index_; }  // the batch's number in the epoch, from 0
    std::size_t size() const noexcept { return ids_.size(); }  // samples
    std::span<const SampleId> ids() const noexcept { return ids_; }  // each sample's file
    std::span<const Record> records() const noexcept { return records_; }  // each sample's bytes in its file
    std::span<const std::uint64_t> offsets() const noexcept { return offsets_; }  // of each sample in bytes()
    std::span<const std::uint64_t> sizes() const noexcept { return sizes_; }
    std::span<const std::byte> bytes() const noexcept { return bytes_; }  // every sample, back to back

    // Sample i's bytes. Throws std::out_of_range for i >= size().
    std::span<const std::byte> sample(std::size_t i) const {
        if (i >= size()) throw std::out_of_range("batch " + std::to_string(index_) + " has " + std::to_string(size()) +
                                                 " samples, not " + std::to_string(i + 1));
        return bytes_.subspan(static_cast<std::size_t>(offsets_[i]), static_cast<std::size_t>(sizes_[i]));
    }

    // Gives the buffer back to the ring now; the views above turn empty.
    void release() noexcept {
        if (!ring_) return;
        ring_->release(index_, handed_out_);
        ring_.reset();
        ids_ = {};
        records_ = {};
        offsets_ = {};
        sizes_ = {};
        bytes_ = {};
    }

#ifdef TIERCACHE_HAVE_CUDA
    // Queues one cudaMemcpyAsync of the whole batch to `device_dst` (at least bytes().size()
    // bytes) on `stream`. Keep the Batch until the stream has done it: releasing it lets the
    // ring refill the buffer. Throws std::runtime_error with CUDA's message.
    void copy_to_device(void* device_dst, cudaStream_t stream) const {
        const cudaError_t err = cudaMemcpyAsync(device_dst, bytes_.data(), bytes_.size(), cudaMemcpyHostToDevice, stream);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();  // not sticky: clear it for the caller's next call
            throw std::runtime_error("loader: copying batch " + std::to_string(index_) + " (" + format_size(bytes_.size()) +
                                     ") to the device: " + cudaGetErrorString(err));
        }
    }
#endif

private:
    friend class EpochLoader;
    Batch(std::shared_ptr<detail::LoaderRing> ring, std::size_t k) : ring_(std::move(ring)), index_(k) {
        const std::size_t first = ring_->first(k), n = ring_->count(k);
        ids_ = std::span<const SampleId>(ring_->ids).subspan(first, n);
        records_ = std::span<const Record>(ring_->records).subspan(first, n);
        offsets_ = std::span<const std::uint64_t>(ring_->offsets).subspan(first, n);
        sizes_ = std::span<const std::uint64_t>(ring_->sizes).subspan(first, n);
        const std::size_t total = n == 0 ? 0 : static_cast<std::size_t>(offsets_[n - 1] + sizes_[n - 1]);
        bytes_ = ring_->buffers[k % ring_->buffers.size()].span().first(total);
        handed_out_ = detail::LoaderClock::now();
    }

    void take(Batch& o) noexcept {
        ring_ = std::move(o.ring_);
        index_ = o.index_;
        ids_ = std::exchange(o.ids_, {});
        records_ = std::exchange(o.records_, {});
        offsets_ = std::exchange(o.offsets_, {});
        sizes_ = std::exchange(o.sizes_, {});
        bytes_ = std::exchange(o.bytes_, {});
        handed_out_ = o.handed_out_;
    }

    std::shared_ptr<detail::LoaderRing> ring_;  // null once released or moved from
    std::size_t index_ = 0;
    std::span<const SampleId> ids_;
    std::span<const Record> records_;
    std::span<const std::uint64_t> offsets_, sizes_;
    std::span<const std::byte> bytes_;
    detail::LoaderClock::time_point handed_out_{};
};

class EpochLoader {
public:
    // Installs `plan` in the cache (for its plan-aware policy), sizes the ring for the plan's
    // largest batch, and starts the threads. Throws std::invalid_argument for bad options,
    // UnknownSample for a plan naming a sample the cache does not hold, std::bad_alloc when
    // the buffers cannot be had. The cache must outlive the loader (not its Batches).
    EpochLoader(Cache& cache, const EpochPlan& plan, LoaderOptions options)
        : EpochLoader(cache, whole_files(cache, plan.order()), options) {
        start(plan, nullptr);
    }
    // The same over records: `plan` orders positions into `records` (records_in_order), each
    // sample of a batch is one record's bytes. Throws std::invalid_argument, besides, for a
    // plan not made for records.size() records or a record outside its file.
    EpochLoader(Cache& cache, std::span<const Record> records, const EpochPlan& plan, LoaderOptions options)
        : EpochLoader(cache, records_in_order(plan, records), options) {
        start(plan, &records);
    }

    EpochLoader(const EpochLoader&) = delete;
    EpochLoader& operator=(const EpochLoader&) = delete;

    // Stops and joins the threads, mid-epoch too: a thread inside a read finishes that one
    // sample first. Batches still held stay valid; their buffers go when they do.
    ~EpochLoader() { stop(); }

private:
    // The ring for `order`'s records; start() installs the plan and starts the threads.
    EpochLoader(Cache& cache, std::vector<Record> order, LoaderOptions options)
        : cache_(cache), options_(options), ring_(std::make_shared<detail::LoaderRing>()) {
        options_.validate();
        detail::LoaderRing& r = *ring_;
        const std::size_t b = options_.batch;
        const std::size_t positions = options_.drop_last ? order.size() / b * b : order.size();
        r.batch = b;
        r.batches = (positions + b - 1) / b;
        order.resize(positions);
        r.records = std::move(order);
        r.ids.resize(positions);
        r.sizes.resize(positions);
        r.offsets.resize(positions);
        for (std::size_t k = 0; k < r.batches; ++k) {
            std::uint64_t offset = 0;
            for (std::size_t p = r.first(k); p < r.first(k) + r.count(k); ++p) {
                const Record& rec = r.records[p];
                (void)cache.size(rec.file);  // UnknownSample here, not in a thread
                check_record(cache.catalog(), rec);
                r.ids[p] = rec.file;
                r.sizes[p] = rec.length;
                r.offsets[p] = offset;
                offset += r.sizes[p];
            }
            r.buffer_bytes = std::max(r.buffer_bytes, offset);
        }
        // No more buffers than batches: a short plan needs no deep ring.
        const std::size_t depth = std::min(options_.depth, std::max<std::size_t>(r.batches, 1));
        r.buffers.reserve(depth);
        for (std::size_t i = 0; i < depth; ++i) r.buffers.emplace_back(static_cast<std::size_t>(r.buffer_bytes));
        r.slots.resize(depth);
        for (std::size_t i = 0; i < depth; ++i) r.slots[i].free_for = i;
        r.counters = &cache.loader_counters();
    }

    static std::vector<Record> whole_files(const Cache& cache, std::span<const SampleId> order) {
        std::vector<Record> out;
        out.reserve(order.size());
        for (const SampleId id : order) out.push_back({id, 0, cache.size(id)});  // UnknownSample for an id outside
        return out;
    }

    // Installs the plan (over files, or over `records`) and starts the threads.
    void start(const EpochPlan& plan, const std::span<const Record>* records) {
        detail::LoaderRing& r = *ring_;
        const std::size_t positions = r.records.size();
        if (records) cache_.set_plan(plan, *records);
        else cache_.set_plan(plan);
        log_memory();
        try {
            if (options_.prefetch_window > 0 && positions > 0) {
                const auto threads = static_cast<unsigned>(std::min<std::size_t>(options_.threads, 64));
                prefetcher_ = std::make_unique<Prefetcher>(
                    cache_, PrefetchOptions{}.threads(threads).window_samples(options_.prefetch_window));
                prefetcher_->start(r.records);
                // The ring's threads read the first depth batches themselves: start beyond them.
                prefetcher_->advance_to(std::min(positions, r.buffers.size() * options_.batch));
            }
            const std::size_t threads = std::min(options_.threads, std::max<std::size_t>(positions, 1));
            for (std::size_t t = 0; t < threads && positions > 0; ++t) threads_.emplace_back([this] { fill(); });
        } catch (...) {
            stop();
            throw;
        }
    }

public:
    // The next batch in plan order, waiting until it is filled; nullopt after the last.
    // A batch with a sample that could not be read throws that error (OriginError, ...)
    // instead; the next call goes on with the batch after it. Hold at most depth - 1
    // batches when calling it, or it waits for one of them to be released.
    std::optional<Batch> next() {
        const auto start = detail::LoaderClock::now();
        std::unique_lock lock(ring_->mutex);
        detail::LoaderRing& r = *ring_;
        if (r.next_batch >= r.batches) return std::nullopt;
        const std::size_t k = r.next_batch++;
        detail::LoaderRing::Slot& slot = r.slots[k % r.slots.size()];
        r.ready_cv.wait(lock, [&] { return slot.batch == k && slot.remaining == 0; });
        const std::uint64_t waited = detail::elapsed_ns(start, detail::LoaderClock::now());
        r.stats.wait_seconds += static_cast<double>(waited) / 1e9;
        if (k == 0) r.stats.first_wait_seconds = static_cast<double>(waited) / 1e9;
        r.counters->wait_ns.fetch_add(waited, std::memory_order_relaxed);
        const std::size_t frontier = r.next_position;  // what the threads have taken so far

        if (slot.error) {  // its buffer goes straight back; the error goes to the caller
            std::exception_ptr error = std::exchange(slot.error, nullptr);
            slot.free_for = k + r.slots.size();
            lock.unlock();
            r.work_cv.notify_all();
            advance_prefetch(frontier);
            std::rethrow_exception(error);
        }
        slot.held = true;
        const std::size_t n = r.count(k);
        const std::uint64_t bytes = r.offsets[r.first(k) + n - 1] + r.sizes[r.first(k) + n - 1];
        r.stats.batches += 1;
        r.stats.samples += n;
        r.stats.bytes += bytes;
        r.counters->batches.fetch_add(1, std::memory_order_relaxed);
        r.counters->samples.fetch_add(n, std::memory_order_relaxed);
        r.counters->bytes.fetch_add(bytes, std::memory_order_relaxed);
        Batch batch(ring_, k);  // held time starts here
        lock.unlock();
        advance_prefetch(frontier);
        return batch;
    }

    LoaderStats stats() const {
        std::lock_guard lock(ring_->mutex);
        return ring_->stats;
    }

    std::size_t batches() const noexcept { return ring_->batches; }    // in this epoch
    std::size_t depth() const noexcept { return ring_->buffers.size(); }  // buffers in the ring
    std::uint64_t buffer_bytes() const noexcept { return ring_->buffer_bytes; }

    // The memory the ring is in: pageable if mlock was refused for any buffer.
    PinnedKind memory_kind() const noexcept {
        PinnedKind kind = PinnedKind::none;
        for (const PinnedBuffer& b : ring_->buffers) {
            if (b.kind() == PinnedKind::pageable) return PinnedKind::pageable;
            kind = b.kind();
        }
        return kind;
    }
    // That, in words: what the loader logged when it started.
    std::string memory_description() const {
        const std::size_t depth = ring_->buffers.size();
        std::size_t pageable = 0;
        for (const PinnedBuffer& b : ring_->buffers) pageable += b.kind() == PinnedKind::pageable;
        std::string text = std::to_string(depth) + (depth == 1 ? " batch buffer of " : " batch buffers of ") +
                           format_size(ring_->buffer_bytes);
        if (pageable == 0 || pageable == depth) return text + " in " + describe(memory_kind());
        // mlock ran out part way (RLIMIT_MEMLOCK): say how many of each.
        return text + ": " + std::to_string(depth - pageable) + " in " + describe(ring_->buffers.front().kind()) + ", " +
               std::to_string(pageable) + " in " + describe(PinnedKind::pageable);
    }

private:
    // One I/O thread: takes the next sample in plan order once its batch's buffer is free,
    // reads it into place, and marks the batch ready when its last sample is in.
    void fill() {
        detail::LoaderRing& r = *ring_;
        for (;;) {
            std::size_t p, k;
            std::byte* dest;
            {
                std::unique_lock lock(r.mutex);
                auto takeable = [&] {
                    return r.stopping || r.next_position == r.records.size() ||
                           r.slots[(r.next_position / r.batch) % r.slots.size()].free_for == r.next_position / r.batch;
                };
                r.work_cv.wait(lock, takeable);
                if (r.stopping || r.next_position == r.records.size()) return;
                p = r.next_position++;
                k = p / r.batch;
                detail::LoaderRing::Slot& slot = r.slots[k % r.slots.size()];
                if (p == r.first(k)) {  // the batch's first sample: the buffer is its now
                    slot.batch = k;
                    slot.remaining = r.count(k);
                    slot.error = nullptr;
                }
                dest = r.buffers[k % r.buffers.size()].data() + r.offsets[p];
            }
            std::exception_ptr error;
            try {
                const Record& rec = r.records[p];
                const std::size_t size = static_cast<std::size_t>(rec.length);
                const std::size_t n = cache_.read(rec.file, rec.offset, {dest, size});
                if (n != size)
                    throw OriginError(EIO, "loader: sample " + std::to_string(rec.file) + " ('" +
                                               std::string(cache_.catalog().path(rec.file)) + "'" +
                                               (rec.offset ? " at offset " + std::to_string(rec.offset) : std::string()) + ") gave " +
                                               std::to_string(n) + " bytes of " + std::to_string(size));
            } catch (...) {
                error = std::current_exception();
            }
            bool ready;
            {
                std::lock_guard lock(r.mutex);
                detail::LoaderRing::Slot& slot = r.slots[k % r.slots.size()];
                // Moved, not copied: the consumer must hold the last reference, as the
                // exception is freed by whoever drops it last.
                if (error && !slot.error) slot.error = std::move(error);
                ready = --slot.remaining == 0;
            }
            if (ready) r.ready_cv.notify_all();
        }
    }

    void advance_prefetch(std::size_t frontier) {
        if (prefetcher_) prefetcher_->advance_to(frontier);
    }

    void log_memory() const {
        if (ring_->batches == 0) {
            log(LogLevel::info, "loader: an empty plan, no batches");
            return;
        }
        log(memory_kind() == PinnedKind::pageable ? LogLevel::warn : LogLevel::info, "loader: ", memory_description());
    }

    void stop() noexcept {
        {
            std::lock_guard lock(ring_->mutex);
            ring_->stopping = true;
            ring_->counters = nullptr;  // Batches released from here on no longer reach the cache
        }
        ring_->work_cv.notify_all();
        for (std::thread& t : threads_) t.join();
        threads_.clear();
        if (prefetcher_) prefetcher_->stop();
    }

    Cache& cache_;
    LoaderOptions options_;
    std::shared_ptr<detail::LoaderRing> ring_;
    std::unique_ptr<Prefetcher> prefetcher_;  // when options_.prefetch_window > 0
    std::vector<std::thread> threads_;
};

}  // namespace tiercache
