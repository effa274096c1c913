// The metrics renderer (fuse/metrics.hpp) and the node_exporter textfile writer
// (fuse/metrics_textfile.hpp), without a mount.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "../fuse/metrics.hpp"
#include "../fuse/metrics_textfile.hpp"
#include "support.hpp"

namespace {

using tiercache::fuse::JobReads;
using tiercache::fuse::MetricsInput;

MetricsInput sample_input() {
    MetricsInput in;
    tiercache::TierStats dram;
    dram.name = "dram";
    dram.capacity_bytes = 1 << 20, dram.used_bytes = 4096, dram.hits = 5, dram.misses = 3, dram.bytes_read = 20480;
    dram.insertions = 3, dram.evictions = 1, dram.resident_samples = 2;
    tiercache::TierStats nvme;
    nvme.name = "nvme";
    nvme.capacity_bytes = 1 << 30, nvme.hits = 2, nvme.misses = 1;
    in.stats.tiers = {dram, nvme};
    in.stats.origin_reads = 3, in.stats.origin_bytes_read = 12288, in.stats.origin_errors = 1;
    in.stats.samples = 10, in.stats.dataset_bytes = 40960;
    in.stats.nvme_writes_queued = 7, in.stats.nvme_writes_written = 6, in.stats.nvme_writes_awaited = 2;
    in.stats.nvme_write_queue_bytes = 4096, in.stats.nvme_write_queue_capacity = 16 << 20;
    in.jobs = {JobReads{"1234", 10, 40960, 4, 0.25}, JobReads{"none", 2, 8192, 0, 0}};
    in.requests = {{"read", 12}, {"lookup", 3}};
    in.uptime_seconds = 1.5;
    in.version = "9.8.7";
    in.mount = "/mnt/ds";
    return in;
}

// name{labels} value, as the 0.0.4 format has it (no timestamps here).
const std::regex kSample(R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} (\S+))re");
const std::regex kComment(R"re(# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))re");

struct Parsed {
    std::map<std::string, double> values;  // "name{labels}" -> value
    std::map<std::string, std::string> types;
    std::vector<std::string> bad;  // lines that are neither
};

Parsed parse(const std::string& text) {
    Parsed p;
    std::istringstream in(text);
    std::string line, family;
    std::set<std::string> typed;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, m, kComment)) {
            if (m[1] == "TYPE") p.types[m[2]] = m[3];
            family = m[2];
        } else if (std::regex_match(line, m, kSample) && m[1] == family) {
            p.values[m[1].str() + "{" + m[2].str() + "}"] = std::stod(m[3]);
        } else {
            p.bad.push_back(line);
        }
    }
    return p;
}

}  // namespace

TEST_CASE("metrics: every line is a HELP/TYPE comment or a sample of the family above it", "[metrics]") {
    const std::string text = tiercache::fuse::render_metrics(sample_input());
    REQUIRE(!text.empty());
    CHECK(text.back() == '\n');
    const Parsed p = parse(text);
    CHECK(p.bad.empty());
    for (const auto& line : p.bad) UNSCOPED_INFO("bad line: " << line);
    for (const auto& [name, type] : p.types) {
        CHECK((type == "counter" || type == "gauge"));
        CHECK(name.starts_with("tiercache_"));
        // counters end in _total, and nothing else does
        CHECK((type == "counter") == name.ends_with("_total"));
    }
}

TEST_CASE("metrics: per tier, origin, job and build values come from the stats", "[metrics]") {
    const Parsed p = parse(tiercache::fuse::render_metrics(sample_input()));
    auto v = [&](const std::string& key) {
        const auto it = p.values.find(key);
        if (it == p.values.end()) FAIL("no sample " << key);
        return it->second;
    };
    CHECK(v(R"(tiercache_build_info{version="9.8.7",mount="/mnt/ds"})") == 1);
    CHECK(v(R"(tiercache_uptime_seconds{mount="/mnt/ds"})") == 1.5);
    CHECK(v(R"(tiercache_tier_capacity_bytes{tier="dram",mount="/mnt/ds"})") == 1 << 20);
    CHECK(v(R"(tiercache_tier_capacity_bytes{tier="nvme",mount="/mnt/ds"})") == 1 << 30);
    CHECK(v(R"(tiercache_tier_hits_total{tier="dram",mount="/mnt/ds"})") == 5);
    CHECK(v(R"(tiercache_tier_misses_total{tier="dram",mount="/mnt/ds"})") == 3);
    CHECK(v(R"(tiercache_tier_served_bytes_total{tier="dram",mount="/mnt/ds"})") == 20480);
    CHECK(v(R"(tiercache_tier_admissions_total{tier="dram",mount="/mnt/ds"})") == 3);
    CHECK(v(R"(tiercache_tier_evictions_total{tier="dram",mount="/mnt/ds"})") == 1);
    CHECK(v(R"(tiercache_tier_used_bytes{tier="dram",mount="/mnt/ds"})") == 4096);
    CHECK(v(R"(tiercache_origin_reads_total{mount="/mnt/ds"})") == 3);
    CHECK(v(R"(tiercache_origin_read_bytes_total{mount="/mnt/ds"})") == 12288);
    CHECK(v(R"(tiercache_origin_errors_total{mount="/mnt/ds"})") == 1);
    CHECK(v(R"(tiercache_job_reads_total{job="1234",mount="/mnt/ds"})") == 10);
    CHECK(v(R"(tiercache_job_hits_total{job="1234",mount="/mnt/ds"})") == 6);  // reads - stalls
    CHECK(v(R"(tiercache_job_stalls_total{job="1234",mount="/mnt/ds"})") == 4);
    CHECK(v(R"(tiercache_job_stall_seconds_total{job="1234",mount="/mnt/ds"})") == 0.25);
    CHECK(v(R"(tiercache_job_read_bytes_total{job="none",mount="/mnt/ds"})") == 8192);
    CHECK(v(R"(tiercache_fuse_requests_total{op="read",mount="/mnt/ds"})") == 12);
    CHECK(v(R"(tiercache_dataset_samples{mount="/mnt/ds"})") == 10);
    CHECK(v(R"(tiercache_nvme_writes_total{outcome="queued",mount="/mnt/ds"})") == 7);
    CHECK(v(R"(tiercache_nvme_writes_total{outcome="written",mount="/mnt/ds"})") == 6);
    CHECK(v(R"(tiercache_nvme_writes_total{outcome="awaited",mount="/mnt/ds"})") == 2);
    CHECK(v(R"(tiercache_nvme_writes_total{outcome="skipped",mount="/mnt/ds"})") == 0);
    CHECK(v(R"(tiercache_nvme_write_queue_bytes{mount="/mnt/ds"})") == 4096);
    CHECK(v(R"(tiercache_nvme_write_queue_capacity_bytes{mount="/mnt/ds"})") == 16 << 20);
}

TEST_CASE("metrics: label values escape backslash, double quote and line feed", "[metrics]") {
    MetricsInput in = sample_input();
    in.mount = "/mnt/a\"b\\c\nd";
    const std::string text = tiercache::fuse::render_metrics(in);
    CHECK(text.find(R"(mount="/mnt/a\"b\\c\nd")") != std::string::npos);
    CHECK(parse(text).bad.empty());
}

TEST_CASE("metrics: a cache with no tier and no reader still renders every family's HELP and TYPE", "[metrics]") {
    MetricsInput in;
    in.mount = "/m";
    const std::string text = tiercache::fuse::render_metrics(in);
    const Parsed p = parse(text);
    CHECK(p.bad.empty());
    CHECK(p.types.count("tiercache_tier_hits_total") == 1);
    CHECK(p.types.count("tiercache_job_reads_total") == 1);
}

TEST_CASE("metrics textfile: named after the mountpoint, written whole by rename, removed at stop", "[metrics]") {
    using tiercache::fuse::MetricsTextfile;
    CHECK(MetricsTextfile::file_name("/mnt/ds") == "tiercache_mnt_ds.prom");
    CHECK(MetricsTextfile::file_name("/") == "tiercache_root.prom");
    CHECK(MetricsTextfile::file_name("/data/my ds.v2") == "tiercache_data_my-20ds.v2.prom");
    // One name per mountpoint: '_', '-' and '/' stay apart.
    CHECK(MetricsTextfile::file_name("/mnt/a_b") == "tiercache_mnt_a-5fb.prom");
    CHECK(MetricsTextfile::file_name("/mnt/a/b") == "tiercache_mnt_a_b.prom");
    CHECK(MetricsTextfile::file_name("/mnt/a-b") == "tiercache_mnt_a-2db.prom");

    test::TempDir dir;
    std::atomic<int> writes{0};  // the writer thread counts, this one reads
    {
        MetricsTextfile file(dir.path(), "/mnt/ds", 0.05, [&] { return "tiercache_x{mount=\"/mnt/ds\"} " + std::to_string(++writes) + "\n"; });
        CHECK(file.path() == dir / "tiercache_mnt_ds.prom");
        CHECK(!test::fs::exists(file.path()));  // the probe leaves nothing
        CHECK(file.write_now().empty());
        CHECK(test::fs::exists(file.path()));
        file.start();
        for (int i = 0; i < 400 && writes < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        CHECK(writes >= 3);
        file.stop();
        CHECK(!test::fs::exists(file.path()));
        for (const auto& e : test::fs::directory_iterator(dir.path())) FAIL("left behind: " << e.path());
    }
}

TEST_CASE("metrics textfile: a missing, non-directory or unwritable DIR is an error naming it", "[metrics]") {
    using tiercache::fuse::MetricsTextfile;
    test::TempDir dir;
    auto make = [&](const test::fs::path& p) { MetricsTextfile f(p, "/mnt/ds", 15, [] { return std::string("x 1\n"); }); };
    CHECK_THROWS_WITH(make(dir / "missing"), Catch::Contains("missing") && Catch::Contains("no such directory"));
    test::write_file(dir / "plain", test::make_bytes(1, 1));
    CHECK_THROWS_WITH(make(dir / "plain"), Catch::Contains("not a directory"));
    CHECK_THROWS_WITH(MetricsTextfile(dir.path(), "/m", 0, [] { return std::string(); }), Catch::Contains("interval"));
    // Writes failing after the start are returned (and logged), not thrown.
    test::fs::create_directories(dir / "ro");
    MetricsTextfile file(dir / "ro", "/mnt/ds", 15, [] { return std::string("x 1\n"); });
    test::fs::remove_all(dir / "ro");
    CHECK(!file.write_now().empty());
}
