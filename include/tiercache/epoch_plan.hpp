// The order of one epoch, known before it starts: what lets the cache place, evict and
// prefetch by next use instead of guessing.
//
// The shuffle: a Fisher-Yates shuffle of 0..n-1 driven by xoshiro256** (detail/prng.hpp),
// seeded by splitmix64 from (seed, epoch), with unbiased bounded draws. We do not use
// std::shuffle or <random>'s distributions, whose output differs between standard
// libraries: the same (seed, epoch) gives the same order in every process on every machine.
//
// Sharding follows PyTorch's DistributedSampler: the shuffled list is padded (by repeating
// its start) to a multiple of world_size, or with drop_last cut down to one, and rank r
// takes positions r, r + world, r + 2*world, ...
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "catalog.hpp"
#include "detail/prng.hpp"
#include "record.hpp"

namespace tiercache {

struct PlanShard {
    std::uint32_t rank = 0;
    std::uint32_t world = 1;
    bool drop_last = false;  // false: pad by repeating samples so every rank gets as many
    bool shuffle = true;     // false: catalog order (validation sets)
};

class EpochPlan {
public:
    // The plan of `epoch` over `samples` samples. Throws std::invalid_argument for a rank
    // outside the world, a world of 0, or a dataset smaller than the world with drop_last.
    EpochPlan(std::size_t samples, std::uint64_t seed, std::uint64_t epoch, std::uint32_t rank = 0, std::uint32_t world = 1,
              bool drop_last = false)
        : EpochPlan(samples, seed, epoch, PlanShard{rank, world, drop_last, true}) {}

    EpochPlan(std::size_t samples, std::uint64_t seed, std::uint64_t epoch, PlanShard shard)
        : samples_(samples), seed_(seed), epoch_(epoch), shard_(shard), seeded_(true) {
        if (shard.world == 0) throw std::invalid_argument("plan: world size must be at least 1");
        if (shard.rank >= shard.world)
            throw std::invalid_argument("plan: rank " + std::to_string(shard.rank) + " is outside a world of " +
                                        std::to_string(shard.world));
        if (samples > kMaxSamples) throw std::invalid_argument("plan: " + std::to_string(samples) + " samples is too many");
        order_ = shard_of(shuffled(samples, seed, epoch, shard.shuffle), shard);
    }

    // A plan given as an explicit order (e.g. paths a loader wrote to the mount's plan file).
    static EpochPlan from_order(std::vector<SampleId> order, std::size_t samples) {
        for (SampleId id : order)
            if (id >= samples)
                throw std::invalid_argument("plan: sample id " + std::to_string(id) + " outside a catalog of " +
                                            std::to_string(samples));
        EpochPlan plan;
        plan.samples_ = samples;
        plan.order_ = std::move(order);
        return plan;
    }

    // The same sampler one epoch on; empty for an explicit order, whose future is unknown.
    std::optional<EpochPlan> next_epoch() const {
        if (!seeded_) return std::nullopt;
        return EpochPlan(samples_, seed_, epoch_ + 1, shard_);
    }

    // A view into this plan: keep the plan alive while it is used (not `EpochPlan(...).order()`
    // as a range-for's range).
    std::span<const SampleId> order() const noexcept { return order_; }
    std::size_t size() const noexcept { return order_.size(); }
    SampleId operator[](std::size_t position) const { return order_[position]; }
    std::size_t catalog_size() const noexcept { return samples_; }
    bool seeded() const noexcept { return seeded_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::uint64_t epoch() const noexcept { return epoch_; }
    const PlanShard& shard() const noexcept { return shard_; }

    // Samples per rank, as DistributedSampler's num_samples.
    static std::size_t per_rank(std::size_t samples, std::uint32_t world, bool drop_last) {
        if (drop_last && samples % world != 0) return (samples - world) / world + ((samples - world) % world != 0);
        return (samples + world - 1) / world;
    }

private:
    static constexpr std::size_t kMaxSamples = SampleId(-1);

    EpochPlan() = default;

    static std::vector<SampleId> shuffled(std::size_t samples, std::uint64_t seed, std::uint64_t epoch, bool shuffle) {
        std::vector<SampleId> all(samples);
        for (std::size_t i = 0; i < samples; ++i) all[i] = static_cast<SampleId>(i);
        if (shuffle) {
            detail::Rng rng = detail::Rng::stream(seed, detail::kEpochStream, epoch);
            detail::shuffle(all, rng);
        }
        return all;
    }

    static std::vector<SampleId> shard_of(std::vector<SampleId> all, const PlanShard& shard) {
        if (shard.world == 1) return all;
        if (shard.drop_last && all.size() < shard.world)
            throw std::invalid_argument("plan: " + std::to_string(all.size()) + " samples cannot be split over " +
                                        std::to_string(shard.world) + " ranks with drop_last");
        const std::size_t per_rank = EpochPlan::per_rank(all.size(), shard.world, shard.drop_last);
        if (all.empty()) return all;
        // Position p of the padded list is all[p % n] (padding repeats the start), so the
        // rank's share is read off directly: no padded copy, whatever the world size.
        std::vector<SampleId> mine(per_rank);
        for (std::size_t i = 0; i < per_rank; ++i) mine[i] = all[(shard.rank + i * std::size_t{shard.world}) % all.size()];
        return mine;
    }

    std::size_t samples_ = 0;
    std::uint64_t seed_ = 0, epoch_ = 0;
    PlanShard shard_;
    bool seeded_ = false;
    std::vector<SampleId> order_;
};

// A plan over records (a shard's members, ...): `plan` orders positions into `records`, as a
// plan over files orders sample ids. Throws std::invalid_argument unless the plan was made
// for records.size() of them.
inline std::vector<Record> records_in_order(const EpochPlan& plan, std::span<const Record> records) {
    if (plan.catalog_size() != records.size())
        throw std::invalid_argument("plan: made for " + std::to_string(plan.catalog_size()) + " records, given " +
                                    std::to_string(records.size()));
    std::vector<Record> out;
    out.reserve(plan.size());
    for (const SampleId i : plan.order()) out.push_back(records[i]);
    return out;
}

}  // namespace tiercache
