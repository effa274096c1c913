// EpochLoader: an epoch's samples as whole batches, in plan order, in pinned memory. A sample
// is a whole file, or a record (record.hpp: a tar shard's member...) for a plan over records.
//
//   plan order ──> I/O threads: cache.read() each sample into its batch's buffer ──> next()
//                  (a ring of `depth` PinnedBuffers, each sized for the largest batch)
//
// Batch k fills buffer (base + k) % depth, contiguously, once batch k - depth has been released; the
// threads take samples one at a time in plan order, so every thread helps fill the oldest
// batch first and a slow sample delays only its own batch. next() waits for batch k, hands
// it out as a move-only Batch (a view of its buffer), and the buffer goes back to the ring
// when the Batch is destroyed or released. An epoch on the run's ring starts (base) just after
// a buffer a Batch of the epoch before still holds (a Python loop's variable keeps the last one
// until the next batch comes), so that it needs that buffer only depth - 1 batches later.
// A Prefetcher, if asked for, warms the cache with
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

namespace tiercache {

class PinnedRing;

// Aggregate, so that {.batch = 32, .depth = 8} works.
struct LoaderOptions {
    std::size_t batch = 32;           // samples per batch
    std::size_t depth = 4;            // batch buffers in the ring: how far the threads may run ahead
    std::size_t threads = 4;          // I/O threads filling batches
    bool drop_last = false;           // drop a last partial batch instead of handing it out
    std::size_t prefetch_window = 0;  // samples beyond the ring the cache prefetches; 0: off
    // The CUDA device the ring is pinned for (and whose NUMA node it and the I/O threads go
    // on): an index, kCurrentDevice (the current one when the loader is made; host memory if
    // there is none), or kHostOnly (never CUDA: mlock'ed memory). A device index that is not
    // there is an error, not a fallback.
    int device = kCurrentDevice;
    // The run's ring, made once and given to every epoch's loader, so that the buffers are
    // allocated once (PinnedRing); null: the loader allocates its own. Only read while the
    // loader is made.
    PinnedRing* ring = nullptr;

    static constexpr int kCurrentDevice = detail::kCurrentDevice;
    static constexpr int kHostOnly = detail::kHostOnly;

    // Throws std::invalid_argument naming the bad value.
    void validate() const {
        auto fail = [](const std::string& what) { throw std::invalid_argument("loader: " + what); };
        if (batch == 0) fail("batch must be at least 1 sample (got 0)");
        if (depth == 0) fail("depth must be at least 1 buffer (got 0)");
        if (threads == 0) fail("threads must be at least 1 (got 0)");
        if (threads > kMaxThreads) fail("threads " + std::to_string(threads) + " is more than " + std::to_string(kMaxThreads));
        if (depth > kMaxDepth) fail("depth " + std::to_string(depth) + " is more than " + std::to_string(kMaxDepth) + " buffers");
        if (device < kHostOnly)
            fail("device " + std::to_string(device) + " is neither a device index nor kCurrentDevice (-1) nor kHostOnly (-2)");
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

// One buffer of a ring, for as long as the ring lives.
struct RingBuffer {
    PinnedBuffer memory;
    bool held = false;     // a Batch (of any epoch) views it
    bool waiting = false;  // an I/O thread waits, outside the mutex, for the copies queued from it
#ifdef TIERCACHE_HAVE_CUDA
    std::vector<cudaEvent_t> events;    // a pool, on the ring's device, made as copies need them
    std::vector<cudaStream_t> streams;  // the stream each of events[0, recorded) was recorded on
    std::size_t recorded = 0;           // events recorded by copy_to_device since the last refill
#endif
};

// The buffers, and the one mutex of everything a loader and its Batches share. Held by
// shared_ptr (a PinnedRing's, each loader's, each Batch's): a Batch may outlive its loader and
// the ring; the memory goes when the last of them does, after the copies queued from it.
struct RingState {
    // Lock order: just this one; the threads read the cache and wait for copies without it.
    std::mutex mutex;
    std::condition_variable work_cv;   // a buffer came free, or stopping
    std::condition_variable ready_cv;  // a batch finished filling
    std::vector<RingBuffer> buffers;   // protected by mutex; their bytes: by the batch filling or holding them
    std::uint64_t capacity = 0;        // protected by mutex: each buffer's bytes
    std::size_t allocations = 0;       // protected by mutex: times pinned memory was allocated for it
    bool in_use = false;               // protected by mutex: a loader has it
    bool bound = false;                // protected by mutex: device is fixed (at the first allocation)
    DeviceChoice device;               // protected by mutex until bound, then fixed
    bool shared = false;               // a PinnedRing's: reused by epoch after epoch
#ifdef TIERCACHE_HAVE_CUDA
    const cuda::Runtime* rt = nullptr;  // set with device, when it is one
#endif

    RingState() = default;
    RingState(const RingState&) = delete;
    RingState& operator=(const RingState&) = delete;
    ~RingState() {
#ifdef TIERCACHE_HAVE_CUDA
        // The memory goes with the members below, but not while a copy still reads from it.
        for (RingBuffer& b : buffers) {
            for (std::size_t e = 0; e < b.recorded; ++e) (void)rt->EventSynchronize(b.events[e]);
            for (cudaEvent_t e : b.events) (void)rt->EventDestroy(e);
        }
#endif
    }

    // Buffer i is about to be refilled: waits (unlocking `lock` meanwhile, marking it waiting)
    // until the copies queued from it are done. An error there (the device's, from earlier
    // work) is returned for the batch that was to fill it: that buffer is not written then.
    std::exception_ptr wait_for_copies(std::size_t i, std::size_t k, std::unique_lock<std::mutex>& lock) {
#ifdef TIERCACHE_HAVE_CUDA
        RingBuffer& b = buffers[i];
        if (b.recorded == 0) return nullptr;
        const std::vector<cudaEvent_t> events(b.events.begin(), b.events.begin() + static_cast<std::ptrdiff_t>(b.recorded));
        b.waiting = true;
        lock.unlock();
        cudaError_t err = cudaSuccess;
        for (cudaEvent_t e : events) {
            cudaError_t status = rt->EventQuery(e);  // done by now, mostly: no blocking call
            if (status == cudaErrorNotReady) status = rt->EventSynchronize(e);
            if (status != cudaSuccess && err == cudaSuccess) err = status;
        }
        if (err != cudaSuccess) (void)rt->GetLastError();
        lock.lock();
        if (err == cudaSuccess) b.recorded = 0;  // else still unknown: the next refill waits for them again
        b.waiting = false;
        work_cv.notify_all();
        if (err != cudaSuccess)
            return std::make_exception_ptr(CudaError(
                "loader: batch " + std::to_string(k) + " was not filled: waiting for the copies queued from its buffer failed: " +
                    cuda::error_text(*rt, err) + " (an error of the device's earlier work, not of this batch)",
                static_cast<int>(err), true));
#else
        (void)i, (void)k, (void)lock;
#endif
        return nullptr;
    }

    // The same, for a buffer about to be freed, with the mutex held throughout; errors ignored
    // (the memory is not written, only given back).
    void wait_for_copies_locked(std::size_t i) {
#ifdef TIERCACHE_HAVE_CUDA
        RingBuffer& b = buffers[i];
        for (std::size_t e = 0; e < b.recorded; ++e) (void)rt->EventSynchronize(b.events[e]);
        b.recorded = 0;
#else
        (void)i;
#endif
    }

#ifdef TIERCACHE_HAVE_CUDA
    // Batch k (in buffer i) to the device, and an event on `stream` after it that the ring
    // waits for before refilling the buffer.
    void copy(std::size_t i, std::size_t k, std::span<const std::byte> bytes, void* device_dst, cudaStream_t stream) {
        if (rt == nullptr || device.device < 0)
            throw std::runtime_error("loader: batch " + std::to_string(k) +
                                     " cannot be copied to a device: the ring is in host memory (" + device.how + ")");
        const cudaError_t before = rt->PeekAtLastError();  // what the caller's earlier work left, if anything
        const cudaError_t err = rt->MemcpyAsync(device_dst, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream);
        if (err != cudaSuccess) {
            // Sticky (a kernel faulted), or the same error as was pending before: not this copy's.
            const bool earlier = cuda::sticky(err) || (before != cudaSuccess && err == before);
            if (!earlier) (void)rt->GetLastError();  // ours, not sticky: clear it for the caller's next call
            throw CudaError(earlier ? "loader: batch " + std::to_string(k) +
                                          " was not copied: the device already had an error from earlier work (a kernel or a "
                                          "copy queued before), not from this batch: " + cuda::error_text(*rt, err)
                                    : "loader: copying batch " + std::to_string(k) + " (" + format_size(bytes.size()) +
                                          ") to the device: " + cuda::error_text(*rt, err),
                            static_cast<int>(err), earlier);
        }
        std::lock_guard guard(mutex);
        RingBuffer& b = buffers[i];
        // One event a stream: recording it again after a later copy on that stream covers both.
        std::size_t e = 0;
        while (e < b.recorded && b.streams[e] != stream) ++e;
        cudaError_t status = cudaSuccess;
        if (e == b.events.size()) {
            cuda::DeviceGuard on(*rt, device.device);  // an event is of the device current when made
            cudaEvent_t event = nullptr;
            status = rt->EventCreateWithFlags(&event, cudaEventDisableTiming | cudaEventBlockingSync);
            if (status == cudaSuccess) {
                b.events.push_back(event);
                b.streams.push_back(stream);
            }
        }
        if (status == cudaSuccess) status = rt->EventRecord(b.events[e], stream);
        if (status != cudaSuccess) {
            // The copy is queued but cannot be tracked: wait for it here, so the buffer stays safe.
            (void)rt->StreamSynchronize(stream);
            (void)rt->GetLastError();
            throw CudaError("loader: batch " + std::to_string(k) + " was copied, but its event could not be recorded on the stream (" +
                                cuda::error_text(*rt, status) + "; is the stream on device " + std::to_string(device.device) +
                                "?): waited for the copy instead",
                            static_cast<int>(status), false);
        }
        b.streams[e] = stream;
        if (e == b.recorded) ++b.recorded;
    }
#endif
};

// One epoch's layout and progress over a ring. Held by shared_ptr: the loader's, each Batch's
// (whose spans point into it).
struct EpochState {
    std::shared_ptr<RingState> ring;
    // Fixed at construction: the positions handed out (drop_last applied) and their layout.
    std::vector<Record> records;        // by position in the plan
    std::vector<SampleId> ids;          // by position: each record's file
    std::vector<std::uint64_t> sizes;   // by position
    std::vector<std::uint64_t> offsets; // by position: from the start of its batch's buffer
    std::size_t batch = 1;              // samples per batch
    std::size_t batches = 0;
    std::uint64_t largest = 0;          // the largest batch's bytes
    std::size_t depth = 1;              // ring buffers used: batch k in ring->buffers[buffer(k)]
    std::size_t base = 0;               // the buffer batch 0 goes in (take_ring)

    std::size_t buffer(std::size_t k) const { return (base + k) % depth; }

    std::size_t first(std::size_t k) const { return k * batch; }
    std::size_t count(std::size_t k) const { return std::min(batch, records.size() - k * batch); }

    struct Slot {
        std::size_t batch = kNone;   // the batch in this buffer (filling, ready or handed out)
        std::size_t remaining = 0;   // its samples not yet read
        std::exception_ptr error;    // the first failed read of its samples
        bool skip = false;           // its buffer must not be written (its copies could not be waited for)
        std::size_t free_for = 0;    // the batch that may fill it next
    };
    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

    // All protected by ring->mutex.
    std::vector<Slot> slots;           // by buffer
    std::size_t next_position = 0;     // the next sample a thread takes
    std::size_t next_batch = 0;        // the next batch next() hands out
    bool stopping = false;
    LoaderCounters* counters = nullptr;  // the cache's, null once the loader is gone
    LoaderStats stats;

    // A Batch going back: its buffer may take batch k + depth (once the copies from it are done).
    void release(std::size_t k, LoaderClock::time_point handed_out) {
        const std::uint64_t held = elapsed_ns(handed_out, LoaderClock::now());
        {
            std::lock_guard lock(ring->mutex);
            ring->buffers[buffer(k)].held = false;
            slots[buffer(k)].free_for = k + depth;
            stats.held_seconds += static_cast<double>(held) / 1e9;
            if (counters) counters->held_ns.fetch_add(held, std::memory_order_relaxed);
        }
        ring->work_cv.notify_all();
    }
};

}  // namespace detail

// The loader's batch buffers for a whole run: made once and given to every epoch's loader
// (LoaderOptions::ring), which allocates them at the first epoch (pinned for its device, with
// 1/8 to spare) and reuses them after; an epoch whose largest batch is bigger grows them,
// which its loader logs. One loader at a time. A handle: copies share one ring.
class PinnedRing {
public:
    PinnedRing() : state_(std::make_shared<detail::RingState>()) { state_->shared = true; }

    std::size_t allocations() const {  // times its pinned memory was allocated: 1 for a run that never grew it
        std::lock_guard lock(state_->mutex);
        return state_->allocations;
    }
    std::size_t depth() const {  // buffers
        std::lock_guard lock(state_->mutex);
        return state_->buffers.size();
    }
    std::uint64_t buffer_bytes() const {  // each buffer's capacity
        std::lock_guard lock(state_->mutex);
        return state_->capacity;
    }
    int device() const {  // what it is pinned for; -1: host memory, or not allocated yet
        std::lock_guard lock(state_->mutex);
        return state_->device.device;
    }

private:
    friend class EpochLoader;
    std::shared_ptr<detail::RingState> state_;
};

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
    // The ring buffer it is in (EpochLoader::buffer_of); meaningless once released.
    std::size_t buffer() const noexcept { return epoch_ ? epoch_->buffer(index_) : 0; }
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

    // Gives the buffer back to the ring now; the views above turn empty. Copies queued from it
    // by copy_to_device go on: the ring refills the buffer only once they are done.
    void release() noexcept {
        if (!epoch_) return;
        epoch_->release(index_, handed_out_);
        epoch_.reset();
        ids_ = {};
        records_ = {};
        offsets_ = {};
        sizes_ = {};
        bytes_ = {};
    }

#ifdef TIERCACHE_HAVE_CUDA
    // Queues one cudaMemcpyAsync of the whole batch to `device_dst` (at least bytes().size()
    // bytes, on the loader's device) on `stream`, then records an event after it there: the
    // ring does not refill this buffer until the event is reached, so the Batch may be dropped
    // right after this call. Throws CudaError with CUDA's message (earlier(): the error was the
    // device's from earlier work, not this copy's), std::runtime_error when the ring is in host
    // memory, std::logic_error for a released Batch.
    void copy_to_device(void* device_dst, cudaStream_t stream) const {
        if (!epoch_) throw std::logic_error("loader: copy_to_device of a released (or moved-from) batch");
        epoch_->ring->copy(epoch_->buffer(index_), index_, bytes_, device_dst, stream);
    }
#endif

private:
    friend class EpochLoader;
    // With the ring's mutex held.
    Batch(std::shared_ptr<detail::EpochState> epoch, std::size_t k) : epoch_(std::move(epoch)), index_(k) {
        const detail::EpochState& e = *epoch_;
        const std::size_t first = e.first(k), n = e.count(k);
        ids_ = std::span<const SampleId>(e.ids).subspan(first, n);
        records_ = std::span<const Record>(e.records).subspan(first, n);
        offsets_ = std::span<const std::uint64_t>(e.offsets).subspan(first, n);
        sizes_ = std::span<const std::uint64_t>(e.sizes).subspan(first, n);
        const std::size_t total = n == 0 ? 0 : static_cast<std::size_t>(offsets_[n - 1] + sizes_[n - 1]);
        bytes_ = std::span<const std::byte>(e.ring->buffers[e.buffer(k)].memory.span()).first(total);
        handed_out_ = detail::LoaderClock::now();
    }

    void take(Batch& o) noexcept {
        epoch_ = std::move(o.epoch_);
        index_ = o.index_;
        ids_ = std::exchange(o.ids_, {});
        records_ = std::exchange(o.records_, {});
        offsets_ = std::exchange(o.offsets_, {});
        sizes_ = std::exchange(o.sizes_, {});
        bytes_ = std::exchange(o.bytes_, {});
        handed_out_ = o.handed_out_;
    }

    std::shared_ptr<detail::EpochState> epoch_;  // null once released or moved from
    std::size_t index_ = 0;
    std::span<const SampleId> ids_;
    std::span<const Record> records_;
    std::span<const std::uint64_t> offsets_, sizes_;
    std::span<const std::byte> bytes_;
    detail::LoaderClock::time_point handed_out_{};
};

class EpochLoader {
public:
    // Installs `plan` in the cache (for its plan-aware policy), takes the ring (options.ring's,
    // or its own) sized for the plan's largest batch, and starts the threads. Throws
    // std::invalid_argument for bad options (a device that is not there too), UnknownSample for
    // a plan naming a sample the cache does not hold, std::logic_error for a ring another loader
    // has, or that must grow while a Batch of an earlier epoch still holds a buffer,
    // std::bad_alloc or CudaError when the buffers cannot be had. The cache must outlive the
    // loader (not its Batches).
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
    // sample first. Batches still held stay valid; their buffers go when they do (and the
    // ring), after the copies queued from them. The ring is free for the next loader then.
    ~EpochLoader() { stop(); }

private:
    // The layout of `order`'s records and the ring; start() installs the plan and starts the threads.
    EpochLoader(Cache& cache, std::vector<Record> order, LoaderOptions options)
        : cache_(cache), options_(options), epoch_(std::make_shared<detail::EpochState>()) {
        options_.validate();
        detail::EpochState& e = *epoch_;
        const std::size_t b = options_.batch;
        const std::size_t positions = options_.drop_last ? order.size() / b * b : order.size();
        e.batch = b;
        e.batches = (positions + b - 1) / b;
        order.resize(positions);
        e.records = std::move(order);
        e.ids.resize(positions);
        e.sizes.resize(positions);
        e.offsets.resize(positions);
        for (std::size_t k = 0; k < e.batches; ++k) {
            std::uint64_t offset = 0;
            for (std::size_t p = e.first(k); p < e.first(k) + e.count(k); ++p) {
                const Record& rec = e.records[p];
                (void)cache.size(rec.file);  // UnknownSample here, not in a thread
                check_record(cache.catalog(), rec);
                e.ids[p] = rec.file;
                e.sizes[p] = rec.length;
                e.offsets[p] = offset;
                offset += e.sizes[p];
            }
            e.largest = std::max(e.largest, offset);
        }
        // No more buffers than batches: a short plan needs no deep ring.
        e.depth = std::min(options_.depth, std::max<std::size_t>(e.batches, 1));
        e.slots.resize(e.depth);
        e.counters = &cache.loader_counters();
        e.ring = options_.ring ? options_.ring->state_ : std::make_shared<detail::RingState>();
        take_ring();  // last: nothing after it throws, so in_use is only set for a loader that exists
        for (std::size_t k = 0; k < e.depth; ++k) e.slots[e.buffer(k)].free_for = k;
    }

    // Takes the ring for this epoch: pins it for the device at its first use, grows it for a
    // larger batch or a deeper ring, reuses it otherwise. Says which in ring_note_.
    void take_ring() {
        detail::EpochState& e = *epoch_;
        detail::RingState& r = *e.ring;
        const DeviceChoice choice = choose_device(options_.device);  // throws for a device that is not there
        std::lock_guard lock(r.mutex);
        if (r.in_use)
            throw std::logic_error("loader: the PinnedRing is in use by another EpochLoader: one loader at a time "
                                   "(destroy the last epoch's loader before making the next)");
        if (r.bound && choice.device != r.device.device)
            throw std::invalid_argument("loader: the PinnedRing is pinned for " +
                                        (r.device.device < 0 ? std::string("host memory") : "device " + std::to_string(r.device.device)) +
                                        ", this loader is for " +
                                        (choice.device < 0 ? "host memory (" + choice.how + ")" : "device " + std::to_string(choice.device)) +
                                        ": one ring a device");
        if (!r.bound) {
            r.device = choice;
#ifdef TIERCACHE_HAVE_CUDA
            if (choice.device >= 0) r.rt = detail::cuda::runtime();
#endif
        }
        const bool grow = r.capacity < e.largest || (r.buffers.empty() && e.depth > 0);
        const std::size_t have = r.buffers.size();
        const std::uint64_t old_capacity = r.capacity;
        if (!grow && have >= e.depth) {
            ring_note_ = r.shared ? "the run's ring, reused (allocated " + std::to_string(r.allocations) +
                                        (r.allocations == 1 ? " time" : " times") + "): "
                                  : "";
            e.base = start_after_held(r, e.depth);
            r.in_use = true;
            return;
        }
        // Each buffer the ring has is regrown, every one free: none held, its copies waited for.
        const std::uint64_t capacity = grow ? (r.shared ? e.largest + e.largest / 8 : e.largest) : r.capacity;
        if (grow)
            for (std::size_t i = 0; i < have; ++i)
                if (r.buffers[i].held)
                    throw std::logic_error("loader: the PinnedRing must grow from " + format_size(old_capacity) + " to " +
                                           format_size(capacity) + " a buffer for this epoch's largest batch, but a Batch of an "
                                           "earlier epoch still holds buffer " + std::to_string(i) + ": release it first");
        std::vector<PinnedBuffer> fresh;
        const PinnedFor where{.device = r.device.device, .numa_node = r.device.numa_node};
        for (std::size_t i = grow ? 0 : have; i < std::max(have, e.depth); ++i)
            fresh.emplace_back(static_cast<std::size_t>(capacity), where);
        if (grow)  // with the lock held: no Batch holds them, so no one else would touch them meanwhile
            for (std::size_t i = 0; i < have; ++i) r.wait_for_copies_locked(i);
        std::size_t next = 0;
        if (grow)
            for (std::size_t i = 0; i < have; ++i) r.buffers[i].memory = std::move(fresh[next++]);
        while (next < fresh.size()) {
            r.buffers.emplace_back();
            r.buffers.back().memory = std::move(fresh[next++]);
        }
        r.capacity = capacity;
        r.bound = true;
        ++r.allocations;
        if (r.shared)
            ring_note_ = r.allocations == 1 ? "the run's ring, allocated: "
                         : grow ? "the run's ring, grown from " + format_size(old_capacity) + " to " + format_size(capacity) +
                                      " a buffer for this epoch's largest batch (" + format_size(e.largest) + "): "
                                : "the run's ring, deepened from " + std::to_string(have) + " buffers: ";
        e.base = start_after_held(r, e.depth);
        r.in_use = true;
    }

    // The buffer after the last one of [0, depth) a Batch of an earlier epoch holds, or 0: this
    // epoch reaches a held buffer as late as it can. With r.mutex held.
    static std::size_t start_after_held(const detail::RingState& r, std::size_t depth) {
        std::size_t base = 0;
        for (std::size_t i = 0; i < depth && i < r.buffers.size(); ++i)
            if (r.buffers[i].held) base = (i + 1) % depth;
        return base;
    }

    static std::vector<Record> whole_files(const Cache& cache, std::span<const SampleId> order) {
        std::vector<Record> out;
        out.reserve(order.size());
        for (const SampleId id : order) out.push_back({id, 0, cache.size(id)});  // UnknownSample for an id outside
        return out;
    }

    // Installs the plan (over files, or over `records`) and starts the threads.
    void start(const EpochPlan& plan, const std::span<const Record>* records) {
        detail::EpochState& e = *epoch_;
        const std::size_t positions = e.records.size();
        if (records) cache_.set_plan(plan, *records);
        else cache_.set_plan(plan);
        log_memory();
        try {
            if (options_.prefetch_window > 0 && positions > 0) {
                const auto threads = static_cast<unsigned>(std::min<std::size_t>(options_.threads, 64));
                prefetcher_ = std::make_unique<Prefetcher>(
                    cache_, PrefetchOptions{}.threads(threads).window_samples(options_.prefetch_window));
                prefetcher_->start(e.records);
                // The ring's threads read the first depth batches themselves: start beyond them.
                prefetcher_->advance_to(std::min(positions, e.depth * options_.batch));
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
        detail::EpochState& e = *epoch_;
        detail::RingState& r = *e.ring;
        std::unique_lock lock(r.mutex);
        if (e.next_batch >= e.batches) return std::nullopt;
        const std::size_t k = e.next_batch++;
        detail::EpochState::Slot& slot = e.slots[e.buffer(k)];
        r.ready_cv.wait(lock, [&] { return slot.batch == k && slot.remaining == 0; });
        const std::uint64_t waited = detail::elapsed_ns(start, detail::LoaderClock::now());
        e.stats.wait_seconds += static_cast<double>(waited) / 1e9;
        if (k == 0) e.stats.first_wait_seconds = static_cast<double>(waited) / 1e9;
        e.counters->wait_ns.fetch_add(waited, std::memory_order_relaxed);
        const std::size_t frontier = e.next_position;  // what the threads have taken so far

        if (slot.error) {  // its buffer goes straight back; the error goes to the caller
            std::exception_ptr error = std::exchange(slot.error, nullptr);
            slot.free_for = k + e.depth;
            lock.unlock();
            r.work_cv.notify_all();
            advance_prefetch(frontier);
            std::rethrow_exception(error);
        }
        r.buffers[e.buffer(k)].held = true;
        const std::size_t n = e.count(k);
        const std::uint64_t bytes = e.offsets[e.first(k) + n - 1] + e.sizes[e.first(k) + n - 1];
        e.stats.batches += 1;
        e.stats.samples += n;
        e.stats.bytes += bytes;
        e.counters->batches.fetch_add(1, std::memory_order_relaxed);
        e.counters->samples.fetch_add(n, std::memory_order_relaxed);
        e.counters->bytes.fetch_add(bytes, std::memory_order_relaxed);
        Batch batch(epoch_, k);  // held time starts here
        lock.unlock();
        advance_prefetch(frontier);
        return batch;
    }

    LoaderStats stats() const {
        std::lock_guard lock(epoch_->ring->mutex);
        return epoch_->stats;
    }

    std::size_t batches() const noexcept { return epoch_->batches; }  // in this epoch
    std::size_t depth() const noexcept { return epoch_->depth; }      // ring buffers it uses
    // The ring buffer batch k is filled in: next() for k waits until no Batch holds it.
    std::size_t buffer_of(std::size_t k) const noexcept { return epoch_->buffer(k); }
    // Each buffer's bytes: at least the largest batch's (more for a ring kept for the run).
    std::uint64_t buffer_bytes() const {
        std::lock_guard lock(epoch_->ring->mutex);
        return epoch_->ring->capacity;
    }
    int device() const noexcept { return epoch_->ring->device.device; }  // what the ring is pinned for; -1: host memory

    // The memory the ring is in: pageable if mlock was refused for any buffer.
    PinnedKind memory_kind() const {
        std::lock_guard lock(epoch_->ring->mutex);
        return memory_kind_locked();
    }
    // That, in words: what the loader logged when it started (less which ring).
    std::string memory_description() const {
        std::lock_guard lock(epoch_->ring->mutex);
        const detail::RingState& r = *epoch_->ring;
        const std::size_t depth = epoch_->depth;
        std::size_t pageable = 0;
        for (std::size_t i = 0; i < depth; ++i) pageable += r.buffers[i].memory.kind() == PinnedKind::pageable;
        std::string text = std::to_string(depth) + (depth == 1 ? " batch buffer of " : " batch buffers of ") + format_size(r.capacity);
        const PinnedKind kind = memory_kind_locked();
        if (pageable == 0 || pageable == depth) {
            text += " in " + describe(kind, r.device.device, r.device.how);
        } else {  // mlock ran out part way (RLIMIT_MEMLOCK): say how many of each.
            text += ": " + std::to_string(depth - pageable) + " in " + describe(r.buffers.front().memory.kind(), -1, r.device.how) +
                    ", " + std::to_string(pageable) + " in " + describe(PinnedKind::pageable);
        }
        if (r.device.numa_node >= 0) text += "; on NUMA node " + std::to_string(r.device.numa_node) + ", I/O threads on its CPUs";
        return text;
    }

private:
    PinnedKind memory_kind_locked() const {
        PinnedKind kind = PinnedKind::none;
        for (std::size_t i = 0; i < epoch_->depth; ++i) {
            const PinnedKind k = epoch_->ring->buffers[i].memory.kind();
            if (k == PinnedKind::pageable) return PinnedKind::pageable;
            kind = k;
        }
        return kind;
    }

    // One I/O thread: takes the next sample in plan order once its batch's buffer is free (its
    // batch before released, no Batch of an earlier epoch on it, the copies queued from it
    // done), reads it into place, and marks the batch ready when its last sample is in.
    void fill() {
        detail::EpochState& e = *epoch_;
        detail::RingState& r = *e.ring;
        if (r.device.numa_node >= 0) (void)::numa_run_on_node(r.device.numa_node);  // near the GPU and the ring
#ifdef TIERCACHE_HAVE_CUDA
        // So that this thread's CUDA calls (waiting for events) make no context on device 0.
        if (r.rt && r.device.device >= 0) (void)r.rt->SetDevice(r.device.device);
#endif
        for (;;) {
            std::size_t p, k;
            std::byte* dest;
            bool skip;
            {
                std::unique_lock lock(r.mutex);
                auto takeable = [&] {
                    if (e.stopping || e.next_position == e.records.size()) return true;
                    const std::size_t kb = e.next_position / e.batch, i = e.buffer(kb);
                    return e.slots[i].free_for == kb && !r.buffers[i].held && !r.buffers[i].waiting;
                };
                r.work_cv.wait(lock, takeable);
                if (e.stopping || e.next_position == e.records.size()) return;
                p = e.next_position++;
                k = p / e.batch;
                const std::size_t i = e.buffer(k);
                detail::EpochState::Slot& slot = e.slots[i];
                if (p == e.first(k)) {  // the batch's first sample: the buffer is its now
                    slot.batch = k;
                    slot.remaining = e.count(k);
                    slot.error = nullptr;
                    slot.skip = false;
                    // Not one byte of it is written before the copies from it are done.
                    if (std::exception_ptr error = r.wait_for_copies(i, k, lock)) {
                        slot.error = std::move(error);
                        slot.skip = true;
                    }
                }
                skip = slot.skip;
                dest = r.buffers[i].memory.data() + e.offsets[p];
            }
            std::exception_ptr error;
            if (!skip) try {
                const Record& rec = e.records[p];
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
                detail::EpochState::Slot& slot = e.slots[e.buffer(k)];
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
        if (epoch_->batches == 0) {
            log(LogLevel::info, "loader: an empty plan, no batches");
            return;
        }
        log(memory_kind() == PinnedKind::pageable ? LogLevel::warn : LogLevel::info, "loader: ", ring_note_, memory_description());
    }

    void stop() noexcept {
        detail::RingState& r = *epoch_->ring;
        {
            std::lock_guard lock(r.mutex);
            epoch_->stopping = true;
            epoch_->counters = nullptr;  // Batches released from here on no longer reach the cache
        }
        r.work_cv.notify_all();
        for (std::thread& t : threads_) t.join();
        threads_.clear();
        if (prefetcher_) prefetcher_->stop();
        std::lock_guard lock(r.mutex);
        r.in_use = false;  // for the next epoch's loader
    }

    Cache& cache_;
    LoaderOptions options_;
    std::shared_ptr<detail::EpochState> epoch_;  // holds the ring
    std::unique_ptr<Prefetcher> prefetcher_;     // when options_.prefetch_window > 0
    std::vector<std::thread> threads_;
    std::string ring_note_;  // for the log: which of the run's ring's uses this is
};

}  // namespace tiercache
