#include "jobs.hpp"

#include <algorithm>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include <tiercache/epoch_plan.hpp>
#include <tiercache/log.hpp>
#include <tiercache/next_use.hpp>

namespace tiercache::fuse {

Jobs::Jobs(OwnerCache& cache, PrefetchOptions prefetch) : cache_(cache), prefetch_(prefetch) { prefetch_.validate(); }

Jobs::~Jobs() {
    // The plan file has stopped (Filesystem destroys it first): no plan is applied or removed.
    std::map<JobId, std::unique_ptr<Prefetcher>> gone;
    {
        std::unique_lock lock(prefetch_mutex_);
        gone.swap(prefetchers_);
        prefetcher_count_ = 0;
    }
    gone.clear();  // their threads end before the cache goes
}

std::size_t Jobs::apply_plan(JobId job, ParsedPlan parsed) {
    const std::size_t samples = cache_.catalog().size();
    if (parsed.kind == ParsedPlan::Kind::empty) {
        remove_plan(job);
        return 0;
    }
    // This epoch's records, and the next one's when seeded (a plan of paths has no future).
    std::vector<Record> current, next;
    if (parsed.kind == ParsedPlan::Kind::seed) {
        const EpochPlan plan(samples, parsed.seed, parsed.epoch, parsed.rank, parsed.world, parsed.drop_last);
        current = cache_.whole_files(plan.order());
        next = cache_.whole_files(plan.next_epoch()->order());
    } else {
        current = std::move(parsed.records);
    }
    try {
        cache_.set_plan(job, current, next);
    } catch (const std::length_error& e) {
        if (cache_.stats().plan_jobs < NextUse::kMaxJobs) throw;
        log(LogLevel::debug, "plan of job ", job, ": ", e.what());
        throw std::runtime_error("too many jobs: " + std::to_string(NextUse::kMaxJobs) +
                                 " hold plans in this cache already (processes writing the plan file, or attached "
                                 "clients); a process's plan goes when it exits or writes an empty plan");
    }
    {
        std::unique_lock lock(jobs_mutex_);
        auto& counters = job_counters_[job];  // a new plan of the same job counts on
        if (!counters) counters = std::make_unique<JobCounters>();
        job_counter_count_.store(job_counters_.size(), std::memory_order_relaxed);
    }
    const std::size_t size = current.size();
    if (prefetch_.threads() == 0) return size;
    Prefetcher* prefetcher;
    {
        std::unique_lock lock(prefetch_mutex_);
        auto& slot = prefetchers_[job];
        if (!slot) slot = std::make_unique<Prefetcher>(cache_, prefetch_);
        prefetcher = slot.get();
        prefetcher_count_ = prefetchers_.size();
    }
    prefetcher->start(std::move(current));  // the map changes only under the plan file's lock
    return size;
}

void Jobs::remove_plan(JobId job) {
    std::unique_ptr<Prefetcher> gone;
    {
        std::unique_lock lock(prefetch_mutex_);
        if (const auto it = prefetchers_.find(job); it != prefetchers_.end()) {
            gone = std::move(it->second);
            prefetchers_.erase(it);
        }
        prefetcher_count_ = prefetchers_.size();
    }
    gone.reset();  // its threads end (a fetch in flight finishes) without holding up reads
    cache_.remove_plan(job);
    std::unique_lock lock(jobs_mutex_);
    job_counters_.erase(job);  // its series end with its plan
    job_counter_count_.store(job_counters_.size(), std::memory_order_relaxed);
}

std::size_t Jobs::position_of(JobId job) const {
    std::shared_lock lock(prefetch_mutex_);
    const auto it = prefetchers_.find(job);
    return it == prefetchers_.end() ? 0 : it->second->position();
}

ReaderIds Jobs::read_by(pid_t requester, SampleId id, std::uint64_t offset, std::uint64_t length) {
    // Whose READ this is matters only while some job has a plan (its prefetcher, its counters);
    // else every READ counts as "none", without the readers' lock.
    const bool prefetching = prefetcher_count_.load(std::memory_order_relaxed) > 0;
    const bool by_job = prefetching || job_counter_count_.load(std::memory_order_relaxed) > 0;
    const ReaderIds reader = by_job ? reader_ids(requester) : ReaderIds{};
    if (prefetching && cache_.catalog().contains(id)) consumed(id, offset, length, reader);
    return reader;
}

// A prefetcher's window follows the furthest read of any sample in its order, so only the
// reader's own job may move it: a read by another job (a sweep's runs read the same samples in
// other orders) would drag it past what its own reader still needs. The reader's job is its
// process's, or its parent's (DataLoader workers); a read no job can be told for (a reader in
// another PID namespace, or one whose plan some other process writes) moves every window.
void Jobs::consumed(SampleId id, std::uint64_t offset, std::uint64_t length, ReaderIds ids) {
    std::shared_lock lock(prefetch_mutex_);
    for (const JobId job : {ids.process, ids.parent}) {
        if (job == 0) continue;
        if (const auto it = prefetchers_.find(job); it != prefetchers_.end()) {
            it->second->consumed(id, offset, length);
            return;
        }
    }
    for (const auto& [job, prefetcher] : prefetchers_) prefetcher->consumed(id, offset, length);
}

void Jobs::count_read(ReaderIds reader, std::size_t bytes, bool waited, std::chrono::steady_clock::duration took) {
    std::shared_lock lock(jobs_mutex_);
    JobCounters* c = &other_reads_;
    for (const JobId job : {reader.process, reader.parent}) {
        if (job == 0) continue;
        if (const auto it = job_counters_.find(job); it != job_counters_.end()) {
            c = it->second.get();
            break;
        }
    }
    c->reads.fetch_add(1, std::memory_order_relaxed);
    c->bytes.fetch_add(bytes, std::memory_order_relaxed);
    if (!waited) return;
    c->stalls.fetch_add(1, std::memory_order_relaxed);
    c->stall_ns.fetch_add(static_cast<std::uint64_t>(std::chrono::nanoseconds(took).count()), std::memory_order_relaxed);
}

ReaderIds Jobs::reader_ids(pid_t tid) {
    const auto now = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(readers_mutex_);
        if (const auto it = readers_.find(tid); it != readers_.end() && now - it->second.seen < std::chrono::seconds(1))
            return it->second.ids;
    }
    const ReaderIds ids = reader_of(tid);  // a /proc read, without the lock
    std::lock_guard lock(readers_mutex_);
    if (readers_.size() >= 4096) readers_.clear();  // threads come and go: bounded
    readers_[tid] = {ids, now};
    return ids;
}

std::vector<JobReads> Jobs::reads() const {
    std::vector<JobReads> out;
    auto add = [&](std::string job, const JobCounters& c) {
        // stalls first: a READ counted between the loads never shows more stalls than reads
        const std::uint64_t stalls = c.stalls.load(std::memory_order_relaxed);
        out.push_back({std::move(job), std::max(c.reads.load(std::memory_order_relaxed), stalls),
                       c.bytes.load(std::memory_order_relaxed), stalls,
                       static_cast<double>(c.stall_ns.load(std::memory_order_relaxed)) / 1e9});
    };
    {
        std::shared_lock lock(jobs_mutex_);
        for (const auto& [job, counters] : job_counters_) add(std::to_string(job), *counters);
    }
    add("none", other_reads_);
    return out;
}

}  // namespace tiercache::fuse
