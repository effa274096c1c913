// A client's side of a shared cache (Cache::attach): what another process on the host sees of
// a cache that an owner (tiercache-fuse --share, tiercache serve) holds.
//
//   read: the dram tier holds it?  copy it straight from the shared segment, checked by the
//                                  slot's generation (no pin, no lock, no owner round trip)
//         otherwise                ask the owner (the channel): it reads from its slower tiers
//                                  or the origin, once for every job, and keeps it for all
// Samples read from shared memory are reported to the owner in batches (every 10 ms), so its
// plan-aware placement knows they were used. Plans go to the owner, which serves the union
// of every job's plan.
//
// The owner's death is seen within owner_timeout: its heartbeat in the segment stops, or its
// socket closes. Calls then throw OwnerGone; nothing hangs.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "catalog.hpp"
#include "record.hpp"
#include "detail/channel.hpp"
#include "detail/unique_fd.hpp"
#include "error.hpp"
#include "memory_tier.hpp"
#include "owner.hpp"
#include "segment.hpp"
#include "share.hpp"
#include "stats.hpp"

namespace tiercache {

struct AttachOptions {
    std::filesystem::path dir = "/dev/shm";                      // the owner's segment directory
    std::chrono::milliseconds owner_timeout{2000};                // a silent owner is taken for dead after this
};

class CacheClient {
public:
    // Throws OwnerGone when no owner serves `name`, std::runtime_error for a permission or
    // version mismatch (naming the file and the fix), std::invalid_argument for a bad name.
    CacheClient(std::string name, AttachOptions options) : name_(std::move(name)), options_(std::move(options)) {
        check_share_name(name_);
        paths_ = SharePaths::of(options_.dir, name_);
        Hello hello = connect(0);
        job_ = hello.job;
        owner_pid_ = hello.owner_pid;
        mapping_ = std::make_unique<SegmentMapping>(hello.segment, hello.header_offset);
        const SegmentHeader& h = mapping_->header();
        const auto* catalog_header = mapping_->at<CatalogHeader>(h.catalog_header);
        if (catalog_header == nullptr) throw std::runtime_error("segment '" + hello.segment + "': no catalog");
        const std::uint64_t n = catalog_header->sample_count;
        const auto* samples = mapping_->at<SampleRecord>(h.catalog_samples, std::max<std::uint64_t>(n, 1) * sizeof(SampleRecord));
        const auto* dirs = mapping_->at<DirRecord>(h.catalog_dirs, catalog_header->dir_count * sizeof(DirRecord));
        const auto* paths = mapping_->at<char>(h.catalog_paths, std::max<std::uint64_t>(catalog_header->path_bytes, 1));
        const std::uint64_t extents = std::max<std::uint64_t>(catalog_header->extent_count, 1);
        const auto* extent_files = mapping_->at<SampleId>(h.catalog_extents, extents * sizeof(SampleId));
        slots_ = mapping_->at<SampleSlot>(h.dram_slots, extents * sizeof(SampleSlot));
        if (!samples || !dirs || !paths || !extent_files || !slots_)
            throw std::runtime_error("segment '" + hello.segment + "' is damaged: a table lies outside the file");
        catalog_ = Catalog::view(catalog_header, samples, dirs, paths, extent_files);
        idle_.push_back(std::move(hello.fd));
        reporter_ = std::thread([this] { report_loop(); });
    }
    CacheClient(const CacheClient&) = delete;
    CacheClient& operator=(const CacheClient&) = delete;
    ~CacheClient() {
        {
            std::lock_guard lock(report_mutex_);
            stop_ = true;
        }
        report_cv_.notify_all();
        reporter_.join();
        try {
            flush_hits();  // the last ones count too
        } catch (const std::exception&) {
        }
    }

    const Catalog& catalog() const noexcept { return catalog_; }
    const std::string& name() const noexcept { return name_; }

    // Bytes [offset, offset + dest.size()) of `id` into dest; how many. Throws OwnerGone,
    // or what the owner's read threw (OriginError with its errno, UnknownSample).
    std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) {
        check_owner();
        const std::uint64_t size = catalog_.size_of(id);
        if (offset >= size || dest.empty()) return 0;
        dest = dest.first(static_cast<std::size_t>(std::min<std::uint64_t>(dest.size(), size - offset)));
        // Extent by extent from shared memory; from the first one that is not there, the owner.
        std::size_t done = 0;
        while (done < dest.size()) {
            const ExtentId e = catalog_.extent_at(id, offset + done);
            const std::uint64_t within = offset + done - catalog_.extent_start(e);
            const auto n = copy_if_resident(slots_[e], mapping_->base(), mapping_->size(), catalog_.extent_length(e), within,
                                            dest.subspan(done));
            if (!n || *n == 0) break;
            report_hit(e, *n, within);
            done += *n;
        }
        while (done < dest.size()) {
            const std::uint64_t want = std::min<std::uint64_t>(dest.size() - done, detail::kMaxReadBytes);
            std::vector<std::byte> payload;
            const detail::Frame out = request({static_cast<std::uint32_t>(detail::Op::read), 0, id, offset + done, want, 0}, {}, &payload);
            if (out.a > want || out.a != payload.size()) throw OwnerGone("cache '" + name_ + "': owner sent a malformed reply");
            std::memcpy(dest.data() + done, payload.data(), payload.size());
            done += payload.size();
            if (payload.size() < want) break;
        }
        return done;
    }

    // The owner's Cache::prefetch of record `r`, as its enum value; 0 (resident) without
    // asking, when the shared dram tier holds it already (a warm epoch's prefetches cost no
    // round trip).
    std::uint32_t prefetch(const Record& r) {
        check_owner();
        bool resident = true;
        const ExtentId first = catalog_.extent_at(r.file, r.offset);
        const ExtentId last = r.length == 0 ? first : catalog_.extent_at(r.file, r.offset + r.length - 1);
        for (ExtentId e = first; e <= last && resident; ++e)
            resident = catalog_.extent_length(e) == 0 || slots_[e].state.load() == kResident;
        if (resident) return 0;
        return static_cast<std::uint32_t>(request({static_cast<std::uint32_t>(detail::Op::prefetch), 0, r.file, r.offset, r.length, 0}).a);
    }

    // Registers this job's plan with the owner (replacing its last one).
    void set_plan(std::span<const Record> current, std::span<const Record> next) {
        check_owner();
        flush_hits();  // reads before the plan belong to the plan before
        std::vector<detail::WireRecord> wire;
        wire.reserve(current.size() + next.size());
        for (const auto& list : {current, next})
            for (const Record& r : list) wire.push_back({r.file, 0, r.offset, r.length});
        request({static_cast<std::uint32_t>(detail::Op::set_plan), 0, current.size(), next.size(), 0, 0}, std::as_bytes(std::span(wire)));
    }
    void clear_plan() {
        check_owner();
        request({static_cast<std::uint32_t>(detail::Op::clear_plan), 0, 0, 0, 0, 0});
    }

    // The owner's stats (every job's, this one's hits so far included), as the owner's
    // Cache::stats() gives them.
    Stats stats() {
        check_owner();
        std::vector<std::byte> payload;
        request({static_cast<std::uint32_t>(detail::Op::stats), 0, 0, 0, 0, 0}, {}, &payload, true);
        try {
            return stats_from_json(nlohmann::json::parse(std::string(reinterpret_cast<const char*>(payload.data()), payload.size())));
        } catch (const nlohmann::json::exception& e) {
            throw OwnerGone("cache '" + name_ + "': owner sent malformed stats: " + e.what());
        }
    }

    // Throws OwnerGone when the owner closed, or its heartbeat is older than owner_timeout.
    void check_owner() const {
        const SegmentHeader& h = mapping_->header();
        if (h.state.load(std::memory_order_acquire) == kOwnerClosed)
            throw OwnerGone("cache '" + name_ + "': its owner (pid " + std::to_string(owner_pid_) + ") closed it; attach again once it is served");
        const std::uint64_t beat = h.heartbeat_ns.load(std::memory_order_acquire);
        const std::uint64_t now = monotonic_ns();
        const auto limit = static_cast<std::uint64_t>(std::chrono::nanoseconds(options_.owner_timeout).count());
        if (now > beat && now - beat > limit)
            throw OwnerGone("cache '" + name_ + "': its owner (pid " + std::to_string(owner_pid_) + ") has not answered for " +
                            std::to_string((now - beat) / 1'000'000) + " ms: it died or hangs; attach again once it is served");
    }

private:
    struct Hello {
        detail::UniqueFd fd;
        JobId job = 0;
        std::uint64_t header_offset = 0;
        std::int64_t owner_pid = 0;
        std::string segment;
    };

    // A new connection to the owner, joining `job` (0: as a new job).
    Hello connect(JobId job) const {
        detail::UniqueFd fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        if (!fd) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
        const sockaddr_un addr = detail::socket_address(paths_.socket.string());
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            const int err = errno;
            if (err == EACCES || err == EPERM) {
                struct stat st {};
                std::string detail;
                if (::stat(paths_.socket.c_str(), &st) == 0)
                    detail = " (mode " + std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                             std::to_string(st.st_mode & 7) + ", uid " + std::to_string(st.st_uid) + ", gid " + std::to_string(st.st_gid) + ")";
                throw std::runtime_error("cache '" + name_ + "': permission denied on '" + paths_.socket.string() + "'" + detail +
                                         ": the owner must share it with a group of yours (--group)");
            }
            throw OwnerGone("cache '" + name_ + "': no owner serves it (" + paths_.socket.string() + ": " + std::strerror(err) +
                            "); start one with tiercache-fuse --share " + name_ + " or tiercache serve --name " + name_);
        }
        const detail::Frame hello{static_cast<std::uint32_t>(detail::Op::hello), 0, detail::kChannelVersion, kSegmentVersion, job, 0};
        detail::Frame out{};
        std::string text;
        if (!detail::send_frame(fd.get(), hello) || !detail::recv_exact(fd.get(), &out, sizeof out, wait_ok()) ||
            out.length > 4096 || (text.resize(out.length), !detail::recv_exact(fd.get(), text.data(), text.size(), wait_ok())))
            throw OwnerGone("cache '" + name_ + "': the owner closed the connection during hello");
        if (out.status == EPROTO) throw std::runtime_error("cache '" + name_ + "': " + text);
        if (out.status != 0) throw OwnerGone("cache '" + name_ + "': hello refused: " + text);
        return {std::move(fd), out.b, out.a, static_cast<std::int64_t>(out.c), std::move(text)};
    }

    // While waiting for the owner: go on only while it is alive.
    std::function<bool()> wait_ok() const {
        return [this] {
            if (!mapping_) return true;  // during hello: the socket's closing tells
            try {
                check_owner();
                return true;
            } catch (const OwnerGone&) {
                return false;
            }
        };
    }

    // One request and its reply on a pooled connection (one per concurrent caller, so misses
    // of several threads go to the owner in parallel). Throws what the reply carries.
    // `hits_first`: send the hits not yet reported on the same connection first, so the
    // owner counts them before it answers.
    detail::Frame request(detail::Frame in, std::span<const std::byte> payload = {}, std::vector<std::byte>* reply = nullptr,
                          bool hits_first = false) {
        in.length = payload.size();
        detail::UniqueFd fd = take_connection();
        if (hits_first) send_hits(fd.get());
        detail::Frame out{};
        std::vector<std::byte> body;
        if (!detail::send_frame(fd.get(), in, payload) || !detail::recv_exact(fd.get(), &out, sizeof out, wait_ok()) ||
            out.length > detail::kMaxReadBytes + 65536 ||
            (body.resize(out.length), !detail::recv_exact(fd.get(), body.data(), body.size(), wait_ok()))) {
            check_owner();  // the better message, when the owner is known to be gone
            throw OwnerGone("cache '" + name_ + "': lost the connection to its owner (pid " + std::to_string(owner_pid_) +
                            "): it died; attach again once it is served");
        }
        give_back(std::move(fd));
        if (out.status != 0) {
            const std::string message(reinterpret_cast<const char*>(body.data()), body.size());
            if (out.status == ENOENT) throw UnknownSample(message);
            if (out.status == E2BIG) throw std::length_error(message);
            if (out.status == EINVAL) throw std::invalid_argument(message);
            throw OriginError(out.status, message);
        }
        if (reply) *reply = std::move(body);
        return out;
    }

    detail::UniqueFd take_connection() {
        {
            std::lock_guard lock(pool_mutex_);
            if (!idle_.empty()) {
                detail::UniqueFd fd = std::move(idle_.back());
                idle_.pop_back();
                return fd;
            }
        }
        return connect(job_).fd;
    }
    void give_back(detail::UniqueFd fd) {
        std::lock_guard lock(pool_mutex_);
        idle_.push_back(std::move(fd));
    }

    // ---- what was read from shared memory, for the owner's counters and placement ---------

    void report_hit(ExtentId id, std::size_t bytes, std::uint64_t offset) {
        std::lock_guard lock(report_mutex_);
        hits_.push_back({id, static_cast<std::uint32_t>(std::min<std::size_t>(bytes, UINT32_MAX)), offset});
        if (hits_.size() >= 4096) report_cv_.notify_one();
    }

    // Sends the hits not yet reported on `fd` (one-way).
    void send_hits(int fd) {
        std::vector<detail::SharedHit> hits;
        {
            std::lock_guard lock(report_mutex_);
            hits.swap(hits_);
        }
        if (hits.empty()) return;
        const detail::Frame in{static_cast<std::uint32_t>(detail::Op::hits), 0, 0, 0, 0, hits.size() * sizeof(detail::SharedHit)};
        detail::send_frame(fd, in, std::as_bytes(std::span(hits)));  // a dead owner: the caller finds out
    }

    void flush_hits() {
        detail::UniqueFd fd = take_connection();
        send_hits(fd.get());
        give_back(std::move(fd));
    }

    // Reports hits every 10 ms (at once past 4096), so the owner's placement follows them.
    void report_loop() {
        std::unique_lock lock(report_mutex_);
        while (!stop_) {
            report_cv_.wait_for(lock, std::chrono::milliseconds(10));
            if (hits_.empty()) continue;
            lock.unlock();
            try {
                flush_hits();
            } catch (const std::exception&) {
                // The owner is gone: the next read says so.
            }
            lock.lock();
        }
    }

    const std::string name_;
    const AttachOptions options_;
    SharePaths paths_;
    JobId job_ = 0;
    std::int64_t owner_pid_ = 0;
    std::unique_ptr<SegmentMapping> mapping_;
    Catalog catalog_;
    const SampleSlot* slots_ = nullptr;        // the dram tier's, in the mapping

    std::mutex pool_mutex_;
    std::vector<detail::UniqueFd> idle_;       // protected by pool_mutex_: connections no call is using

    std::mutex report_mutex_;
    std::condition_variable report_cv_;
    std::vector<detail::SharedHit> hits_;      // protected by report_mutex_: not yet reported
    bool stop_ = false;                        // protected by report_mutex_
    std::thread reporter_;
};

}  // namespace tiercache
