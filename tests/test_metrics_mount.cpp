// MOUNTPOINT/.tiercache/metrics and --metrics-textfile through a real mount: Prometheus text
// whose every name is in README.md's Metrics table (parsed from the README, so docs and code
// cannot drift), checked again by prometheus_client's parser (tests/check_metrics.py), with
// counters that move as reads say they should.
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <tiercache/version.hpp>

#include "../fuse/metrics_textfile.hpp"
#include "support.hpp"

namespace {

using test::fs::path;

const path kSource = TIERCACHE_SOURCE_DIR;

// The names in the README's "### Metrics" table: rows starting | `tiercache_...` |.
std::set<std::string> documented_names() {
    std::ifstream in(kSource / "README.md");
    std::set<std::string> names;
    std::string line;
    bool section = false;
    const std::regex row(R"(\|\s*`(tiercache_[a-z_]+)`\s*\|.*)");
    while (std::getline(in, line)) {
        if (line.starts_with("#")) section = line == "### Metrics";
        std::smatch m;
        if (section && std::regex_match(line, m, row)) names.insert(m[1]);
    }
    return names;
}

struct Scrape {
    std::map<std::string, double> values;  // name{labels} -> value
    std::set<std::string> names;           // of the samples
    std::vector<std::string> bad;          // lines neither a comment nor a sample
};

// Every line a # HELP / # TYPE comment or `name{labels} value`.
Scrape parse(const std::string& text) {
    static const std::regex sample(R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} (\S+))re");
    static const std::regex comment(R"re(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*)re");
    Scrape s;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, comment)) continue;
        if (!std::regex_match(line, m, sample)) {
            s.bad.push_back(line);
            continue;
        }
        s.names.insert(m[1]);
        s.values[m[1].str() + "{" + m[2].str() + "}"] = std::stod(m[3]);
    }
    return s;
}

// prometheus_client's parser over the file, and the README table's names and labels.
void check_with_prometheus_client(const path& file) {
    // Debian's python3, the one python3-prometheus-client installs for (not a pyenv's first in PATH).
    const auto r = test::run({"/usr/bin/python3", (kSource / "tests/check_metrics.py").string(), file.string(), (kSource / "README.md").string()});
    INFO(r.output);
    if (r.status == 127) FAIL("/usr/bin/python3 is missing: install python3 and python3-prometheus-client (scripts/install-deps)");
    if (r.status == 2) FAIL("the Debian package python3-prometheus-client is missing (scripts/install-deps installs it)");
    CHECK(r.status == 0);
}

// The checks every scrape must pass; returns it parsed.
Scrape check_scrape(const std::string& text, const std::set<std::string>& documented) {
    const Scrape s = parse(text);
    for (const auto& line : s.bad) UNSCOPED_INFO("not a comment nor a sample: '" << line << "'");
    CHECK(s.bad.empty());
    for (const auto& name : s.names) {
        INFO(name << " is not in README.md's Metrics table");
        CHECK(documented.count(name) == 1);
    }
    return s;
}

}  // namespace

TEST_CASE("the metrics file and the textfile are Prometheus text with the README's names, and count reads", "[mount][metrics]") {
    const std::set<std::string> documented = documented_names();
    REQUIRE(documented.size() > 20);
    test::TempDir dir;
    constexpr int kFiles = 8;
    constexpr std::size_t kSize = 20000;
    std::vector<std::string> names;
    for (int i = 0; i < kFiles; ++i) {
        names.push_back("c/f" + std::to_string(i) + ".bin");
        test::write_file(dir / ("origin/" + names.back()), test::make_bytes(i, kSize));
    }
    test::fs::create_directories(dir / "prom");
    const path mountpoint = test::fs::weakly_canonical(dir / "mnt");
    const std::string mount_label = "mount=\"" + mountpoint.string() + "\"";
    const path textfile = dir / "prom" / tiercache::fuse::MetricsTextfile::file_name(mountpoint.string());

    // Kernel cache off: every read reaches the daemon, so the counters see each one.
    test::Mount mnt(dir / "origin", mountpoint,
                    {"--dram", "4MiB", "--kernel-cache", "off", "--metrics-textfile", (dir / "prom").string(), "--metrics-interval", "0.2"});
    std::vector<std::string> control;
    for (const auto& e : test::fs::directory_iterator(mnt / ".tiercache")) control.push_back(e.path().filename().string());
    std::sort(control.begin(), control.end());
    CHECK(control == std::vector<std::string>{"metrics", "plan", "stats"});

    auto scrape = [&] {
        const std::string text = test::read_text(mnt / ".tiercache/metrics");
        REQUIRE(!text.empty());
        return check_scrape(text, documented);
    };
    auto v = [&](const Scrape& s, const std::string& name, const std::string& labels = "") {
        const std::string key = name + "{" + labels + (labels.empty() ? "" : ",") + mount_label + "}";
        const auto it = s.values.find(key);
        if (it == s.values.end()) FAIL("no sample " << key);
        return it->second;
    };
    const Scrape s0 = scrape();
    CHECK(v(s0, "tiercache_build_info", "version=\"" TIERCACHE_VERSION "\"") == 1);
    CHECK(v(s0, "tiercache_dataset_samples") == kFiles);
    CHECK(v(s0, "tiercache_tier_capacity_bytes", "tier=\"dram\"") == 4 << 20);
    {
        std::ofstream copy(dir / "scrape.txt");
        copy << test::read_text(mnt / ".tiercache/metrics");
    }
    check_with_prometheus_client(dir / "scrape.txt");

    // A cold pass: every file from the origin, each READ that brought bytes a stall.
    for (const auto& n : names) CHECK(test::slurp(mnt / n) == test::slurp(dir / ("origin/" + n)));
    const Scrape s1 = scrape();
    CHECK(v(s1, "tiercache_origin_reads_total") - v(s0, "tiercache_origin_reads_total") == kFiles);
    CHECK(v(s1, "tiercache_origin_read_bytes_total") - v(s0, "tiercache_origin_read_bytes_total") == kFiles * kSize);
    CHECK(v(s1, "tiercache_job_read_bytes_total", "job=\"none\"") == kFiles * kSize);
    CHECK(v(s1, "tiercache_job_stalls_total", "job=\"none\"") == kFiles);
    CHECK(v(s1, "tiercache_job_stall_seconds_total", "job=\"none\"") > 0);
    CHECK(v(s1, "tiercache_job_reads_total", "job=\"none\"") >= kFiles);
    CHECK(v(s1, "tiercache_tier_used_bytes", "tier=\"dram\"") == kFiles * kSize);
    CHECK(v(s1, "tiercache_tier_admissions_total", "tier=\"dram\"") == kFiles);
    CHECK(v(s1, "tiercache_fuse_requests_total", "op=\"read\"") > v(s0, "tiercache_fuse_requests_total", "op=\"read\""));
    CHECK(v(s1, "tiercache_uptime_seconds") > v(s0, "tiercache_uptime_seconds"));

    // A warm pass: dram hits, no origin read, no stall.
    for (const auto& n : names) test::slurp(mnt / n);
    const Scrape s2 = scrape();
    CHECK(v(s2, "tiercache_tier_hits_total", "tier=\"dram\"") - v(s1, "tiercache_tier_hits_total", "tier=\"dram\"") == kFiles);
    CHECK(v(s2, "tiercache_tier_served_bytes_total", "tier=\"dram\"") - v(s1, "tiercache_tier_served_bytes_total", "tier=\"dram\"") ==
          kFiles * kSize);
    CHECK(v(s2, "tiercache_origin_reads_total") == v(s1, "tiercache_origin_reads_total"));
    CHECK(v(s2, "tiercache_job_stalls_total", "job=\"none\"") == kFiles);
    CHECK(v(s2, "tiercache_job_hits_total", "job=\"none\"") - v(s1, "tiercache_job_hits_total", "job=\"none\"") >= kFiles);

    // A job with a plan (this process writes it): its reads count under job="PID".
    {
        const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC);
        REQUIRE(fd >= 0);
        std::string plan;
        for (const auto& n : names) plan += n + "\n";
        CHECK(::write(fd, plan.data(), plan.size()) == static_cast<ssize_t>(plan.size()));
        CHECK(::fsync(fd) == 0);
        ::close(fd);
    }
    for (const auto& n : names) test::slurp(mnt / n);
    const std::string job = "job=\"" + std::to_string(::getpid()) + "\"";
    const Scrape s3 = scrape();
    CHECK(v(s3, "tiercache_plan_jobs") == 1);
    CHECK(v(s3, "tiercache_job_read_bytes_total", job) == kFiles * kSize);
    CHECK(v(s3, "tiercache_job_hits_total", job) >= kFiles);
    CHECK(v(s3, "tiercache_job_stalls_total", job) == 0);
    CHECK(v(s3, "tiercache_job_read_bytes_total", "job=\"none\"") == 2 * kFiles * kSize);  // unchanged

    // The textfile: there, parsing the same, with this job's reads in it once rewritten.
    // Wait for a rewrite after all of the job's reads: one made between its plan and its reads
    // already shows the job, with nothing read yet.
    std::string text;
    const std::string job_bytes =
        "tiercache_job_read_bytes_total{" + job + "," + mount_label + "} " + std::to_string(kFiles * kSize) + "\n";
    for (int i = 0; i < 500; ++i) {
        text = test::read_text(textfile);
        if (text.find(job_bytes) != std::string::npos) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    INFO("textfile " << textfile);
    const Scrape t = check_scrape(text, documented);
    CHECK(t.names == s3.names);
    CHECK(v(t, "tiercache_job_read_bytes_total", job) == kFiles * kSize);
    check_with_prometheus_client(textfile);

    CHECK(mnt.stop() == 0);
    CHECK(!test::fs::exists(textfile));
    CHECK(test::fs::is_empty(dir / "prom"));  // no temporary file left either
}

TEST_CASE("a metrics textfile DIR that is missing or a file is an error before mounting", "[mount][metrics][errors]") {
    test::TempDir dir;
    test::write_file(dir / "origin/a.bin", test::make_bytes(1, 100));
    test::write_file(dir / "plain", test::make_bytes(2, 10));
    test::fs::create_directories(dir / "mnt");
    for (const auto& [arg, message] : {std::pair{dir / "nope", "no such directory"}, std::pair{dir / "plain", "not a directory"}}) {
        const auto r = test::run({test::fuse_binary(), (dir / "origin").string(), (dir / "mnt").string(), "-f", "--metrics-textfile", arg.string()});
        INFO(r.output);
        CHECK(r.status == 1);
        CHECK(r.output.find(arg.string()) != std::string::npos);
        CHECK(r.output.find(message) != std::string::npos);
        CHECK(!test::is_mounted(dir / "mnt"));
        if (test::is_mounted(dir / "mnt")) test::run({"fusermount3", "-u", "-z", (dir / "mnt").string()});
    }
    const auto r = test::run({test::fuse_binary(), (dir / "origin").string(), (dir / "mnt").string(), "-f", "--metrics-textfile",
                              dir.path().string(), "--metrics-interval", "0"});
    INFO(r.output);
    CHECK(r.status != 0);
    CHECK(!test::is_mounted(dir / "mnt"));
    if (test::is_mounted(dir / "mnt")) test::run({"fusermount3", "-u", "-z", (dir / "mnt").string()});
}
