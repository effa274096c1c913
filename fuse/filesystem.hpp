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
#include <cstdint>
#include <memory>
#include <string>
#include <sys/stat.h>

#include <fuse_lowlevel.h>
#include <nlohmann/json.hpp>
#include <tiercache/cache.hpp>
#include <tiercache/job.hpp>
#include <tiercache/prefetcher.hpp>

#include "control_folder.hpp"
#include "inodes.hpp"
#include "jobs.hpp"
#include "metrics.hpp"
#include "plan_file.hpp"
#include "revalidator.hpp"

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

class Filesystem {
public:
    // Throws std::invalid_argument naming a bad option.
    Filesystem(OwnerCache& cache, MountOptions options);
    Filesystem(const Filesystem&) = delete;
    Filesystem& operator=(const Filesystem&) = delete;

    // Starts the plan file's timer (idle commits, jobs that ended) and the revalidation thread:
    // after fuse_daemonize, whose fork keeps no threads, and before the session loop.
    // Prefetchers start with plans.
    void start();
    // The session whose kernel caches a change invalidates (fuse_lowlevel_notify_inval_inode):
    // set before start(). stop() ends the revalidation thread; call it before the session
    // goes (also done by the destructor).
    void set_session(fuse_session* se) { revalidator_.set_session(se); }
    void stop() { revalidator_.stop(); }

    static const fuse_lowlevel_ops& operations();

    // The control files' content for a reader in job `job` (its process: process_of).
    nlohmann::ordered_json stats_json(JobId job) const;
    nlohmann::ordered_json plan_json(JobId job) const;
    std::string metrics_text() const;  // .tiercache/metrics (and the node_exporter textfile)

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

    OwnerCache& cache_;
    const MountOptions options_;
    const uid_t uid_;
    const gid_t gid_;
    const std::chrono::steady_clock::time_point started_;
    std::atomic<bool> no_open_{false};     // the kernel handles opens itself (set once, at init)
    std::atomic<bool> no_opendir_{false};
    ControlFolder control_;
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Op::count)> requests_{};
    // The last three go in reverse order: the revalidator (its thread joined, the cache's
    // on_change let go), the plan file (its timer joined: no plan is applied or removed from
    // then on), then the jobs (their prefetchers' threads end before the cache goes).
    Jobs jobs_;                // before plan_: its callbacks apply and remove the jobs' plans
    PlanFile plan_;
    Revalidator revalidator_;  // last: the thread joined before the rest goes
};

}  // namespace tiercache::fuse
