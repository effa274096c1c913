// MOUNTPOINT/.tiercache/plan: a loader writes the next epoch's order here; the mount then
// prefetches in that order and the cache's plan-aware policy follows it.
//
// Protocol (what writers may rely on):
//
// Writing. open(plan, O_WRONLY|O_TRUNC), write the text, close. From Python:
// open(p, "w").write(text); from a shell: echo "seed=42 epoch=3" > plan. Writes must be
// sequential: a write at offset 0, or a truncation to size 0 (which O_TRUNC sends), starts a
// new pending plan and drops any plan still pending; a write at any other offset must continue
// the pending plan exactly at its end, through the same open file, or it fails with EINVAL.
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
// Commit: the pending plan is applied when the writer is done, which the daemon learns from
// (the mount has no open/close notification): an fsync of the plan file (its result is the
// commit's), an open or read of the plan file by the thread that wrote it, or 50 ms without a
// write (a look from any other process leaves a plan still arriving alone). Write the whole text
// in one go: a plan committed for idleness is closed, and a late continuation fails (EINVAL).
// At commit the last line without '\n' is parsed too, and the keys are checked as a whole; a
// failure there drops the plan and shows in last_error. Applying: the keys give
// EpochPlan(samples, seed, epoch, rank, world, drop_last), the paths EpochPlan::from_order;
// the cache follows it (Cache::set_plan) and the prefetcher starts at its first position. An
// empty plan (`: > plan`, or only blank lines) clears the active one.
//
// Reading the plan file gives JSON (a new snapshot on every open):
//   {"state": "none" | "pending" | "active", "kind": "seed" | "paths" | null, "samples": N,
//    "seed": N | null, "epoch": N | null, "rank": N | null, "world": N | null,
//    "drop_last": bool | null, "position": N, "last_error": "line 7: ..." | null}
// describing the active plan; "position" is the reader's position in it (plan positions
// below it have been read), "last_error" the latest plan's rejection (null once a plan is
// applied).
#pragma once
#include <charconv>
#include <chrono>
#include <climits>
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fuse_lowlevel.h>
#include <nlohmann/json.hpp>
#include <tiercache/catalog.hpp>
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

// The plan file's state: the pending plan being written, the active one, the commit timer.
class PlanFile {
public:
    static constexpr std::chrono::milliseconds kIdleCommit{50};

    // What an applied plan was, for the read-back.
    struct Active {
        ParsedPlan::Kind kind = ParsedPlan::Kind::empty;
        std::size_t samples = 0;  // positions in the order
        std::uint64_t seed = 0, epoch = 0;
        std::uint32_t rank = 0, world = 1;
        bool drop_last = false;
    };
    // Applies a checked plan (an empty one clears); returns its positions. Throws
    // std::exception to refuse it (e.g. more ranks than samples with drop_last).
    using Apply = std::function<std::size_t(ParsedPlan)>;

    PlanFile(std::size_t samples, PlanResolver resolve, Apply apply)
        : samples_(samples), resolve_(std::move(resolve)), apply_(std::move(apply)) {}
    PlanFile(const PlanFile&) = delete;
    PlanFile& operator=(const PlanFile&) = delete;
    ~PlanFile() { stop(); }

    // Starts the idle-commit timer (after fuse_daemonize, whose fork keeps no threads).
    void start() {
        std::lock_guard lock(mutex_);
        if (!timer_.joinable() && !stopping_) timer_ = std::thread([this] { run_timer(); });
    }

    // Ends the timer; a plan still pending is dropped (the mount is going away).
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (timer_.joinable()) timer_.join();
    }

    // Truncation to size 0 of plan snapshot `ino` (open with O_TRUNC): a new, empty plan.
    int truncate(fuse_ino_t ino, pid_t writer) {
        std::lock_guard lock(mutex_);
        begin(ino);
        stream_->writer = writer;
        return 0;
    }

    // A WRITE of `bytes` at `offset` to plan snapshot `ino`.
    int write(fuse_ino_t ino, std::uint64_t offset, std::string_view bytes, pid_t writer) {
        std::lock_guard lock(mutex_);
        if (offset == 0) begin(ino);
        else if (!stream_ || stream_->ino != ino || stream_->state != Stream::open || offset != stream_->end) {
            const bool already_said = stream_ && stream_->ino == ino && stream_->state == Stream::rejected;
            if (stream_ && stream_->ino == ino && stream_->state == Stream::open) {
                reject(EINVAL, "a write at offset " + std::to_string(offset) + ", not at the end (" + std::to_string(stream_->end) +
                                   "): writes must be sequential");
            } else if (!already_said) {
                log(LogLevel::warn, "plan: a write at offset ", offset,
                    " continues no pending plan (committed or dropped already, or never begun): start again at offset 0");
            }
            return EINVAL;
        }
        if (const int err = stream_->parser.feed(bytes)) {
            reject(err, stream_->parser.error_message());
            return err;
        }
        stream_->end += bytes.size();
        stream_->writer = writer;
        arm();
        return 0;
    }

    // Applies the pending plan now (fsync, open or read of the plan file). 0 when there was
    // none or it was applied; the errno of its rejection otherwise.
    int commit() {
        std::lock_guard lock(mutex_);
        return commit_locked();
    }

    // Applies the pending plan if `requester` is the thread that wrote it (reading its plan
    // back: it is done writing); a look from anyone else leaves a stream still arriving alone.
    int commit_by(pid_t requester) {
        std::lock_guard lock(mutex_);
        if (stream_ && stream_->state == Stream::open && stream_->writer != requester) return 0;
        return commit_locked();
    }

    // The size the kernel should see for `ino` while it is the plan being written.
    std::optional<std::uint64_t> pending_size(fuse_ino_t ino) const {
        std::lock_guard lock(mutex_);
        if (stream_ && stream_->ino == ino) return stream_->end;
        return std::nullopt;
    }

    // The read-back, with the reader's position in the active plan.
    nlohmann::ordered_json json(std::size_t position) const {
        std::lock_guard lock(mutex_);
        nlohmann::ordered_json j;
        const bool pending = stream_ && stream_->state == Stream::open;
        j["state"] = pending ? "pending" : active_.kind == ParsedPlan::Kind::empty ? "none" : "active";
        const bool seeded = active_.kind == ParsedPlan::Kind::seed;
        j["kind"] = seeded ? nlohmann::ordered_json("seed")
                           : active_.kind == ParsedPlan::Kind::paths ? nlohmann::ordered_json("paths") : nlohmann::ordered_json();
        j["samples"] = active_.samples;
        j["seed"] = seeded ? nlohmann::ordered_json(active_.seed) : nlohmann::ordered_json();
        j["epoch"] = seeded ? nlohmann::ordered_json(active_.epoch) : nlohmann::ordered_json();
        j["rank"] = seeded ? nlohmann::ordered_json(active_.rank) : nlohmann::ordered_json();
        j["world"] = seeded ? nlohmann::ordered_json(active_.world) : nlohmann::ordered_json();
        j["drop_last"] = seeded ? nlohmann::ordered_json(active_.drop_last) : nlohmann::ordered_json();
        j["position"] = active_.kind == ParsedPlan::Kind::empty ? 0 : position;
        j["last_error"] = last_error_.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(last_error_);
        if (pending) j["pending_bytes"] = stream_->end;
        return j;
    }

private:
    struct Stream {
        enum State { open, committed, rejected };
        fuse_ino_t ino;
        PlanParser parser;
        std::uint64_t end = 0;  // bytes received
        State state = open;
        pid_t writer = 0;       // the thread whose WRITEs these are
    };

    void begin(fuse_ino_t ino) {  // mutex_ held
        if (stream_ && stream_->state == Stream::open && stream_->end > 0)
            log(LogLevel::warn, "plan: a new plan replaces one not yet applied (", stream_->end, " bytes)");
        stream_.emplace(Stream{ino, PlanParser(samples_, resolve_)});
        arm();
    }

    void arm() {  // mutex_ held
        deadline_ = std::chrono::steady_clock::now() + kIdleCommit;
        wake_.notify_all();
    }

    void reject(int err, const std::string& why) {  // mutex_ held
        stream_->state = Stream::rejected;
        deadline_.reset();
        last_error_ = why;
        log(LogLevel::warn, "plan rejected (", err == EFBIG ? "EFBIG" : "EINVAL", "), the active plan stays: ", why);
    }

    int commit_locked() {  // mutex_ held
        deadline_.reset();
        if (!stream_ || stream_->state != Stream::open) return 0;
        if (const int err = stream_->parser.finish()) {
            reject(err, stream_->parser.error_message());
            return err;
        }
        stream_->state = Stream::committed;
        ParsedPlan plan = stream_->parser.take();
        Active next{plan.kind, 0, plan.seed, plan.epoch, plan.rank, plan.world, plan.drop_last};
        try {
            next.samples = apply_(std::move(plan));
        } catch (const std::exception& e) {
            stream_->state = Stream::rejected;
            last_error_ = std::string("end of plan: ") + e.what();
            log(LogLevel::warn, "plan rejected (EINVAL), the active plan stays: ", last_error_);
            return EINVAL;
        }
        active_ = next;
        last_error_.clear();
        if (next.kind == ParsedPlan::Kind::empty)
            log(LogLevel::info, "plan: cleared");
        else if (next.kind == ParsedPlan::Kind::seed)
            log(LogLevel::info, "plan: seed ", next.seed, " epoch ", next.epoch, " rank ", next.rank, " of ", next.world, ", ",
                next.samples, " samples");
        else
            log(LogLevel::info, "plan: ", next.samples, " paths");
        return 0;
    }

    void run_timer() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            if (!deadline_) {
                wake_.wait(lock);
            } else if (std::chrono::steady_clock::now() >= *deadline_) {
                commit_locked();
            } else {
                wake_.wait_until(lock, *deadline_);
            }
        }
    }

    const std::size_t samples_;
    const PlanResolver resolve_;
    const Apply apply_;  // called with mutex_ held: it must not call back into PlanFile
    // Lock order: mutex_, then whatever apply_ takes (the cache's, the prefetcher's).
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::optional<Stream> stream_;  // protected by mutex_: the latest plan written
    Active active_;                 // protected by mutex_
    std::string last_error_;        // protected by mutex_
    std::optional<std::chrono::steady_clock::time_point> deadline_;  // protected by mutex_: idle commit
    bool stopping_ = false;         // protected by mutex_
    std::thread timer_;
};

}  // namespace tiercache::fuse
