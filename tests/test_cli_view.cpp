// The live views' text: warm's progress bar and ETA, the sliding rate behind it, and the
// frames of `tiercache stats --watch` (pure functions of their inputs: no mount needed).
#include <catch2/catch.hpp>

#include "../cache/progress.hpp"
#include "../cache/watch.hpp"

using namespace tiercache::cli;

TEST_CASE("the warm bar shows the fraction, bytes, rate, ETA and files", "[cli][progress]") {
    ProgressFigures f;
    f.bytes_total = 1'000'000'000;
    f.bytes_done = 420'000'000;
    f.bytes_per_s = 116e6;
    f.files_done = 4200;
    f.files_total = 10000;
    CHECK(progress_text(f) == "[========>           ]  42%  400.5 MiB / 953.7 MiB  116 MB/s  ETA 0:05  files 4,200/10,000");

    f.bytes_per_s.reset();  // no rate yet: nothing promised
    CHECK(progress_text(f) == "[========>           ]  42%  400.5 MiB / 953.7 MiB  - MB/s  ETA -  files 4,200/10,000");

    f.bytes_done = 0;
    f.files_done = 0;
    f.files_total = 0;  // no files part
    CHECK(progress_text(f) == "[                    ]   0%  0 B / 953.7 MiB  - MB/s  ETA -");

    f.bytes_done = f.bytes_total;
    f.bytes_per_s = 2.5e6;
    f.failed = 3;
    CHECK(progress_text(f) == "[====================] 100%  953.7 MiB / 953.7 MiB  2.5 MB/s  ETA 0:00  3 failed");

    ProgressFigures empty;  // nothing to read is all done
    CHECK(progress_text(empty) == "[====================] 100%  0 B / 0 B  - MB/s  ETA 0:00");
}

TEST_CASE("the bar and the ETA at their edges", "[cli][progress]") {
    CHECK(progress_bar(0.0, 10) == "[          ]");
    CHECK(progress_bar(0.01, 10) == "[>         ]");
    CHECK(progress_bar(0.55, 10) == "[=====>    ]");
    CHECK(progress_bar(1.0, 10) == "[==========]");
    CHECK(progress_bar(7.0, 10) == "[==========]");
    CHECK(progress_bar(-1.0, 4) == "[    ]");

    CHECK(eta_text(100, 20.0) == "0:05");
    CHECK(eta_text(101, 20.0) == "0:06");  // rounded up: never promise early
    CHECK(eta_text(754, 1.0) == "12:34");
    CHECK(eta_text(3723, 1.0) == "1:02:03");
    CHECK(eta_text(1e12, 1.0) == ">99h");
    CHECK(eta_text(100, 0.0) == "-");
    CHECK(eta_text(100, std::nullopt) == "-");
    CHECK(eta_text(0, std::nullopt) == "0:00");
}

TEST_CASE("the sliding rate follows the last seconds, not the average since the start", "[cli][progress]") {
    SlidingRate rate(5.0, 0.5);
    CHECK_FALSE(rate.per_second());
    rate.add(0, 0);
    rate.add(0.2, 20);
    CHECK_FALSE(rate.per_second());  // 0.2 s of samples: too short to say
    for (int t = 1; t <= 5; ++t) rate.add(t, 100.0 * t);  // 100/s
    REQUIRE(rate.per_second());
    CHECK(*rate.per_second() == Approx(100));
    for (int t = 6; t <= 10; ++t) rate.add(t, 500 + 300.0 * (t - 5));  // then 300/s
    CHECK(*rate.per_second() == Approx(300));
}

namespace {

StatsJson stats_at(double dram_hits, double dram_misses, double nvme_hits, double bytes, double origin_reads) {
    return StatsJson{
        {"tiers",
         {{"dram", {{"capacity_bytes", 8 << 20}, {"used_bytes", 2 << 20}, {"hits", dram_hits}, {"misses", dram_misses},
                    {"bytes_read", bytes}, {"insertions", dram_misses}, {"evictions", dram_misses / 2}}},
          {"nvme", {{"capacity_bytes", 64 << 20}, {"used_bytes", 0}, {"hits", nvme_hits}, {"misses", dram_misses - nvme_hits},
                    {"bytes_read", 0}, {"insertions", 0}, {"evictions", 0}}}}},
        {"tier_order", {"dram", "nvme"}},
        {"origin", {{"bytes_read", origin_reads * 1e5}, {"reads", origin_reads}}},
        {"plan", {{"active", true}, {"samples", 100}, {"jobs", 2}}},
        {"uptime_s", 75.5}};
}

// The row of `frame` that starts with `name` and two spaces, split on runs of spaces.
std::vector<std::string> row(const std::string& frame, const std::string& name) {
    std::size_t at = frame.find("\n" + name + "  ");
    REQUIRE(at != std::string::npos);
    const std::string line = frame.substr(at + 1, frame.find('\n', at + 1) - at - 1);
    std::vector<std::string> cells;
    std::size_t start = 0;
    while (start < line.size()) {
        std::size_t end = line.find("  ", start);
        if (end == std::string::npos) end = line.size();
        if (end > start) cells.push_back(line.substr(start, end - start));
        start = line.find_first_not_of(' ', end);
        if (start == std::string::npos) break;
    }
    return cells;
}

}  // namespace

TEST_CASE("a watch frame: totals first, then rates over the interval, a row per tier and per job", "[cli][watch]") {
    const StatsJson before = stats_at(100, 100, 0, 1e6, 100);
    const StatsJson now = stats_at(300, 200, 50, 21e6, 150);

    const std::string first = watch_frame("'/mnt/ds'", before, nullptr, 0);
    CHECK_THAT(first, Catch::StartsWith("tiercache stats '/mnt/ds'   up 1m16s"));
    CHECK_THAT(first, Catch::Contains("\norigin  - MB/s  - reads/s   (9.5 MiB in 100 reads so far)\n"));
    CHECK(row(first, "dram") == std::vector<std::string>{"dram", "2.0 MiB", "8.0 MiB", "25.0%", "50.0%", "-", "-", "-", "-"});
    CHECK(row(first, "nvme")[5] == "-");
    CHECK(row(first, "all readers (2 jobs with a plan)") ==
          std::vector<std::string>{"all readers (2 jobs with a plan)", "-", "-", "50.0%", "-"});
    CHECK(first.find("\n\n") == std::string::npos);  // plain frames are paragraphs

    const std::string second = watch_frame("'/mnt/ds'", now, &before, 2.0);
    CHECK_THAT(second, Catch::Contains("rates over 2.0s"));
    CHECK_THAT(second, Catch::Contains("\norigin  2.5 MB/s  25 reads/s"));
    // dram: 200 hits and 100 misses in 2 s, 20 MB served, 100 admitted, 50 evicted.
    CHECK(row(second, "dram") ==
          std::vector<std::string>{"dram", "2.0 MiB", "8.0 MiB", "25.0%", "66.7%", "100", "10", "25", "50"});
    CHECK(row(second, "nvme")[4] == "50.0%");  // 50 of the 100 dram misses
    // The mount as one reader: 300 reads reached the cache, 250 hits in some tier.
    CHECK(row(second, "all readers (2 jobs with a plan)") ==
          std::vector<std::string>{"all readers (2 jobs with a plan)", "150", "-", "83.3%", "-"});
}

TEST_CASE("a watch frame shows each job's own counters when the stats file has them", "[cli][watch]") {
    StatsJson before = stats_at(0, 0, 0, 0, 0), now = stats_at(0, 0, 0, 0, 0);
    before["jobs"] = {{{"name", "train"}, {"reads", 10}, {"hits", 5}, {"misses", 5}, {"stalls", 1}},
                      {{"pid", 4242}, {"hits", 0}, {"misses", 0}}};
    now["jobs"] = {{{"name", "train"}, {"reads", 30}, {"hits", 20}, {"misses", 10}, {"stalls", 3}},
                   {{"pid", 4242}, {"hits", 4}, {"misses", 0}}};
    const std::string frame = watch_frame("M", now, &before, 1.0);
    CHECK(row(frame, "train") == std::vector<std::string>{"train", "20", "-", "75.0%", "2.0"});
    CHECK(row(frame, "pid 4242") == std::vector<std::string>{"pid 4242", "4.0", "-", "100.0%", "-"});
    CHECK(frame.find("all readers") == std::string::npos);
}

TEST_CASE("a watch frame reads the mount's jobs object: pids that wrote a plan, and none", "[cli][watch]") {
    StatsJson before = stats_at(0, 0, 0, 0, 0), now = stats_at(0, 0, 0, 0, 0);
    before["jobs"] = {{"1234", {{"reads", 100}, {"bytes", 1e6}, {"hits", 90}, {"stalls", 10}, {"stall_seconds", 0.5}}},
                      {"none", {{"reads", 0}, {"bytes", 0}, {"hits", 0}, {"stalls", 0}, {"stall_seconds", 0}}}};
    now["jobs"] = {{"1234", {{"reads", 500}, {"bytes", 41e6}, {"hits", 470}, {"stalls", 30}, {"stall_seconds", 0.9}}},
                   {"none", {{"reads", 0}, {"bytes", 0}, {"hits", 0}, {"stalls", 0}, {"stall_seconds", 0}}}};
    const std::string first = watch_frame("M", before, nullptr, 0);
    CHECK(row(first, "pid 1234") == std::vector<std::string>{"pid 1234", "-", "-", "90.0%", "-"});
    const std::string frame = watch_frame("M", now, &before, 2.0);
    CHECK(row(frame, "pid 1234") == std::vector<std::string>{"pid 1234", "200", "20", "95.0%", "10"});
    CHECK(row(frame, "none (no plan)") == std::vector<std::string>{"none (no plan)", "0.0", "0.0", "-", "0.0"});
}
