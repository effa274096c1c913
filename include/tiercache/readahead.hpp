// Sequential streams: a large file read front to back (a tar shard or a TFRecord streamed, `cat`,
// `tar t`) is detected per file and read ahead by extents, so a streaming reader over a slow
// origin runs at the origin's bandwidth, not at its latency: while it reads one extent, the next
// `window` are on their way, several at once.
//
// Detection: reads of a file of several extents are tracked in a small table (kStreams, by file
// id); a read that starts near where the file's last read ended (within kSlack: FUSE threads and
// the kernel's own readahead reorder requests a little) continues its stream. Once a stream has
// covered two extents' worth of bytes, each read queues the extents up to `window` ahead of it
// that are not queued yet. A random reader (an LMDB, an HDF5 file) rarely continues a stream, and
// so queues nothing. What the threads fetch goes through Cache::prefetch's path: into a tier whose
// policy admits it, never waiting on a fetch already under way, never counted as a read.
//
// The same threads fetch the other extents of one read across several (fetch_alongside): the
// reader fetches the first while they fetch the rest, so the read waits about one origin read,
// not one per extent.
#pragma once
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <unistd.h>
#include <vector>

#include "catalog.hpp"
#include "log.hpp"

namespace tiercache {

class Readahead {
public:
    using Fetch = std::function<void(ExtentId)>;  // may throw: logged, the stream goes on

    // `window`: extents read ahead of a stream (0: none); `threads` fetch them. The threads
    // start with the first extent queued, not here: a daemon opens its cache, then forks
    // (fuse_daemonize), and threads do not survive a fork.
    Readahead(const Catalog& catalog, std::uint32_t window, std::uint32_t threads, Fetch fetch)
        : catalog_(catalog), window_(window), thread_count_(threads), fetch_(std::move(fetch)) {}
    Readahead(const Readahead&) = delete;
    Readahead& operator=(const Readahead&) = delete;
    ~Readahead() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        if (!threads_.empty() && started_by_ != ::getpid()) {
            // Started by the process this one was forked from: these threads are not ours to
            // join (they do not exist here). Their handles are left behind, never touched.
            new std::vector<std::thread>(std::move(threads_));
            return;
        }
        for (auto& t : threads_) t.join();
    }

    // A read of [offset, offset + length) of sample `id` happened (before it is served).
    void observe(SampleId id, std::uint64_t offset, std::uint64_t length) {
        if (window_ == 0 || length == 0 || catalog_.extents_of(id) < 2) return;
        const std::uint64_t extent = catalog_.extent_bytes();
        std::lock_guard lock(mutex_);
        Stream& s = streams_[id % kStreams];
        const bool continues = s.file == id && offset + kSlack >= s.next && offset <= s.next + kSlack;
        if (!continues) s = {id, offset, 0, 0};
        s.covered += length;
        s.next = std::max(s.next, offset + length);
        if (s.covered < 2 * extent) return;
        const ExtentId here = catalog_.extent_at(id, std::min(offset + length, catalog_.size_of(id)) - 1);
        const ExtentId last = catalog_.first_extent(id) + catalog_.extents_of(id) - 1;
        const ExtentId until = static_cast<ExtentId>(std::min<std::uint64_t>(last, std::uint64_t{here} + window_));
        for (ExtentId e = std::max<ExtentId>(here + 1, s.queued_until + 1); e <= until; ++e) {
            if (queue_.size() >= kMaxQueued) queue_.pop_front();  // the oldest is the least useful now
            queue_.push_back(e);
            s.queued_until = e;
        }
        start_locked();
        wake_.notify_all();
    }

    // Extents a reader is about to need, fetched first (ahead of any stream's).
    void fetch_alongside(std::span<const ExtentId> extents) {
        if (extents.empty()) return;
        {
            std::lock_guard lock(mutex_);
            for (auto e = extents.rbegin(); e != extents.rend(); ++e) queue_.push_front(*e);
            while (queue_.size() > kMaxQueued) queue_.pop_back();
            start_locked();
        }
        wake_.notify_all();
    }

    std::uint32_t window() const noexcept { return window_; }

private:
    static constexpr std::size_t kStreams = 64;
    static constexpr std::uint64_t kSlack = 1 << 20;
    static constexpr std::size_t kMaxQueued = 256;

    struct Stream {
        SampleId file = 0xFFFF'FFFF;
        std::uint64_t next = 0;       // where its reads have got to
        std::uint64_t covered = 0;    // bytes its reads asked for since it began
        ExtentId queued_until = 0;    // the furthest extent queued for it
    };

    void start_locked() {  // mutex_ held
        if (!threads_.empty() || stop_) return;
        started_by_ = ::getpid();
        for (std::uint32_t t = 0; t < thread_count_; ++t) threads_.emplace_back([this] { run(); });
    }

    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (stop_) return;
            const ExtentId e = queue_.front();
            queue_.pop_front();
            lock.unlock();
            try {
                fetch_(e);
            } catch (const std::exception& error) {
                log(LogLevel::debug, "readahead of '", catalog_.path(catalog_.file_of(e)), "' at ", catalog_.extent_start(e), ": ",
                    error.what());
            }
            lock.lock();
        }
    }

    const Catalog& catalog_;
    const std::uint32_t window_;
    const std::uint32_t thread_count_;
    const Fetch fetch_;
    // Lock order: mutex_ alone (fetch_ is called without it).
    std::mutex mutex_;
    std::condition_variable wake_;
    std::array<Stream, kStreams> streams_{};  // protected by mutex_
    std::deque<ExtentId> queue_;             // protected by mutex_: extents to fetch, oldest first
    bool stop_ = false;                      // protected by mutex_
    pid_t started_by_ = 0;                   // protected by mutex_: the process that started threads_
    std::vector<std::thread> threads_;       // protected by mutex_ (made once); last: joined before the rest goes
};

}  // namespace tiercache
