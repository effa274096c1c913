// The mount: a read-only view of the origin, served through the cache.
//
// Read-only is enforced here, not by the VFS: the mount is read-write so that the one
// writable file, .tiercache/plan (0644, see plan_file.hpp), can be written. Data files are
// 0444 and directories 0555 (with default_permissions the kernel refuses other users' writes);
// every mutating request on anything but the plan file, root's included, answers EROFS.
//
// Each FUSE operation is a do_x() that returns an errno (0 on success) and fills its result,
// and a thin static x() that only replies. Few requests per file read, since each costs a
// cross-CPU wakeup (~120 us here): readdirplus and day-long entry/attr timeouts remove
// LOOKUP/GETATTR, no-open support removes OPEN/RELEASE, and ENOSYS on FLUSH removes it. A file
// is then one READ per 128 KiB the first time and, with the kernel cache on, no request later.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <thread>
#include <string>
#include <sys/stat.h>

#include <fuse_lowlevel.h>
#include <nlohmann/json.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <tiercache/cache.hpp>
#include <tiercache/prefetcher.hpp>

#include "control_folder.hpp"
#include "inodes.hpp"
#include "metrics.hpp"
#include "plan_file.hpp"

namespace tiercache::fuse {

// Requests counted per operation, for the stats file and the note on requests per read.
// Requests on the control folder count as "control", so the others count data access only.
enum class Op { init, lookup, forget, getattr, readdir, readdirplus, opendir, open, read, release, statfs, fsync, write_denied, control, count };
inline constexpr std::array<const char*, static_cast<std::size_t>(Op::count)> kOpNames = {
    "init", "lookup", "forget", "getattr", "readdir", "readdirplus", "opendir", "open", "read", "release", "statfs", "fsync",
    "write_denied", "control"};

struct MountOptions {
    // Let the kernel keep file pages (fast warm reads, no request at all) or send every read
    // to us (direct I/O: what the tier and its policy see is every read).
    bool kernel_cache = true;
    double entry_timeout_s = 86400;  // the data is read-only: cache names and attributes a day
    // Reading ahead of the readers in the orders written to .tiercache/plan, a prefetcher per
    // job with a plan, each with these options (threads 0: off).
    PrefetchOptions prefetch;
    // Every catalogued file is statted once per this many seconds (round-robin, at most
    // kMaxRevalidationsPerSecond stats a second, so a large dataset's pass takes longer);
    // 0: no background pass (changes are still noticed by misses).
    double revalidate_s = 60;
    // The mountpoint, as the metrics' mount label says it.
    std::string mountpoint;
};

inline constexpr double kMaxRevalidationsPerSecond = 10'000;

class Filesystem {
public:
    Filesystem(Cache& cache, MountOptions options);
    ~Filesystem();
    Filesystem(const Filesystem&) = delete;
    Filesystem& operator=(const Filesystem&) = delete;

    // Starts the plan file's timer (idle commits, jobs that ended): after fuse_daemonize,
    // whose fork keeps no threads, and before the session loop. Prefetchers start with plans.
    void start();
    // The session whose kernel caches a change invalidates (fuse_lowlevel_notify_inval_inode):
    // set before start(). stop() ends the revalidation thread; call it before the session
    // goes (also done by the destructor).
    void set_session(fuse_session* se) { session_ = se; }
    void stop();

    static const fuse_lowlevel_ops& operations();

    // The control files' content for a reader in job `job` (its process: process_of).
    nlohmann::ordered_json stats_json(JobId job) const;
    nlohmann::ordered_json plan_json(JobId job) const;
    std::string metrics_text() const;  // .tiercache/metrics (and the node_exporter textfile)
    std::vector<JobReads> job_reads() const;  // per job: the READs that reached the daemon

private:
    // The operations: an errno back, results through the out-parameters.
    void do_init(fuse_conn_info* conn);
    int do_lookup(fuse_ino_t parent, const char* name, fuse_entry_param& out, pid_t requester);
    int do_getattr(fuse_ino_t ino, struct stat& out) const;
    int do_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t offset, bool plus, std::string& out);
    int do_open(fuse_ino_t ino, fuse_file_info& fi) const;
    int do_opendir(fuse_ino_t ino, fuse_file_info& fi) const;
    int do_read(fuse_ino_t ino, std::size_t size, off_t offset, Chunk& out, std::shared_ptr<const std::string>& keep,
                pid_t requester);
    int do_statfs(struct statvfs& out) const;
    void do_forget(fuse_ino_t ino, std::uint64_t nlookup);
    int do_write(fuse_ino_t ino, const char* buf, std::size_t size, off_t offset, std::size_t& written, pid_t requester);
    int do_setattr(fuse_ino_t ino, const struct stat& attr, int to_set, struct stat& out, pid_t requester);
    int do_fsync(fuse_ino_t ino);

    // The thin replies.
    static void init(void* userdata, fuse_conn_info* conn);
    static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    static void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
    static void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets);
    static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
    static void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
    static void reply_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
    static void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    static void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
    static void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    static void statfs(fuse_req_t req, fuse_ino_t ino);
    static void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi);
    static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
    static void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
    static void deny_write(fuse_req_t req);  // the operations that change nothing but fail (EROFS)

    static Filesystem& self(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }
    void count(Op op) { requests_[static_cast<std::size_t>(op)].fetch_add(1, std::memory_order_relaxed); }
    static bool is_control(fuse_ino_t ino) { return ino == kControlDirIno || is_snapshot_ino(ino); }
    void count(Op op, fuse_ino_t ino) { count(is_control(ino) ? Op::control : op); }

    struct stat dir_attr(DirId d) const;
    struct stat sample_attr(SampleId id) const;
    struct stat control_dir_attr() const;
    struct stat snapshot_attr(fuse_ino_t ino, std::size_t size, ControlFile file) const;
    fuse_entry_param entry(fuse_ino_t ino, const struct stat& attr, double timeout) const;
    fuse_ino_t new_snapshot(ControlFile file, struct stat& attr, pid_t requester);
    bool is_plan(fuse_ino_t ino) const { return is_snapshot_ino(ino) && control_.file(ino) == ControlFile::plan; }
    PlanTarget resolve(std::string_view relpath) const;
    // The plan file's callbacks, called under its lock: a job's plan applied or removed.
    std::size_t apply_plan(JobId job, ParsedPlan plan);
    void remove_plan(JobId job);
    std::size_t position_of(JobId job) const;  // in its plan, as its prefetcher saw the reads
    void consumed(SampleId id, ReaderIds reader);  // a READ of `id`: the reader's job's window moves on
    // A READ's count for its job's metrics: the reader's process's, or its parent's, if either
    // holds a plan; else "none".
    void count_read(ReaderIds reader, std::size_t bytes, bool waited, std::chrono::steady_clock::duration took);
    ReaderIds reader_ids(pid_t tid);           // reader_of(tid), remembered for a second
    void revalidate_loop();                    // the revalidation thread
    void changed(SampleId id);                 // Cache::on_change: any thread, no lock of the cache held

    Cache& cache_;
    const MountOptions options_;
    const uid_t uid_;
    const gid_t gid_;
    const std::chrono::steady_clock::time_point started_;
    std::atomic<bool> no_open_{false};     // the kernel handles opens itself (set once, at init)
    std::atomic<bool> no_opendir_{false};
    ControlFolder control_;
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Op::count)> requests_{};
    // A prefetcher per job with a plan, made when its first plan is applied, gone with its plan.
    // Lock order: plan_'s lock, then prefetch_mutex_ (exclusive), then a prefetcher's own; a
    // READ takes prefetch_mutex_ shared alone. The map changes only under plan_'s lock too,
    // so the plan file's callbacks use a prefetcher after letting go of prefetch_mutex_, and
    // a prefetcher is destroyed (its threads joined) without it.
    mutable std::shared_mutex prefetch_mutex_;
    std::map<JobId, std::unique_ptr<Prefetcher>> prefetchers_;  // protected by prefetch_mutex_
    std::atomic<std::size_t> prefetcher_count_{0};               // prefetchers_.size(), read without the lock
    // Which process (and parent) each reading thread belongs to: a /proc read per thread and
    // second, not per READ.
    struct Reader {
        ReaderIds ids;
        std::chrono::steady_clock::time_point seen;
    };
    std::mutex readers_mutex_;
    std::unordered_map<pid_t, Reader> readers_;  // protected by readers_mutex_
    // Per-job READ counters for the metrics: an entry per job with a plan (made when its plan
    // is applied, gone with it), and one for every other reader. Lock order: jobs_mutex_ alone
    // (apply_plan takes it under plan_'s lock; a READ takes it shared, holding nothing else).
    struct JobCounters {
        std::atomic<std::uint64_t> reads{0}, bytes{0}, stalls{0}, stall_ns{0};
    };
    mutable std::shared_mutex jobs_mutex_;
    std::map<JobId, std::unique_ptr<JobCounters>> job_counters_;  // protected by jobs_mutex_
    std::atomic<std::size_t> job_counter_count_{0};  // job_counters_.size(), read without the lock
    JobCounters other_reads_;                                     // readers with no plan
    PlanFile plan_;  // after prefetchers_: destroyed (its timer joined) first
    // Revalidation: a thread stats the catalog round-robin (Cache::revalidate) and tells the
    // kernel to drop the pages and attributes of each sample found changed. Lock order:
    // revalidate_mutex_ alone (changed() is called with no cache lock held, and the thread
    // lets go of it before calling the cache or the kernel).
    fuse_session* session_ = nullptr;             // set before start()
    std::mutex revalidate_mutex_;
    std::condition_variable revalidate_wake_;
    std::deque<SampleId> changed_;                // protected by revalidate_mutex_: to invalidate in the kernel
    bool revalidate_stop_ = false;                // protected by revalidate_mutex_
    std::atomic<std::uint64_t> revalidated_{0};   // files statted by the pass
    std::atomic<std::uint64_t> changes_{0};       // samples found changed or gone (by the pass or a miss)
    std::atomic<std::uint64_t> passes_{0};        // full passes over the catalog done
    std::thread revalidator_;                     // last: joined (by stop()) before the rest goes
};

}  // namespace tiercache::fuse
