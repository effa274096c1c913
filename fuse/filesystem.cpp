#include "filesystem.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

#include <tiercache/log.hpp>
#include <tiercache/version.hpp>

namespace tiercache::fuse {

namespace {

std::int64_t to_timespec_sec(std::int64_t ns) { return ns / 1'000'000'000; }
long to_timespec_nsec(std::int64_t ns) { return static_cast<long>(ns % 1'000'000'000); }

// The bytes a READ replies with from the origin when the tier keeps a sample out.
std::vector<std::byte>& scratch(std::size_t size) {
    thread_local std::vector<std::byte> buffer;
    if (buffer.size() < size) buffer.resize(size);
    return buffer;
}

}  // namespace

Filesystem::Filesystem(OwnerCache& cache, MountOptions options)
    : cache_(cache),
      options_(options),
      uid_(::getuid()),
      gid_(::getgid()),
      started_(std::chrono::steady_clock::now()),
      jobs_(cache, options_.prefetch),
      plan_(cache.catalog().size(), [this](std::string_view p) { return plan_target(cache_.catalog(), p); },
            [this](JobId job, ParsedPlan plan) { return jobs_.apply_plan(job, std::move(plan)); },
            [this](JobId job) { jobs_.remove_plan(job); }, cache.catalog().total_bytes()),
      revalidator_(cache, options_.revalidate_s) {}

void Filesystem::start() {
    plan_.start();
    revalidator_.start();
}

// ---- attributes -----------------------------------------------------------------------------

struct stat Filesystem::dir_attr(DirId d) const {
    const DirRecord& rec = cache_.catalog().dir(d);
    struct stat st {};
    st.st_ino = dir_ino(d);
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2 + rec.dir_count;
    st.st_size = 4096;
    st.st_blksize = 4096;
    st.st_uid = uid_;
    st.st_gid = gid_;
    st.st_mtim = st.st_ctim = st.st_atim = {to_timespec_sec(rec.mtime_ns), to_timespec_nsec(rec.mtime_ns)};
    return st;
}

struct stat Filesystem::sample_attr(SampleId id) const {
    const SampleRecord& rec = cache_.catalog().sample(id);
    struct stat st {};
    st.st_ino = sample_ino(id);
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(rec.size);
    st.st_blocks = static_cast<blkcnt_t>((rec.size + 511) / 512);
    st.st_blksize = 128 * 1024;  // readers that size their reads by it ask for whole READs
    st.st_uid = uid_;
    st.st_gid = gid_;
    const std::int64_t mtime = cache_.catalog().mtime_of(id);  // a rewritten file's new one once revalidated
    st.st_mtim = st.st_ctim = st.st_atim = {to_timespec_sec(mtime), to_timespec_nsec(mtime)};
    return st;
}

struct stat Filesystem::control_dir_attr() const {
    struct stat st = dir_attr(kRootDir);
    st.st_ino = kControlDirIno;
    st.st_nlink = 2;
    return st;
}

struct stat Filesystem::snapshot_attr(fuse_ino_t ino, std::size_t size, ControlFile file) const {
    struct stat st {};
    st.st_ino = ino;
    st.st_mode = S_IFREG | (file == ControlFile::plan ? 0644 : 0444);
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(size);
    st.st_blksize = 4096;
    st.st_uid = uid_;
    st.st_gid = gid_;
    ::clock_gettime(CLOCK_REALTIME, &st.st_mtim);
    st.st_ctim = st.st_atim = st.st_mtim;
    return st;
}

fuse_entry_param Filesystem::entry(fuse_ino_t ino, const struct stat& attr, double timeout) const {
    fuse_entry_param e{};
    e.ino = ino;
    e.attr = attr;
    e.attr_timeout = options_.entry_timeout_s;  // data and snapshots never change
    e.entry_timeout = timeout;
    return e;
}

// ---- the control files ----------------------------------------------------------------------

nlohmann::ordered_json Filesystem::plan_json(JobId job) const {
    return plan_.json(job, jobs_.position_of(job), cache_.stats().plan_jobs);
}

nlohmann::ordered_json Filesystem::stats_json(JobId job) const {
    nlohmann::ordered_json j = to_json(cache_.stats());
    nlohmann::ordered_json requests = nlohmann::ordered_json::object();
    for (std::size_t i = 0; i < kOpNames.size(); ++i) requests[kOpNames[i]] = requests_[i].load(std::memory_order_relaxed);
    j["fuse"] = {{"requests", requests},
                 {"kernel_cache", options_.kernel_cache},
                 {"no_open", no_open_.load()},
                 {"control_snapshots", control_.size()}};
    j["revalidation"] = revalidator_.json();
    j["origin"]["path"] = cache_.config().origin().string();
    // The cache's "plan" (active, samples and jobs: every job's), and the reader's own plan
    // as the plan file shows it (state, kind, ..., position, last_error).
    nlohmann::ordered_json& plan = j["plan"];
    const nlohmann::ordered_json mine = plan_.json(job, jobs_.position_of(job), plan.value("jobs", std::size_t{0}));
    for (const auto& [key, value] : mine.items())
        if (!plan.contains(key)) plan[key] = value;
    // Per job, the READs that reached the daemon (the same counters as the metrics').
    nlohmann::ordered_json jobs = nlohmann::ordered_json::object();
    for (const JobReads& r : jobs_.reads())
        jobs[r.job] = {{"reads", r.reads}, {"bytes", r.bytes}, {"hits", r.reads - r.stalls}, {"stalls", r.stalls},
                       {"stall_seconds", r.stall_seconds}};
    j["jobs"] = jobs;
    j["uptime_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    j["version"] = TIERCACHE_VERSION;
    return j;
}

std::string Filesystem::metrics_text() const {
    MetricsInput in;
    in.stats = cache_.stats();
    in.jobs = jobs_.reads();
    for (std::size_t i = 0; i < kOpNames.size(); ++i) in.requests.emplace_back(kOpNames[i], requests_[i].load(std::memory_order_relaxed));
    in.uptime_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    in.version = TIERCACHE_VERSION;
    in.mount = options_.mountpoint;
    return render_metrics(in);
}

fuse_ino_t Filesystem::new_snapshot(ControlFile file, struct stat& attr, pid_t requester) {
    // The writer opening the plan to read it back is done writing: it reads the plan in force.
    // Anyone else's look (another rank, an ls) must not cut a stream still arriving.
    if (file == ControlFile::plan) plan_.commit_by(requester);
    const JobId job = process_of(requester).job;  // the reader's: its own plan is what it sees
    std::string text = file == ControlFile::metrics ? metrics_text()
                       : (file == ControlFile::plan ? plan_json(job) : stats_json(job)).dump(2) + "\n";
    const std::size_t size = text.size();
    const fuse_ino_t ino = control_.add_snapshot(std::move(text), file);
    attr = snapshot_attr(ino, size, file);
    return ino;
}

// ---- operations: an errno back --------------------------------------------------------------

void Filesystem::do_init(fuse_conn_info* conn) {
    // Listings bring attributes along, always (not just when the kernel guesses it pays).
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    // Replies come from memory: writev beats splicing through a pipe here (REFERENCE.md).
    conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
    // Nothing ever changes: no need to revalidate pages against attributes.
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    // O_TRUNC must reach us as a SETATTR: with atomic O_TRUNC it would ride on the OPEN, which
    // no-open support never sends, and the kernel would cut its own view of the file alone.
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // each write of the plan reaches us at once
    no_open_ = options_.kernel_cache && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
    no_opendir_ = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
    log(LogLevel::info, "fuse: max_read ", conn->max_read, ", max_readahead ", conn->max_readahead, ", no-open ",
        no_open_.load() ? "on" : "off", ", kernel cache ", options_.kernel_cache ? "on" : "off");
}

int Filesystem::do_lookup(fuse_ino_t parent, const char* name, fuse_entry_param& out, pid_t requester) {
    const std::string_view n(name);
    if (parent == kRootIno && n == kControlDirName) {
        out = entry(kControlDirIno, control_dir_attr(), options_.entry_timeout_s);
        return 0;
    }
    if (parent == kControlDirIno) {
        ControlFile file;
        if (n == ControlFolder::kStatsName) file = ControlFile::stats;
        else if (n == ControlFolder::kPlanName) file = ControlFile::plan;
        else if (n == ControlFolder::kMetricsName) file = ControlFile::metrics;
        else return ENOENT;
        struct stat attr {};
        const fuse_ino_t ino = new_snapshot(file, attr, requester);
        out = entry(ino, attr, 0.0);  // never cached: the next open looks up a fresh snapshot
        return 0;
    }
    if (!is_dir_ino(parent)) return ENOTDIR;
    const DirId dir = dir_of(parent);
    if (dir >= cache_.catalog().dir_count()) return ESTALE;
    const auto child = cache_.catalog().find_child(dir, n);
    if (!child) {
        out = fuse_entry_param{};  // ino 0: a negative entry, cached like the others
        out.entry_timeout = options_.entry_timeout_s;
        return 0;
    }
    out = child->is_dir ? entry(dir_ino(child->index), dir_attr(child->index), options_.entry_timeout_s)
                        : entry(sample_ino(child->index), sample_attr(child->index), options_.entry_timeout_s);
    return 0;
}

int Filesystem::do_getattr(fuse_ino_t ino, struct stat& out) const {
    if (is_dir_ino(ino)) {
        if (dir_of(ino) >= cache_.catalog().dir_count()) return ESTALE;
        out = dir_attr(dir_of(ino));
    } else if (ino == kControlDirIno) {
        out = control_dir_attr();
    } else if (is_sample_ino(ino)) {
        if (!cache_.catalog().contains(sample_of(ino))) return ESTALE;
        out = sample_attr(sample_of(ino));
    } else if (auto text = control_.snapshot(ino)) {
        const ControlFile file = control_.file(ino).value_or(ControlFile::stats);
        // The plan being written has the size written so far, as the kernel counts it.
        const auto written = file == ControlFile::plan ? plan_.pending_size(ino) : std::nullopt;
        out = snapshot_attr(ino, written ? *written : text->size(), file);
    } else {
        return ESTALE;
    }
    return 0;
}

int Filesystem::do_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t offset, bool plus, std::string& out) {
    out.resize(size);
    std::size_t used = 0;
    // Adds one entry; false when the buffer is full. `next` is the offset of the entry after it.
    auto add = [&](const std::string& name, const struct stat& attr, off_t next, bool counted) {
        std::size_t need;
        if (plus) {
            // ino 0 for "."/".." and control files: attributes without a lookup reference.
            fuse_entry_param e = entry(counted ? attr.st_ino : 0, attr, options_.entry_timeout_s);
            need = fuse_add_direntry_plus(req, out.data() + used, size - used, name.c_str(), &e, next);
        } else {
            need = fuse_add_direntry(req, out.data() + used, size - used, name.c_str(), &attr, next);
        }
        if (need > size - used) return false;
        used += need;
        return true;
    };

    if (ino == kControlDirIno) {
        const struct stat self = control_dir_attr();
        const struct stat parent = dir_attr(kRootDir);
        struct stat plan = snapshot_attr(0, 0, ControlFile::plan);
        struct stat stats = snapshot_attr(0, 0, ControlFile::stats);
        struct stat metrics = snapshot_attr(0, 0, ControlFile::metrics);
        plan.st_ino = stats.st_ino = metrics.st_ino = kSnapshotBase;  // listing only; each lookup makes the real one
        const std::pair<const char*, const struct stat*> entries[] = {{".", &self},
                                                                      {"..", &parent},
                                                                      {ControlFolder::kMetricsName, &metrics},
                                                                      {ControlFolder::kPlanName, &plan},
                                                                      {ControlFolder::kStatsName, &stats}};
        for (off_t i = offset; i < static_cast<off_t>(std::size(entries)); ++i)
            if (!add(entries[i].first, *entries[i].second, i + 1, false)) break;
        out.resize(used);
        return 0;
    }
    if (!is_dir_ino(ino)) return ENOTDIR;
    const Catalog& catalog = cache_.catalog();
    const DirId d = dir_of(ino);
    if (d >= catalog.dir_count()) return ESTALE;
    const DirRecord& rec = catalog.dir(d);
    // Offsets: 0 ".", 1 "..", then the subdirectories, then the files, each in name order.
    const off_t total = 2 + static_cast<off_t>(rec.dir_count) + static_cast<off_t>(rec.sample_count);
    for (off_t i = offset; i < total; ++i) {
        bool fits;
        if (i == 0) {
            fits = add(".", dir_attr(d), 1, false);
        } else if (i == 1) {
            fits = add("..", dir_attr(rec.parent), 2, false);
        } else if (i - 2 < static_cast<off_t>(rec.dir_count)) {
            const DirId child = rec.first_dir + static_cast<DirId>(i - 2);
            fits = add(std::string(catalog.dir_name(child)), dir_attr(child), i + 1, true);
        } else {
            const SampleId child = rec.first_sample + static_cast<SampleId>(i - 2 - rec.dir_count);
            fits = add(std::string(catalog.name(child)), sample_attr(child), i + 1, true);
        }
        if (!fits) break;
    }
    out.resize(used);
    return 0;
}

int Filesystem::do_opendir(fuse_ino_t ino, fuse_file_info& fi) const {
    if (!is_dir_ino(ino) && ino != kControlDirIno) return ENOTDIR;
    if (no_opendir_) return ENOSYS;  // the kernel opens directories itself from now on
    fi.cache_readdir = 1;            // listings never change
    fi.keep_cache = 1;
    return 0;
}

int Filesystem::do_open(fuse_ino_t ino, fuse_file_info& fi) const {
    if (is_dir_ino(ino) || ino == kControlDirIno) return EISDIR;
    const bool writes = (fi.flags & O_ACCMODE) != O_RDONLY || (fi.flags & O_TRUNC);
    if (is_sample_ino(ino)) {
        if (!cache_.catalog().contains(sample_of(ino))) return ESTALE;
        if (writes) return EROFS;
    } else {
        const auto file = control_.file(ino);
        if (!file) return ESTALE;
        if (writes && *file != ControlFile::plan) return EROFS;
    }
    // Zero-message opens: the kernel opens files itself and keeps their pages. (Its later
    // opens for writing then come without a request too: WRITE and SETATTR refuse them.)
    if (no_open_) return ENOSYS;
    if (writes) {
        fi.direct_io = 1;  // the plan: every write reaches us, nothing of it is cached
    } else if (options_.kernel_cache) {
        fi.keep_cache = 1;
        fi.noflush = 1;
    } else {
        // Every read() reaches the cache; shared maps still work where INIT allowed them
        // (direct_io_mmap.cpp), their pages the kernel's.
        fi.direct_io = 1;
        fi.noflush = 1;  // a read-only open has nothing to flush at close
    }
    return 0;
}

int Filesystem::do_read(fuse_ino_t ino, std::size_t size, off_t offset, Chunk& out, std::shared_ptr<const std::string>& keep,
                        pid_t requester) {
    if (offset < 0) return EINVAL;
    if (is_snapshot_ino(ino)) {
        if (is_plan(ino)) plan_.commit_by(requester);  // the writer wants the plan in force
        keep = control_.snapshot(ino);
        if (!keep) return ESTALE;
        const auto* bytes = reinterpret_cast<const std::byte*>(keep->data());
        const std::size_t start = std::min<std::size_t>(static_cast<std::size_t>(offset), keep->size());
        out.bytes = {bytes + start, std::min(size, keep->size() - start)};
        return 0;
    }
    if (!is_sample_ino(ino)) return is_dir_ino(ino) || ino == kControlDirIno ? EISDIR : ESTALE;
    const SampleId id = sample_of(ino);
    const ReaderIds reader = jobs_.read_by(requester, id, static_cast<std::uint64_t>(offset), size);  // its job's window moves on
    try {
        const auto start = std::chrono::steady_clock::now();
        out = cache_.read_chunk(id, static_cast<std::uint64_t>(offset), std::span(scratch(size)).first(size));
        jobs_.count_read(reader, out.bytes.size(), out.waited, std::chrono::steady_clock::now() - start);
        return 0;
    } catch (const OriginError& e) {
        log(LogLevel::warn, "read of '", cache_.catalog().path(id), "' failed: ", e.what());
        // A file deleted or changed after the mount: the read fails, the name stays (the
        // catalog is a snapshot; revalidation passes a change on to the kernel).
        return e.errno_value() == ENOENT ? EIO : e.errno_value();
    } catch (const UnknownSample&) {
        return ESTALE;
    } catch (const std::exception& e) {
        log(LogLevel::error, "read of '", cache_.catalog().path(id), "' failed: ", e.what());
        return EIO;
    }
}

int Filesystem::do_statfs(struct statvfs& out) const {
    if (::statvfs(cache_.config().origin().c_str(), &out) != 0) return errno;
    out.f_files = cache_.catalog().size() + cache_.catalog().dir_count();
    out.f_ffree = out.f_favail = 0;
    out.f_bfree = out.f_bavail = 0;
    out.f_flag |= ST_RDONLY;
    return 0;
}

void Filesystem::do_forget(fuse_ino_t ino, std::uint64_t nlookup) {
    // Data inodes hold no state; a plan snapshot may hold its streams.
    if (is_snapshot_ino(ino) && control_.forget(ino, nlookup) == ControlFile::plan) plan_.forget(ino);
}

int Filesystem::do_write(fuse_ino_t ino, const char* buf, std::size_t size, off_t offset, std::size_t& written, pid_t requester) {
    if (!is_plan(ino)) return is_snapshot_ino(ino) && !control_.snapshot(ino) ? ESTALE : EROFS;
    if (offset < 0) return EINVAL;
    const Process writer = process_of(requester);  // without plan_'s lock: a read of /proc
    if (const int err = plan_.write(ino, static_cast<std::uint64_t>(offset), {buf, size}, requester, writer)) return err;
    written = size;
    return 0;
}

int Filesystem::do_setattr(fuse_ino_t ino, const struct stat& attr, int to_set, struct stat& out, pid_t requester) {
    // Only a truncation of the plan to nothing (O_TRUNC) is allowed; times that come with it
    // are ignored. Modes, owners and other sizes stay as they are: EROFS.
    const bool truncates = (to_set & FUSE_SET_ATTR_SIZE) && attr.st_size == 0 &&
                           !(to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID));
    if (!truncates || !is_plan(ino)) return EROFS;
    if (const int err = plan_.truncate(ino, requester, process_of(requester))) return err;
    return do_getattr(ino, out);
}

int Filesystem::do_fsync(fuse_ino_t ino) {
    return is_plan(ino) ? plan_.commit(ino) : 0;  // a read-only file has nothing to sync
}

// ---- thin replies ---------------------------------------------------------------------------

void Filesystem::init(void* userdata, fuse_conn_info* conn) {
    auto& fs = *static_cast<Filesystem*>(userdata);
    fs.count(Op::init);
    fs.do_init(conn);
}

void Filesystem::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Filesystem& fs = self(req);
    fs.count(Op::lookup, parent == kRootIno && std::string_view(name) == kControlDirName ? kControlDirIno : parent);
    fuse_entry_param e{};
    if (const int err = fs.do_lookup(parent, name, e, fuse_req_ctx(req)->pid)) fuse_reply_err(req, err);
    else if (fuse_reply_entry(req, &e) != 0 && e.ino != 0) fs.do_forget(e.ino, 1);  // the kernel never got it
}

void Filesystem::forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    Filesystem& fs = self(req);
    fs.count(Op::forget, ino);
    fs.do_forget(ino, nlookup);
    fuse_reply_none(req);
}

void Filesystem::forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Filesystem& fs = self(req);
    fs.count(Op::forget);
    for (size_t i = 0; i < count; ++i) fs.do_forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

void Filesystem::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Filesystem& fs = self(req);
    fs.count(Op::getattr, ino);
    struct stat st {};
    if (const int err = fs.do_getattr(ino, st)) fuse_reply_err(req, err);
    else fuse_reply_attr(req, &st, fs.options_.entry_timeout_s);
}

void Filesystem::reply_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
    Filesystem& fs = self(req);
    fs.count(plus ? Op::readdirplus : Op::readdir, ino);
    std::string buf;
    if (const int err = fs.do_readdir(req, ino, size, off, plus, buf)) fuse_reply_err(req, err);
    else fuse_reply_buf(req, buf.data(), buf.size());
}

void Filesystem::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    reply_readdir(req, ino, size, off, false);
}

void Filesystem::readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    reply_readdir(req, ino, size, off, true);
}

void Filesystem::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Filesystem& fs = self(req);
    fs.count(Op::opendir, ino);
    if (const int err = fs.do_opendir(ino, *fi)) fuse_reply_err(req, err);
    else fuse_reply_open(req, fi);
}

void Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Filesystem& fs = self(req);
    fs.count(Op::open, ino);
    if (const int err = fs.do_open(ino, *fi)) fuse_reply_err(req, err);
    else fuse_reply_open(req, fi);
}

void Filesystem::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Filesystem& fs = self(req);
    fs.count(Op::read, ino);
    Chunk chunk;                                // keeps tier bytes pinned until the reply is written
    std::shared_ptr<const std::string> keep;    // or a control snapshot alive
    if (const int err = fs.do_read(ino, size, off, chunk, keep, fuse_req_ctx(req)->pid)) fuse_reply_err(req, err);
    else fuse_reply_buf(req, reinterpret_cast<const char*>(chunk.bytes.data()), chunk.bytes.size());
}

void Filesystem::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    self(req).count(Op::release, ino);
    fuse_reply_err(req, 0);  // nothing is held per open file
}

void Filesystem::statfs(fuse_req_t req, fuse_ino_t) {
    Filesystem& fs = self(req);
    fs.count(Op::statfs);
    struct statvfs st {};
    if (const int err = fs.do_statfs(st)) fuse_reply_err(req, err);
    else fuse_reply_statfs(req, &st);
}

void Filesystem::write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
    Filesystem& fs = self(req);
    fs.count(fs.is_plan(ino) ? Op::control : Op::write_denied);
    std::size_t written = 0;
    if (const int err = fs.do_write(ino, buf, size, off, written, fuse_req_ctx(req)->pid)) fuse_reply_err(req, err);
    else fuse_reply_write(req, written);
}

void Filesystem::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
    Filesystem& fs = self(req);
    fs.count(fs.is_plan(ino) ? Op::control : Op::write_denied);
    struct stat st {};
    if (const int err = fs.do_setattr(ino, *attr, to_set, st, fuse_req_ctx(req)->pid)) fuse_reply_err(req, err);
    else fuse_reply_attr(req, &st, fs.options_.entry_timeout_s);
}

void Filesystem::fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
    Filesystem& fs = self(req);
    fs.count(Op::fsync, ino);
    fuse_reply_err(req, fs.do_fsync(ino));
}

void Filesystem::deny_write(fuse_req_t req) {
    self(req).count(Op::write_denied);
    fuse_reply_err(req, EROFS);
}

const fuse_lowlevel_ops& Filesystem::operations() {
    static const fuse_lowlevel_ops ops = [] {
        fuse_lowlevel_ops o{};
        o.init = init;
        o.lookup = lookup;
        o.forget = forget;
        o.forget_multi = forget_multi;
        o.getattr = getattr;
        o.readdir = readdir;
        o.readdirplus = readdirplus;
        o.opendir = opendir;
        o.open = open;
        o.read = read;
        o.release = release;
        o.statfs = statfs;
        // The plan file takes writes, truncation to 0 and fsync; nothing else changes (EROFS).
        o.write = write;
        o.setattr = setattr;
        o.fsync = fsync;
        o.mknod = [](fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { deny_write(req); };
        o.mkdir = [](fuse_req_t req, fuse_ino_t, const char*, mode_t) { deny_write(req); };
        o.unlink = [](fuse_req_t req, fuse_ino_t, const char*) { deny_write(req); };
        o.rmdir = [](fuse_req_t req, fuse_ino_t, const char*) { deny_write(req); };
        o.symlink = [](fuse_req_t req, const char*, fuse_ino_t, const char*) { deny_write(req); };
        o.rename = [](fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) { deny_write(req); };
        o.link = [](fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { deny_write(req); };
        o.create = [](fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { deny_write(req); };
        o.fallocate = [](fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { deny_write(req); };
        o.setxattr = [](fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { deny_write(req); };
        o.removexattr = [](fuse_req_t req, fuse_ino_t, const char*) { deny_write(req); };
        o.copy_file_range = [](fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t, fuse_file_info*, size_t,
                               int) { deny_write(req); };
        // flush is left out on purpose: libfuse answers ENOSYS and the kernel stops sending it.
        return o;
    }();
    return ops;
}

}  // namespace tiercache::fuse
