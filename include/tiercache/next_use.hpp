// When each sample is needed next, from the epoch plans: what the plan-aware policy
// (PlanPolicy in policy.hpp) places and evicts by. Belady's MIN: on a full tier, the
// resident sample needed furthest in the future goes first (down a tier, not away), and a
// sample needed later than everything resident is not let in at all.
//
// A sample's next use ("key"; smaller is sooner):
//   not yet read this epoch and in its order  -> its position in this epoch
//   read already, and in the next epoch's      -> epoch length + its position there
//   read already, next epoch unknown           -> far + when it was read: the most recently
//                                                 read goes first, so what stays is a stable
//                                                 set, as no-evict keeps (scan resistance)
//   in neither order (another rank's shard)    -> furthest of all
// Reads mark samples read (consume); a new plan resets the marks and re-keys everything.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "catalog.hpp"

namespace tiercache {

class NextUse {
public:
    explicit NextUse(std::size_t samples)
        : samples_(samples), current_(samples, kAbsent), next_(samples, kAbsent), keys_(samples, kNotPlanned),
          read_(std::make_unique<std::atomic<std::uint8_t>[]>(samples)) {}
    NextUse(const NextUse&) = delete;
    NextUse& operator=(const NextUse&) = delete;

    // A tier whose residents are kept ordered by next use; returns its handle.
    std::size_t add_tier() {
        std::lock_guard lock(mutex_);
        tiers_.push_back(std::make_unique<Tier>(samples_));
        return tiers_.size() - 1;
    }

    // Installs this epoch's order and, when known, the next one's; forgets what was read.
    // Ids outside the catalog are ignored. The keys and the tiers' ordered sets are built
    // without mutex_ (a quarter of a second at ImageNet scale), from a snapshot of what the
    // tiers hold, then swapped in and fixed up for what changed meanwhile: misses, which wait
    // for mutex_ under the placement lock, never wait for the whole rebuild.
    void set(std::span<const SampleId> current, std::span<const SampleId> next = {}) {
        std::lock_guard setting(set_mutex_);  // one new plan at a time
        std::vector<std::uint32_t> current_pos(samples_, kAbsent), next_pos(samples_, kAbsent);
        for (std::size_t p = current.size(); p-- > 0;)  // the first occurrence wins
            if (current[p] < samples_) current_pos[current[p]] = static_cast<std::uint32_t>(p);
        for (std::size_t p = next.size(); p-- > 0;)
            if (next[p] < samples_) next_pos[next[p]] = static_cast<std::uint32_t>(p);
        std::vector<std::uint64_t> keys(samples_);
        for (SampleId id = 0; id < samples_; ++id)  // nothing is read yet in the new epoch
            keys[id] = current_pos[id] != kAbsent ? current_pos[id]
                       : next_pos[id] != kAbsent  ? current.size() + next_pos[id]
                                                  : kNotPlanned + id;
        std::vector<std::vector<std::uint8_t>> held;
        {
            std::lock_guard lock(mutex_);
            for (const auto& tier : tiers_) held.push_back(tier->resident);
        }
        std::vector<std::set<std::pair<std::uint64_t, SampleId>>> sets(held.size());  // the old ones die here, unlocked
        for (std::size_t t = 0; t < held.size(); ++t)
            for (SampleId id = 0; id < samples_; ++id)
                if (held[t][id]) sets[t].emplace(keys[id], id);

        std::lock_guard lock(mutex_);
        current_.swap(current_pos);
        next_.swap(next_pos);
        keys_.swap(keys);
        epoch_length_ = current.size();
        for (std::size_t i = 0; i < samples_; ++i) read_[i].store(0, std::memory_order_relaxed);
        read_count_ = 0;
        for (std::size_t t = 0; t < tiers_.size(); ++t) {
            Tier& tier = *tiers_[t];
            if (t >= sets.size()) sets.emplace_back();  // a tier added meanwhile: none held
            for (SampleId id = 0; id < samples_; ++id) {  // what came or went since the snapshot
                const std::uint8_t was = t < held.size() ? held[t][id] : 0;
                if (tier.resident[id] == was) continue;
                if (tier.resident[id]) sets[t].emplace(keys_[id], id);
                else sets[t].erase({keys_[id], id});
            }
            tier.by_next_use.swap(sets[t]);
        }
        planned_samples_.store(current.size(), std::memory_order_release);
        active_.store(true, std::memory_order_release);
    }

    // Back to no plan: the policy falls back to no-evict.
    void clear() {
        std::lock_guard lock(mutex_);
        active_.store(false, std::memory_order_release);
        planned_samples_.store(0, std::memory_order_release);
        for (auto& tier : tiers_) tier->by_next_use.clear();
    }

    bool active() const noexcept { return active_.load(std::memory_order_acquire); }
    std::size_t planned_samples() const noexcept { return planned_samples_.load(std::memory_order_acquire); }

    // A reader used `id` now: its next use moves to the next epoch. Cheap when repeated
    // (a file read in several chunks) or when no plan is set.
    void consume(SampleId id) {
        if (!active() || id >= samples_ || read_[id].load(std::memory_order_relaxed) != 0) return;
        std::lock_guard lock(mutex_);
        if (read_[id].exchange(1, std::memory_order_relaxed) != 0) return;
        ++read_count_;
        rekey(id);
    }

    // ---- for PlanPolicy, with its tier's placement lock held ----------------------------

    void inserted(std::size_t tier, SampleId id) {
        std::lock_guard lock(mutex_);
        Tier& t = *tiers_[tier];
        if (t.resident[id]) return;
        t.resident[id] = 1;
        if (active()) t.by_next_use.emplace(keys_[id], id);
    }
    void evicted(std::size_t tier, SampleId id) {
        std::lock_guard lock(mutex_);
        Tier& t = *tiers_[tier];
        if (!t.resident[id]) return;
        t.resident[id] = 0;
        t.by_next_use.erase({keys_[id], id});
    }
    // The resident sample needed last, if a plan is set and the tier holds any.
    std::optional<SampleId> furthest(std::size_t tier) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        if (!active() || t.by_next_use.empty()) return std::nullopt;
        return t.by_next_use.rbegin()->second;
    }
    // The resident sample needed last, if it is needed after `incoming`: making room for a
    // sample never evicts one needed sooner than it.
    std::optional<SampleId> furthest_after(std::size_t tier, SampleId incoming) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        if (!active() || t.by_next_use.empty() || t.by_next_use.rbegin()->first <= keys_[incoming]) return std::nullopt;
        return t.by_next_use.rbegin()->second;
    }
    // Whether `id` is needed before the tier's furthest resident sample (MIN's admission).
    bool sooner_than_furthest(std::size_t tier, SampleId id) {
        std::lock_guard lock(mutex_);
        const Tier& t = *tiers_[tier];
        return active() && !t.by_next_use.empty() && keys_[id] < t.by_next_use.rbegin()->first;
    }

private:
    static constexpr std::uint32_t kAbsent = 0xFFFF'FFFF;
    static constexpr std::uint64_t kFar = std::uint64_t{1} << 40;          // past any two epochs' positions
    static constexpr std::uint64_t kNotPlanned = std::uint64_t{1} << 62;   // past any read sequence

    struct Tier {
        explicit Tier(std::size_t samples) : resident(samples, 0) {}
        std::vector<std::uint8_t> resident;
        std::set<std::pair<std::uint64_t, SampleId>> by_next_use;  // residents, soonest first
    };

    std::uint64_t key_of(SampleId id) const {  // mutex_ held
        if (!read_[id].load(std::memory_order_relaxed) && current_[id] != kAbsent) return current_[id];
        if (next_[id] != kAbsent) return epoch_length_ + next_[id];
        if (read_[id].load(std::memory_order_relaxed)) return kFar + read_count_;
        return kNotPlanned + id;
    }

    void rekey(SampleId id) {  // mutex_ held
        const std::uint64_t old_key = keys_[id];
        keys_[id] = key_of(id);
        for (auto& tier : tiers_) {
            if (!tier->resident[id]) continue;
            tier->by_next_use.erase({old_key, id});
            tier->by_next_use.emplace(keys_[id], id);
        }
    }

    const std::size_t samples_;
    std::atomic<bool> active_{false};
    std::atomic<std::size_t> planned_samples_{0};
    // Lock order: a tier's placement lock, then mutex_; set_mutex_ (set() alone: it takes
    // no placement lock) before mutex_, which set() holds only to snapshot and to swap.
    std::mutex set_mutex_;
    std::mutex mutex_;
    std::vector<std::uint32_t> current_, next_;  // protected by mutex_: first position per sample
    std::vector<std::uint64_t> keys_;            // protected by mutex_: each sample's next use
    std::unique_ptr<std::atomic<std::uint8_t>[]> read_;  // written under mutex_, peeked without it
    std::uint64_t epoch_length_ = 0;             // protected by mutex_
    std::uint64_t read_count_ = 0;               // protected by mutex_
    std::vector<std::unique_ptr<Tier>> tiers_;   // protected by mutex_
};

}  // namespace tiercache
