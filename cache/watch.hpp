// `tiercache stats --watch`: a live, top-like view of a mount's counters.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "stats_cmd.hpp"

namespace tiercache::cli {

struct WatchSettings {
    double interval_s = 1.0;
    std::uint64_t count = 0;  // frames to draw; 0: until Ctrl-C
};

// One frame: a header (uptime, origin MB/s and reads/s), one row per tier (used, capacity,
// hit %, hits/s, MB/s served, evictions/s, admitted/s) and one per job. Rates are the
// counters' growth from `before` to `now` over `elapsed_s` seconds; with no `before` (the
// first frame) they are "-" and hit % is over all time. A pure function of its arguments.
std::string watch_frame(const std::string& what, const StatsJson& now, const StatsJson* before, double elapsed_s);

// Draws a frame of snapshot() every interval (steady clock) until `count` frames or
// SIGINT/SIGTERM. On a terminal stdout: the alternate screen, redrawn in place and left on
// every way out (an exception included), the last frame then printed on the normal screen;
// otherwise plain frames separated by a blank line, no escape codes. snapshot()'s exceptions
// (the mount gone) end the view and reach the caller.
void run_watch(const std::string& what, const std::function<StatsJson()>& snapshot, const WatchSettings& settings);

}  // namespace tiercache::cli
