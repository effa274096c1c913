// The memory that holds the cache's shared state: catalog, sample slots, counters and the
// dram tier's bytes. It is a Boost.Interprocess managed segment backed by a file (in /dev/shm
// by default), so everything placed in it is reached by offset, never by raw pointer, and a
// later version can map the same file into other processes. For now the segment is private:
// its file is unlinked right after mapping, so nothing outlives the daemon, even on kill -9.
#pragma once
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/managed_mapped_file.hpp>

#include "size.hpp"

namespace tiercache {

// Bump when the layout of anything placed in a segment changes (SegmentHeader, the catalog
// records, SampleSlot, TierCounters, OriginCounters): a process must never map a segment laid
// out by another version.
inline constexpr std::uint32_t kSegmentVersion = 2;  // 2: TierCounters gained promotions and demotions
inline constexpr std::uint32_t kSegmentMagic = 0x54434331;  // "TCC1"

struct SegmentHeader {
    std::uint32_t magic = kSegmentMagic;
    std::uint32_t version = kSegmentVersion;
    std::uint64_t created_unix_ns = 0;
};
static_assert(sizeof(SegmentHeader) == 16);

class Segment {
public:
    // Creates a private segment of `bytes` in `dir`. Throws std::runtime_error naming the
    // directory when it is missing or has less room than asked for.
    Segment(const std::filesystem::path& dir, std::uint64_t bytes) {
        struct statvfs vfs {};
        if (::statvfs(dir.c_str(), &vfs) != 0)
            throw std::runtime_error("segment directory '" + dir.string() + "': " + std::strerror(errno));
        const std::uint64_t room = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        // The file is sparse: pages are taken as they are written. Demand the room now, since
        // writing to a mapped page of a full tmpfs kills the process with SIGBUS.
        if (room < bytes)
            throw std::runtime_error("segment of " + format_size(bytes) + " does not fit in '" + dir.string() +
                                     "' (" + format_size(room) + " free): lower --dram or free space there");
        static std::atomic<unsigned> counter{0};
        path_ = dir / ("tiercache-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".seg");
        try {
            file_ = boost::interprocess::managed_mapped_file(boost::interprocess::create_only, path_.c_str(), bytes);
        } catch (const boost::interprocess::interprocess_exception& e) {
            throw std::runtime_error("cannot create segment '" + path_.string() + "': " + e.what());
        }
        std::filesystem::remove(path_);  // private: the mapping stays, the name goes
        header_ = file_.construct<SegmentHeader>("tiercache.header")();
        header_->created_unix_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    }
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;

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

    std::uint64_t size() const noexcept { return file_.get_size(); }
    std::uint64_t free_bytes() const noexcept { return file_.get_free_memory(); }

private:
    std::byte* base() const noexcept { return static_cast<std::byte*>(file_.get_address()); }

    std::filesystem::path path_;
    boost::interprocess::managed_mapped_file file_;
    SegmentHeader* header_ = nullptr;
};

}  // namespace tiercache
