// The cache: a sample's way from the origin to a reader, top to bottom.
//
//   Cache::read / read_chunk
//     1. the dram tier holds it?  pin it, copy from (or hand out) tier memory      -> hit
//     2. the policy admits it?    read the whole sample from the origin into the tier,
//                                 checksum it, publish it, serve from it           -> miss
//     3. otherwise                read just the asked-for bytes from the origin    -> miss
//
// Thread-safe: any number of threads may read at once.
#pragma once
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "catalog.hpp"
#include "config.hpp"
#include "dram_tier.hpp"
#include "error.hpp"
#include "origin.hpp"
#include "sample_ref.hpp"
#include "segment.hpp"
#include "stats.hpp"

namespace tiercache {

// Bytes of one read without a copy: either a span of tier memory that `ref` keeps pinned, or
// bytes read from the origin into the caller's scratch buffer.
struct Chunk {
    SampleRef ref;
    std::span<const std::byte> bytes;
};

class Cache {
public:
    // Scans the origin and builds the segment. Throws std::invalid_argument for a bad config
    // and std::runtime_error when the origin cannot be scanned or the segment made.
    static Cache open(const Config& config) { return Cache(config); }

    // For tests: read through `origin` (a slow or failing double) instead of the config's.
    Cache(const Config& config, std::unique_ptr<Origin> origin) : config_(config) {
        config_.validate();
        origin_ = origin ? std::move(origin) : std::make_unique<Origin>(config_.origin());
        const ScanResult scan = scan_origin(config_.origin());
        const std::uint64_t capacity = config_.dram_bytes();
        // Room for the catalog, the slots, and the tier's bytes with the allocator's overhead
        // (about 1/16 for ~100 KiB samples).
        const std::uint64_t segment_bytes = scan.segment_bytes() + scan.samples.size() * sizeof(SampleSlot) +
                                            capacity + capacity / 16 + (16u << 20);
        segment_ = std::make_unique<Segment>(config_.segment_dir(), segment_bytes);
        catalog_ = Catalog::place(*segment_, scan);
        origin_counters_ = segment_->construct_array<OriginCounters>("origin.counters", 1);
        dram_ = std::make_unique<DramTier>(*segment_, catalog_, capacity, make_policy(config_.policy(), catalog_.size()));
        log(LogLevel::info, "catalog: ", catalog_.size(), " samples (", format_size(catalog_.total_bytes()), ") in ",
            catalog_.dir_count(), " directories", scan.skipped ? ", " + std::to_string(scan.skipped) + " entries skipped" : "",
            "; dram tier ", format_size(capacity), ", policy ", config_.policy());
    }
    explicit Cache(const Config& config) : Cache(config, nullptr) {}
    Cache(const Cache&) = delete;
    Cache& operator=(const Cache&) = delete;

    const Catalog& catalog() const noexcept { return catalog_; }
    const Config& config() const noexcept { return config_; }

    // Throws UnknownSample for an id outside the catalog.
    std::uint64_t size(SampleId id) const {
        check(id);
        return catalog_.size_of(id);
    }

    // The id of a relative path ("class/file.jpg"), or UnknownSample naming it.
    SampleId id_of(std::string_view relpath) const {
        if (auto id = catalog_.find(relpath)) return *id;
        throw UnknownSample("no sample '" + std::string(relpath) + "' in " + config_.origin().string());
    }

    // Copies bytes [offset, offset + dest.size()) of sample `id` into dest; returns how many
    // (fewer only at the end of the sample). Throws UnknownSample or OriginError.
    std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) {
        Chunk chunk = read_chunk(id, offset, dest);
        if (!chunk.bytes.empty() && chunk.bytes.data() != dest.data())
            std::memcpy(dest.data(), chunk.bytes.data(), chunk.bytes.size());
        return chunk.bytes.size();
    }

    // Like read(), without a copy when the bytes are in a tier. `scratch` (at least the
    // length wanted) receives them otherwise.
    Chunk read_chunk(SampleId id, std::uint64_t offset, std::span<std::byte> scratch) {
        const std::uint64_t size = this->size(id);
        if (offset >= size || scratch.empty()) return {};
        const std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(scratch.size(), size - offset));
        TierCounters& dram = dram_->counters();

        if (SampleRef ref = dram_->pin(id)) {
            dram.hits.fetch_add(1, std::memory_order_relaxed);
            dram.bytes_read.fetch_add(length, std::memory_order_relaxed);
            dram_->policy().on_hit(id);
            const auto bytes = ref.bytes().subspan(offset, length);
            return {std::move(ref), bytes};
        }
        dram.misses.fetch_add(1, std::memory_order_relaxed);
        if (SampleRef ref = dram_->admit(id, [&](std::span<std::byte> whole) { read_origin(id, 0, whole, true); })) {
            const auto bytes = ref.bytes().subspan(offset, length);
            return {std::move(ref), bytes};
        }
        const std::size_t n = read_origin(id, offset, scratch.first(length), false);
        return {{}, scratch.first(n)};
    }

    // The whole sample pinned in a tier (zero-copy), bringing it in if the policy admits it;
    // empty when it stays out.
    SampleRef acquire(SampleId id) {
        check(id);
        if (SampleRef ref = dram_->pin(id)) {
            dram_->counters().hits.fetch_add(1, std::memory_order_relaxed);
            dram_->policy().on_hit(id);
            return ref;
        }
        dram_->counters().misses.fetch_add(1, std::memory_order_relaxed);
        return dram_->admit(id, [&](std::span<std::byte> whole) { read_origin(id, 0, whole, true); });
    }

    // The XXH3-64 checksum taken when the sample entered the dram tier; none if not resident.
    std::optional<std::uint64_t> resident_checksum(SampleId id) {
        check(id);
        return dram_->checksum(id);
    }

    Stats stats() const {
        Stats s;
        s.tiers.push_back(TierStats::from("dram", dram_->counters()));
        s.origin_bytes_read = origin_counters_->bytes_read.load();
        s.origin_reads = origin_counters_->reads.load();
        s.origin_errors = origin_counters_->errors.load();
        s.samples = catalog_.size();
        s.dataset_bytes = catalog_.total_bytes();
        s.segment_bytes = segment_->size();
        s.policy = std::string(dram_->policy().name());
        return s;
    }

private:
    void check(SampleId id) const {
        if (!catalog_.contains(id))
            throw UnknownSample("sample id " + std::to_string(id) + " out of range (catalog holds " +
                                std::to_string(catalog_.size()) + ")");
    }

    // `whole`: the read must fill dest, or the origin changed under us.
    std::size_t read_origin(SampleId id, std::uint64_t offset, std::span<std::byte> dest, bool whole) {
        try {
            const std::size_t n = origin_->read(catalog_.path(id), offset, dest);
            origin_counters_->reads.fetch_add(1, std::memory_order_relaxed);
            origin_counters_->bytes_read.fetch_add(n, std::memory_order_relaxed);
            if (whole && n != dest.size())
                throw OriginError(EIO, "origin file '" + (config_.origin() / catalog_.path(id)).string() + "' is " +
                                           std::to_string(offset + n) + " bytes, catalogued as " +
                                           std::to_string(catalog_.size_of(id)) + ": it changed since the scan");
            return n;
        } catch (const OriginError&) {
            origin_counters_->errors.fetch_add(1, std::memory_order_relaxed);
            throw;
        }
    }

    Config config_;
    std::unique_ptr<Origin> origin_;
    std::unique_ptr<Segment> segment_;     // holds everything below
    Catalog catalog_;
    OriginCounters* origin_counters_ = nullptr;
    std::unique_ptr<DramTier> dram_;
};

}  // namespace tiercache
