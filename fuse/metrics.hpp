// The mount's metrics in the Prometheus text exposition format (version 0.0.4): what
// MOUNTPOINT/.tiercache/metrics serves and --metrics-textfile writes for node_exporter.
//
// A pure function of the same state .tiercache/stats shows, so a test renders it without a
// mount. Every name here is documented in README.md's Metrics table, and a mount test parses
// that table: a metric added here without a row there fails it.
//
// Naming follows Prometheus' rules: the tiercache_ prefix, base units in the name (_bytes,
// _seconds), _total on counters. Rates (hit ratio, origin throughput) are left to rate() over
// the counters, which survives scrapes missed and daemons restarted; no ratio is exported.
// Every series carries mount="MOUNTPOINT" so that node_exporter can merge the textfiles of
// several mounts on one host (identical label sets in two files are an error there).
#pragma once
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tiercache/stats.hpp>

namespace tiercache::fuse {

// What the mount saw of one job's READs (a process with a plan, or "none": every reader
// without one). Only READs that reach the daemon count: with the kernel cache on, a warm
// read is served by the kernel and never seen here.
struct JobReads {
    std::string job;                // the plan writer's pid, or "none"
    std::uint64_t reads = 0;        // READ requests on data files
    std::uint64_t bytes = 0;        // bytes they returned
    std::uint64_t stalls = 0;       // of them, the ones that waited on the origin
    double stall_seconds = 0;       // time those spent in the cache, summed
};

struct MetricsInput {
    Stats stats;
    std::vector<JobReads> jobs;
    std::vector<std::pair<std::string, std::uint64_t>> requests;  // FUSE requests by operation
    double uptime_seconds = 0;
    std::string version;
    std::string mount;  // the mountpoint: a label on every series
};

namespace detail_metrics {

// A label value: backslash, double quote and line feed escaped (the format's rule).
inline void append_label_value(std::string& out, std::string_view v) {
    for (const char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
}

inline void append_value(std::string& out, std::uint64_t v) { out += std::to_string(v); }

inline void append_value(std::string& out, double v) {
    if (std::isnan(v)) { out += "NaN"; return; }
    if (std::isinf(v)) { out += v > 0 ? "+Inf" : "-Inf"; return; }
    std::array<char, 32> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);  // shortest exact form
    out.append(buf.data(), ec == std::errc{} ? static_cast<std::size_t>(end - buf.data()) : 0);
}

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

// Writes families: a # HELP and # TYPE line, then its samples.
class Writer {
public:
    explicit Writer(std::string_view mount) : mount_(mount) {}

    void family(std::string_view name, std::string_view type, std::string_view help) {
        name_ = name;
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        for (const char c : help) {
            if (c == '\\') out_ += "\\\\";
            else if (c == '\n') out_ += "\\n";
            else out_ += c;
        }
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    // A sample of the current family.
    template <class V>
    void sample(const Labels& labels, V value) {
        out_ += name_;
        out_ += '{';
        for (const auto& [key, v] : labels) {
            out_ += key;
            out_ += "=\"";
            append_label_value(out_, v);
            out_ += "\",";
        }
        out_ += "mount=\"";
        append_label_value(out_, mount_);
        out_ += "\"} ";
        append_value(out_, value);
        out_ += '\n';
    }

    std::string take() { return std::move(out_); }

private:
    std::string out_;
    std::string name_;
    std::string mount_;
};

}  // namespace detail_metrics

inline std::string render_metrics(const MetricsInput& in) {
    using detail_metrics::Labels;
    detail_metrics::Writer w(in.mount);
    const Stats& s = in.stats;

    w.family("tiercache_build_info", "gauge", "Always 1; the version of tiercache-fuse serving the mount.");
    w.sample(Labels{{"version", in.version}}, std::uint64_t{1});
    w.family("tiercache_uptime_seconds", "gauge", "Seconds since the mount started.");
    w.sample({}, in.uptime_seconds);

    // Per tier, fastest first. A member pointer per family keeps the names in one list.
    struct TierFamily {
        const char* name;
        const char* type;
        const char* help;
        std::uint64_t TierStats::*field;
    };
    static constexpr TierFamily kTierFamilies[] = {
        {"tiercache_tier_capacity_bytes", "gauge", "Bytes the tier may hold.", &TierStats::capacity_bytes},
        {"tiercache_tier_used_bytes", "gauge", "Sample bytes the tier holds now.", &TierStats::used_bytes},
        {"tiercache_tier_resident_samples", "gauge", "Samples the tier holds now.", &TierStats::resident_samples},
        {"tiercache_tier_hits_total", "counter",
         "Reads the tier served. Hit ratio: rate(hits) / (rate(hits) + rate(misses)).", &TierStats::hits},
        {"tiercache_tier_misses_total", "counter", "Reads the tier could not serve.", &TierStats::misses},
        {"tiercache_tier_served_bytes_total", "counter", "Bytes the tier's hits returned.", &TierStats::bytes_read},
        {"tiercache_tier_admissions_total", "counter", "Samples placed in the tier.", &TierStats::insertions},
        {"tiercache_tier_rejections_total", "counter", "Misses the tier's policy (or the room left) kept out.",
         &TierStats::rejections},
        {"tiercache_tier_evictions_total", "counter", "Samples evicted from the tier.", &TierStats::evictions},
        {"tiercache_tier_promotions_total", "counter", "Samples the tier took from a slower tier on a hit.",
         &TierStats::promotions},
        {"tiercache_tier_demotions_total", "counter", "Samples the tier passed down to a slower tier instead of dropping them.",
         &TierStats::demotions},
        {"tiercache_tier_checksum_failures_total", "counter", "Copies whose checksum did not match (dropped, read again).",
         &TierStats::checksum_failures},
    };
    for (const TierFamily& f : kTierFamilies) {
        w.family(f.name, f.type, f.help);
        for (const TierStats& t : s.tiers) w.sample(Labels{{"tier", t.name}}, t.*f.field);
    }

    w.family("tiercache_origin_reads_total", "counter", "Reads of the origin.");
    w.sample({}, s.origin_reads);
    w.family("tiercache_origin_read_bytes_total", "counter",
             "Bytes read from the origin. Origin throughput: rate(tiercache_origin_read_bytes_total[1m]).");
    w.sample({}, s.origin_bytes_read);
    w.family("tiercache_origin_errors_total", "counter", "Origin reads that failed.");
    w.sample({}, s.origin_errors);

    // Per job: what the mount's readers saw.
    w.family("tiercache_job_reads_total", "counter",
             "READ requests on data files that reached the daemon, by job (the pid that wrote a plan, or none).");
    for (const JobReads& j : in.jobs) w.sample(Labels{{"job", j.job}}, j.reads);
    w.family("tiercache_job_read_bytes_total", "counter", "Bytes those READs returned, by job.");
    for (const JobReads& j : in.jobs) w.sample(Labels{{"job", j.job}}, j.bytes);
    w.family("tiercache_job_hits_total", "counter", "READs served by a tier without waiting on the origin, by job.");
    for (const JobReads& j : in.jobs) w.sample(Labels{{"job", j.job}}, j.reads - j.stalls);
    w.family("tiercache_job_stalls_total", "counter", "READs that waited on the origin (a miss, or another reader's fetch), by job.");
    for (const JobReads& j : in.jobs) w.sample(Labels{{"job", j.job}}, j.stalls);
    w.family("tiercache_job_stall_seconds_total", "counter", "Seconds the stalled READs spent in the cache, by job.");
    for (const JobReads& j : in.jobs) w.sample(Labels{{"job", j.job}}, j.stall_seconds);

    w.family("tiercache_dataset_samples", "gauge", "Files in the mounted dataset.");
    w.sample({}, s.samples);
    w.family("tiercache_dataset_bytes", "gauge", "Bytes of the mounted dataset.");
    w.sample({}, s.dataset_bytes);
    w.family("tiercache_plan_jobs", "gauge", "Jobs holding a plan in the cache.");
    w.sample({}, s.plan_jobs);
    w.family("tiercache_share_connections", "gauge", "Processes attached to the shared cache (--share) now.");
    w.sample({}, s.share_connections);
    w.family("tiercache_prefetch_fetched_total", "counter", "Samples the prefetchers brought into a tier.");
    w.sample({}, s.prefetch_fetched);
    w.family("tiercache_prefetch_fetched_bytes_total", "counter", "Bytes the prefetchers brought into a tier.");
    w.sample({}, s.prefetch_bytes);
    w.family("tiercache_prefetch_errors_total", "counter", "Prefetches the origin failed.");
    w.sample({}, s.prefetch_errors);
    // The nvme write-through (nvme_writer.hpp), by what became of each write.
    w.family("tiercache_nvme_writes_total", "counter",
             "nvme write-throughs by outcome: queued, skipped (queue full), retried, written, dropped (file changed), "
             "awaited (demoted while queued: readers waited for the write).");
    const std::pair<const char*, std::uint64_t> writes[] = {
        {"queued", s.nvme_writes_queued}, {"skipped", s.nvme_writes_skipped}, {"retried", s.nvme_writes_retried},
        {"written", s.nvme_writes_written}, {"dropped", s.nvme_writes_dropped}, {"awaited", s.nvme_writes_awaited}};
    for (const auto& [outcome, n] : writes) w.sample(Labels{{"outcome", outcome}}, n);
    w.family("tiercache_nvme_write_queue_bytes", "gauge", "Bytes queued for the nvme writer now.");
    w.sample({}, s.nvme_write_queue_bytes);
    w.family("tiercache_nvme_write_queue_capacity_bytes", "gauge", "Bytes the nvme writer may hold queued.");
    w.sample({}, s.nvme_write_queue_capacity);
    w.family("tiercache_fuse_requests_total", "counter", "FUSE requests by operation (control: those on .tiercache).");
    for (const auto& [op, n] : in.requests) w.sample(Labels{{"op", op}}, n);
    return w.take();
}

}  // namespace tiercache::fuse
