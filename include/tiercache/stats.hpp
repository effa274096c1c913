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

// What EpochLoaders over this cache saw (stall accounting): the consumer's time waiting in
// next() against its time holding batches.
struct LoaderCounters {
    std::atomic<std::uint64_t> batches{0};
    std::atomic<std::uint64_t> samples{0};
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> wait_ns{0};
    std::atomic<std::uint64_t> held_ns{0};
};

// What Prefetchers over this cache did.
struct PrefetchCounters {
    std::atomic<std::uint64_t> issued{0};     // samples taken from a plan's window
    std::atomic<std::uint64_t> fetched{0};    // brought into a tier (from nvme or the origin)
    std::atomic<std::uint64_t> resident{0};   // already in a memory tier: nothing to do
    std::atomic<std::uint64_t> raced{0};      // a reader was fetching it already
    std::atomic<std::uint64_t> rejected{0};   // no tier would take it (a full no-evict cache)
    std::atomic<std::uint64_t> errors{0};     // the origin failed; the reader will see it too
    std::atomic<std::uint64_t> bytes{0};      // bytes fetched
};

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
    std::uint64_t extents = 0, extent_bytes = 0;  // the unit of caching (extent.hpp): how many, of what size
    std::string policy;
    std::uint64_t plan_samples = 0;  // the plans' lengths, summed; 0: no plan
    std::uint64_t plan_jobs = 0;     // jobs with a plan registered
    std::string share_name;          // a shared cache's name; empty when private
    std::uint64_t share_connections = 0, share_jobs = 0;  // clients attached now
    std::uint64_t loader_batches = 0, loader_samples = 0, loader_bytes = 0, loader_wait_ns = 0, loader_held_ns = 0;
    std::uint64_t prefetch_issued = 0, prefetch_fetched = 0, prefetch_resident = 0, prefetch_raced = 0,
                  prefetch_rejected = 0, prefetch_errors = 0, prefetch_bytes = 0;
    // The nvme write-through (nvme_writer.hpp): writes queued, skipped (the queue full: a copy in
    // memory is retried once it has room, other bytes are written by the thread that had them),
    // retried, written (by the writer), dropped (the file changed, or the tier refused); bytes queued now, at most.
    std::uint64_t nvme_writes_queued = 0, nvme_writes_skipped = 0, nvme_writes_retried = 0, nvme_writes_written = 0,
                  nvme_writes_dropped = 0, nvme_write_queue_bytes = 0, nvme_write_queue_capacity = 0,
                  nvme_writes_awaited = 0;  // queued writes of extents demoted meanwhile: their readers waited for the write

    // The fraction of the consumer's time spent waiting for data.
    double stall_fraction() const {
        const double total = static_cast<double>(loader_wait_ns) + static_cast<double>(loader_held_ns);
        return total == 0 ? 0.0 : static_cast<double>(loader_wait_ns) / total;
    }
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
            {"extents", s.extents},
            {"extent_bytes", s.extent_bytes},
            {"segment_bytes", s.segment_bytes},
            {"policy", s.policy},
            {"plan", {{"active", s.plan_samples != 0}, {"samples", s.plan_samples}, {"jobs", s.plan_jobs}}},
            {"share", {{"name", s.share_name}, {"connections", s.share_connections}, {"jobs", s.share_jobs}}},
            {"prefetch", {{"issued", s.prefetch_issued}, {"fetched", s.prefetch_fetched}, {"resident", s.prefetch_resident},
                          {"raced", s.prefetch_raced}, {"rejected", s.prefetch_rejected}, {"errors", s.prefetch_errors},
                          {"bytes", s.prefetch_bytes}}},
            {"nvme_writes", {{"queued", s.nvme_writes_queued}, {"skipped", s.nvme_writes_skipped}, {"retried", s.nvme_writes_retried},
                             {"written", s.nvme_writes_written}, {"dropped", s.nvme_writes_dropped}, {"awaited", s.nvme_writes_awaited},
                             {"queue_bytes", s.nvme_write_queue_bytes}, {"queue_capacity_bytes", s.nvme_write_queue_capacity}}},
            {"loader", {{"batches", s.loader_batches}, {"samples", s.loader_samples}, {"bytes", s.loader_bytes},
                        {"wait_seconds", static_cast<double>(s.loader_wait_ns) / 1e9},
                        {"held_seconds", static_cast<double>(s.loader_held_ns) / 1e9},
                        {"stall_fraction", s.stall_fraction()}}}};
}

// The inverse of to_json, for a client given the owner's stats (fields missing read as 0).
inline Stats stats_from_json(const nlohmann::json& j) {
    auto u = [](const nlohmann::json& o, const char* key) { return o.contains(key) ? o[key].get<std::uint64_t>() : 0; };
    auto str = [](const nlohmann::json& o, const char* key) { return o.contains(key) ? o[key].get<std::string>() : std::string(); };
    Stats s;
    for (const auto& name : j.at("tier_order")) {
        const auto& t = j.at("tiers").at(name.get<std::string>());
        s.tiers.push_back({name.get<std::string>(), str(t, "backing"), u(t, "capacity_bytes"), u(t, "used_bytes"), u(t, "hits"),
                           u(t, "misses"), u(t, "bytes_read"), u(t, "insertions"), u(t, "evictions"), u(t, "rejections"),
                           u(t, "checksum_failures"), u(t, "resident_samples"), u(t, "promotions"), u(t, "demotions")});
    }
    const auto& o = j.at("origin");
    s.origin_bytes_read = u(o, "bytes_read"), s.origin_reads = u(o, "reads"), s.origin_errors = u(o, "errors");
    s.samples = u(j, "samples"), s.dataset_bytes = u(j, "dataset_bytes"), s.segment_bytes = u(j, "segment_bytes");
    s.extents = u(j, "extents"), s.extent_bytes = u(j, "extent_bytes");
    s.policy = str(j, "policy");
    if (j.contains("plan")) s.plan_samples = u(j["plan"], "samples"), s.plan_jobs = u(j["plan"], "jobs");
    if (j.contains("share")) {
        const auto& sh = j["share"];
        s.share_name = str(sh, "name"), s.share_connections = u(sh, "connections"), s.share_jobs = u(sh, "jobs");
    }
    if (j.contains("prefetch")) {
        const auto& p = j["prefetch"];
        s.prefetch_issued = u(p, "issued"), s.prefetch_fetched = u(p, "fetched"), s.prefetch_resident = u(p, "resident");
        s.prefetch_raced = u(p, "raced"), s.prefetch_rejected = u(p, "rejected"), s.prefetch_errors = u(p, "errors");
        s.prefetch_bytes = u(p, "bytes");
    }
    if (j.contains("nvme_writes")) {
        const auto& w = j["nvme_writes"];
        s.nvme_writes_queued = u(w, "queued"), s.nvme_writes_skipped = u(w, "skipped"), s.nvme_writes_retried = u(w, "retried");
        s.nvme_writes_written = u(w, "written"), s.nvme_writes_dropped = u(w, "dropped"), s.nvme_writes_awaited = u(w, "awaited");
        s.nvme_write_queue_bytes = u(w, "queue_bytes"), s.nvme_write_queue_capacity = u(w, "queue_capacity_bytes");
    }
    return s;  // the loader's counters are each process's own
}

}  // namespace tiercache
