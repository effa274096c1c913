// Revalidation: a thread stats the catalog round-robin (Cache::revalidate) and tells the
// kernel to drop the pages and attributes of each sample found changed, by that pass or by a
// miss (Cache::on_change). The same thread saves the nvme index every few seconds while it
// changes.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include <fuse_lowlevel.h>
#include <nlohmann/json.hpp>
#include <tiercache/cache.hpp>

namespace tiercache::fuse {

inline constexpr double kMaxRevalidationsPerSecond = 10'000;

class Revalidator {
public:
    // Every catalogued file is statted once per `period_s` seconds (at most
    // kMaxRevalidationsPerSecond stats a second, so a large dataset's pass takes longer); 0: no
    // background pass (misses' changes are still passed on). Throws std::invalid_argument for
    // a negative period. Takes the cache's on_change until it goes.
    Revalidator(OwnerCache& cache, double period_s);
    ~Revalidator();
    Revalidator(const Revalidator&) = delete;
    Revalidator& operator=(const Revalidator&) = delete;

    // The session whose kernel caches a change invalidates (fuse_lowlevel_notify_inval_inode):
    // set before start().
    void set_session(fuse_session* se) { session_ = se; }
    void start();  // the thread (after fuse_daemonize, whose fork keeps no threads)
    void stop();   // ends the thread: before the session goes

    // "period_s", "files_checked", "passes", "changes": the stats file's "revalidation".
    nlohmann::ordered_json json() const;

private:
    void loop();                // the revalidation thread
    void changed(SampleId id);  // Cache::on_change: any thread, no lock of the cache held

    OwnerCache& cache_;
    const double period_s_;
    // Lock order: revalidate_mutex_ alone (changed() is called with no cache lock held, and
    // the thread lets go of it before calling the cache or the kernel).
    fuse_session* session_ = nullptr;             // set before start()
    std::mutex revalidate_mutex_;
    std::condition_variable revalidate_wake_;
    std::deque<SampleId> changed_;                // protected by revalidate_mutex_: to invalidate in the kernel
    bool revalidate_stop_ = false;                // protected by revalidate_mutex_
    std::atomic<std::uint64_t> revalidated_{0};   // files statted by the pass
    std::atomic<std::uint64_t> changes_{0};       // samples found changed or gone (by the pass or a miss)
    std::atomic<std::uint64_t> passes_{0};        // full passes over the catalog done
    std::thread revalidator_;                     // last: joined (by stop()) before the rest goes
};

}  // namespace tiercache::fuse
