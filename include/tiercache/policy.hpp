// Admission and eviction for a tier (one instance per tier), behind one interface so policies
// can be compared. The unit placed is an extent (extent.hpp): a small file's one, or each
// of a large file's.
//
// Shuffled epochs defeat LRU: with room for a fraction f of the dataset, each epoch evicts
// what the next one needs before it comes round, and the hit rate falls towards f^2/2. The
// default, NoEvictPolicy, admits while there is room and never evicts on a miss (CoorDL's
// MinIO), so every epoch after the first hits a fraction f. When the epoch order is known,
// PlanPolicy does better: Belady's MIN by next use (next_use.hpp), and no-evict without a
// plan. LruPolicy stays for comparison.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "catalog.hpp"
#include "next_use.hpp"

namespace tiercache {

class Policy {
public:
    virtual ~Policy() = default;
    virtual std::string_view name() const = 0;
    // Whether it ever evicts to make room. One that does not is never asked for a victim, and
    // a faster tier under it takes no promotion once full.
    virtual bool evicts() const = 0;

    // A resident sample was read. May be called from any thread, at any time.
    virtual void on_hit(ExtentId) {}

    // The calls below come from the tier with its placement lock held, one at a time.

    // A missing sample of `bytes` was read and the tier has `free_bytes` of room: bring it in?
    virtual bool admit(ExtentId id, std::uint64_t bytes, std::uint64_t free_bytes) = 0;
    // The resident sample to evict next to make room, or none: then the sample stays out.
    virtual std::optional<ExtentId> victim() = 0;
    // The same, to make room for `incoming` in particular.
    virtual std::optional<ExtentId> victim_for(ExtentId /*incoming*/) { return victim(); }
    virtual void on_insert(ExtentId id) = 0;
    virtual void on_evict(ExtentId id) = 0;
};

// Admit while there is room; once full, keep what is there (scan-resistant).
class NoEvictPolicy final : public Policy {
public:
    std::string_view name() const override { return "noevict"; }
    bool evicts() const override { return false; }
    bool admit(ExtentId, std::uint64_t bytes, std::uint64_t free_bytes) override { return bytes <= free_bytes; }
    std::optional<ExtentId> victim() override { return std::nullopt; }
    void on_insert(ExtentId) override {}
    void on_evict(ExtentId) override {}
};

// Least recently used, as the kernel page cache roughly is: the baseline to beat.
// An intrusive list over sample ids: 8 bytes per sample, no allocation per hit.
class LruPolicy final : public Policy {
public:
    explicit LruPolicy(std::size_t sample_count) : prev_(sample_count, kNone), next_(sample_count, kNone), linked_(sample_count, 0) {}

    std::string_view name() const override { return "lru"; }
    bool evicts() const override { return true; }
    void on_hit(ExtentId id) override {
        std::lock_guard lock(mutex_);
        if (!linked_[id]) return;  // evicted meanwhile
        unlink(id);
        push_front(id);
    }
    bool admit(ExtentId, std::uint64_t, std::uint64_t) override { return true; }
    std::optional<ExtentId> victim() override {
        std::lock_guard lock(mutex_);
        if (tail_ == kNone) return std::nullopt;
        return tail_;
    }
    void on_insert(ExtentId id) override {
        std::lock_guard lock(mutex_);
        if (!linked_[id]) push_front(id);
    }
    void on_evict(ExtentId id) override {
        std::lock_guard lock(mutex_);
        if (linked_[id]) unlink(id);
    }

private:
    static constexpr ExtentId kNone = 0xFFFF'FFFF;

    void push_front(ExtentId id) {  // mutex_ held
        prev_[id] = kNone;
        next_[id] = head_;
        if (head_ != kNone) prev_[head_] = id;
        head_ = id;
        if (tail_ == kNone) tail_ = id;
        linked_[id] = 1;
    }
    void unlink(ExtentId id) {  // mutex_ held
        if (prev_[id] != kNone) next_[prev_[id]] = next_[id]; else head_ = next_[id];
        if (next_[id] != kNone) prev_[next_[id]] = prev_[id]; else tail_ = prev_[id];
        linked_[id] = 0;
    }

    // Lock order: the tier's placement lock, then mutex_ (on_hit takes mutex_ alone).
    std::mutex mutex_;
    std::vector<ExtentId> prev_, next_;  // protected by mutex_
    std::vector<std::uint8_t> linked_;   // protected by mutex_
    ExtentId head_ = kNone, tail_ = kNone;  // protected by mutex_: most and least recent
};

// By next use when a plan is set (Cache::set_plan), no-evict otherwise. One instance per
// tier, all sharing the cache's NextUse.
class PlanPolicy final : public Policy {
public:
    explicit PlanPolicy(NextUse& next_use) : next_use_(next_use), tier_(next_use.add_tier()) {}

    std::string_view name() const override { return "plan"; }
    bool evicts() const override { return next_use_.active(); }
    bool admit(ExtentId id, std::uint64_t bytes, std::uint64_t free_bytes) override {
        return bytes <= free_bytes || next_use_.sooner_than_furthest(tier_, id);
    }
    std::optional<ExtentId> victim() override { return next_use_.furthest(tier_); }
    std::optional<ExtentId> victim_for(ExtentId incoming) override { return next_use_.furthest_after(tier_, incoming); }
    void on_insert(ExtentId id) override { next_use_.inserted(tier_, id); }
    void on_evict(ExtentId id) override { next_use_.evicted(tier_, id); }

private:
    NextUse& next_use_;
    const std::size_t tier_;
};

inline constexpr std::string_view kPolicyNames = "plan, noevict, lru";

// Throws std::invalid_argument naming an unknown policy.
inline void check_policy_name(std::string_view name) {
    if (name != "plan" && name != "noevict" && name != "lru")
        throw std::invalid_argument("unknown policy '" + std::string(name) + "' (use " + std::string(kPolicyNames) + ")");
}

inline std::unique_ptr<Policy> make_policy(std::string_view name, std::size_t sample_count, NextUse& next_use) {
    check_policy_name(name);
    if (name == "plan") return std::make_unique<PlanPolicy>(next_use);
    if (name == "lru") return std::make_unique<LruPolicy>(sample_count);
    return std::make_unique<NoEvictPolicy>();
}

}  // namespace tiercache
