// The memory that holds the cache's shared state: catalog, sample slots, counters and the
// dram tier's bytes. It is a Boost.Interprocess managed segment backed by a file (in /dev/shm
// by default, or any mappable file such as one on a DAX filesystem), so everything placed in
// it is reached by offset, never by raw pointer, and another process can map the same file.
//
// Private (one process's cache): the file is unlinked right after mapping, so nothing
// outlives the process, even on kill -9. Shared (a named cache, see share.hpp): the owner
// builds it under a temporary name and publishes it with a rename once complete, so a client
// never maps a half-built segment; clients map it with SegmentMapping, never through Boost's
// segment manager, whose internal lock a dying owner could leave held.
#pragma once
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <type_traits>
#include <unistd.h>

#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/permissions.hpp>

#include "detail/unique_fd.hpp"
#include "size.hpp"

namespace tiercache {

// Bump when the layout of anything placed in a segment changes (SegmentHeader, the catalog
// records, SampleSlot, TierCounters, OriginCounters): a process must never map a segment laid
// out by another version.
inline constexpr std::uint32_t kSegmentVersion = 4;  // 4: extents (the catalog's extents table, SampleRecord.first_extent, slots per extent)
inline constexpr std::uint32_t kSegmentMagic = 0x54434331;  // "TCC1"

enum OwnerState : std::uint32_t { kOwnerStarting = 0, kOwnerServing = 1, kOwnerClosed = 2 };

// The first object in a segment: what it is, who owns it, and where the rest lies (offsets
// from the segment's start; 0 for none). Clients find everything through it.
struct SegmentHeader {
    std::uint32_t magic = kSegmentMagic;
    std::uint32_t version = kSegmentVersion;
    std::uint64_t created_unix_ns = 0;
    std::int32_t owner_pid = 0;
    std::uint32_t reserved = 0;
    std::atomic<std::uint32_t> state{kOwnerStarting};  // OwnerState
    std::atomic<std::uint32_t> connections{0};         // client connections open now
    std::atomic<std::uint64_t> heartbeat_ns{0};        // the owner's CLOCK_MONOTONIC, renewed every 100 ms
    std::uint64_t catalog_header = 0, catalog_samples = 0, catalog_dirs = 0, catalog_paths = 0;
    std::uint64_t dram_slots = 0, dram_counters = 0, origin_counters = 0;
    std::uint64_t dram_capacity = 0;
    std::uint64_t catalog_extents = 0;
};
static_assert(sizeof(SegmentHeader) == 112 && std::is_standard_layout_v<SegmentHeader>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// CLOCK_MONOTONIC in ns: one clock for every process on the host.
inline std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

class Segment {
public:
    // A private segment of `bytes` in `dir`. Throws std::runtime_error naming the directory
    // when it is missing or has less room than asked for.
    Segment(const std::filesystem::path& dir, std::uint64_t bytes) {
        static std::atomic<unsigned> counter{0};
        create(dir / ("tiercache-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".seg"), bytes, 0600);
        std::filesystem::remove(path_);  // private: the mapping stays, the name goes
        path_.clear();
    }
    // A segment to share: made at `building` with `mode`, published later by publish_as().
    Segment(const std::filesystem::path& building, std::uint64_t bytes, ::mode_t mode) { create(building, bytes, mode); }
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;
    ~Segment() {
        if (!path_.empty()) ::unlink(path_.c_str());  // shared: the name goes with its owner
    }

    // Renames the finished segment to `name`, where clients find it (atomically replacing a
    // dead owner's).
    void publish_as(const std::filesystem::path& name) {
        if (::rename(path_.c_str(), name.c_str()) != 0)
            throw std::runtime_error("cannot publish segment '" + name.string() + "': " + std::strerror(errno));
        path_ = name;
    }

    // An array of `n` value-initialized T, found again by `name` by whoever maps the segment.
    template <class T>
    T* construct_array(const char* name, std::size_t n) {
        T* p = file_.construct<T>(name, std::nothrow)[n]();
        if (p == nullptr) throw std::runtime_error(std::string("segment too small for '") + name + "'");
        return p;
    }

    // Sample bytes: nullptr when the segment has no block that large left.
    std::byte* allocate(std::size_t bytes) noexcept {
        return static_cast<std::byte*>(file_.allocate(bytes, std::nothrow));
    }
    void deallocate(std::byte* p) noexcept { file_.deallocate(p); }

    std::uint64_t offset_of(const void* p) const noexcept {
        return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base());
    }
    std::byte* at(std::uint64_t offset) noexcept { return base() + offset; }

    SegmentHeader& header() noexcept { return *header_; }
    std::uint64_t header_offset() const noexcept { return offset_of(header_); }
    const std::filesystem::path& path() const noexcept { return path_; }
    std::uint64_t size() const noexcept { return file_.get_size(); }
    std::uint64_t free_bytes() const noexcept { return file_.get_free_memory(); }

private:
    std::byte* base() const noexcept { return static_cast<std::byte*>(file_.get_address()); }

    void create(const std::filesystem::path& path, std::uint64_t bytes, ::mode_t mode) {
        const std::filesystem::path dir = path.parent_path();
        struct statvfs vfs {};
        if (::statvfs(dir.c_str(), &vfs) != 0)
            throw std::runtime_error("segment directory '" + dir.string() + "': " + std::strerror(errno));
        const std::uint64_t room = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        // The file is sparse: pages are taken as they are written. Demand the room now, since
        // writing to a mapped page of a full tmpfs kills the process with SIGBUS.
        if (room < bytes)
            throw std::runtime_error("segment of " + format_size(bytes) + " does not fit in '" + dir.string() +
                                     "' (" + format_size(room) + " free): lower --dram or free space there");
        try {
            boost::interprocess::permissions perm;
            perm.set_permissions(static_cast<int>(mode));
            file_ = boost::interprocess::managed_mapped_file(boost::interprocess::create_only, path.c_str(), bytes, nullptr, perm);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw std::runtime_error("cannot create segment '" + path.string() + "': " + e.what());
        }
        path_ = path;
        ::chmod(path.c_str(), mode);  // the umask may have narrowed it
        header_ = file_.construct<SegmentHeader>("tiercache.header")();
        header_->created_unix_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        header_->owner_pid = static_cast<std::int32_t>(::getpid());
    }

    std::filesystem::path path_;  // empty for a private segment
    boost::interprocess::managed_mapped_file file_;
    SegmentHeader* header_ = nullptr;
};

// A client's view of a shared segment: the file mapped read-only (clients pin nothing and
// count nothing there: nothing a client does can corrupt the owner's state), checked
// against this build's format.
class SegmentMapping {
public:
    // Throws std::runtime_error naming the file: missing, not permitted (with the mode and
    // owner, so the fix is plain), or laid out by another version.
    SegmentMapping(const std::filesystem::path& path, std::uint64_t header_offset) {
        detail::UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
        if (!fd) {
            const int err = errno;
            std::string why = std::strerror(err);
            struct stat st {};
            if (err == EACCES && ::stat(path.c_str(), &st) == 0)
                why += " (mode " + octal(st.st_mode & 07777) + ", uid " + std::to_string(st.st_uid) + ", gid " +
                       std::to_string(st.st_gid) + "): the owner must share the cache with your group (--group)";
            throw std::runtime_error("cannot open segment '" + path.string() + "': " + why);
        }
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) throw std::runtime_error("segment '" + path.string() + "': " + std::strerror(errno));
        size_ = static_cast<std::uint64_t>(st.st_size);
        if (header_offset + sizeof(SegmentHeader) > size_)
            throw std::runtime_error("segment '" + path.string() + "' is smaller than its header offset says");
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED) throw std::runtime_error("cannot map segment '" + path.string() + "': " + std::strerror(errno));
        base_ = static_cast<std::byte*>(p);
        header_ = reinterpret_cast<const SegmentHeader*>(base_ + header_offset);
        if (header_->magic != kSegmentMagic || header_->version != kSegmentVersion) {
            const std::uint32_t magic = header_->magic, version = header_->version;
            ::munmap(base_, size_);
            throw std::runtime_error("segment '" + path.string() + "' has format " +
                                     (magic == kSegmentMagic ? "version " + std::to_string(version) : std::string("unknown")) +
                                     ", this build reads version " + std::to_string(kSegmentVersion) +
                                     ": use the same tiercache version as the owner");
        }
    }
    SegmentMapping(const SegmentMapping&) = delete;
    SegmentMapping& operator=(const SegmentMapping&) = delete;
    ~SegmentMapping() { ::munmap(base_, size_); }

    const SegmentHeader& header() const noexcept { return *header_; }
    // The object at `offset`, or nullptr when `bytes` of it would not lie inside the file.
    // (Lock-free atomics only load there: a plain load, which read-only pages allow.)
    template <class T>
    const T* at(std::uint64_t offset, std::uint64_t bytes = sizeof(T)) const noexcept {
        if (offset == 0 || offset > size_ || bytes > size_ - offset) return nullptr;
        return reinterpret_cast<const T*>(base_ + offset);
    }
    const std::byte* base() const noexcept { return base_; }
    std::uint64_t size() const noexcept { return size_; }

private:
    static std::string octal(unsigned v) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%04o", v);
        return buf;
    }

    std::byte* base_ = nullptr;
    std::uint64_t size_ = 0;
    const SegmentHeader* header_ = nullptr;
};

}  // namespace tiercache
