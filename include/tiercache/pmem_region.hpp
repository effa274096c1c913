// The pmem tier's memory (`--pmem DIR:SIZE`): persistent memory reached through a directory on
// a DAX filesystem (fsdax), or any directory at all where there is none, which is how it is
// reached on hosts without PMEM. Two ways to it, the same blocks either way:
//   - a file we map ourselves (the default): one file of SIZE in DIR, reserved with fallocate,
//     mapped MAP_SHARED (direct access to the media on DAX, through the page cache elsewhere)
//     and carved up by a Boost.Interprocess allocator. The tier is a cache, so nothing needs
//     to persist: the file has no name from the moment it is made.
//   - memkind's pmem kind, when asked for and built with memkind: memkind grows a temporary
//     file in DIR and allocates from it with its own jemalloc arenas.
// memkind is not the default: memkind 1.14 (Debian's; upstream is discontinued) crashed with
// SIGSEGV inside memkind_arena_malloc in our tests once a pmem kind had run full and several
// threads then allocated from it, which is the steady state of a cache tier. With one arena
// per kind (MEMKIND_ARENA_NUM_PER_KIND=1) it did not; the mapped file never did.
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>

#include "detail/unique_fd.hpp"
#include "log.hpp"
#include "memory_region.hpp"
#include "size.hpp"

#if TIERCACHE_HAVE_MEMKIND
#include "detail/memkind.hpp"
#endif

namespace tiercache {

namespace detail {

// An allocator over memory we mapped, with its bookkeeping inside that memory. Boost's own
// managed_external_buffer takes no lock (null_mutex_family); tiers allocate from many threads.
using LockedExternalHeap = boost::interprocess::basic_managed_external_buffer<
    char, boost::interprocess::rbtree_best_fit<boost::interprocess::mutex_family>, boost::interprocess::iset_index>;

}  // namespace detail

class PmemRegion final : public MemoryRegion {
public:
    enum class Backend {
        file,     // a file mapped here
        memkind,  // memkind's pmem kind; a mapped file, with a log line saying why, where this
                  // build has no memkind or memkind refuses DIR
    };

    // A region of `bytes` in `dir`. Throws std::runtime_error naming the directory when it is
    // missing, not a directory, or has less room than `bytes`; std::invalid_argument for 0 bytes.
    PmemRegion(const std::filesystem::path& dir, std::uint64_t bytes, Backend backend = Backend::file)
        : dir_(dir), capacity_(bytes) {
        if (bytes == 0) throw std::invalid_argument("pmem region in '" + dir.string() + "': size is 0");
        check_room();
        if (backend == Backend::memkind) {
#if TIERCACHE_HAVE_MEMKIND
            try {
                kind_ = std::make_unique<detail::MemkindPmemKind>(dir_, bytes);
                return;
            } catch (const std::runtime_error& e) {
                log(LogLevel::warn, "pmem tier: memkind has no pmem kind for '", dir_.string(), "' (", e.what(),
                    "); mapping a file there instead");
            }
#else
            log(LogLevel::warn, "pmem tier: built without memkind (TIERCACHE_WITH_MEMKIND=OFF); mapping a file in '",
                dir_.string(), "' instead of memkind's pmem kind");
#endif
        }
        map_file();
    }
    PmemRegion(const PmemRegion&) = delete;
    PmemRegion& operator=(const PmemRegion&) = delete;
    ~PmemRegion() override {
        heap_.reset();  // only bookkeeping inside the mapping: nothing to run before unmapping
        if (base_ != nullptr) ::munmap(base_, capacity_);
    }

    // nullptr for 0 bytes, or when no block that large is left. Thread-safe.
    std::byte* allocate(std::size_t bytes) noexcept override {
        if (bytes == 0) return nullptr;
#if TIERCACHE_HAVE_MEMKIND
        if (kind_) return static_cast<std::byte*>(kind_->allocate(bytes));
#endif
        return static_cast<std::byte*>(heap_->allocate(bytes, std::nothrow));
    }
    void deallocate(std::byte* block) noexcept override {
        if (block == nullptr) return;
#if TIERCACHE_HAVE_MEMKIND
        if (kind_) return kind_->deallocate(block);
#endif
        heap_->deallocate(block);
    }

    std::string describe() const override {
        const std::string where = "'" + dir_.string() + "' (" + format_size(capacity_) + ")";
        if (backend() == Backend::memkind) return "memkind pmem kind on " + where;
        return "file on " + where + " mapped MAP_SHARED, " +
               (direct_access_ ? "direct access (DAX)" : "through the page cache (not a DAX filesystem)");
    }

    // The way taken: Backend::memkind or Backend::file.
    Backend backend() const noexcept {
#if TIERCACHE_HAVE_MEMKIND
        if (kind_) return Backend::memkind;
#endif
        return Backend::file;
    }
    // A mapped file on a DAX filesystem: loads and stores reach the media, no page cache.
    bool direct_access() const noexcept { return direct_access_; }
    std::uint64_t capacity() const noexcept { return capacity_; }
    const std::filesystem::path& dir() const noexcept { return dir_; }

private:
    // Demanded up front for both ways: memkind grows its file only as it allocates, and a
    // tier that claims more than its filesystem holds would fail much later, mid-epoch.
    void check_room() const {
        struct stat st {};
        if (::stat(dir_.c_str(), &st) != 0)
            throw std::runtime_error("pmem directory '" + dir_.string() + "': " + std::strerror(errno));
        if (!S_ISDIR(st.st_mode)) throw std::runtime_error("pmem directory '" + dir_.string() + "': not a directory");
        struct statvfs vfs {};
        if (::statvfs(dir_.c_str(), &vfs) != 0)
            throw std::runtime_error("pmem directory '" + dir_.string() + "': " + std::strerror(errno));
        const std::uint64_t room = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        if (room < capacity_) throw does_not_fit(room);
    }

    std::runtime_error does_not_fit(std::uint64_t room) const {
        return std::runtime_error("pmem region of " + format_size(capacity_) + " does not fit in '" + dir_.string() +
                                  "' (" + format_size(room) + " free): lower the pmem size or free space there");
    }

    void map_file() {
        std::string name = (dir_ / ("tiercache-pmem-" + std::to_string(::getpid()) + "-XXXXXX")).string();
        detail::UniqueFd fd(::mkostemp(name.data(), O_CLOEXEC));
        if (!fd) throw std::runtime_error("cannot create a file in pmem directory '" + dir_.string() + "': " + std::strerror(errno));
        // Nameless at once (the descriptor, then the mapping, keep the file): nothing is left in
        // the directory, even after kill -9.
        ::unlink(name.c_str());
        // Reserve every block now: a store to a mapped page the filesystem cannot back is a SIGBUS.
        if (const int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(capacity_)); err != 0) {
            if (err == ENOSPC) {
                struct statvfs vfs {};
                ::statvfs(dir_.c_str(), &vfs);
                throw does_not_fit(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize);
            }
            throw std::runtime_error("cannot reserve " + format_size(capacity_) + " in pmem directory '" + dir_.string() +
                                     "': " + std::strerror(err));
        }
        struct statx stx {};
        if (::statx(fd.get(), "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0)
            direct_access_ = (stx.stx_attributes_mask & STATX_ATTR_DAX) && (stx.stx_attributes & STATX_ATTR_DAX);
        void* base = ::mmap(nullptr, capacity_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (base == MAP_FAILED)
            throw std::runtime_error("cannot map " + format_size(capacity_) + " of pmem directory '" + dir_.string() +
                                     "': " + std::strerror(errno));
        try {
            heap_.emplace(boost::interprocess::create_only, base, capacity_);
        } catch (const boost::interprocess::interprocess_exception& e) {
            ::munmap(base, capacity_);
            throw std::runtime_error("pmem region of " + format_size(capacity_) + " in '" + dir_.string() +
                                     "': cannot place an allocator in it: " + e.what());
        }
        base_ = base;
    }

    std::filesystem::path dir_;
    std::uint64_t capacity_ = 0;
    // The mapped-file way: the mapping, and the allocator whose bookkeeping lives inside it.
    void* base_ = nullptr;
    std::optional<detail::LockedExternalHeap> heap_;
    bool direct_access_ = false;
#if TIERCACHE_HAVE_MEMKIND
    std::unique_ptr<detail::MemkindPmemKind> kind_;  // the memkind way
#endif
};

}  // namespace tiercache
