// The mount's jobs: the processes holding a plan (plan_file.hpp), each with its own prefetcher
// and READ counters, and who each reading thread is, so that a READ moves its own job's window
// and counts for its own job.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sys/types.h>
#include <unordered_map>
#include <vector>

#include <tiercache/cache.hpp>
#include <tiercache/job.hpp>
#include <tiercache/prefetcher.hpp>

#include "metrics.hpp"
#include "plan_parser.hpp"
#include "process.hpp"

namespace tiercache::fuse {

class Jobs {
public:
    // Each job's prefetcher with these options (threads 0: none). Throws
    // std::invalid_argument naming a bad option.
    Jobs(OwnerCache& cache, PrefetchOptions prefetch);
    ~Jobs();  // the prefetchers' threads end (before the cache goes)
    Jobs(const Jobs&) = delete;
    Jobs& operator=(const Jobs&) = delete;

    // The plan file's callbacks, called under its lock: a job's plan applied (returns its
    // positions; throws to refuse it, as PlanFile::Apply says) or removed.
    std::size_t apply_plan(JobId job, ParsedPlan plan);
    void remove_plan(JobId job);

    std::size_t position_of(JobId job) const;  // in its plan, as its prefetcher saw the reads
    // A READ of bytes [offset, offset + length) of `id` by thread `requester`: who it is (only while some job has a plan, since
    // only a prefetcher or a job's counters need it; else zeros, without the readers' lock),
    // and the reader's job's window moves on.
    ReaderIds read_by(pid_t requester, SampleId id, std::uint64_t offset, std::uint64_t length);
    // A READ's count for its job's metrics: the reader's process's, or its parent's, if either
    // holds a plan; else "none".
    void count_read(ReaderIds reader, std::size_t bytes, bool waited, std::chrono::steady_clock::duration took);
    std::vector<JobReads> reads() const;  // per job: the READs that reached the daemon

private:
    void consumed(SampleId id, std::uint64_t offset, std::uint64_t length, ReaderIds reader);  // the reader's job's window moves on
    ReaderIds reader_ids(pid_t tid);               // reader_of(tid), remembered for a second

    OwnerCache& cache_;
    const PrefetchOptions prefetch_;
    // A prefetcher per job with a plan, made when its first plan is applied, gone with its plan.
    // Lock order: the plan file's lock (apply_plan and remove_plan are its callbacks), then
    // prefetch_mutex_ (exclusive), then a prefetcher's own; a READ takes prefetch_mutex_ shared
    // alone. The map changes only under the plan file's lock too, so its callbacks use a
    // prefetcher after letting go of prefetch_mutex_, and a prefetcher is destroyed (its threads
    // joined) without it.
    mutable std::shared_mutex prefetch_mutex_;
    std::map<JobId, std::unique_ptr<Prefetcher>> prefetchers_;  // protected by prefetch_mutex_
    std::atomic<std::size_t> prefetcher_count_{0};               // prefetchers_.size(), read without the lock
    // Which process (and parent) each reading thread belongs to: a /proc read per thread and
    // second, not per READ.
    struct Reader {
        ReaderIds ids;
        std::chrono::steady_clock::time_point seen;
    };
    std::mutex readers_mutex_;
    std::unordered_map<pid_t, Reader> readers_;  // protected by readers_mutex_
    // Per-job READ counters for the metrics: an entry per job with a plan (made when its plan
    // is applied, gone with it), and one for every other reader. Lock order: jobs_mutex_ alone
    // (apply_plan takes it under the plan file's lock; a READ takes it shared, holding nothing
    // else).
    struct JobCounters {
        std::atomic<std::uint64_t> reads{0}, bytes{0}, stalls{0}, stall_ns{0};
    };
    mutable std::shared_mutex jobs_mutex_;
    std::map<JobId, std::unique_ptr<JobCounters>> job_counters_;  // protected by jobs_mutex_
    std::atomic<std::size_t> job_counter_count_{0};  // job_counters_.size(), read without the lock
    JobCounters other_reads_;                                     // readers with no plan
};

}  // namespace tiercache::fuse
