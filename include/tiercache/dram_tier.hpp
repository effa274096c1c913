// The DRAM tier: whole samples in the segment, bounded by a capacity in sample bytes, placed
// and evicted by a Policy. Hits take no lock: a reader pins the sample's slot, checks that it
// is resident, and copies; an evicted sample's bytes are freed only once no reader pins it.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

#include "catalog.hpp"
#include "detail/xxh3.hpp"
#include "log.hpp"
#include "policy.hpp"
#include "sample_ref.hpp"
#include "segment.hpp"
#include "stats.hpp"

namespace tiercache {

enum SlotState : std::uint32_t { kAbsent = 0, kFilling = 1, kResident = 2 };

// One per sample, in the segment. On-segment layout: see kSegmentVersion before changing it.
struct SampleSlot {
    std::atomic<std::uint64_t> offset;  // segment offset of the bytes while resident
    std::atomic<std::uint32_t> state;   // SlotState
    std::atomic<std::uint32_t> pins;    // readers inside the bytes right now
    std::uint64_t checksum;             // XXH3-64 of the bytes, written before state turns resident
};
static_assert(sizeof(SampleSlot) == 24 && std::atomic<std::uint32_t>::is_always_lock_free);

class DramTier {
public:
    DramTier(Segment& segment, const Catalog& catalog, std::uint64_t capacity, std::unique_ptr<Policy> policy)
        : segment_(segment), catalog_(catalog), capacity_(capacity), policy_(std::move(policy)) {
        slots_ = segment_.construct_array<SampleSlot>("dram.slots", std::max<std::size_t>(catalog.size(), 1));
        counters_ = segment_.construct_array<TierCounters>("dram.counters", 1);
        counters_->capacity_bytes = capacity;
    }
    DramTier(const DramTier&) = delete;
    DramTier& operator=(const DramTier&) = delete;

    // The sample pinned, if resident; empty otherwise. Lock-free.
    SampleRef pin(SampleId id) noexcept {
        SampleSlot& slot = slots_[id];
        // Pin first, then look: an evictor marks the slot absent first, then looks at the pins
        // (both sequentially consistent), so one of the two always sees the other.
        slot.pins.fetch_add(1);
        if (slot.state.load() != kResident) {
            slot.pins.fetch_sub(1);
            return {};
        }
        const std::byte* bytes = segment_.at(slot.offset.load());
        return SampleRef({bytes, catalog_.size_of(id)}, &slot.pins);
    }

    // Brings `id` in if the policy admits it: `fill` writes its bytes (from the origin), then
    // the checksum is taken and the sample published. Returns it pinned, or empty when it stays
    // out. If another thread is already filling it, waits for that one instead. An exception
    // from `fill` propagates and leaves the sample absent.
    template <class Fill>
    SampleRef admit(SampleId id, Fill&& fill) {
        SampleSlot& slot = slots_[id];
        const std::uint64_t size = catalog_.size_of(id);
        std::byte* bytes = nullptr;
        {
            std::unique_lock lock(placement_mutex_);
            if (const auto state = slot.state.load(); state != kAbsent) {
                lock.unlock();
                slot.state.wait(kFilling);  // returns at once unless it is being filled
                return pin(id);
            }
            free_unpinned();
            bytes = make_room(id, size);
            if (bytes == nullptr) {
                counters_->rejections.fetch_add(1, std::memory_order_relaxed);
                return {};
            }
            slot.pins.fetch_add(1);  // ours, so the bytes cannot go before we hand them out
            slot.state.store(kFilling);
        }
        try {
            fill(std::span<std::byte>(bytes, size));
        } catch (...) {
            {
                std::lock_guard lock(placement_mutex_);
                slot.state.store(kAbsent);
                slot.pins.fetch_sub(1);
                segment_.deallocate(bytes);
                counters_->used_bytes.fetch_sub(size);
            }
            slot.state.notify_all();
            throw;
        }
        const std::uint64_t checksum = detail::xxh3({bytes, size});
        {
            std::lock_guard lock(placement_mutex_);
            slot.offset.store(segment_.offset_of(bytes));
            slot.checksum = checksum;
            slot.state.store(kResident);
            policy_->on_insert(id);
            counters_->insertions.fetch_add(1, std::memory_order_relaxed);
            counters_->resident_samples.fetch_add(1, std::memory_order_relaxed);
        }
        slot.state.notify_all();
        return SampleRef({bytes, size}, &slot.pins);
    }

    // The XXH3 checksum taken when `id` entered, if it is resident.
    std::optional<std::uint64_t> checksum(SampleId id) noexcept {
        if (SampleRef ref = pin(id)) return slots_[id].checksum;
        return std::nullopt;
    }

    Policy& policy() noexcept { return *policy_; }
    TierCounters& counters() noexcept { return *counters_; }
    const TierCounters& counters() const noexcept { return *counters_; }
    std::uint64_t capacity() const noexcept { return capacity_; }

private:
    // Room for `size` bytes, evicting as the policy says; nullptr when the policy keeps the
    // sample out or nothing more can go. placement_mutex_ held.
    std::byte* make_room(SampleId id, std::uint64_t size) {
        if (size == 0 || size > capacity_) return nullptr;
        const std::uint64_t used = counters_->used_bytes.load();
        if (!policy_->admit(id, size, capacity_ - std::min(used, capacity_))) return nullptr;
        while (counters_->used_bytes.load() + size > capacity_)
            if (!evict_one()) return nullptr;
        std::byte* bytes = segment_.allocate(size);
        while (bytes == nullptr && evict_one()) bytes = segment_.allocate(size);  // fragmentation
        if (bytes == nullptr) {
            log(LogLevel::warn, "dram tier: no block of ", size, " bytes left in the segment; sample ", id, " stays out");
            return nullptr;
        }
        counters_->used_bytes.fetch_add(size);
        return bytes;
    }

    // placement_mutex_ held.
    bool evict_one() {
        const auto victim = policy_->victim();
        if (!victim) return false;
        SampleSlot& slot = slots_[*victim];
        slot.state.store(kAbsent);  // from here on no new reader gets in
        policy_->on_evict(*victim);
        counters_->evictions.fetch_add(1, std::memory_order_relaxed);
        counters_->resident_samples.fetch_sub(1, std::memory_order_relaxed);
        Retired retired{*victim, segment_.at(slot.offset.load()), catalog_.size_of(*victim)};
        if (slot.pins.load() == 0)
            release(retired);
        else
            retired_.push_back(retired);  // a reader is still copying: free it later
        return true;
    }

    struct Retired {
        SampleId id;
        std::byte* bytes;
        std::uint64_t size;
    };

    void release(const Retired& r) {  // placement_mutex_ held
        segment_.deallocate(r.bytes);
        counters_->used_bytes.fetch_sub(r.size);
    }

    void free_unpinned() {  // placement_mutex_ held
        std::erase_if(retired_, [this](const Retired& r) {
            if (slots_[r.id].pins.load() != 0) return false;
            release(r);
            return true;
        });
    }

    Segment& segment_;
    const Catalog& catalog_;
    const std::uint64_t capacity_;
    SampleSlot* slots_ = nullptr;      // in the segment, one per sample
    TierCounters* counters_ = nullptr; // in the segment

    // Lock order: placement_mutex_, then the policy's own lock. Readers take neither.
    std::mutex placement_mutex_;
    std::unique_ptr<Policy> policy_;   // admit/victim/on_insert/on_evict: placement_mutex_ held
    std::vector<Retired> retired_;     // protected by placement_mutex_: evicted, still pinned
};

}  // namespace tiercache
