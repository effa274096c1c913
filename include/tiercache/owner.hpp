// The owner's side of a shared cache: it listens on the cache's socket (share.hpp) and serves
// each client connection on a thread of its own, so one client's slow miss never holds up
// another's; it keeps the segment's heartbeat, which clients watch to learn that the owner
// died; and it drops a job's plan when the job's last connection closes, which is how the
// plans of a client killed with kill -9 are reclaimed. Clients hold no lock and no pin in
// shared memory (memory_tier.hpp: copy_if_resident), so a dying client leaves nothing stuck.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "catalog.hpp"
#include "record.hpp"
#include "detail/channel.hpp"
#include "detail/unique_fd.hpp"
#include "error.hpp"
#include "job.hpp"
#include "log.hpp"
#include "segment.hpp"
#include "share.hpp"

namespace tiercache {

// What the owner does for a client; the Cache implements it.
class OwnerService {
public:
    virtual ~OwnerService() = default;
    virtual std::size_t samples() const = 0;
    // Throw UnknownSample or OriginError as Cache::read does.
    virtual std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) = 0;
    virtual std::uint32_t prefetch(const Record& r) = 0;
    virtual void set_plan(JobId job, std::span<const Record> current, std::span<const Record> next) = 0;
    virtual void remove_plan(JobId job) = 0;
    virtual void hits(std::span<const detail::SharedHit> hits) = 0;
    virtual std::string stats_json() = 0;
    // Every few seconds, on the heartbeat thread (the cache saves its nvme index, so that a
    // restart after kill -9 finds it warm).
    virtual void every_few_seconds() = 0;
};

class OwnerChannel {
    // A request that breaks the protocol: its connection is dropped.
    struct BadRequest : std::runtime_error {
        using std::runtime_error::runtime_error;
    };

public:
    // Listens on paths.socket (replacing a dead owner's), with `access`. Throws
    // std::runtime_error naming the socket.
    OwnerChannel(OwnerService& service, Segment& segment, SharePaths paths, const ShareAccess& access)
        : service_(service), segment_(segment), paths_(std::move(paths)) {
        listen_ = detail::UniqueFd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        if (!listen_) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
        const sockaddr_un addr = detail::socket_address(paths_.socket.string());
        ::unlink(paths_.socket.c_str());  // a dead owner's: we hold the lock, so it is not a live one's
        if (::bind(listen_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
            throw std::runtime_error("cannot listen on '" + paths_.socket.string() + "': " + std::strerror(errno));
        access.apply(paths_.socket, access.socket_mode);  // before listen(): nobody connects before it is narrowed
        if (::listen(listen_.get(), 64) != 0)
            throw std::runtime_error("cannot listen on '" + paths_.socket.string() + "': " + std::strerror(errno));
        beat();  // clients that connect before start() wait in the backlog
    }

    // Starts serving: the threads, and this process's pid as the owner's. Separate from the
    // constructor for a daemon that forks in between (threads do not survive a fork).
    void start() {
        if (acceptor_.joinable()) return;
        segment_.header().owner_pid = static_cast<std::int32_t>(::getpid());
        beat();
        segment_.header().state.store(kOwnerServing);
        heartbeat_ = std::thread([this] { heartbeat_loop(); });
        housekeeper_ = std::thread([this] { housekeeping_loop(); });
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    OwnerChannel(const OwnerChannel&) = delete;
    OwnerChannel& operator=(const OwnerChannel&) = delete;

    // Tells clients the owner closed, ends every connection, and removes the socket.
    ~OwnerChannel() {
        segment_.header().state.store(kOwnerClosed);
        stop_.store(true);
        if (acceptor_.joinable()) acceptor_.join();
        if (heartbeat_.joinable()) heartbeat_.join();
        if (housekeeper_.joinable()) housekeeper_.join();
        {
            std::lock_guard lock(mutex_);
            for (auto& c : connections_) ::shutdown(c.fd.get(), SHUT_RDWR);  // wakes its thread
        }
        for (;;) {  // threads remove themselves; join each one outside the lock
            std::thread t;
            {
                std::lock_guard lock(mutex_);
                if (connections_.empty() && finished_.empty()) break;
                if (!finished_.empty()) {
                    t = std::move(finished_.back());
                    finished_.pop_back();
                }
            }
            if (t.joinable()) t.join(); else std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ::unlink(paths_.socket.c_str());
    }

    std::size_t connections() const {
        std::lock_guard lock(mutex_);
        return connections_.size();
    }
    std::size_t jobs() const {
        std::lock_guard lock(mutex_);
        return job_connections_.size();
    }

private:
    struct Connection {
        detail::UniqueFd fd;
        JobId job = 0;  // 0 until its hello
        std::thread thread;
    };

    void beat() { segment_.header().heartbeat_ns.store(monotonic_ns()); }

    // Nothing else on this thread: a beat late by owner_timeout reads as a dead owner.
    void heartbeat_loop() {
        while (!stop_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            beat();
        }
    }

    void housekeeping_loop() {
        for (int ticks = 1; !stop_.load(); ++ticks) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            reap();
            if (ticks % 50 != 0) continue;  // every 5 s
            try {
                service_.every_few_seconds();
            } catch (const std::exception& e) {
                log(LogLevel::warn, "owner: ", e.what());
            }
        }
    }

    void accept_loop() {
        while (!stop_.load()) {
            pollfd pfd{listen_.get(), POLLIN, 0};
            if (::poll(&pfd, 1, 100) <= 0) continue;
            detail::UniqueFd fd{::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC)};
            if (!fd) continue;
            std::lock_guard lock(mutex_);
            if (connections_.size() >= kMaxConnections) {  // a thread each: a runaway client must not exhaust them
                log(LogLevel::warn, "owner: refused a connection: ", kMaxConnections, " are open");
                continue;
            }
            connections_.push_back(Connection{std::move(fd), 0, {}});
            auto it = std::prev(connections_.end());
            segment_.header().connections.fetch_add(1);
            it->thread = std::thread([this, it] { serve(it); });
        }
    }

    // Joins the threads of connections that ended.
    void reap() {
        std::vector<std::thread> done;
        {
            std::lock_guard lock(mutex_);
            done.swap(finished_);
        }
        for (auto& t : done) t.join();
    }

    void serve(std::list<Connection>::iterator c) {
        const int fd = c->fd.get();
        try {
            serve_requests(*c);
        } catch (const std::exception& e) {
            log(LogLevel::warn, "owner: client connection dropped: ", e.what());
        }
        bool last = false;
        {
            std::lock_guard lock(mutex_);
            if (c->job != 0 && --job_connections_[c->job] == 0) {  // the job's last connection: its plan goes
                job_connections_.erase(c->job);
                last = true;
            }
        }
        if (last) {
            try {
                service_.remove_plan(c->job);  // unlocked: a rebuild of the keys takes a while
            } catch (const std::exception& e) {
                log(LogLevel::warn, "owner: ", e.what());
            }
        }
        (void)fd;
        std::lock_guard lock(mutex_);
        finished_.push_back(std::move(c->thread));
        connections_.erase(c);
        segment_.header().connections.fetch_sub(1);
    }

    // Answers requests until the client goes (returns) or sends garbage (throws).
    void serve_requests(Connection& c) {
        const int fd = c.fd.get();
        std::vector<std::byte> payload;
        for (;;) {
            detail::Frame in{};
            if (!detail::recv_exact(fd, &in, sizeof in)) return;  // gone, killed or not
            if (in.length > max_payload(in)) throw BadRequest("request of " + std::to_string(in.length) + " bytes refused");
            payload.resize(in.length);
            if (in.length && !detail::recv_exact(fd, payload.data(), payload.size())) return;
            if (c.job == 0 && in.op != static_cast<std::uint32_t>(detail::Op::hello)) throw BadRequest("request before hello");

            detail::Frame out{in.op, 0, 0, 0, 0, 0};
            std::span<const std::byte> reply;
            std::vector<std::byte> bytes;
            std::string text;
            auto fail = [&](int err, std::string message) {
                out.status = err;
                text = std::move(message);
                reply = std::as_bytes(std::span(text));
            };
            try {
                switch (static_cast<detail::Op>(in.op)) {
                    case detail::Op::hello: {
                        if (c.job != 0) throw BadRequest("second hello");
                        if (in.a != detail::kChannelVersion || in.b != kSegmentVersion) {
                            fail(EPROTO, "the owner speaks channel version " + std::to_string(detail::kChannelVersion) +
                                             " and segment version " + std::to_string(kSegmentVersion) + ", the client " +
                                             std::to_string(in.a) + " and " + std::to_string(in.b) +
                                             ": use the same tiercache version as the owner");
                            out.length = reply.size();
                            detail::send_frame(fd, out, reply);
                            return;
                        }
                        {
                            std::lock_guard lock(mutex_);
                            if (in.c != 0 && !job_connections_.contains(in.c)) throw BadRequest("hello for an unknown job");
                            c.job = in.c != 0 ? in.c : next_job_++;
                            ++job_connections_[c.job];
                        }
                        out.a = segment_.header_offset();
                        out.b = c.job;
                        out.c = static_cast<std::uint64_t>(::getpid());
                        text = paths_.segment.string();
                        reply = std::as_bytes(std::span(text));
                        break;
                    }
                    case detail::Op::read: {
                        check_id(in.a);
                        bytes.resize(static_cast<std::size_t>(std::min<std::uint64_t>(in.c, detail::kMaxReadBytes)));
                        const std::size_t n = service_.read(static_cast<SampleId>(in.a), in.b, bytes);
                        out.a = n;
                        reply = std::span(bytes).first(n);
                        break;
                    }
                    case detail::Op::prefetch:
                        check_id(in.a);
                        out.a = service_.prefetch({static_cast<SampleId>(in.a), in.b, in.c});
                        break;
                    case detail::Op::set_plan: {
                        if (in.a > payload.size() || in.b > payload.size() || in.length != sizeof(detail::WireRecord) * (in.a + in.b))
                            throw BadRequest("plan length does not match its counts");
                        std::vector<Record> records(static_cast<std::size_t>(in.a + in.b));
                        for (std::size_t i = 0; i < records.size(); ++i) {
                            detail::WireRecord w;
                            std::memcpy(&w, payload.data() + i * sizeof w, sizeof w);
                            records[i] = {w.file, w.offset, w.length};
                        }
                        const std::span<const Record> all(records);
                        service_.set_plan(c.job, all.first(static_cast<std::size_t>(in.a)), all.subspan(static_cast<std::size_t>(in.a)));
                        break;
                    }
                    case detail::Op::clear_plan: service_.remove_plan(c.job); break;
                    case detail::Op::hits:
                        if (in.length % sizeof(detail::SharedHit) != 0) throw BadRequest("hit list of odd length");
                        service_.hits({reinterpret_cast<const detail::SharedHit*>(payload.data()), in.length / sizeof(detail::SharedHit)});
                        continue;  // one-way
                    case detail::Op::stats:
                        text = service_.stats_json();
                        reply = std::as_bytes(std::span(text));
                        break;
                    default: throw BadRequest("unknown request " + std::to_string(in.op));
                }
            } catch (const OriginError& e) {
                fail(e.errno_value(), e.what());
            } catch (const UnknownSample& e) {
                fail(ENOENT, e.what());
            } catch (const std::length_error& e) {
                fail(E2BIG, e.what());
            } catch (const std::invalid_argument& e) {  // a record outside its file
                fail(EINVAL, e.what());
            } catch (const BadRequest&) {
                throw;  // drop the connection
            } catch (const std::exception& e) {
                fail(EIO, e.what());
            }
            out.length = reply.size();
            if (!detail::send_frame(fd, out, reply)) return;  // the client died meanwhile
        }
    }

    std::uint64_t max_payload(const detail::Frame& in) const {
        switch (static_cast<detail::Op>(in.op)) {
            // Records may repeat and many may share a file: a bound on memory, not on plans.
            case detail::Op::set_plan: return sizeof(detail::WireRecord) * (64 * static_cast<std::uint64_t>(service_.samples()) + (1u << 20));
            case detail::Op::hits: return 1u << 20;
            default: return 0;
        }
    }

    void check_id(std::uint64_t id) const {
        if (id >= service_.samples())
            throw UnknownSample("sample id " + std::to_string(id) + " out of range (catalog holds " +
                                std::to_string(service_.samples()) + ")");
    }

    static constexpr std::size_t kMaxConnections = 1024;

    OwnerService& service_;
    Segment& segment_;
    const SharePaths paths_;
    detail::UniqueFd listen_;
    std::atomic<bool> stop_{false};
    std::thread heartbeat_, housekeeper_, acceptor_;

    mutable std::mutex mutex_;                  // protects the three below and next_job_
    std::list<Connection> connections_;         // stable iterators: each thread erases its own
    std::vector<std::thread> finished_;         // threads of ended connections, to join
    std::map<JobId, std::size_t> job_connections_;
    JobId next_job_ = kFirstClientJob;
};

}  // namespace tiercache
