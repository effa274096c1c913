// A memory tier (dram, pmem, cxl): extents (extent.hpp) in a MemoryRegion, bounded by a
// capacity in extent bytes. Hits take no lock: a reader pins the extent's slot, checks that it
// is resident, and copies; an evicted extent's bytes are freed only once no reader pins it.
//
// Placement (reserve, publish, abort, evict) is decided by the Cache, which calls these with
// its placement lock held, so a sample can move between tiers as one step.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "catalog.hpp"
#include "memory_region.hpp"
#include "policy.hpp"
#include "sample_ref.hpp"
#include "segment.hpp"
#include "stats.hpp"

namespace tiercache {

enum SlotState : std::uint32_t { kAbsent = 0, kFilling = 1, kResident = 2 };

// One per extent per memory tier, in the segment. On-segment layout: see kSegmentVersion.
struct SampleSlot {
    std::atomic<std::uint64_t> offset;      // bytes at base + offset while resident (see MemoryTier::base_)
    std::atomic<std::uint32_t> state;       // SlotState
    std::atomic<std::uint32_t> pins;        // the owner's readers inside the bytes right now
    std::uint64_t checksum;                 // XXH3-64 of the bytes, written before state turns resident
    std::atomic<std::uint32_t> generation;  // +1 on publish and on evict: what clients' copies are checked by
    std::uint32_t reserved;
};
static_assert(sizeof(SampleSlot) == 32 && std::atomic<std::uint32_t>::is_always_lock_free);

// A client process's read of a resident sample, without a pin: pins held by a process that
// dies would never be released, so clients copy and then check that the slot's generation did
// not move meanwhile (the owner bumps it before the bytes can be freed and reused). `base`,
// `mapped`: the client's mapping of the segment. Returns the bytes copied, or nothing when
// the sample is not resident or moved during the copy (the caller asks the owner instead).
inline std::optional<std::size_t> copy_if_resident(const SampleSlot& slot, const std::byte* base, std::uint64_t mapped,
                                                   std::uint64_t length, std::uint64_t offset, std::span<std::byte> dest) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        const std::uint32_t before = slot.generation.load();
        if (slot.state.load() != kResident) return std::nullopt;
        const std::uint64_t at = slot.offset.load();
        if (at > mapped || length > mapped - at) return std::nullopt;  // torn: never read outside the file
        const std::size_t n = offset >= length ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(dest.size(), length - offset));
        std::memcpy(dest.data(), base + at + offset, n);
#if defined(__SANITIZE_THREAD__)
        std::atomic_signal_fence(std::memory_order_acquire);  // TSan has no thread fences; it sees no other process anyway
#else
        std::atomic_thread_fence(std::memory_order_acquire);  // the copy's loads come before the second look
#endif
        if (slot.generation.load() == before && slot.state.load() == kResident) return n;
    }
    return std::nullopt;
}

// The memory of the segment itself, for the dram tier.
class SegmentRegion final : public MemoryRegion {
public:
    explicit SegmentRegion(Segment& segment) : segment_(segment) {}
    std::byte* allocate(std::size_t bytes) noexcept override { return segment_.allocate(bytes); }
    void deallocate(std::byte* block) noexcept override { segment_.deallocate(block); }
    std::string describe() const override { return "shared-memory segment (" + format_size(segment_.size()) + ")"; }

private:
    Segment& segment_;
};

class MemoryTier {
public:
    // `base`: what slot offsets are relative to. The segment's base for dram, so another
    // process mapping the segment can follow them; nullptr (absolute addresses) for regions
    // private to this process.
    MemoryTier(std::string name, Segment& segment, const Catalog& catalog, MemoryRegion& region, const std::byte* base,
               std::uint64_t capacity, std::unique_ptr<Policy> policy)
        : name_(std::move(name)), catalog_(catalog), region_(region), base_(base), capacity_(capacity), policy_(std::move(policy)) {
        slots_ = segment.construct_array<SampleSlot>((name_ + ".slots").c_str(), std::max<std::size_t>(catalog.extent_count(), 1));
        counters_ = segment.construct_array<TierCounters>((name_ + ".counters").c_str(), 1);
        counters_->capacity_bytes = capacity;
    }
    MemoryTier(const MemoryTier&) = delete;
    MemoryTier& operator=(const MemoryTier&) = delete;

    // ---- readers: any thread, no lock ------------------------------------------------------

    // The sample pinned, if resident here; empty otherwise.
    SampleRef pin(ExtentId id) noexcept {
        SampleSlot& slot = slots_[id];
        // Pin first, then look: an evictor marks the slot absent first, then looks at the pins
        // (both sequentially consistent), so one of the two always sees the other.
        slot.pins.fetch_add(1);
        if (slot.state.load() != kResident) {
            slot.pins.fetch_sub(1);
            return {};
        }
        return SampleRef({address(slot.offset.load()), catalog_.extent_length(id)}, &slot.pins);
    }

    bool resident(ExtentId id) const noexcept { return slots_[id].state.load() == kResident; }

    // The XXH3 checksum taken when `id` entered, if it is resident here.
    std::optional<std::uint64_t> checksum(ExtentId id) noexcept {
        if (SampleRef ref = pin(id)) return slots_[id].checksum;
        return std::nullopt;
    }

    // ---- placement: the cache's placement lock held ---------------------------------------

    std::uint64_t free_bytes() const noexcept {
        const std::uint64_t used = counters_->used_bytes.load();
        return capacity_ - std::min(used, capacity_);
    }

    // Bytes evicted but still pinned (a reader copying them, a queued nvme write): room that
    // comes back once they are let go, which no further eviction would speed up.
    std::uint64_t pinned_evicted_bytes() {
        free_unpinned();
        return retired_bytes_;
    }

    // Room for `id`'s bytes: the block, pinned for the caller and marked filling; nullptr
    // when the tier (or its region) has no room. Evicts nothing: see Cache::make_room.
    std::byte* reserve(ExtentId id) {
        const std::uint64_t size = catalog_.extent_length(id);
        free_unpinned();
        if (size == 0 || size > free_bytes()) return nullptr;
        std::byte* bytes = region_.allocate(size);
        if (bytes == nullptr) return nullptr;
        counters_->used_bytes.fetch_add(size);
        SampleSlot& slot = slots_[id];
        slot.pins.fetch_add(1);  // the caller's, so the bytes cannot go before it hands them out
        slot.state.store(kFilling);
        return bytes;
    }

    // Makes reserved, filled bytes visible to readers; returns the caller's pinned view.
    SampleRef publish(ExtentId id, std::byte* bytes, std::uint64_t checksum) {
        SampleSlot& slot = slots_[id];
        slot.offset.store(offset(bytes));
        slot.checksum = checksum;
        slot.generation.fetch_add(1);
        slot.state.store(kResident);
        policy_->on_insert(id);
        counters_->insertions.fetch_add(1, std::memory_order_relaxed);
        counters_->resident_samples.fetch_add(1, std::memory_order_relaxed);
        return SampleRef({bytes, catalog_.extent_length(id)}, &slot.pins);
    }

    // Gives back reserved bytes that were never published (the fill failed).
    void abort(ExtentId id, std::byte* bytes) {
        SampleSlot& slot = slots_[id];
        slot.state.store(kAbsent);
        slot.pins.fetch_sub(1);
        region_.deallocate(bytes);
        counters_->used_bytes.fetch_sub(catalog_.extent_length(id));
    }

    // Drops a resident sample; its bytes go once no reader pins them.
    void evict(ExtentId id) {
        SampleSlot& slot = slots_[id];
        slot.state.store(kAbsent);  // from here on no new reader gets in
        slot.generation.fetch_add(1);  // and a client mid-copy sees that it moved
        policy_->on_evict(id);
        counters_->evictions.fetch_add(1, std::memory_order_relaxed);
        counters_->resident_samples.fetch_sub(1, std::memory_order_relaxed);
        Retired retired{id, address(slot.offset.load()), catalog_.extent_length(id)};
        if (slot.pins.load() == 0) {
            release(retired);
        } else {
            retired_.push_back(retired);  // a reader is still copying: free it later
            retired_bytes_ += retired.size;
        }
    }

    const std::string& name() const noexcept { return name_; }
    const SampleSlot* slots() const noexcept { return slots_; }
    Policy& policy() noexcept { return *policy_; }
    TierCounters& counters() noexcept { return *counters_; }
    const TierCounters& counters() const noexcept { return *counters_; }
    std::uint64_t capacity() const noexcept { return capacity_; }
    const MemoryRegion& region() const noexcept { return region_; }

private:
    // Integer arithmetic: base_ may be null (absolute addresses).
    std::byte* address(std::uint64_t off) const noexcept { return reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(base_) + off); }
    std::uint64_t offset(const std::byte* p) const noexcept { return reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(base_); }

    struct Retired {
        ExtentId id;
        std::byte* bytes;
        std::uint64_t size;
    };

    void release(const Retired& r) {
        region_.deallocate(r.bytes);
        counters_->used_bytes.fetch_sub(r.size);
    }

    void free_unpinned() {
        std::erase_if(retired_, [this](const Retired& r) {
            if (slots_[r.id].pins.load() != 0) return false;
            release(r);
            retired_bytes_ -= r.size;
            return true;
        });
    }

    const std::string name_;
    const Catalog& catalog_;
    MemoryRegion& region_;
    const std::byte* const base_;
    const std::uint64_t capacity_;
    SampleSlot* slots_ = nullptr;       // in the segment, one per extent
    TierCounters* counters_ = nullptr;  // in the segment

    std::unique_ptr<Policy> policy_;    // admit/victim/on_insert/on_evict: placement lock held; on_hit: any thread
    std::vector<Retired> retired_;      // placement lock held: evicted, still pinned
    std::uint64_t retired_bytes_ = 0;   // placement lock held: their sizes' sum
};

}  // namespace tiercache
