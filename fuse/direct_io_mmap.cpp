#include "direct_io_mmap.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <tiercache/log.hpp>

namespace tiercache::fuse {

namespace {

// Not in Debian 12's <linux/fuse.h> (protocol 7.38); named FUSE_DIRECT_IO_RELAX before 6.6.
constexpr std::uint64_t kDirectIoAllowMmap = std::uint64_t{1} << 36;
constexpr std::uint32_t kAllowMmapFlags2 = static_cast<std::uint32_t>(kDirectIoAllowMmap >> 32);

constexpr std::size_t kInitFlags2End = offsetof(fuse_init_in, flags2) + sizeof(std::uint32_t);
static_assert(offsetof(fuse_init_out, flags2) + sizeof(std::uint32_t) <= sizeof(fuse_init_out));

// The INIT exchange happens once, before any other request: after it the hooks only pass on.
std::atomic<bool> init_done{false};
std::atomic<std::uint64_t> init_unique{0};  // the INIT request awaiting its reply; 0: none
std::atomic<bool> offered{false};           // that request's flags2 had the flag

constexpr const char* kPrefix = "mmap with --kernel-cache off: ";

ssize_t read_request(int fd, void* buf, std::size_t len, void*) {
    const ssize_t n = ::read(fd, buf, len);
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header)) || init_done.load(std::memory_order_relaxed)) return n;
    const auto* bytes = static_cast<const std::byte*>(buf);
    fuse_in_header in;
    std::memcpy(&in, bytes, sizeof in);
    if (in.opcode != FUSE_INIT) return n;
    fuse_init_in init{};  // an old kernel's shorter INIT has no flags2: it offers nothing then
    std::memcpy(&init, bytes + sizeof in, std::min(static_cast<std::size_t>(n) - sizeof in, sizeof init));
    const bool extended = static_cast<std::size_t>(n) - sizeof in >= kInitFlags2End && (init.flags & FUSE_INIT_EXT);
    offered = extended && (init.flags2 & kAllowMmapFlags2);
    init_unique.store(in.unique, std::memory_order_release);
    return n;
}

// libfuse sends every reply as the header in iov[0] and, for INIT, its fuse_init_out in iov[1].
ssize_t write_reply(int fd, struct iovec* iov, int count, void*) {
    const std::uint64_t init = init_unique.load(std::memory_order_acquire);
    fuse_out_header out{};
    if (init == 0 || count != 2 || iov[0].iov_len != sizeof out) return ::writev(fd, iov, count);
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique != init || out.error != 0) return ::writev(fd, iov, count);

    fuse_init_out reply{};
    const std::size_t size = iov[1].iov_len;
    const char* refused = nullptr;
    if (!offered) {
        refused = "shared maps fail with ENODEV: this kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6 and "
                  "later do); LMDB and numpy memmaps need --kernel-cache on here";
    } else if (size < offsetof(fuse_init_out, flags2) + sizeof reply.flags2 || size > sizeof reply) {
        refused = "shared maps fail with ENODEV: libfuse's INIT reply has no flags2 to set FUSE_DIRECT_IO_ALLOW_MMAP in";
    } else {
        std::memcpy(&reply, iov[1].iov_base, size);
        if (!(reply.flags & FUSE_INIT_EXT))
            refused = "shared maps fail with ENODEV: libfuse's INIT reply leaves out flags2 (no FUSE_INIT_EXT)";
    }
    ssize_t res;
    if (refused == nullptr) {
        reply.flags2 |= kAllowMmapFlags2;
        iovec patched[2] = {iov[0], {&reply, size}};
        res = ::writev(fd, patched, 2);
    } else {
        res = ::writev(fd, iov, count);
    }
    const int err = errno;  // libfuse reads it after us
    init_unique = 0;
    init_done = true;
    if (res >= 0) {
        if (refused == nullptr) log(LogLevel::info, kPrefix, "allowed (FUSE_DIRECT_IO_ALLOW_MMAP)");
        else log(LogLevel::warn, kPrefix, refused);
    }
    errno = err;
    return res;
}

}  // namespace

bool ask_direct_io_mmap(fuse_session* se) {
    // Read and write are what libfuse does without custom I/O; splice is left out (libfuse
    // then does not offer it, and Filesystem::do_init turns it off anyway).
    static constexpr fuse_custom_io io = {.writev = write_reply, .read = read_request, .splice_receive = nullptr, .splice_send = nullptr};
    // Documented as instead of fuse_session_mount(); after it, with the descriptor it opened,
    // libfuse keeps the mountpoint and so still unmounts (3.14: it only stores fd and io).
    const int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
    if (rc != 0) {
        log(LogLevel::warn, kPrefix, "shared maps fail with ENODEV: libfuse refused custom I/O (", std::strerror(-rc), ")");
        return false;
    }
    return true;
}

}  // namespace tiercache::fuse
