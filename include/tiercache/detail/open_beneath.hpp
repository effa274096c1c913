// Opens a path relative to a directory without ever leaving it: symlinks and ".." that
// would escape fail with EXDEV. This is what keeps the origin the only thing we serve.
#pragma once
#include <cerrno>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>

namespace tiercache::detail {

// Returns an fd, or -1 with errno set (EXDEV: the path resolves outside `dirfd`).
inline int open_beneath(int dirfd, const std::string& relpath, int flags) {
    struct open_how how {};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    int fd;
    do {
        fd = static_cast<int>(::syscall(SYS_openat2, dirfd, relpath.c_str(), &how, sizeof how));
    } while (fd < 0 && errno == EAGAIN);  // a concurrent rename raced the resolution: retry
    return fd;
}

}  // namespace tiercache::detail
