// Reads a plan's next records (whole files, or byte ranges of them) into the cache just ahead
// of the reader.
//
// A window runs ahead of the reader's position: at most `window_samples` positions and
// `window_bytes` of samples fetched but not yet read (backpressure: that is all the memory
// prefetch may claim). I/O threads take the window's next positions and ask the cache to
// bring each in (Cache::prefetch: from nvme or the origin into the fastest tier whose policy
// takes it). A reader never waits behind the prefetch of another sample: the cache holds no
// lock across I/O, and a reader wanting the very sample in flight waits for that one only.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache.hpp"
#include "log.hpp"
#include "size.hpp"

namespace tiercache {

class PrefetchOptions {
public:
    // I/O threads; 0 turns prefetching off.
    PrefetchOptions& threads(unsigned n) { threads_ = n; return *this; }
    // How far ahead of the reader, in plan positions.
    PrefetchOptions& window_samples(std::size_t n) { window_samples_ = n; return *this; }
    // How many bytes fetched ahead may wait for the reader.
    PrefetchOptions& window_bytes(std::uint64_t n) { window_bytes_ = n; return *this; }
    // Reads arrive through the kernel's page cache (a mount with the kernel cache on): in
    // pages, with the kernel's readahead, so a read that starts at a record's first byte
    // names it only at a file's start (see Prefetcher::consumed).
    PrefetchOptions& page_cache_reads(bool on) { page_cache_reads_ = on; return *this; }

    unsigned threads() const noexcept { return threads_; }
    std::size_t window_samples() const noexcept { return window_samples_; }
    std::uint64_t window_bytes() const noexcept { return window_bytes_; }
    bool page_cache_reads() const noexcept { return page_cache_reads_; }

    // Throws std::invalid_argument naming the bad value.
    void validate() const {
        if (threads_ > kMaxThreads)
            throw std::invalid_argument("prefetch threads " + std::to_string(threads_) + " is more than " +
                                        std::to_string(kMaxThreads));
        if (threads_ > 0 && window_samples_ == 0) throw std::invalid_argument("prefetch window of 0 samples");
        if (threads_ > 0 && window_bytes_ == 0) throw std::invalid_argument("prefetch window of 0 bytes");
    }

private:
    static constexpr unsigned kMaxThreads = 256;
    unsigned threads_ = 4;
    std::size_t window_samples_ = 1024;
    std::uint64_t window_bytes_ = 256ull << 20;
    bool page_cache_reads_ = false;
};

class Prefetcher {
public:
    Prefetcher(Cache& cache, PrefetchOptions options) : cache_(cache), options_(options) {
        options_.validate();
        for (unsigned i = 0; i < options_.threads(); ++i) threads_.emplace_back([this] { run(); });
    }
    ~Prefetcher() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_.notify_all();
        for (auto& t : threads_) t.join();
    }
    Prefetcher(const Prefetcher&) = delete;
    Prefetcher& operator=(const Prefetcher&) = delete;

    // Follows a new order from its start (a new epoch), forgetting the old one.
    void start(std::span<const SampleId> order) { start(cache_.whole_files(order)); }
    void start(std::vector<Record> order) {
        std::vector<Start> starts;
        starts.reserve(order.size());
        for (std::size_t p = 0; p < order.size(); ++p) starts.push_back({order[p].file, order[p].offset, static_cast<std::uint32_t>(p)});
        std::sort(starts.begin(), starts.end());  // a record's first position first
        starts.erase(std::unique(starts.begin(), starts.end(), [](const Start& a, const Start& b) { return a.file == b.file && a.offset == b.offset; }),
                     starts.end());
        {
            std::lock_guard lock(mutex_);
            order_ = std::move(order);
            starts_ = std::move(starts);
            marked_.assign(order_.size(), false);
            marked_ahead_ = 0;
            next_ = cursor_ = 0;
            ahead_bytes_ = 0;
        }
        work_.notify_all();
    }

    // Stops following the order; fetches in flight finish.
    void stop() {
        std::lock_guard lock(mutex_);
        order_.clear();
        starts_.clear();
        marked_.clear();
        marked_ahead_ = 0;
        next_ = cursor_ = 0;
        ahead_bytes_ = 0;
    }

    // The reader has used every position below `position`: the window moves on.
    void advance_to(std::size_t position) {
        {
            std::lock_guard lock(mutex_);
            if (!advance_locked(position)) return;
        }
        work_.notify_all();
    }

    // A reader read bytes [offset, offset + length) of file `id`: the window moves past the
    // record it read. A read that starts at a record's first byte (the API, a mount with the
    // kernel cache off) names it: the window moves past it at once (readers may arrive out of
    // order, and the furthest one leads). Through the page cache (page_cache_reads) only a
    // file's first page does: the kernel's reads are whole pages, and its readahead brings
    // the neighbours of the record read (in a shuffled plan, at random positions; one that
    // starts on a page boundary would look named). The records in the window that such a
    // read starts inside or that start in it are only marked read, and the window moves to the first position not marked
    // (a neighbour marked early is skipped later, never jumped to). A record the kernel never
    // asks for (its pages read ahead with a neighbour) would hold it there: once kLeadMarks of
    // the window's positions past it are marked, the reader has moved on, and so does the
    // window. Looked up and moved under one lock, so a new order (start) cannot take a
    // position of the old one.
    void consumed(SampleId id, std::uint64_t offset = 0, std::uint64_t length = 1) {
        {
            std::lock_guard lock(mutex_);
            auto it = std::lower_bound(starts_.begin(), starts_.end(), Start{id, offset, 0});
            const bool named = !options_.page_cache_reads() || offset == 0;
            if (named && it != starts_.end() && it->file == id && it->offset == offset) {
                if (!advance_locked(std::size_t{it->position} + 1)) return;
            } else {
                if (it != starts_.begin()) {
                    const Start& inside = *std::prev(it);  // the record the range starts inside, if any
                    if (inside.file == id && offset - inside.offset < size_at(inside.position)) mark_locked(inside.position);
                }
                for (int seen = 0; it != starts_.end() && it->file == id && it->offset - offset < length && seen < kMaxStartsLooked; ++it, ++seen)
                    mark_locked(it->position);
                if (!advance_locked(cursor_)) return;
            }
        }
        work_.notify_all();
    }

    // The reader's position in the order.
    std::size_t position() const {
        std::lock_guard lock(mutex_);
        return cursor_;
    }

    const PrefetchOptions& options() const noexcept { return options_; }

private:
    static constexpr int kMaxStartsLooked = 256;  // records starting within one read, at most
    // Marked positions past an unmarked one that move the window over it: a sixteenth of the
    // window (the readers' own spread, several workers each a batch apart, stays below it).
    std::size_t lead_marks() const noexcept { return std::max<std::size_t>(4, options_.window_samples() / 16); }

    // Where a record of the order starts, and its first position.
    struct Start {
        SampleId file;
        std::uint64_t offset;
        std::uint32_t position;
        auto operator<=>(const Start&) const = default;
    };

    std::uint64_t size_at(std::size_t p) const { return order_[p].length; }  // mutex_ held

    // Position p (in the window) read, as far as a page-sized read tells. mutex_ held.
    void mark_locked(std::size_t p) {
        if (!in_window(p) || marked_[p]) return;
        marked_[p] = true;
        ++marked_ahead_;
    }
    bool in_window(std::size_t p) const { return p >= cursor_ && p < cursor_ + options_.window_samples(); }  // mutex_ held

    // Moves the window to `position` at least, then past every marked position (and past an
    // unmarked one while lead_marks() are marked beyond it). mutex_ held; whether it moved.
    bool advance_locked(std::size_t position) {
        position = std::min(position, order_.size());
        for (std::size_t p = cursor_; p < position; ++p)
            if (marked_[p]) --marked_ahead_;
        position = std::max(position, cursor_);
        while (position < order_.size() && (marked_[position] || marked_ahead_ >= lead_marks())) {
            if (marked_[position]) --marked_ahead_;
            ++position;
        }
        if (position <= cursor_) return false;
        for (std::size_t p = cursor_; p < std::min(position, next_); ++p) ahead_bytes_ -= size_at(p);
        cursor_ = position;
        next_ = std::max(next_, cursor_);  // the reader overtook us: skip what it has read
        return true;
    }

    // The next position to fetch, if the window has room for it.
    bool window_open() const {  // mutex_ held
        if (next_ >= order_.size() || next_ >= cursor_ + options_.window_samples()) return false;
        return ahead_bytes_ == 0 || ahead_bytes_ + size_at(next_) <= options_.window_bytes();
    }

    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            work_.wait(lock, [&] { return stopping_ || window_open(); });
            if (stopping_) return;
            const Record record = order_[next_];
            ahead_bytes_ += record.length;
            ++next_;
            lock.unlock();
            fetch(record);
            lock.lock();
        }
    }

    void fetch(const Record& record) {
        PrefetchCounters& c = cache_.prefetch_counters();
        c.issued.fetch_add(1, std::memory_order_relaxed);
        try {
            switch (cache_.prefetch(record)) {
                case Cache::Prefetched::resident: c.resident.fetch_add(1, std::memory_order_relaxed); break;
                case Cache::Prefetched::raced: c.raced.fetch_add(1, std::memory_order_relaxed); break;
                case Cache::Prefetched::rejected: c.rejected.fetch_add(1, std::memory_order_relaxed); break;
                case Cache::Prefetched::fetched:
                    c.fetched.fetch_add(1, std::memory_order_relaxed);
                    c.bytes.fetch_add(record.length, std::memory_order_relaxed);
                    break;
            }
        } catch (const std::exception& e) {
            // The reader will meet the same error and report it; say it once here.
            if (c.errors.fetch_add(1, std::memory_order_relaxed) == 0) log(LogLevel::warn, "prefetch: ", e.what());
        }
    }

    Cache& cache_;
    const PrefetchOptions options_;
    // Lock order: mutex_ alone; never held while the cache is asked for anything.
    mutable std::mutex mutex_;
    std::condition_variable work_;
    std::vector<Record> order_;              // protected by mutex_
    std::vector<Start> starts_;              // protected by mutex_: by file and offset
    std::vector<bool> marked_;               // protected by mutex_: per position, read as a page-sized read tells
    std::size_t marked_ahead_ = 0;           // protected by mutex_: marked positions at or past cursor_
    std::size_t next_ = 0;                   // protected by mutex_: next position to fetch
    std::size_t cursor_ = 0;                 // protected by mutex_: positions below it are read
    std::uint64_t ahead_bytes_ = 0;          // protected by mutex_: bytes of positions [cursor_, next_)
    bool stopping_ = false;                  // protected by mutex_
    std::vector<std::thread> threads_;       // last: started once everything above exists
};

}  // namespace tiercache
