// MOUNTPOINT/.tiercache/plan: a loader writes the next epoch's order here; the mount then
// prefetches in that order and the cache's plan-aware policy follows it.
//
// Protocol (what writers may rely on):
//
// Jobs. A plan belongs to the process that writes it (its thread group: every thread of one
// training process is one job). Several processes may hold plans at once (a sweep's runs,
// DistributedSampler's ranks each writing its shard) and may write them at the same time:
// each process's plan replaces only its own, and the cache serves the union (next_use.hpp).
// A plan lives until its process exits (checked about once a second, and at every commit)
// or writes an empty plan. At most 64 jobs hold plans in one cache (with --share, attached
// clients' plans count too); one more is refused as a failed commit is (EINVAL, last_error).
// A process writing from another PID namespace than the mount's (FUSE then says pid 0) is
// one job shared by all such writers, and its plan is never reaped: write an empty one.
//
// Writing. open(plan, O_WRONLY|O_TRUNC), write the text, close. From Python:
// open(p, "w").write(text); from a shell: echo "seed=42 epoch=3" > plan (the shell is the job:
// `sh -c 'echo ... > plan'` ends, and its plan with it). Each open of the plan file is a file
// of its own (control_folder.hpp), and each holds its own pending plan per process. Writes must
// be sequential: a write at offset 0, or a truncation to size 0 (which O_TRUNC sends), starts a
// new pending plan in that open file and drops one still pending there (no other's); a write at
// any other offset must continue that plan exactly at its end, through the same open file, by
// the same process, or it fails with EINVAL. At most 64 plans may be pending at once: beyond
// that the oldest pending one is dropped (logged; its writer's later writes fail with EINVAL).
// Only the mounting user (and root) may write it: it is 0644, every other file is read-only.
//
// The text is one of two kinds, never both:
//   - keys for the built-in sampler: `seed=42 epoch=3`, optionally `rank=R world=W
//     drop_last=0|1` (DistributedSampler's meaning), separated by spaces, tabs or newlines.
//     seed and epoch are required; values are decimal digits only (seed and epoch up to
//     2^64-1, rank and world up to 2^32-1, world >= 1, rank < world). An unknown key, a key
//     given twice, a value that is not a number or does not fit is an error.
//   - paths, one per line, relative to the dataset root, '/' separated, as the catalog names
//     them (`n01440764/n01440764_10026.JPEG`). Each must name a file of the dataset: not an
//     absolute path, no empty, "." or ".." component, not a directory, no byte below 0x20 but
//     tab and no 0x7F (so no NUL; file names with other control bytes cannot be planned), at
//     most PATH_MAX (4096) bytes. A path may repeat (DistributedSampler pads that way).
// The first non-blank line decides the kind: it is keys when it looks like `name=value` words
// and does not name a file of the dataset. Blank lines (only spaces and tabs) are ignored but
// counted. A '\n' ends a line; the last line may lack it.
//
// Validation happens as the bytes arrive, line by line (the kernel may split one write() into
// several requests: a line cut in two is kept until its end comes). The write() whose bytes
// hold a bad line fails with EINVAL (EFBIG for more lines than 4 x the dataset's files + 16),
// the daemon logs one line naming the line number and the reason (the echoed text cut at 80
// bytes, non-printable bytes as \xNN), and the whole pending plan is dropped: nothing of it is
// ever applied, and later writes continuing it (offset > 0) fail with EINVAL until a new plan
// starts at offset 0. A write() the kernel split may instead return a short count when the bad
// line lies in a later part; the caller's retry of the rest then fails with EINVAL.
//
// Commit: a pending plan is applied when its writer is done, which the daemon learns from
// (the mount has no open/close notification): an fsync of that open file (its result is the
// commit's), an open or read of the plan file by the thread that wrote it, or 50 ms without a
// write to it (a look from any other thread or process leaves a plan still arriving alone).
// Write the whole text in one go: a plan committed for idleness is closed, and a late
// continuation fails (EINVAL). At commit the last line without '\n' is parsed too, and the
// keys are checked as a whole; a failure there drops the plan and shows in last_error. A plan
// whose process has exited meanwhile is dropped. Applying: the keys give EpochPlan(samples,
// seed, epoch, rank, world, drop_last), the paths EpochPlan::from_order; the cache keeps it as
// the job's plan (Cache::set_plan(job, this epoch, the next one's when seeded)) and the job's
// own prefetcher starts at its first position. An empty plan (`: > plan`, or only blank lines)
// removes the job's plan, no other's.
//
// Reading the plan file gives JSON (a new snapshot on every open) about the reader's own job:
//   {"state": "none" | "pending" | "active", "kind": "seed" | "paths" | null, "samples": N,
//    "seed": N | null, "epoch": N | null, "rank": N | null, "world": N | null,
//    "drop_last": bool | null, "position": N, "last_error": "line 7: ..." | null, "jobs": N}
// "state" is "pending" while a plan of the job is still arriving; the rest describes its
// active plan; "position" is the job's position in it (its prefetcher's: plan positions below
// it have been read by the job's process or its children, e.g. DataLoader workers; a read no
// job can be told for moves every job's), "last_error" the job's latest plan's rejection
// (null once one of its plans is applied), "jobs" how many jobs hold a plan in the cache.
// Another process (`cat plan` after a shell's echo) sees its own: "none", with "jobs".
#pragma once
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <thread>
#include <utility>
#include <vector>

#include <fuse_lowlevel.h>
#include <nlohmann/json.hpp>
#include <tiercache/catalog.hpp>
#include <tiercache/job.hpp>
#include <tiercache/log.hpp>

namespace tiercache::fuse {

// What a plan line names in the dataset.
struct PlanTarget {
    std::optional<SampleId> file;  // a file of the catalog
    bool directory = false;        // a directory of it
};
using PlanResolver = std::function<PlanTarget(std::string_view relpath)>;

// A plan read whole and checked.
struct ParsedPlan {
    enum class Kind { empty, seed, paths };
    Kind kind = Kind::empty;
    std::uint64_t seed = 0, epoch = 0;
    std::uint32_t rank = 0, world = 1;
    bool drop_last = false;
    std::vector<SampleId> ids;  // paths: the order
};

// Bytes shown in a log line or an error: at most `max` of them, non-printables as \xNN.
inline std::string escape_for_log(std::string_view text, std::size_t max = 80) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < text.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (text.size() > max) out += "... (" + std::to_string(text.size()) + " bytes)";
    return out;
}

// Reads a plan's text as it arrives, line by line; see the protocol above.
class PlanParser {
public:
    static constexpr std::size_t kMaxLine = PATH_MAX;  // bytes in a line, '\n' left out

    PlanParser(std::size_t samples, PlanResolver resolve)
        : samples_(samples), max_lines_(4 * samples + 16), resolve_(std::move(resolve)) {}

    // Takes the next bytes of the text. 0, or an errno (EINVAL, EFBIG) with error() saying why.
    int feed(std::string_view bytes) {
        if (error_) return error_;
        while (!bytes.empty()) {
            const auto nl = bytes.find('\n');
            const std::string_view part = bytes.substr(0, nl);
            if (partial_.size() + part.size() > kMaxLine)  // too long, with or without its end
                return fail(EINVAL, line_no_ + 1, "longer than PATH_MAX (" + std::to_string(kMaxLine) + " bytes)",
                            partial_ + std::string(part.substr(0, 80)));
            if (nl == std::string_view::npos) {
                partial_ += part;
                break;
            }
            if (partial_.empty()) {
                if (const int err = line(part)) return err;
            } else {
                partial_ += part;
                const std::string whole = std::move(partial_);
                partial_.clear();
                if (const int err = line(whole)) return err;
            }
            bytes.remove_prefix(nl + 1);
        }
        return 0;
    }

    // The text is complete: parses a last line without '\n' and checks the whole.
    int finish() {
        if (error_) return error_;
        if (!partial_.empty()) {
            const std::string last = std::move(partial_);
            partial_.clear();
            if (const int err = line(last)) return err;
        }
        if (plan_.kind == ParsedPlan::Kind::seed) {
            for (const char* key : {"seed", "epoch"})
                if (!has(key)) return fail(EINVAL, 0, std::string("'") + key + "' is required (write seed=N epoch=N)", {});
            // rank and world are checked together as they come; a rank given without a world is
            // checked here, against the world of 1 it then has.
            if (plan_.rank >= plan_.world)
                return fail(EINVAL, 0, "rank " + std::to_string(plan_.rank) + " is outside a world of " + std::to_string(plan_.world) +
                                           " (world is 1 unless given: write world=N)", {});
        }
        return 0;
    }

    int error() const noexcept { return error_; }
    const std::string& error_message() const noexcept { return message_; }
    ParsedPlan take() { return std::move(plan_); }

private:
    static constexpr const char* kKeys[] = {"seed", "epoch", "rank", "world", "drop_last"};

    static bool blank(std::string_view s) { return s.find_first_not_of(" \t") == std::string_view::npos; }

    // `name=value` words, names made of [A-Za-z0-9_], no '/'.
    static bool looks_like_keys(std::string_view s) {
        const auto start = s.find_first_not_of(" \t");
        const auto eq = s.find('=', start);
        if (eq == std::string_view::npos || eq == start || s.find('/') != std::string_view::npos) return false;
        for (std::size_t i = start; i < eq; ++i) {
            const char c = s[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
        }
        return true;
    }

    int line(std::string_view text) {
        ++line_no_;
        if (line_no_ > max_lines_)
            return fail(EFBIG, line_no_, "more lines than " + std::to_string(max_lines_) + " (4 x " + std::to_string(samples_) +
                                             " files + 16)", {});
        for (std::size_t i = 0; i < text.size(); ++i) {
            const auto c = static_cast<unsigned char>(text[i]);
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(EINVAL, line_no_, "binary junk (byte " + escape_for_log(text.substr(i, 1)) + " at column " +
                                                  std::to_string(i + 1) + ")", text);
        }
        if (blank(text)) return 0;
        if (plan_.kind == ParsedPlan::Kind::empty) {
            // The first line decides: keys, unless it names a file.
            if (looks_like_keys(text) && !resolve_(text).file) plan_.kind = ParsedPlan::Kind::seed;
            else plan_.kind = ParsedPlan::Kind::paths;
        }
        return plan_.kind == ParsedPlan::Kind::seed ? key_line(text) : path_line(text);
    }

    int path_line(std::string_view text) {
        if (text.front() == '/') return fail(EINVAL, line_no_, "an absolute path (paths are relative to the dataset root)", text);
        for (std::string_view rest = text;;) {
            const auto slash = rest.find('/');
            const std::string_view part = rest.substr(0, slash);
            if (part.empty()) return fail(EINVAL, line_no_, "an empty path component", text);
            if (part == "." || part == "..") return fail(EINVAL, line_no_, "a '" + std::string(part) + "' component", text);
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
        }
        const PlanTarget target = resolve_(text);
        if (!target.file) {
            if (target.directory) return fail(EINVAL, line_no_, "a directory, not a file", text);
            if (looks_like_keys(text)) return fail(EINVAL, line_no_, "a key=value line in a plan of paths (not both kinds in one plan)", text);
            return fail(EINVAL, line_no_, "no such file in the dataset", text);
        }
        plan_.ids.push_back(*target.file);
        return 0;
    }

    int key_line(std::string_view text) {
        if (!looks_like_keys(text)) return fail(EINVAL, line_no_, "a path in a plan of key=value lines (not both kinds in one plan)", text);
        for (std::string_view rest = text; !rest.empty();) {
            const auto start = rest.find_first_not_of(" \t");
            if (start == std::string_view::npos) break;
            rest.remove_prefix(start);
            const auto end = rest.find_first_of(" \t");
            const std::string_view word = rest.substr(0, end);
            rest.remove_prefix(word.size());
            const auto eq = word.find('=');
            if (eq == std::string_view::npos) return fail(EINVAL, line_no_, "'" + escape_for_log(word) + "' is not key=value", text);
            const std::string_view key = word.substr(0, eq), value = word.substr(eq + 1);
            std::size_t k = 0;
            while (k < std::size(kKeys) && key != kKeys[k]) ++k;
            if (k == std::size(kKeys))
                return fail(EINVAL, line_no_, "unknown key '" + escape_for_log(key) + "' (use seed, epoch, rank, world, drop_last)", text);
            if (seen_ & (1u << k)) return fail(EINVAL, line_no_, "'" + std::string(key) + "' given twice", text);
            seen_ |= 1u << k;
            std::uint64_t v = 0;
            const std::uint64_t limit = k < 2 ? UINT64_MAX : k < 4 ? UINT32_MAX : 1;
            const bool digits = !value.empty() && value.find_first_not_of("0123456789") == std::string_view::npos;
            const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
            if (!digits || ec == std::errc::invalid_argument || ptr != value.data() + value.size())
                return fail(EINVAL, line_no_, "'" + std::string(key) + "' must be a decimal number, not '" + escape_for_log(value) + "'", text);
            if (ec == std::errc::result_out_of_range || v > limit)
                return fail(EINVAL, line_no_, "'" + std::string(key) + "=" + escape_for_log(value) + "' is out of range (at most " +
                                                  std::to_string(limit) + ")", text);
            switch (k) {
                case 0: plan_.seed = v; break;
                case 1: plan_.epoch = v; break;
                case 2: plan_.rank = static_cast<std::uint32_t>(v); break;
                case 3: plan_.world = static_cast<std::uint32_t>(v); break;
                default: plan_.drop_last = v != 0; break;
            }
            if (k == 3 && v == 0) return fail(EINVAL, line_no_, "'world' must be at least 1", text);
            if (has("rank") && has("world") && plan_.rank >= plan_.world)
                return fail(EINVAL, line_no_, "rank " + std::to_string(plan_.rank) + " is outside a world of " + std::to_string(plan_.world),
                            text);
        }
        return 0;
    }

    bool has(std::string_view key) const {
        for (std::size_t k = 0; k < std::size(kKeys); ++k)
            if (key == kKeys[k]) return (seen_ & (1u << k)) != 0;
        return false;
    }

    int fail(int code, std::size_t line, const std::string& reason, std::string_view text) {
        error_ = code;
        message_ = (line ? "line " + std::to_string(line) + ": " : std::string("end of plan: ")) + reason;
        if (!text.empty()) message_ += ": '" + escape_for_log(text) + "'";
        plan_ = {};
        partial_.clear();
        return code;
    }

    const std::size_t samples_;
    const std::size_t max_lines_;
    PlanResolver resolve_;
    ParsedPlan plan_;
    std::string partial_;        // a line whose '\n' has not come yet
    std::size_t line_no_ = 0;    // lines seen, blank ones included
    unsigned seen_ = 0;          // keys given, a bit each (kKeys order)
    int error_ = 0;
    std::string message_;
};

// ---- jobs: the writer's process ------------------------------------------------------------

using tiercache::JobId;  // job.hpp: a process's tgid here, below 2^32

// A process, as the plan file keys jobs: its thread group id, and when it started (clock
// ticks after boot, from /proc/PID/stat; 0 if unknown), so that a reused pid is another job.
struct Process {
    JobId job = 0;
    std::uint64_t started = 0;
};

namespace proc {

inline std::string read_small(const std::string& path) {
    std::ifstream in(path);
    if (!in) return {};
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text;
}

// /proc/PID/stat's fields after "(comm)": [0] state (field 3), [17] num_threads (20),
// [19] starttime (22). comm may hold spaces and parentheses: the last ')' ends it. The views
// point into `stat`: keep it alive while they are used.
inline std::vector<std::string_view> stat_fields(std::string_view stat) {
    std::vector<std::string_view> out;
    const auto close = stat.rfind(')');
    if (close == std::string_view::npos) return out;
    stat.remove_prefix(close + 1);
    while (!stat.empty()) {
        const auto start = stat.find_first_not_of(" \n");
        if (start == std::string_view::npos) break;
        stat.remove_prefix(start);
        const auto end = stat.find_first_of(" \n");
        out.push_back(stat.substr(0, end));
        stat.remove_prefix(end == std::string_view::npos ? stat.size() : end);
    }
    return out;
}

std::vector<std::string_view> stat_fields(std::string&& stat) = delete;  // the views would outlive it

inline std::uint64_t number(std::string_view s) {
    std::uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
}

// A numeric field of /proc/PID/status ("Tgid", "PPid"); 0 if missing.
inline std::uint64_t status_field(std::string_view status, std::string_view name) {
    for (std::size_t at = 0; at < status.size();) {
        const auto end = std::min(status.find('\n', at), status.size());
        const std::string_view line = status.substr(at, end - at);
        if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
            const auto digits = line.find_first_of("0123456789", name.size());
            return digits == std::string_view::npos ? 0 : number(line.substr(digits));
        }
        at = end + 1;
    }
    return 0;
}

}  // namespace proc

// The process of thread `tid` (what FUSE says a request came from). Falls back to the tid
// itself when /proc does not tell; pid 0 (a caller outside the mount's PID namespace) is job 0.
inline Process process_of(pid_t tid) {
    if (tid <= 0) return {};
    Process p{static_cast<JobId>(tid), 0};
    const std::string status = proc::read_small("/proc/" + std::to_string(tid) + "/status");
    if (const std::uint64_t tgid = proc::status_field(status, "Tgid")) p.job = tgid;
    const std::string stat = proc::read_small("/proc/" + std::to_string(p.job) + "/stat");  // the fields are views into it
    const auto fields = proc::stat_fields(stat);
    if (fields.size() > 19) p.started = proc::number(fields[19]);
    return p;
}

// Who a reading thread is, to tell which job's prefetcher its reads move: its process and
// that process's parent (a DataLoader worker's parent is the process that wrote the plan).
// Zeros when /proc does not tell.
struct ReaderIds {
    JobId process = 0, parent = 0;
};
inline ReaderIds reader_of(pid_t tid) {
    if (tid <= 0) return {};
    const std::string status = proc::read_small("/proc/" + std::to_string(tid) + "/status");
    return {proc::status_field(status, "Tgid"), proc::status_field(status, "PPid")};
}

// Whether `p` still runs: not if kill(pid, 0) says ESRCH, nor if /proc shows a zombie with
// no thread left, or another process under the same pid (a later start time). When /proc
// cannot tell (hidepid, another user's process), it counts as running. Job 0 always runs.
inline bool process_alive(const Process& p) {
    if (p.job == 0 || p.job > static_cast<JobId>(INT_MAX)) return true;
    const auto pid = static_cast<pid_t>(p.job);
    if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
    const std::string stat = proc::read_small("/proc/" + std::to_string(pid) + "/stat");  // the fields are views into it
    const auto fields = proc::stat_fields(stat);
    if (fields.size() <= 19) return true;
    if ((fields[0] == "Z" || fields[0] == "X") && proc::number(fields[17]) <= 1) return false;
    return p.started == 0 || proc::number(fields[19]) == p.started;
}

// ---- the plan file --------------------------------------------------------------------------

// The plan file's state: the pending plans being written (a stream per open file and
// process), each job's active plan and last error, and the timer that commits idle streams
// and drops the plans of processes that have exited.
class PlanFile {
public:
    static constexpr std::chrono::milliseconds kIdleCommit{50};
    static constexpr std::chrono::milliseconds kReapEvery{1000};
    static constexpr std::size_t kMaxPending = 64;     // streams still arriving, at most
    static constexpr std::size_t kMaxFinished = 256;   // ended ones kept to answer late writes
    static constexpr std::size_t kMaxJobEntries = 1024;  // jobs with a plan or a last error

    // What an applied plan was, for the read-back.
    struct Active {
        ParsedPlan::Kind kind = ParsedPlan::Kind::empty;
        std::size_t samples = 0;  // positions in the order
        std::uint64_t seed = 0, epoch = 0;
        std::uint32_t rank = 0, world = 1;
        bool drop_last = false;
    };
    // Applies a checked plan as `job`'s (an empty one removes the job's plan); returns its
    // positions. Throws std::exception to refuse it (more ranks than samples with drop_last,
    // too many jobs).
    using Apply = std::function<std::size_t(JobId, ParsedPlan)>;
    // Removes `job`'s plan: its process has exited.
    using Remove = std::function<void(JobId)>;

    PlanFile(std::size_t samples, PlanResolver resolve, Apply apply, Remove remove)
        : samples_(samples), resolve_(std::move(resolve)), apply_(std::move(apply)), remove_(std::move(remove)) {}
    PlanFile(const PlanFile&) = delete;
    PlanFile& operator=(const PlanFile&) = delete;
    ~PlanFile() { stop(); }

    // Starts the timer (after fuse_daemonize, whose fork keeps no threads).
    void start() {
        std::lock_guard lock(mutex_);
        if (!timer_.joinable() && !stopping_) timer_ = std::thread([this] { run_timer(); });
    }

    // Ends the timer; plans still pending are dropped (the mount is going away).
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (timer_.joinable()) timer_.join();
    }

    // Truncation to size 0 of plan snapshot `ino` (open with O_TRUNC) by thread `tid` of
    // `who`: a new, empty plan of theirs in that open file.
    int truncate(fuse_ino_t ino, pid_t tid, const Process& who) {
        std::lock_guard lock(mutex_);
        begin(ino, tid, who);
        return 0;
    }

    // A WRITE of `bytes` at `offset` to plan snapshot `ino` by thread `tid` of `who`.
    int write(fuse_ino_t ino, std::uint64_t offset, std::string_view bytes, pid_t tid, const Process& who) {
        std::lock_guard lock(mutex_);
        Stream* s = nullptr;
        if (offset == 0) {
            s = &begin(ino, tid, who);
        } else {
            const auto it = streams_.find({ino, who.job});
            if (it == streams_.end() || it->second.state != Stream::open || offset != it->second.end) {
                if (it != streams_.end() && it->second.state == Stream::open) {
                    reject(it->second, EINVAL, "a write at offset " + std::to_string(offset) + ", not at the end (" +
                                                   std::to_string(it->second.end) + "): writes must be sequential");
                } else if (it == streams_.end() || it->second.state != Stream::rejected) {  // a rejection was said already
                    log(LogLevel::warn, "plan: a write at offset ", offset, " by process ", who.job,
                        " continues no pending plan (committed or dropped already, or never begun): start again at offset 0");
                }
                return EINVAL;
            }
            s = &it->second;
        }
        if (const int err = s->parser.feed(bytes)) {
            reject(*s, err, s->parser.error_message());
            return err;
        }
        s->end += bytes.size();
        s->writer = tid;
        arm(*s);
        return 0;
    }

    // fsync of plan snapshot `ino`: applies the plans pending in it now. 0 when there was
    // none or they were applied; the errno of a rejection otherwise.
    int commit(fuse_ino_t ino) {
        std::lock_guard lock(mutex_);
        int result = 0;
        for (auto it = streams_.lower_bound({ino, 0}); it != streams_.end() && it->first.first == ino; ++it)
            if (const int err = commit_stream(it->second); err && !result) result = err;
        return result;
    }

    // Applies the plans thread `requester` was writing (it opens or reads the plan file: it is
    // done writing); a look from anyone else leaves a stream still arriving alone.
    void commit_by(pid_t requester) {
        std::lock_guard lock(mutex_);
        for (auto& [key, s] : streams_)
            if (s.state == Stream::open && s.writer == requester) commit_stream(s);
    }

    // The size the kernel should see for `ino` while it is a plan being written.
    std::optional<std::uint64_t> pending_size(fuse_ino_t ino) const {
        std::lock_guard lock(mutex_);
        const Stream* latest = nullptr;
        for (auto it = streams_.lower_bound({ino, 0}); it != streams_.end() && it->first.first == ino; ++it)
            if (!latest || it->second.seq > latest->seq) latest = &it->second;
        if (latest) return latest->end;
        return std::nullopt;
    }

    // The kernel forgot plan snapshot `ino`: nothing more is written through it. What ended
    // there goes; a stream still pending there stays for its idle commit.
    void forget(fuse_ino_t ino) {
        std::lock_guard lock(mutex_);
        for (auto it = streams_.lower_bound({ino, 0}); it != streams_.end() && it->first.first == ino;)
            it = it->second.state == Stream::open ? std::next(it) : streams_.erase(it);
    }

    // The read-back for `job`: its plan, its position in it, and `jobs` (how many jobs hold
    // a plan in the cache).
    nlohmann::ordered_json json(JobId job, std::size_t position, std::size_t jobs) const {
        std::lock_guard lock(mutex_);
        const auto found = jobs_.find(job);
        const Active active = found == jobs_.end() ? Active{} : found->second.active;
        const Stream* pending = nullptr;  // the job's latest stream still arriving
        for (const auto& [key, s] : streams_)
            if (key.second == job && s.state == Stream::open && (!pending || s.seq > pending->seq)) pending = &s;
        nlohmann::ordered_json j;
        using J = nlohmann::ordered_json;
        j["state"] = pending ? "pending" : active.kind == ParsedPlan::Kind::empty ? "none" : "active";
        const bool seeded = active.kind == ParsedPlan::Kind::seed;
        j["kind"] = seeded ? J("seed") : active.kind == ParsedPlan::Kind::paths ? J("paths") : J();
        j["samples"] = active.samples;
        j["seed"] = seeded ? J(active.seed) : J();
        j["epoch"] = seeded ? J(active.epoch) : J();
        j["rank"] = seeded ? J(active.rank) : J();
        j["world"] = seeded ? J(active.world) : J();
        j["drop_last"] = seeded ? J(active.drop_last) : J();
        j["position"] = active.kind == ParsedPlan::Kind::empty ? 0 : position;
        j["last_error"] = found == jobs_.end() || found->second.last_error.empty() ? J() : J(found->second.last_error);
        j["jobs"] = jobs;
        if (pending) j["pending_bytes"] = pending->end;
        return j;
    }

private:
    struct Stream {
        enum State { open, committed, rejected };
        PlanParser parser;
        Process who;            // the job whose plan this is
        pid_t writer = 0;       // the thread whose WRITEs these are (the latest)
        std::uint64_t seq = 0;  // when it began: the oldest is dropped first
        std::uint64_t end = 0;  // bytes received
        State state = open;
        std::optional<std::chrono::steady_clock::time_point> deadline;  // open: its idle commit
    };
    struct Job {
        Active active;           // its plan (kind empty: none)
        std::string last_error;  // its latest plan's rejection
        Process process;         // as it was when its plan was applied
        bool has_plan() const { return active.kind != ParsedPlan::Kind::empty; }
    };
    using Key = std::pair<fuse_ino_t, JobId>;  // a stream per open file and process

    Stream& begin(fuse_ino_t ino, pid_t tid, const Process& who) {  // mutex_ held
        const Key key{ino, who.job};
        if (const auto it = streams_.find(key); it != streams_.end()) {
            if (it->second.state == Stream::open && it->second.end > 0)
                log(LogLevel::warn, "plan: a new plan of process ", who.job, " replaces one not yet applied (", it->second.end, " bytes)");
            streams_.erase(it);
        }
        Stream& s = streams_.emplace(key, Stream{PlanParser(samples_, resolve_), who, tid, ++seq_, 0, Stream::open, std::nullopt}).first->second;
        arm(s);
        bound(s);
        return s;
    }

    // At most kMaxPending streams arriving (the oldest beyond is dropped, and says so) and
    // kMaxFinished ended ones (the oldest goes silently: a late write then logs once more).
    void bound(const Stream& keep) {  // mutex_ held
        for (;;) {
            std::size_t open = 0, finished = 0;
            Stream* oldest_open = nullptr;
            auto oldest_finished = streams_.end();
            for (auto it = streams_.begin(); it != streams_.end(); ++it) {
                Stream& s = it->second;
                if (s.state == Stream::open) {
                    ++open;
                    if (&s != &keep && (!oldest_open || s.seq < oldest_open->seq)) oldest_open = &s;
                } else {
                    ++finished;
                    if (oldest_finished == streams_.end() || s.seq < oldest_finished->second.seq) oldest_finished = it;
                }
            }
            if (open > kMaxPending && oldest_open) {
                log(LogLevel::warn, "plan: more than ", kMaxPending, " plans pending at once: the oldest (", oldest_open->end,
                    " bytes from process ", oldest_open->who.job, ") is dropped");
                oldest_open->state = Stream::rejected;
                oldest_open->deadline.reset();
                set_error(oldest_open->who, "dropped before it was applied: more than " + std::to_string(kMaxPending) +
                                                " plans were being written at once");
            } else if (finished > kMaxFinished && oldest_finished != streams_.end()) {
                streams_.erase(oldest_finished);
            } else {
                return;
            }
        }
    }

    void arm(Stream& s) {  // mutex_ held
        s.deadline = std::chrono::steady_clock::now() + kIdleCommit;
        wake_.notify_all();
    }

    Job& job_entry(const Process& who) {  // mutex_ held
        if (jobs_.size() >= kMaxJobEntries && !jobs_.contains(who.job)) {
            // Bounded: a job that only holds an error (its process may live on) makes room.
            for (auto it = jobs_.begin(); it != jobs_.end(); ++it)
                if (!it->second.has_plan()) {
                    jobs_.erase(it);
                    break;
                }
        }
        return jobs_[who.job];
    }

    void set_error(const Process& who, std::string why) {  // mutex_ held
        Job& j = job_entry(who);
        if (!j.has_plan()) j.process = who;
        j.last_error = std::move(why);
    }

    void reject(Stream& s, int err, const std::string& why) {  // mutex_ held
        s.state = Stream::rejected;
        s.deadline.reset();
        set_error(s.who, why);
        log(LogLevel::warn, "plan rejected (", err == EFBIG ? "EFBIG" : "EINVAL", ") for process ", s.who.job,
            ", its active plan stays: ", why);
    }

    // Applies stream `s` if it is still arriving.
    int commit_stream(Stream& s) {  // mutex_ held
        s.deadline.reset();
        if (s.state != Stream::open) return 0;
        if (const int err = s.parser.finish()) {
            reject(s, err, s.parser.error_message());
            return err;
        }
        s.state = Stream::committed;
        reap_locked();  // room for a new job, if one that held a plan has exited
        if (!process_alive(s.who)) {
            log(LogLevel::info, "plan: process ", s.who.job, " exited before its plan was applied: dropped");
            return 0;
        }
        ParsedPlan plan = s.parser.take();
        Active next{plan.kind, 0, plan.seed, plan.epoch, plan.rank, plan.world, plan.drop_last};
        try {
            next.samples = apply_(s.who.job, std::move(plan));
        } catch (const std::exception& e) {
            s.state = Stream::rejected;
            set_error(s.who, std::string("end of plan: ") + e.what());
            log(LogLevel::warn, "plan rejected (EINVAL) for process ", s.who.job, ", its active plan stays: end of plan: ", e.what());
            return EINVAL;
        }
        if (next.kind == ParsedPlan::Kind::empty) {
            jobs_.erase(s.who.job);  // no plan, no error
            log(LogLevel::info, "plan of process ", s.who.job, ": cleared");
            return 0;
        }
        Job& j = job_entry(s.who);
        j.active = next;
        j.last_error.clear();
        j.process = s.who;
        if (next.kind == ParsedPlan::Kind::seed)
            log(LogLevel::info, "plan of process ", s.who.job, ": seed ", next.seed, " epoch ", next.epoch, " rank ", next.rank, " of ",
                next.world, ", ", next.samples, " samples");
        else
            log(LogLevel::info, "plan of process ", s.who.job, ": ", next.samples, " paths");
        return 0;
    }

    // Drops job `id` (its process has exited): its plan goes from the cache.
    void drop_job(JobId id) {  // mutex_ held
        const auto it = jobs_.find(id);
        if (it == jobs_.end()) return;
        if (it->second.has_plan()) {
            log(LogLevel::info, "plan: process ", id, " has exited: its plan (", it->second.active.samples, " samples) is removed");
            remove_(id);
        }
        jobs_.erase(it);
    }

    // The jobs with a plan whose processes have exited lose it (at each commit: a few
    // syscalls per job, under mutex_).
    void reap_locked() {  // mutex_ held
        std::vector<JobId> dead;
        for (const auto& [id, j] : jobs_)
            if (j.has_plan() && !process_alive(j.process)) dead.push_back(id);
        for (JobId id : dead) drop_job(id);
    }

    // The timer's check of every job (those holding only an error too), its syscalls made
    // without mutex_.
    void reap(std::unique_lock<std::mutex>& lock) {  // mutex_ held
        std::vector<Process> known;
        for (const auto& [id, j] : jobs_) known.push_back(j.process);
        lock.unlock();
        std::vector<Process> dead;
        for (const Process& p : known)
            if (!process_alive(p)) dead.push_back(p);
        lock.lock();
        for (const Process& p : dead) {
            const auto it = jobs_.find(p.job);
            if (it != jobs_.end() && it->second.process.started == p.started) drop_job(p.job);  // not a new one meanwhile
        }
    }

    void run_timer() {
        using clock = std::chrono::steady_clock;
        std::unique_lock lock(mutex_);
        auto next_reap = clock::now() + kReapEvery;
        while (!stopping_) {
            const auto now = clock::now();
            auto wake_at = next_reap;
            for (auto& [key, s] : streams_) {
                if (s.state != Stream::open || !s.deadline) continue;
                if (*s.deadline <= now) commit_stream(s);  // changes no entry of streams_
                else wake_at = std::min(wake_at, *s.deadline);
            }
            if (now >= next_reap) {
                reap(lock);
                next_reap = clock::now() + kReapEvery;
                continue;  // streams_ may have changed meanwhile
            }
            wake_.wait_until(lock, wake_at);
        }
    }

    const std::size_t samples_;
    const PlanResolver resolve_;
    // Called with mutex_ held: they must not call back into PlanFile.
    // Lock order: mutex_, then whatever they take (the mount's prefetchers', the cache's).
    const Apply apply_;
    const Remove remove_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::map<Key, Stream> streams_;  // protected by mutex_
    std::map<JobId, Job> jobs_;      // protected by mutex_: jobs with a plan or a last error
    std::uint64_t seq_ = 0;          // protected by mutex_
    bool stopping_ = false;          // protected by mutex_
    std::thread timer_;
};

}  // namespace tiercache::fuse
