// The owner's channel: a Unix stream socket (share.hpp names it) over which clients ask the
// owner for what shared memory cannot give them: a miss read from below the dram tier or from
// the origin, a prefetch, a plan, the stats. Every message is a Frame, then `length` payload
// bytes; each request gets one reply frame, except `hits`, which is one-way.
//
//   op          request (a, b, c; payload)                 reply (a, b, c; payload)
//   hello       channel version, segment version, job (0:   header offset, job, owner pid;
//               a new one)                                 the segment's path
//   read        id, offset, length (<= kMaxReadBytes)      bytes read; the bytes
//   prefetch    id, offset, length (a record of it)        Cache::Prefetched
//   set_plan    current count, next count; the records     -
//               (WireRecord each)
//   clear_plan  -                                          -
//   hits        -; what was read from shared memory         (none)
//               (SharedHit each)
//   stats       -                                          -; the stats JSON
// A reply with status != 0 carries an errno and, as payload, the message to throw.
// The owner checks every field: a malformed frame closes that client's connection only.
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <poll.h>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <type_traits>

namespace tiercache::detail {

// Bump when a frame's layout or an op's meaning changes; owner and client must agree.
inline constexpr std::uint32_t kChannelVersion = 2;  // 2: plans and prefetches of records
inline constexpr std::uint64_t kMaxReadBytes = 16u << 20;  // one read reply; clients ask again for more

enum class Op : std::uint32_t { hello = 1, read = 2, prefetch = 3, set_plan = 4, clear_plan = 5, hits = 6, stats = 7 };

// A client's read served from the shared dram tier: the owner counts it (clients map the
// segment read-only) and tells its policy (the plan's next use, LRU's recency).
struct SharedHit {
    std::uint32_t id;      // the extent
    std::uint32_t bytes;
    std::uint64_t offset;  // within the extent: the uses starting in [offset, offset + bytes) are what it may use up
};
static_assert(sizeof(SharedHit) == 16);

// One record of a plan (record.hpp), as it crosses the channel.
struct WireRecord {
    std::uint32_t file;
    std::uint32_t reserved;  // 0
    std::uint64_t offset, length;
};
static_assert(sizeof(WireRecord) == 24 && std::is_trivially_copyable_v<WireRecord>);

struct Frame {
    std::uint32_t op = 0;
    std::int32_t status = 0;  // replies: 0, or an errno (the payload is then the message)
    std::uint64_t a = 0, b = 0, c = 0;
    std::uint64_t length = 0;  // payload bytes that follow
};
static_assert(sizeof(Frame) == 40 && std::is_trivially_copyable_v<Frame>);

// Sends all of `frame` and `payload`. False when the peer is gone (no SIGPIPE).
inline bool send_frame(int fd, const Frame& frame, std::span<const std::byte> payload = {}) {
    auto send_all = [fd](const void* data, std::size_t n) {
        const char* p = static_cast<const char*>(data);
        while (n > 0) {
            const ssize_t sent = ::send(fd, p, n, MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno == EINTR) continue;
                return false;
            }
            p += sent;
            n -= static_cast<std::size_t>(sent);
        }
        return true;
    };
    return send_all(&frame, sizeof frame) && (payload.empty() || send_all(payload.data(), payload.size()));
}

// Receives exactly `n` bytes. `wait_ok`, when given, is asked every 100 ms while nothing
// arrives and ends the wait when it says no (the owner died). False when the peer closed,
// failed, or wait_ok said no.
inline bool recv_exact(int fd, void* data, std::size_t n, const std::function<bool()>& wait_ok = {}) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
        if (wait_ok) {
            pollfd pfd{fd, POLLIN, 0};
            const int ready = ::poll(&pfd, 1, 100);
            if (ready < 0 && errno != EINTR) return false;
            if (ready <= 0) {
                if (!wait_ok()) return false;
                continue;
            }
        }
        const ssize_t got = ::recv(fd, p, n, 0);
        if (got == 0) return false;
        if (got < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += got;
        n -= static_cast<std::size_t>(got);
    }
    return true;
}

inline sockaddr_un socket_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw std::invalid_argument("socket path '" + path + "' is too long (max 107 bytes)");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

}  // namespace tiercache::detail
