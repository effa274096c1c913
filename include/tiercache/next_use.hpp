// When each sample is needed next, from the epoch plans: what the plan-aware policy
// (PlanPolicy in policy.hpp) places and evicts by. Belady's MIN: on a full tier, the
// resident sample needed furthest in the future goes first (down a tier, not away), and a
// sample needed later than everything resident is not let in at all. A "sample" here is
// an extent (extent.hpp): a plan of files is a plan of their extents, in file order.
//
// Several jobs (training runs) may share one cache, each with its own plan. The policy serves
// their union: a sample's next use ("key"; smaller is sooner) is its soonest use by any job,
// since a sample one job needs soon is worth keeping however late the others want it. A
// job's key for a sample:
//   not yet read in its current epoch's order  -> offset + its position there
//   in its next epoch's order                  -> offset + current epoch length + position there
//   read already, not in the next order        -> far + when it was read: the most recently
//                                                 read goes first, so what stays is a stable
//                                                 set, as no-evict keeps (scan resistance)
//   in neither order (another rank's shard)    -> not planned
// and a sample no job plans is furthest of all. Positions count reads, so the jobs share one
// timeline: a plan's offset is "now" when it is set, the furthest any job has got
// (max over jobs of offset + reads), so a job that starts while another is half-way through
// its epoch ranks its first samples with the other's next ones, not with its past ones. That
// assumes the jobs read at similar rates; misjudging them only costs hits, never bytes.
//
// A plan is a list of uses: position p of the epoch reads extent e from byte `start` within it
// (a record's first byte in e; 0 for a whole file's extents and for the extents a record
// continues into). An extent may be used several times in an epoch (the records of a tar
// shard sharing it, a file repeated by padding): its key is its next pending use.
//
// Reads come unattributed (a FUSE read does not say which job it serves): consume(id, from,
// to), for a read of bytes [from, to) of extent `id`, uses up the pending use starting in that
// range with the smallest key, the job most likely to be reading it now. A read's later chunks
// start past its record's first byte, so they use nothing up; where two jobs both still wait
// for the same use, a second read of it uses up the other job's as well.
// A new plan for a job replaces its old one and its read marks; remove() drops one job's
// plan, clear() all of them (the policy then falls back to no-evict).
//
// Memory: per job 12 bytes per extent (where its uses start, its first pending one, its next
// epoch's first position) and 9 per use (position, start, a read byte), at most kMaxJobs
// jobs; shared: 17 bytes per extent (key, read time, pending count), plus each tier's
// resident byte and ordered-set node per resident extent.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catalog.hpp"
#include "job.hpp"

namespace tiercache {

class NextUse {
public:
    using JobId = tiercache::JobId;
    static constexpr JobId kLocalJob = tiercache::kLocalJob;  // the job of the single-plan API (set without a job)
    static constexpr std::size_t kMaxJobs = 64;
    static constexpr std::uint64_t kFar = std::uint64_t{1} << 40;         // past any timeline position (2^40 reads)
    static constexpr std::uint64_t kNotPlanned = std::uint64_t{1} << 62;  // past any read sequence

    struct JobInfo {
        JobId job;
        std::uint64_t samples;  // its current epoch's length, in the samples its plan names
        std::uint64_t read;     // how many of its positions (uses of extents) reads have used up
    };

    // One position of a plan: extent `extent`, read from byte `start` within it.
    struct PlannedUse {
        ExtentId extent;
        std::uint32_t start;
        friend bool operator==(const PlannedUse&, const PlannedUse&) = default;
    };

    explicit NextUse(std::size_t samples)
        : samples_(samples), keys_(unplanned_keys(samples)),
          pending_(std::make_unique<std::atomic<std::uint8_t>[]>(samples)),
          read_at_(std::make_unique<std::atomic<std::uint64_t>[]>(samples)) {}
    NextUse(const NextUse&) = delete;
    NextUse& operator=(const NextUse&) = delete;

    // A tier whose residents are kept ordered by next use; returns its handle.
    std::size_t add_tier() {
        std::lock_guard lock(mutex_);
        tiers_.push_back(std::make_unique<Tier>(samples_));
        return tiers_.size() - 1;
    }

    // Installs `job`'s uses for this epoch and, when known, the next one's, replacing the
    // job's plan before and its read marks; its timeline starts at "now". Uses of extents
    // outside the catalog are ignored. Throws std::length_error for a new job beyond kMaxJobs.
    //
    // The keys and the tiers' ordered sets are rebuilt without mutex_ (a quarter of a second
    // per job at ImageNet scale), from a snapshot of what the tiers hold, caught up with the
    // samples read, inserted or evicted meanwhile (dirty_), then swapped in: misses, which
    // wait for mutex_ under the placement lock, never wait for the whole rebuild, nor for
    // the catch-up of every read that happened during it.
    // `samples`: how many samples (records) the plan names, for jobs() and planned_samples()
    // (default: one per position; a record over several extents takes several positions).
    void set(JobId job, std::span<const PlannedUse> current, std::span<const PlannedUse> next = {},
             std::optional<std::uint64_t> samples = std::nullopt) {
        if (current.size() >= kAbsent || next.size() >= kAbsent)
            throw std::length_error("tiercache: an epoch plan holds at most " + std::to_string(kAbsent - 1) + " positions");
        rebuild(job, std::make_unique<Job>(job, samples_, current, next, samples.value_or(current.size())));
    }
    // Extents in order, each read from its start (a plan of whole small files).
    void set(JobId job, std::span<const ExtentId> current, std::span<const ExtentId> next = {},
             std::optional<std::uint64_t> samples = std::nullopt) {
        set(job, from_start(current), from_start(next), samples.value_or(current.size()));
    }
    void set(std::span<const ExtentId> current, std::span<const ExtentId> next = {}) { set(kLocalJob, current, next); }

    // `job`'s plan goes (it ended, or died); the other jobs' plans stay. Unknown jobs: nothing.
    void remove(JobId job) { rebuild(job, nullptr); }

    // Every plan goes: the policy falls back to no-evict.
    void clear() {
        std::lock_guard setting(set_mutex_);
        std::vector<std::uint64_t> keys = unplanned_keys(samples_);
        std::vector<std::unique_ptr<Job>> gone;
        std::vector<OrderedSet> sets;  // the old ones: they die here, unlocked
        std::lock_guard lock(mutex_);
        active_.store(false, std::memory_order_release);
        planned_samples_.store(0, std::memory_order_release);
        gone.swap(jobs_);
        keys_.swap(keys);
        for (std::size_t id = 0; id < samples_; ++id) pending_[id].store(0, std::memory_order_relaxed);
        sets.resize(tiers_.size());
        for (std::size_t t = 0; t < tiers_.size(); ++t) sets[t].swap(tiers_[t]->by_next_use);
    }

    bool active() const noexcept { return active_.load(std::memory_order_acquire); }
    // The samples the jobs' current plans name, summed.
    std::size_t planned_samples() const noexcept { return planned_samples_.load(std::memory_order_acquire); }

    std::vector<JobInfo> jobs() const {
        std::lock_guard lock(mutex_);
        std::vector<JobInfo> out;
        for (const auto& j : jobs_) out.push_back({j->id, j->named, j->reads});
        return out;
    }

    // When `id` is needed next, as the policy sees it (see the top of the file).
    std::uint64_t key(ExtentId id) const {
        std::lock_guard lock(mutex_);
        return id < samples_ ? keys_[id] : kNotPlanned + id;
    }

    // A reader read bytes [from, to) of extent `id` now: the soonest pending use of it that
    // starts in that range is used up. O(jobs × the extent's uses) under mutex_; free without
    // the lock when no job still waits for `id` (a sample outside every plan, no plan at all).
    void consume(ExtentId id, std::uint64_t from = 0, std::uint64_t to = 1) {
        if (id >= samples_ || pending_[id].load(std::memory_order_relaxed) == 0 || from >= to) return;
        std::lock_guard lock(mutex_);
        Job* soonest = nullptr;  // ties go to the job registered first
        std::uint32_t use = 0;
        for (const auto& j : jobs_)
            if (const auto u = j->pending_use(id, from, to); u && (!soonest || j->offset + j->uses[*u].position <
                                                                                    soonest->offset + soonest->uses[use].position)) {
                soonest = j.get();
                use = *u;
            }
        if (!soonest) return;  // no pending use starts there, or used up meanwhile
        if (soonest->use_up(id, use))  // its last use of `id`: one job fewer waits for it
            pending_[id].store(static_cast<std::uint8_t>(pending_[id].load(std::memory_order_relaxed) - 1), std::memory_order_relaxed);
        ++soonest->reads;
        read_at_[id].store(++read_sequence_, std::memory_order_relaxed);
        rekey(id);
        if (rebuilding_) dirty_.push_back(id);
    }

    // For tests: whether what is derived (keys, pending counts, the tiers' ordered sets)
    // matches the plans and the read marks. O(samples × jobs) under both locks.
    bool consistent() const {
        std::lock_guard setting(set_mutex_);
        std::lock_guard lock(mutex_);
        if (active() != !jobs_.empty()) return false;
        for (ExtentId id = 0; id < samples_; ++id) {
            std::size_t pending = 0;
            for (const auto& j : jobs_) pending += j->pending(id);
            if (pending != pending_[id].load(std::memory_order_relaxed) || keys_[id] != key_of(id)) return false;
        }
        for (const auto& tier : tiers_) {
            std::size_t resident = 0;
            for (ExtentId id = 0; id < samples_; ++id)
                if (tier->resident[id]) {
                    ++resident;
                    if (active() && !tier->by_next_use.contains({keys_[id], id})) return false;
                }
            if (tier->by_next_use.size() != (active() ? resident : 0)) return false;
        }
        return true;
    }

    // ---- for PlanPolicy, with its tier's placement lock held ----------------------------

    void inserted(std::size_t tier, ExtentId id) {
        std::lock_guard lock(mutex_);
        Tier& t = *tiers_[tier];
        if (t.resident[id]) return;
        t.resident[id] = 1;
        if (active()) t.by_next_use.emplace(keys_[id], id);
        if (rebuilding_) dirty_.push_back(id);
    }
    void evicted(std::size_t tier, ExtentId id) {
        std::lock_guard lock(mutex_);
        Tier& t = *tiers_[tier];
        if (!t.resident[id]) return;
        t.resident[id] = 0;
        t.by_next_use.erase({keys_[id], id});
        if (rebuilding_) dirty_.push_back(id);
    }
    // The resident sample needed last, if a plan is set and the tier holds any.
    std::optional<ExtentId> furthest(std::size_t tier) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        if (!active() || t.by_next_use.empty()) return std::nullopt;
        return t.by_next_use.rbegin()->second;
    }
    // The resident sample needed last, if it is needed after `incoming`: making room for a
    // sample never evicts one needed sooner than it.
    std::optional<ExtentId> furthest_after(std::size_t tier, ExtentId incoming) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        if (!active() || t.by_next_use.empty() || t.by_next_use.rbegin()->first <= keys_[incoming]) return std::nullopt;
        return t.by_next_use.rbegin()->second;
    }
    // Whether `id` is needed before the tier's furthest resident sample (MIN's admission).
    bool sooner_than_furthest(std::size_t tier, ExtentId id) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        return active() && !t.by_next_use.empty() && keys_[id] < t.by_next_use.rbegin()->first;
    }

private:
    static constexpr std::uint32_t kAbsent = 0xFFFF'FFFF;
    static constexpr int kCatchUpRounds = 8;            // a rebuild's catch-ups before its swap
    static constexpr std::size_t kFewChanges = 256;     // left for the swap under mutex_
    using OrderedSet = std::set<std::pair<std::uint64_t, ExtentId>>;

    // One job's plan: its uses by extent (CSR: extent e's are uses[first[e], first[e + 1]),
    // in position order). The uses and the offset are fixed before the plan is shared, so
    // set()'s rebuild reads them without mutex_; the read marks and cursors are atomics for
    // the same reason (a rebuild fixes what changed under it from dirty_).
    struct Use {
        std::uint32_t position;
        std::uint32_t start;
    };
    struct Job {
        Job(JobId job, std::size_t samples, std::span<const PlannedUse> current_uses, std::span<const PlannedUse> next_uses,
            std::uint64_t named_samples)
            : id(job), length(current_uses.size()), named(named_samples), first(samples + 1, 0), next(samples, kAbsent),
              cursor(std::make_unique<std::atomic<std::uint32_t>[]>(samples)) {
            for (const PlannedUse& u : current_uses)  // a counting sort by extent, stable: position order within one
                if (u.extent < samples) ++first[u.extent + 1];
            for (std::size_t e = 0; e < samples; ++e) first[e + 1] += first[e];
            uses.resize(first[samples]);
            consumed = std::make_unique<std::atomic<std::uint8_t>[]>(std::max<std::size_t>(uses.size(), 1));
            std::vector<std::uint32_t> fill(first.begin(), first.end() - 1);
            for (std::size_t p = 0; p < current_uses.size(); ++p)
                if (const PlannedUse& u = current_uses[p]; u.extent < samples)
                    uses[fill[u.extent]++] = {static_cast<std::uint32_t>(p), u.start};
            for (std::size_t e = 0; e < samples; ++e) cursor[e].store(first[e], std::memory_order_relaxed);
            for (std::size_t p = next_uses.size(); p-- > 0;)  // the first position wins
                if (next_uses[p].extent < samples) next[next_uses[p].extent] = static_cast<std::uint32_t>(p);
        }
        bool planned(ExtentId s) const { return first[s] != first[s + 1]; }
        bool pending(ExtentId s) const { return cursor[s].load(std::memory_order_relaxed) != first[s + 1]; }
        std::uint64_t key(ExtentId s, const std::atomic<std::uint64_t>* read_at) const {
            if (pending(s)) return offset + uses[cursor[s].load(std::memory_order_relaxed)].position;
            if (next[s] != kAbsent) return offset + length + next[s];
            if (planned(s)) return kFar + read_at[s].load(std::memory_order_relaxed);  // all read
            return kNotPlanned + s;
        }
        // Its soonest use of `s` not yet read that starts in [from, to). mutex_ held.
        std::optional<std::uint32_t> pending_use(ExtentId s, std::uint64_t from, std::uint64_t to) const {
            for (std::uint32_t u = cursor[s].load(std::memory_order_relaxed); u < first[s + 1]; ++u)
                if (!consumed[u].load(std::memory_order_relaxed) && uses[u].start >= from && uses[u].start < to) return u;
            return std::nullopt;
        }
        // Marks use `u` of `s` read; whether that was its last one. mutex_ held.
        bool use_up(ExtentId s, std::uint32_t u) {
            consumed[u].store(1, std::memory_order_relaxed);
            std::uint32_t c = cursor[s].load(std::memory_order_relaxed);
            while (c < first[s + 1] && consumed[c].load(std::memory_order_relaxed)) ++c;
            cursor[s].store(c, std::memory_order_relaxed);
            return c == first[s + 1];
        }

        const JobId id;
        const std::uint64_t length;                               // its current epoch's positions
        const std::uint64_t named;                                // the samples its plan names
        std::uint64_t offset = 0;                                 // where its timeline starts
        std::vector<std::uint32_t> first;                         // per extent, + 1: where its uses start
        std::vector<Use> uses;                                    // by extent, then position
        std::vector<std::uint32_t> next;                          // per extent: first position next epoch, or kAbsent
        std::unique_ptr<std::atomic<std::uint8_t>[]> consumed;    // per use: written under mutex_, read without it
        std::unique_ptr<std::atomic<std::uint32_t>[]> cursor;     // per extent: its first use not read; same
        std::uint64_t reads = 0;                                  // protected by mutex_: uses read
    };

    static std::vector<PlannedUse> from_start(std::span<const ExtentId> extents) {
        std::vector<PlannedUse> out;
        out.reserve(extents.size());
        for (const ExtentId e : extents) out.push_back({e, 0});
        return out;
    }

    struct Tier {
        explicit Tier(std::size_t samples) : resident(samples, 0) {}
        std::vector<std::uint8_t> resident;
        OrderedSet by_next_use;  // residents, soonest first; empty while no plan is set
    };

    static std::vector<std::uint64_t> unplanned_keys(std::size_t samples) {
        std::vector<std::uint64_t> keys(samples);
        for (std::size_t id = 0; id < samples; ++id) keys[id] = kNotPlanned + id;
        return keys;
    }

    // The soonest of the jobs' keys for `id`.
    template <class Jobs>
    std::uint64_t soonest(const Jobs& jobs, ExtentId id) const {
        std::uint64_t key = kNotPlanned + id;
        for (const auto& j : jobs) key = std::min(key, j->key(id, read_at_.get()));
        return key;
    }
    std::uint64_t key_of(ExtentId id) const { return soonest(jobs_, id); }  // mutex_ held

    void rekey(ExtentId id) {  // mutex_ held
        const std::uint64_t old_key = keys_[id];
        keys_[id] = key_of(id);
        if (keys_[id] == old_key || !active()) return;
        for (auto& tier : tiers_) {
            if (!tier->resident[id]) continue;
            tier->by_next_use.erase({old_key, id});
            tier->by_next_use.emplace(keys_[id], id);
        }
    }

    // Puts `plan` in `job`'s place (none: the job goes). See set(). Under mutex_ it only
    // snapshots, then swaps and fixes up what changed since its last catch-up (a few
    // samples); its O(samples) work there is a copy of a byte per sample per tier and a pass
    // over the pending counts, a millisecond or two at ImageNet scale.
    void rebuild(JobId job, std::unique_ptr<Job> plan) {
        std::lock_guard setting(set_mutex_);  // one rebuild at a time; jobs_ changes only under it
        std::size_t slot = 0;
        while (slot < jobs_.size() && jobs_[slot]->id != job) ++slot;
        const bool known = slot < jobs_.size();
        if (!plan && !known) return;
        if (plan && !known && jobs_.size() >= kMaxJobs)
            throw std::length_error("tiercache: at most " + std::to_string(kMaxJobs) +
                                    " jobs can hold plans in one cache; job " + std::to_string(job) +
                                    " is one more (remove() the plans of jobs that ended)");

        std::vector<std::vector<std::uint8_t>> held;  // per tier: the residents the new sets hold
        {
            std::lock_guard lock(mutex_);
            if (plan)  // now: the furthest any job has got, this job's old plan included
                for (const auto& j : jobs_) plan->offset = std::max(plan->offset, j->offset + j->reads);
            for (const auto& tier : tiers_) held.push_back(tier->resident);
            rebuilding_ = true;  // from here on, what changes goes to dirty_
        }
        std::vector<const Job*> after;  // the jobs once this rebuild is in
        for (const auto& j : jobs_)
            if (j->id != job) after.push_back(j.get());
        if (plan) after.push_back(plan.get());
        const bool active = !after.empty();
        std::vector<std::uint64_t> keys;
        std::vector<OrderedSet> sets(held.size());  // the old ones die here, unlocked

        // Ranks `id` anew in the sets being built, by `key` and by what the tiers hold now
        // (`now`, a byte per tier, with held and sets grown to as many tiers first).
        auto refresh = [&](ExtentId id, std::uint64_t key, const std::uint8_t* now) {
            const bool moved = key != keys[id];
            for (std::size_t t = 0; t < held.size(); ++t) {
                const bool was = active && held[t][id], is = active && now[t];
                if (was && (!is || moved)) sets[t].erase({keys[id], id});
                if (is && (!was || moved)) sets[t].emplace(key, id);
                held[t][id] = now[t];
            }
            keys[id] = key;
        };
        // Takes dirty_, once per sample, with what the tiers hold of each: mutex_ held.
        auto take_dirty = [&](std::vector<ExtentId>& batch, std::vector<std::uint8_t>& now) {
            batch.swap(dirty_);
            std::sort(batch.begin(), batch.end());
            batch.erase(std::unique(batch.begin(), batch.end()), batch.end());
            while (held.size() < tiers_.size()) {  // a tier added meanwhile: none held at the snapshot
                held.emplace_back(samples_, 0);
                sets.emplace_back();
            }
            now.clear();
            for (ExtentId id : batch)
                for (const auto& tier : tiers_) now.push_back(tier->resident[id]);
        };
        std::vector<ExtentId> batch;
        std::vector<std::uint8_t> now;
        try {
            keys = unplanned_keys(samples_);
            for (const Job* j : after)  // job by job: each pass streams its arrays
                for (ExtentId id = 0; id < samples_; ++id) keys[id] = std::min(keys[id], j->key(id, read_at_.get()));
            if (active)
                for (std::size_t t = 0; t < held.size(); ++t)
                    for (ExtentId id = 0; id < samples_; ++id)
                        if (held[t][id]) sets[t].emplace(keys[id], id);
            // Catch up with what changed meanwhile, a batch at a time without mutex_, until
            // little is left for the swap (or enough rounds went by: readers outpacing us).
            for (int round = 0; round < kCatchUpRounds; ++round) {
                {
                    std::lock_guard lock(mutex_);
                    if (dirty_.size() <= kFewChanges) break;
                    take_dirty(batch, now);
                }
                for (std::size_t i = 0; i < batch.size(); ++i)
                    refresh(batch[i], soonest(after, batch[i]), &now[i * held.size()]);
                batch.clear();
            }
        } catch (...) {
            std::lock_guard lock(mutex_);
            rebuilding_ = false;
            dirty_.clear();
            throw;
        }

        std::unique_ptr<Job> gone;  // the replaced plan, freed unlocked
        std::lock_guard lock(mutex_);
        if (known) {  // its pending uses go
            const Job& old = *jobs_[slot];
            for (ExtentId id = 0; id < samples_; ++id)
                if (old.pending(id))
                    pending_[id].store(static_cast<std::uint8_t>(pending_[id].load(std::memory_order_relaxed) - 1), std::memory_order_relaxed);
        }
        if (plan)  // and the new plan's come
            for (ExtentId id = 0; id < samples_; ++id)
                if (plan->planned(id))
                    pending_[id].store(static_cast<std::uint8_t>(pending_[id].load(std::memory_order_relaxed) + 1), std::memory_order_relaxed);
        std::uint64_t planned = 0;
        for (const Job* j : after) planned += j->named;
        if (known) gone = std::move(jobs_[slot]);
        if (known && plan) jobs_[slot] = std::move(plan);
        else if (known) jobs_.erase(jobs_.begin() + static_cast<std::ptrdiff_t>(slot));
        else jobs_.push_back(std::move(plan));

        take_dirty(batch, now);  // the last changes, by the plans now in place
        for (std::size_t i = 0; i < batch.size(); ++i) refresh(batch[i], key_of(batch[i]), &now[i * held.size()]);
        keys_.swap(keys);
        for (std::size_t t = 0; t < tiers_.size(); ++t) tiers_[t]->by_next_use.swap(sets[t]);
        rebuilding_ = false;
        planned_samples_.store(planned, std::memory_order_release);
        active_.store(active, std::memory_order_release);
    }

    const std::size_t samples_;
    std::atomic<bool> active_{false};               // written under mutex_: any plan set
    std::atomic<std::size_t> planned_samples_{0};   // written under mutex_
    // Lock order: a tier's placement lock, then mutex_; set_mutex_ (set(), remove(), clear()
    // and consistent() alone: they take no placement lock) before mutex_, which a rebuild
    // holds only to snapshot, to take a catch-up batch, and to swap.
    mutable std::mutex set_mutex_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Job>> jobs_;        // changed under set_mutex_ and mutex_, read under either
    std::vector<std::uint64_t> keys_;               // protected by mutex_: each sample's next use
    // Per sample, how many jobs still wait for it this epoch: written under mutex_, peeked
    // without it by consume() (0: nothing to do, the common case of a repeated read).
    std::unique_ptr<std::atomic<std::uint8_t>[]> pending_;
    // Per sample, read_sequence_ when a read last used it up (the "far" keys): written under
    // mutex_, read without it by a rebuild.
    std::unique_ptr<std::atomic<std::uint64_t>[]> read_at_;
    std::uint64_t read_sequence_ = 0;               // protected by mutex_
    bool rebuilding_ = false;                       // protected by mutex_: a rebuild is between snapshot and swap
    std::vector<ExtentId> dirty_;                   // protected by mutex_: what changed meanwhile
    std::vector<std::unique_ptr<Tier>> tiers_;      // protected by mutex_
};

}  // namespace tiercache
