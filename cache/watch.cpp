// The frame is built whole, then written with one call: a terminal never shows half of one.
// A frame has no blank line, so that plain frames are exactly the paragraphs of the output.
#include "watch.hpp"

#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <optional>
#include <vector>

#include "human.hpp"
#include "table.hpp"

namespace tiercache::cli {

namespace {

using Clock = std::chrono::steady_clock;

const StatsJson kNone = StatsJson::object();

const StatsJson& member(const StatsJson& object, const char* key) {
    if (!object.is_object()) return kNone;
    const auto it = object.find(key);
    return it == object.end() ? kNone : *it;
}

// How much `key` grew; nullopt when either side lacks it, or it went down (a restart).
std::optional<double> grown(const StatsJson& now, const StatsJson* before, const char* key) {
    if (!before) return std::nullopt;
    const auto a = stats_number(*before, key), b = stats_number(now, key);
    if (!a || !b || *b < *a) return std::nullopt;
    return *b - *a;
}

// A rate as a plain number (scripts parse it): one decimal below 10, else whole with commas.
std::string rate_text(std::optional<double> per_s) {
    if (!per_s || !std::isfinite(*per_s)) return "-";
    return rate_number(*per_s);
}

std::optional<double> per(std::optional<double> amount, double seconds, double unit = 1) {
    if (!amount || seconds <= 0) return std::nullopt;
    return *amount / seconds / unit;
}

std::string bytes_text(std::optional<double> n) { return n ? human_bytes(*n) : "-"; }

// Tier names fastest first: "tier_order" where the daemon gives it, else the object's order.
std::vector<std::string> tier_names(const StatsJson& stats) {
    std::vector<std::string> names;
    const StatsJson& order = member(stats, "tier_order");
    if (order.is_array())
        for (const auto& name : order)
            if (name.is_string()) names.push_back(name.get<std::string>());
    if (names.empty() && member(stats, "tiers").is_object())
        for (const auto& [name, tier] : member(stats, "tiers").items()) names.push_back(name);
    return names;
}

// A job's name in a "jobs" array: its first of name, job, id, pid.
std::string job_name(const StatsJson& job, std::size_t index) {
    for (const char* key : {"name", "job", "id", "pid"}) {
        const StatsJson& value = member(job, key);
        if (value.is_string()) return value.get<std::string>();
        if (value.is_number_integer()) return std::to_string(value.get<long long>());
    }
    return "#" + std::to_string(index);
}

// The mount names a job by the pid that wrote its plan, and "none" for reads of no job.
std::string job_label(const std::string& name) {
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) return "pid " + name;
    if (name == "none") return "none (no plan)";
    return name;
}

// Jobs by name: from "jobs" (an object of objects, or an array of them) where the daemon
// reports each job's counters.
std::vector<std::pair<std::string, StatsJson>> jobs_of(const StatsJson& stats) {
    std::vector<std::pair<std::string, StatsJson>> jobs;
    const StatsJson& list = member(stats, "jobs");
    if (list.is_object()) {
        for (const auto& [name, job] : list.items())
            if (job.is_object()) jobs.emplace_back(name, job);
    } else if (list.is_array()) {
        for (std::size_t i = 0; i < list.size(); ++i)
            if (list[i].is_object()) jobs.emplace_back(job_name(list[i], i), list[i]);
    }
    return jobs;
}

// The reads of a job (or of the whole mount): "reads", else hits + misses.
std::optional<double> reads_of(const StatsJson& counters) {
    if (const auto reads = stats_number(counters, "reads")) return reads;
    const auto hits = stats_number(counters, "hits"), misses = stats_number(counters, "misses");
    if (hits && misses) return *hits + *misses;
    return std::nullopt;
}

std::optional<double> grown_reads(const StatsJson& now, const StatsJson* before) {
    if (!before) return std::nullopt;
    const auto a = reads_of(*before), b = reads_of(now);
    if (!a || !b || *b < *a) return std::nullopt;
    return *b - *a;
}

// Hit % over the interval (or over all time on the first frame).
std::string hit_percent(const StatsJson& now, const StatsJson* before) {
    const auto hits = before ? grown(now, before, "hits") : stats_number(now, "hits");
    const auto reads = before ? grown_reads(now, before) : reads_of(now);
    return hits && reads ? percent_text(*hits, *reads) : "-";
}

// The whole mount as one reader: reads reaching the cache are the fastest tier's hits and
// misses; hits are every tier's.
StatsJson mount_reads(const StatsJson& stats) {
    const auto names = tier_names(stats);
    if (names.empty()) return kNone;
    const StatsJson& tiers = member(stats, "tiers");
    double hits = 0;
    for (const auto& name : names) hits += stats_number(member(tiers, name.c_str()), "hits").value_or(0);
    const auto reads = reads_of(member(tiers, names.front().c_str()));
    if (!reads) return kNone;
    return {{"reads", *reads}, {"hits", hits}};
}

}  // namespace

std::string watch_frame(const std::string& what, const StatsJson& now, const StatsJson* before, double elapsed_s) {
    std::string out = "tiercache stats " + what;
    if (const auto up = stats_number(now, "uptime_s")) out += "   up " + human_duration(*up);
    out += before ? "   rates over " + human_duration(elapsed_s) : std::string("   totals (rates from the next frame)");
    out += "\n";

    const StatsJson& origin = member(now, "origin");
    const StatsJson* origin_before = before ? &member(*before, "origin") : nullptr;
    out += "origin  " + rate_text(per(grown(origin, origin_before, "bytes_read"), elapsed_s, 1e6)) + " MB/s  " +
           rate_text(per(grown(origin, origin_before, "reads"), elapsed_s)) + " reads/s   (" +
           bytes_text(stats_number(origin, "bytes_read")) + " in " + rounded(stats_number(origin, "reads").value_or(0)) +
           " reads so far)\n";

    Table tiers;
    tiers.add_row({"tier", "used", "capacity", "used %", "hit %", "hits/s", "MB/s", "evictions/s", "admitted/s"});
    const StatsJson& tiers_now = member(now, "tiers");
    for (const auto& name : tier_names(now)) {
        const StatsJson& tier = member(tiers_now, name.c_str());
        const StatsJson* was = before && member(member(*before, "tiers"), name.c_str()).is_object()
                                   ? &member(member(*before, "tiers"), name.c_str())
                                   : nullptr;
        const auto used = stats_number(tier, "used_bytes"), capacity = stats_number(tier, "capacity_bytes");
        tiers.add_row({name, bytes_text(used), bytes_text(capacity), used && capacity ? percent_text(*used, *capacity) : "-",
                       hit_percent(tier, was), rate_text(per(grown(tier, was, "hits"), elapsed_s)),
                       rate_text(per(grown(tier, was, "bytes_read"), elapsed_s, 1e6)),
                       rate_text(per(grown(tier, was, "evictions"), elapsed_s)),
                       rate_text(per(grown(tier, was, "insertions"), elapsed_s))});
    }
    out += tiers.text();

    Table jobs;
    jobs.add_row({"job", "reads/s", "MB/s", "hit %", "stalls/s"});
    const auto listed = jobs_of(now);
    const auto listed_before = before ? jobs_of(*before) : decltype(listed){};
    for (const auto& [name, job] : listed) {
        const StatsJson* was = nullptr;
        for (const auto& [old_name, old_job] : listed_before)
            if (old_name == name) was = &old_job;
        jobs.add_row({job_label(name), rate_text(per(grown_reads(job, was), elapsed_s)),
                      rate_text(per(grown(job, was, "bytes"), elapsed_s, 1e6)), hit_percent(job, was),
                      rate_text(per(grown(job, was, "stalls"), elapsed_s))});
    }
    if (listed.empty()) {
        // No job's own counters in the file: the mount's readers as one row, named by what
        // the file knows of them (jobs with a plan, clients attached).
        const auto plan_jobs = stats_number(member(now, "plan"), "jobs").value_or(0);
        const auto clients = stats_number(member(now, "share"), "jobs").value_or(0);
        std::string name = "all readers";
        if (plan_jobs > 0 || clients > 0) {
            name += " (" + (plan_jobs > 0 ? count_of(static_cast<std::uint64_t>(plan_jobs), "job") + " with a plan" : "");
            if (clients > 0) name += (plan_jobs > 0 ? ", " : "") + count_of(static_cast<std::uint64_t>(clients), "client") + " attached";
            name += ")";
        }
        const StatsJson mount = mount_reads(now);
        const StatsJson mount_before = before ? mount_reads(*before) : kNone;
        const StatsJson* was = before ? &mount_before : nullptr;
        jobs.add_row({name, rate_text(per(grown_reads(mount, was), elapsed_s)), "-", hit_percent(mount, was), "-"});
    }
    out += jobs.text();
    return out;
}

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_stop_signal(int) { g_stop = 1; }

// SIGINT/SIGTERM end the view (without SA_RESTART, so the sleep between frames wakes up);
// the previous handlers come back with the terminal.
class StopSignals {
public:
    StopSignals() {
        g_stop = 0;
        struct sigaction action {};
        action.sa_handler = on_stop_signal;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGINT, &action, &old_int_);
        ::sigaction(SIGTERM, &action, &old_term_);
    }
    ~StopSignals() {
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

private:
    struct sigaction old_int_ {}, old_term_ {};
};

void write_all(const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
}

// The terminal side: the alternate screen with the cursor hidden while it lives; on the
// way out the normal screen comes back, with the last frame printed on it.
class Screen {
public:
    explicit Screen(bool terminal) : terminal_(terminal) {
        if (terminal_) write_all("\x1b[?1049h\x1b[?25l");
    }
    ~Screen() {
        if (!terminal_) return;
        write_all("\x1b[?25h\x1b[?1049l" + last_);
    }
    Screen(const Screen&) = delete;
    Screen& operator=(const Screen&) = delete;

    void draw(const std::string& frame, bool first) {
        last_ = frame;
        if (!terminal_) {
            write_all((first ? "" : "\n") + frame);
            return;
        }
        // Home, each line over the old one (erasing its tail), then erase below: no flicker.
        // Lines are cut to the terminal's width, since a wrapped one would scroll the screen.
        winsize size{};
        const std::size_t columns = ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0 ? size.ws_col : 0;
        std::string text = "\x1b[H";
        std::size_t start = 0;
        while (start < frame.size()) {
            std::size_t end = frame.find('\n', start);
            if (end == std::string::npos) end = frame.size();
            std::string line = frame.substr(start, end - start);
            if (columns > 0 && line.size() > columns) line.resize(columns);
            text += line + "\x1b[K\n";
            start = end + 1;
        }
        write_all(text + "\x1b[J");
    }

private:
    bool terminal_;
    std::string last_;
};

}  // namespace

void run_watch(const std::string& what, const std::function<StatsJson()>& snapshot, const WatchSettings& settings) {
    const StopSignals signals;
    std::optional<StatsJson> before;
    Clock::time_point before_at;
    const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(settings.interval_s));
    Screen screen(::isatty(STDOUT_FILENO) == 1);
    auto next = Clock::now();
    for (std::uint64_t frame = 0; settings.count == 0 || frame < settings.count; ++frame) {
        if (frame > 0) {
            next += interval;
            for (auto now = Clock::now(); now < next && !g_stop; now = Clock::now()) {
                const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(next - now).count();
                const timespec wait{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
                ::nanosleep(&wait, nullptr);  // a signal wakes it early (EINTR)
            }
            if (Clock::now() > next + interval) next = Clock::now();  // a slow read: no burst of frames after it
        }
        if (g_stop) break;
        StatsJson now;
        try {
            now = snapshot();
        } catch (const std::exception&) {
            if (g_stop) break;  // Ctrl-C cut the read short (EINTR): that is no failure
            throw;
        }
        const auto now_at = Clock::now();
        const double elapsed = before ? std::chrono::duration<double>(now_at - before_at).count() : 0.0;
        screen.draw(watch_frame(what, now, before ? &*before : nullptr, elapsed), frame == 0);
        before = std::move(now);
        before_at = now_at;
    }
}

}  // namespace tiercache::cli
