// Counters the cache keeps (in the segment, so later every process sees one set) and the
// snapshot users read: the API's Cache::stats() and the mount's .tiercache/stats JSON.
// The JSON keeps its keys in order (tiers fastest first).
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tiercache {

// On-segment layout: see kSegmentVersion before changing it.
struct TierCounters {
    std::atomic<std::uint64_t> capacity_bytes{0};
    std::atomic<std::uint64_t> used_bytes{0};        // sample bytes held, including blocks waiting for readers to let go
    std::atomic<std::uint64_t> hits{0};              // reads served from this tier
    std::atomic<std::uint64_t> misses{0};            // reads this tier could not serve
    std::atomic<std::uint64_t> bytes_read{0};        // bytes served by hits
    std::atomic<std::uint64_t> insertions{0};
    std::atomic<std::uint64_t> evictions{0};
    std::atomic<std::uint64_t> rejections{0};        // misses the policy (or the room left) kept out
    std::atomic<std::uint64_t> checksum_failures{0};
    std::atomic<std::uint64_t> resident_samples{0};
    std::atomic<std::uint64_t> promotions{0};        // samples this tier took from a slower one on a hit
    std::atomic<std::uint64_t> demotions{0};         // samples this tier passed down instead of dropping them
};
static_assert(sizeof(TierCounters) == 96 && std::atomic<std::uint64_t>::is_always_lock_free);

struct OriginCounters {
    std::atomic<std::uint64_t> bytes_read{0};
    std::atomic<std::uint64_t> reads{0};
    std::atomic<std::uint64_t> errors{0};
};
static_assert(sizeof(OriginCounters) == 24);

struct TierStats {
    std::string name;
    std::string backing;  // what holds the bytes
    std::uint64_t capacity_bytes = 0, used_bytes = 0, hits = 0, misses = 0, bytes_read = 0, insertions = 0,
                  evictions = 0, rejections = 0, checksum_failures = 0, resident_samples = 0, promotions = 0,
                  demotions = 0;

    double hit_rate() const { return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(hits + misses); }

    static TierStats from(std::string name, std::string backing, const TierCounters& c) {
        return {std::move(name), std::move(backing), c.capacity_bytes.load(), c.used_bytes.load(), c.hits.load(),
                c.misses.load(), c.bytes_read.load(), c.insertions.load(), c.evictions.load(), c.rejections.load(),
                c.checksum_failures.load(), c.resident_samples.load(), c.promotions.load(), c.demotions.load()};
    }
};

struct Stats {
    std::vector<TierStats> tiers;  // fastest first
    std::uint64_t origin_bytes_read = 0, origin_reads = 0, origin_errors = 0;
    std::uint64_t samples = 0, dataset_bytes = 0, segment_bytes = 0;
    std::string policy;
};

inline nlohmann::ordered_json to_json(const Stats& s) {
    nlohmann::ordered_json tiers = nlohmann::ordered_json::object();
    nlohmann::ordered_json order = nlohmann::ordered_json::array();  // fastest first, for readers that do not keep key order
    for (const auto& t : s.tiers) {
        order.push_back(t.name);
        tiers[t.name] = {{"capacity_bytes", t.capacity_bytes}, {"used_bytes", t.used_bytes},
                         {"hits", t.hits}, {"misses", t.misses}, {"hit_rate", t.hit_rate()},
                         {"bytes_read", t.bytes_read}, {"insertions", t.insertions},
                         {"evictions", t.evictions}, {"rejections", t.rejections},
                         {"promotions", t.promotions}, {"demotions", t.demotions}, {"backing", t.backing},
                         {"checksum_failures", t.checksum_failures}, {"resident_samples", t.resident_samples}};
    }
    return {{"tiers", tiers},
            {"tier_order", order},
            {"origin", {{"bytes_read", s.origin_bytes_read}, {"reads", s.origin_reads}, {"errors", s.origin_errors}}},
            {"samples", s.samples},
            {"dataset_bytes", s.dataset_bytes},
            {"segment_bytes", s.segment_bytes},
            {"policy", s.policy}};
}

}  // namespace tiercache
