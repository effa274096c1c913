// How a cache is shared among the processes of a host. A named cache is three files in the
// segment directory (/dev/shm by default):
//   tiercache-NAME.seg    the segment: catalog, slots, counters, dram bytes (segment.hpp)
//   tiercache-NAME.sock   the owner's channel: misses, plans, stats (channel.hpp)
//   tiercache-NAME.lock   held (flock) by the owner while it lives; the kernel lets go when
//                         it dies, even on kill -9, so a restarted owner can take over
// The owner is the process that builds the cache (tiercache-fuse --share NAME, or tiercache
// serve); clients join with Cache::attach(NAME). The files are mode 0600: only the owner's
// user may join, unless the owner names a group (--group): then the segment is 0640 (clients
// map it read-only: no client can corrupt what the owner relies on) and the socket 0660.
#pragma once
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <grp.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "detail/unique_fd.hpp"

namespace tiercache {

// Throws std::invalid_argument unless `name` is 1-64 of [A-Za-z0-9._-], not starting with '.'
// (it becomes part of file names).
inline void check_share_name(std::string_view name) {
    bool ok = !name.empty() && name.size() <= 64 && name.front() != '.';
    for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
    if (!ok)
        throw std::invalid_argument("share name '" + std::string(name) +
                                    "': use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'");
}

struct SharePaths {
    std::filesystem::path segment, socket, lock;

    static SharePaths of(const std::filesystem::path& dir, std::string_view name) {
        const std::string stem = "tiercache-" + std::string(name);
        return {dir / (stem + ".seg"), dir / (stem + ".sock"), dir / (stem + ".lock")};
    }
};

// Who may join: the owner's user only, or also a group.
struct ShareAccess {
    ::mode_t file_mode = 0600;    // the segment and the lock: clients only read them
    ::mode_t socket_mode = 0600;  // connecting takes write permission
    std::optional<::gid_t> group;

    // Throws std::invalid_argument when the group does not exist.
    static ShareAccess for_group(const std::string& name) {
        if (name.empty()) return {};
        std::vector<char> buf(16384);
        struct group entry {};
        struct group* found = nullptr;
        const int err = ::getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
        if (found == nullptr)
            throw std::invalid_argument("group '" + name + "': " + (err != 0 ? std::strerror(err) : "no such group"));
        return {0640, 0660, found->gr_gid};
    }

    // Gives `path` this access (`mode`: file_mode or socket_mode). Throws std::runtime_error
    // naming the path.
    void apply(const std::filesystem::path& path, ::mode_t mode) const {
        if (group && ::chown(path.c_str(), static_cast<::uid_t>(-1), *group) != 0)
            throw std::runtime_error("cannot give '" + path.string() + "' to group " + std::to_string(*group) + ": " + std::strerror(errno));
        if (::chmod(path.c_str(), mode) != 0)
            throw std::runtime_error("cannot set the mode of '" + path.string() + "': " + std::strerror(errno));
    }
};

// Removes the files of shared caches in `dir` whose owner died without closing (kill -9):
// a segment there holds its memory until someone does. A share is stale when its lock file
// is not locked; the removal happens under that lock, so no owner can be starting on it (an
// owner that opened the lock file before it went sees that and starts over: OwnerLock).
// Returns how many were removed.
inline std::size_t reap_stale_shares(const std::filesystem::path& dir) {
    std::size_t reaped = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        const std::string file = entry.path().filename().string();
        if (!file.starts_with("tiercache-") || !file.ends_with(".lock")) continue;
        const std::string name = file.substr(10, file.size() - 15);
        detail::UniqueFd fd{::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
        if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // alive, or not ours to judge
        const SharePaths paths = SharePaths::of(dir, name);
        ::unlink(paths.segment.c_str());
        ::unlink(paths.socket.c_str());
        ::unlink(paths.lock.c_str());
        ++reaped;
    }
    return reaped;
}

// The owner's claim on a name, for as long as it lives.
class OwnerLock {
public:
    // Throws std::runtime_error when another live process owns `name` (naming its pid).
    OwnerLock(const SharePaths& paths, std::string_view name, const ShareAccess& access) : path_(paths.lock) {
        for (;;) {
            fd_ = detail::UniqueFd{::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, access.file_mode)};
            if (!fd_) throw std::runtime_error("cannot open '" + path_.string() + "': " + std::strerror(errno));
            if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
                char pid[32] = {};
                const ssize_t n = ::pread(fd_.get(), pid, sizeof pid - 1, 0);
                throw std::runtime_error("cache '" + std::string(name) + "' is already served" +
                                         (n > 0 ? " by pid " + std::string(pid, static_cast<std::size_t>(n)) : std::string()) +
                                         " (" + path_.string() + " is locked): attach to it, or pick another name");
            }
            // The owner before may have removed the file between our open and our lock: the
            // lock counts only on the file the name still stands for.
            struct stat held {}, named {};
            if (::fstat(fd_.get(), &held) == 0 && ::stat(path_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
                held.st_dev == named.st_dev)
                break;
        }
        note_pid();
        access.apply(path_, access.file_mode);
    }

    // Writes this process's pid into the lock file, for the message a second owner gets
    // (again after a daemon's fork: the lock passes to the child).
    void note_pid() {
        const std::string pid = std::to_string(::getpid());
        if (::ftruncate(fd_.get(), 0) != 0 || ::pwrite(fd_.get(), pid.data(), pid.size(), 0) < 0) {
            // Only informational: the lock itself is what counts.
        }
    }
    OwnerLock(const OwnerLock&) = delete;
    OwnerLock& operator=(const OwnerLock&) = delete;
    ~OwnerLock() { ::unlink(path_.c_str()); }  // before fd_ closes: a newcomer that opened it retries

private:
    std::filesystem::path path_;
    detail::UniqueFd fd_;  // flock held while open
};

}  // namespace tiercache
