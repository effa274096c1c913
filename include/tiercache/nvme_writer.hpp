// The nvme write-through, off the reader's thread: a miss hands the extent it read to this
// bounded queue and answers at once; one background thread writes the queue to the nvme tier.
//
// The bytes handed over must stay as they are until written. A write holds either
//   - a pin on the extent's copy in a memory tier (SampleRef): a published copy is never
//     written again, and an evicted one is freed only once its last pin goes (memory_tier.hpp:
//     evict() retires it, reserve() frees it later). No copy, and no memory beyond the tier's
//     budget: an extent evicted while queued keeps its room in the tier (counted in used_bytes)
//     until written, which the queue's bound limits. This is the write-through of misses that a
//     memory tier took: the common case, and the one on the reader's path.
//   - or a copy of its own (`owned`), for bytes no memory tier holds (an origin read only the
//     nvme tier took): heap memory outside every tier, which the same bound limits.
// A copy for every write would cost a memcpy on the reader's thread and up to the bound in heap
// beyond the dram budget (in a memory cgroup shared with the tier, that is what gets a daemon
// OOM-killed); a pin costs neither.
//
// Backpressure: at most max_bytes queued (one extent at any time, however large). A write that
// does not fit is not queued, never waited for: offer() returns false and counts it skipped.
// For a copy in memory the cache then remember()s the extent; when the queue runs empty the
// thread asks the cache (retry_) to write those still held in memory, so a noevict tier, which
// never demotes, still gets its extents to nvme (a demotion from memory writes a copy too:
// Cache::demote). Bytes held nowhere else (an nvme-only fetch, a demoted copy) are written by
// the caller when the queue is full, as before this writer: the nvme device is the bottleneck
// then, and dropping them would cost an origin read for each later read.
//
// A demotion from memory of an extent whose write is still queued (or under way) makes no copy
// and leaves no gap: the cache marks the extent's fetch in flight and hands it to that write
// (take_flight), which goes to the front of the queue and ends the flight once stored, so a
// reader meanwhile waits for one nvme write instead of reading the origin again.
//
// The thread does what the cache says a write is (store_: check the file's version, put, look
// again; land_: end the extent's flight) and never touches the placement lock's state. Lock
// order: the cache's placement lock, then mutex_ (take_flight); the thread calls the cache with
// mutex_ let go. Shutdown: the destructor lets the thread
// finish what is queued and what was remembered, then joins it; it runs before the memory tiers
// and the nvme tier go (Cache declares it after them). The nvme index names only bytes written
// (NvmeTier::put publishes a location once its write returned), so a process killed mid-queue
// loses copies, never correctness.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <unistd.h>
#include <vector>

#include "extent.hpp"
#include "sample_ref.hpp"

namespace tiercache {

struct NvmeWrite {
    ExtentId extent = 0;
    SampleRef pinned;               // the bytes in a memory tier, pinned until written; or
    std::vector<std::byte> owned;   // a copy of them, when no memory tier holds them
    std::uint64_t checksum = 0;
    std::uint32_t version = 0;      // the file's when it was read: written only if still so
    bool single_flight = false;     // the cache's: the extent's fetch stays in flight until written
                                    // (set at offer, or by take_flight under the writer's lock)

    std::span<const std::byte> bytes() const noexcept { return pinned ? pinned.bytes() : std::span<const std::byte>(owned); }
};

struct NvmeWriterCounters {
    std::atomic<std::uint64_t> queued{0};   // writes offered and taken
    std::atomic<std::uint64_t> skipped{0};  // offered while the queue was full: not taken
    std::atomic<std::uint64_t> retried{0};  // remembered extents the thread went back for
    std::atomic<std::uint64_t> written{0};  // queued or retried writes stored on nvme
    std::atomic<std::uint64_t> dropped{0};  // queued writes not stored: the file changed, or the tier refused
    std::atomic<std::uint64_t> awaited{0};  // queued writes of extents demoted meanwhile: readers waited for them, not the origin
};

class NvmeWriter {
public:
    // store: does one write, true if it stored the bytes (the thread's; must not throw). land:
    // ends the cache's fetch of an extent (a write with single_flight, once stored or not).
    // retry: writes extent `e` if it is still held in memory and not on nvme yet, true if it did.
    // The thread starts with the first write offered, not here: a daemon opens its cache, then
    // forks (fuse_daemonize), and threads do not survive a fork (as Readahead's).
    NvmeWriter(std::uint64_t max_bytes, std::function<bool(const NvmeWrite&)> store, std::function<void(ExtentId)> land,
               std::function<bool(ExtentId)> retry)
        : max_bytes_(max_bytes), store_(std::move(store)), land_(std::move(land)), retry_(std::move(retry)) {}
    NvmeWriter(const NvmeWriter&) = delete;
    NvmeWriter& operator=(const NvmeWriter&) = delete;

    // Finishes the queue and what was remembered, then ends the thread.
    ~NvmeWriter() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            paused_ = false;
        }
        wake_.notify_all();
        if (thread_.joinable() && started_by_ != ::getpid()) {
            // Started by the process this one was forked from: not ours to join (it does not
            // exist here). Its handle is left behind, never touched.
            new std::thread(std::move(thread_));
            return;
        }
        if (thread_.joinable()) thread_.join();
    }

    // Queues `w` if it fits under the bound (or the queue is empty); never waits. False: not
    // taken, counted as skipped (`w` is left as it was: the caller's pin goes with it).
    bool offer(NvmeWrite&& w) {
        const std::uint64_t size = w.bytes().size();
        {
            std::lock_guard lock(mutex_);
            if (!queue_.empty() && queued_bytes_ + size > max_bytes_) {
                counters_.skipped.fetch_add(1, std::memory_order_relaxed);
                return false;
            }
            queued_bytes_ += size;
            queue_.push_back(std::move(w));
            counters_.queued.fetch_add(1, std::memory_order_relaxed);
            start_locked();
        }
        wake_.notify_one();
        return true;
    }

    // Extent `e` leaves memory while a write of it, made under file `version`, is queued or
    // under way: that write now ends the extent's fetch, which the caller has marked in flight
    // (readers wait for it), and goes first, the extent being on no tier until it lands. False
    // if no such write is here: the caller writes a copy itself.
    bool take_flight(ExtentId e, std::uint32_t version) {
        std::lock_guard lock(mutex_);
        if (current_ != nullptr && current_->extent == e) {
            if (current_->version != version || current_->single_flight) return false;
            current_->single_flight = true;
        } else {
            auto it = std::find_if(queue_.begin(), queue_.end(), [&](const NvmeWrite& w) { return w.extent == e && w.version == version; });
            if (it == queue_.end() || it->single_flight) return false;
            it->single_flight = true;
            if (it != queue_.begin()) {
                NvmeWrite w = std::move(*it);
                queue_.erase(it);
                queue_.push_front(std::move(w));
            }
        }
        counters_.awaited.fetch_add(1, std::memory_order_relaxed);
        return true;
    }

    // An extent whose write-through was skipped: retried once the queue is empty. At most
    // kMaxRemembered are kept (4 bytes each); beyond that a demotion is what writes it.
    void remember(ExtentId e) {
        std::lock_guard lock(mutex_);
        if (remembered_.size() < kMaxRemembered) remembered_.push_back(e);
        start_locked();
    }

    // Waits until nothing is queued, remembered or being written (tests, and flush()).
    void drain() {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [this] { return (queue_.empty() && remembered_.empty() && !busy_) || paused_; });
    }

    // For tests: a paused writer takes writes but performs none until resumed (or destroyed).
    void pause(bool paused) {
        {
            std::lock_guard lock(mutex_);
            paused_ = paused;
        }
        wake_.notify_all();
        idle_.notify_all();
    }

    std::uint64_t queued_bytes() const {
        std::lock_guard lock(mutex_);
        return queued_bytes_;
    }
    std::uint64_t max_bytes() const noexcept { return max_bytes_; }
    const NvmeWriterCounters& counters() const noexcept { return counters_; }

    static constexpr std::size_t kMaxRemembered = 1u << 20;

private:
    void start_locked() {  // mutex_ held
        if (thread_.joinable() && started_by_ == ::getpid()) return;
        if (thread_.joinable()) new std::thread(std::move(thread_));  // a parent's, before a fork: not ours
        started_by_ = ::getpid();
        thread_ = std::thread([this] { run(); });
    }

    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stopping_ || (!paused_ && (!queue_.empty() || !remembered_.empty())); });
            if (queue_.empty() && remembered_.empty()) {
                if (stopping_) return;
                continue;
            }
            busy_ = true;
            if (!queue_.empty()) {
                NvmeWrite w = std::move(queue_.front());
                queue_.pop_front();
                current_ = &w;
                lock.unlock();
                (store_(w) ? counters_.written : counters_.dropped).fetch_add(1, std::memory_order_relaxed);
                const std::uint64_t size = w.bytes().size();
                lock.lock();
                current_ = nullptr;  // from here take_flight() cannot hand it a flight
                const bool flight = w.single_flight;
                lock.unlock();
                if (flight) land_(w.extent);  // stored (a reader finds it on nvme) or not (the origin)
                w = {};  // the pin (or the copy) goes before the room is given back
                lock.lock();
                queued_bytes_ -= size;
            } else {
                const ExtentId e = remembered_.front();
                remembered_.pop_front();
                lock.unlock();
                counters_.retried.fetch_add(1, std::memory_order_relaxed);
                if (retry_(e)) counters_.written.fetch_add(1, std::memory_order_relaxed);
                lock.lock();
            }
            busy_ = false;
            if (queue_.empty() && remembered_.empty()) idle_.notify_all();
        }
    }

    const std::uint64_t max_bytes_;
    const std::function<bool(const NvmeWrite&)> store_;
    const std::function<void(ExtentId)> land_;
    const std::function<bool(ExtentId)> retry_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;           // the thread: work, resume or stop
    std::condition_variable idle_;           // drain(): all done
    std::deque<NvmeWrite> queue_;            // protected by mutex_
    NvmeWrite* current_ = nullptr;           // protected by mutex_: the write the thread is doing
    std::deque<ExtentId> remembered_;        // protected by mutex_: skipped, to retry when idle
    std::uint64_t queued_bytes_ = 0;         // protected by mutex_: bytes in queue_ and the write in progress
    bool busy_ = false;                      // protected by mutex_: the thread is in write_ or retry_
    bool paused_ = false;                    // protected by mutex_
    bool stopping_ = false;                  // protected by mutex_
    NvmeWriterCounters counters_;
    std::thread thread_;                     // protected by mutex_: started by start_locked
    pid_t started_by_ = 0;                   // protected by mutex_: the process that started it
};

}  // namespace tiercache
