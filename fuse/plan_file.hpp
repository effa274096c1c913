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
// The text's two kinds (seed keys, or paths) and what each line may hold: plan_parser.hpp.
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
// write to it (1 s while the text so far ends inside a line) (a look from any other thread or process leaves a plan still arriving alone).
// Write the whole text in one go: a plan committed for idleness is closed, and a late
// continuation fails (EINVAL). At commit the last line without '\n' is parsed too, and the
// keys are checked as a whole; a failure there drops the plan and shows in last_error. A plan
// whose process has exited meanwhile is dropped. Applying: the keys give EpochPlan(samples,
// seed, epoch, rank, world, drop_last), the lines of paths and records the order itself; the
// cache keeps it as the job's plan (Cache::set_plan(job, this epoch, the next one's when
// seeded)) and the job's
// own prefetcher starts at its first position. An empty plan (`: > plan`, or only blank lines)
// removes the job's plan, no other's.
//
// Reading the plan file gives JSON (a new snapshot on every open) about the reader's own job:
//   {"state": "none" | "pending" | "active", "kind": "seed" | "paths" | "records" | null, "samples": N,
//    "seed": N | null, "epoch": N | null, "rank": N | null, "world": N | null,
//    "drop_last": bool | null, "position": N, "last_error": "line 7: ..." | null, "jobs": N}
// "state" is "pending" while a plan of the job is still arriving; the rest describes its
// active plan ("records": some line named a record); "position" is the job's position in it (its prefetcher's: plan positions below
// it have been read by the job's process or its children, e.g. DataLoader workers; a read no
// job can be told for moves every job's), "last_error" the job's latest plan's rejection
// (null once one of its plans is applied), "jobs" how many jobs hold a plan in the cache.
// Another process (`cat plan` after a shell's echo) sees its own: "none", with "jobs".
#pragma once
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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
#include <tiercache/job.hpp>
#include <tiercache/log.hpp>

#include "plan_parser.hpp"
#include "process.hpp"

namespace tiercache::fuse {

// The plan file's state: the pending plans being written (a stream per open file and
// process), each job's active plan and last error, and the timer that commits idle streams
// and drops the plans of processes that have exited.
class PlanFile {
public:
    static constexpr std::chrono::milliseconds kIdleCommit{50};
    static constexpr std::chrono::milliseconds kIdleCommitMidLine{1000};  // the text so far ends inside a line
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
        bool records = false;     // some line was a record
    };
    // Applies a checked plan as `job`'s (an empty one removes the job's plan); returns its
    // positions. Throws std::exception to refuse it (more ranks than samples with drop_last,
    // too many jobs).
    using Apply = std::function<std::size_t(JobId, ParsedPlan)>;
    // Removes `job`'s plan: its process has exited.
    using Remove = std::function<void(JobId)>;

    // `dataset_bytes` bounds the lines of a plan of records (PlanParser).
    PlanFile(std::size_t samples, PlanResolver resolve, Apply apply, Remove remove, std::uint64_t dataset_bytes = 0)
        : samples_(samples), dataset_bytes_(dataset_bytes), resolve_(std::move(resolve)), apply_(std::move(apply)),
          remove_(std::move(remove)) {}
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
        j["kind"] = seeded ? J("seed") : active.kind == ParsedPlan::Kind::paths ? J(active.records ? "records" : "paths") : J();
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
        Stream& s = streams_.emplace(key, Stream{PlanParser(samples_, resolve_, dataset_bytes_), who, tid, ++seq_, 0, Stream::open, std::nullopt}).first->second;
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
        // Text that stops inside a line is a writer cut short mid-write (a loaded machine
        // can stall it past 50 ms), far more often than a plan whose last line lacks '\n'.
        s.deadline = std::chrono::steady_clock::now() + (s.parser.mid_line() ? kIdleCommitMidLine : kIdleCommit);
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
        Active next{plan.kind, 0, plan.seed, plan.epoch, plan.rank, plan.world, plan.drop_last, plan.any_record};
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
            log(LogLevel::info, "plan of process ", s.who.job, ": ", next.samples, next.records ? " records" : " paths");
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
    const std::uint64_t dataset_bytes_;
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
