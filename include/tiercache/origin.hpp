// The origin: the slow directory the dataset lives in. Read-only, always: nothing here opens
// it for writing. No descriptor is held per file (ImageNet has 1.28 M files and the open-file
// limit may be 20,000): each read opens, preads and closes, beneath one directory descriptor.
// Consistency: a read given the catalog's FileVersion of the file (the cache's misses always
// give it) fstats the descriptor it opened before and after reading; a file that is not a
// regular file of that size and mtime any more throws OriginChanged (EIO), so the bytes of
// one read come from one version of the file, the catalogued one.
// A sample a tier keeps is read with AfterRead::drop: the kernel's copy in the page cache would
// only hold the same bytes twice (and grow outside the tiers' budgets), so it is given back.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

#include "detail/open_beneath.hpp"
#include "detail/unique_fd.hpp"
#include "error.hpp"

namespace tiercache {

// A file as the catalog knows it: what a read checks the opened file against.
struct FileVersion {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
};

// The file is not the catalogued one any more (rewritten, truncated, replaced): EIO.
class OriginChanged : public OriginError {
public:
    explicit OriginChanged(const std::string& what) : OriginError(EIO, what) {}
};

// What becomes of the origin's pages in the kernel page cache after a read.
enum class AfterRead { keep, drop };

class Origin {
public:
    // Throws std::runtime_error naming `root` when it is missing or not a directory.
    explicit Origin(std::filesystem::path root) : root_(std::move(root)) {
        fd_ = detail::UniqueFd{::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (!fd_) throw std::runtime_error("origin '" + root_.string() + "': " + std::strerror(errno));
    }
    virtual ~Origin() = default;
    Origin(const Origin&) = delete;
    Origin& operator=(const Origin&) = delete;

    // Reads up to dest.size() bytes at `offset` of `relpath`; fewer only at the end of the
    // file. Throws OriginError (with the errno) naming the file.
    // With `expect`, the file opened must be a regular file of that size and mtime before
    // and after the read, or OriginChanged is thrown (and dest may hold anything).
    std::size_t read(std::string_view relpath, std::uint64_t offset, std::span<std::byte> dest,
                     AfterRead after = AfterRead::keep, const FileVersion* expect = nullptr) {
        // Passed to the base read_impl beside its arguments, so test doubles keep their signature.
        struct Scope {
            const FileVersion* saved = expected_;
            explicit Scope(const FileVersion* e) { expected_ = e; }
            ~Scope() { expected_ = saved; }
        } scope(expect);
        return read_impl(std::string(relpath), offset, dest, after);
    }

    // The file's status now (following a symlink beneath the origin, as a read does); 0 or
    // the errno.
    int stat(std::string_view relpath, struct stat& out) { return stat_impl(std::string(relpath), out); }

    const std::filesystem::path& root() const noexcept { return root_; }

protected:
    // A test double (a slow or failing origin) overrides this.
    virtual std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest,
                                  AfterRead after) {
        detail::UniqueFd fd{detail::open_beneath(fd_.get(), relpath, O_RDONLY | O_NOATIME)};
        if (!fd && errno == EPERM)  // O_NOATIME needs ownership (or CAP_FOWNER)
            fd = detail::UniqueFd{detail::open_beneath(fd_.get(), relpath, O_RDONLY)};
        if (!fd) fail(errno, relpath, errno == EXDEV ? "resolves outside the origin" : "cannot open");
        const FileVersion* expect = expected_;
        if (expect) check_version(fd.get(), relpath, *expect, "before");
        std::size_t done = 0;
        while (done < dest.size()) {
            const ssize_t n = ::pread(fd.get(), dest.data() + done, dest.size() - done, static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                fail(errno, relpath, "read failed");
            }
            if (n == 0) break;
            done += static_cast<std::size_t>(n);
        }
        if (expect) check_version(fd.get(), relpath, *expect, "after");
        // Advice only: clean pages go, and a failure costs nothing but the memory.
        if (after == AfterRead::drop)
            (void)::posix_fadvise(fd.get(), static_cast<off_t>(offset), static_cast<off_t>(done), POSIX_FADV_DONTNEED);
        return done;
    }

    virtual int stat_impl(const std::string& relpath, struct stat& out) {
        detail::UniqueFd fd{detail::open_beneath(fd_.get(), relpath, O_PATH)};
        if (!fd) return errno;
        return ::fstat(fd.get(), &out) == 0 ? 0 : errno;
    }

    // Throws OriginChanged unless `fd` is a regular file of the expected size and mtime.
    void check_version(int fd, const std::string& relpath, const FileVersion& expect, const char* when) const {
        struct stat st {};
        if (::fstat(fd, &st) != 0) fail(errno, relpath, "cannot stat");
        const std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
        if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) == expect.size && mtime == expect.mtime_ns) return;
        throw OriginChanged("origin file '" + (root_ / relpath).string() + "' changed since the scan (" + when +
                            " the read: " + (S_ISREG(st.st_mode) ? std::to_string(st.st_size) + " bytes, mtime " + std::to_string(mtime)
                                                                 : std::string("not a regular file")) +
                            "; catalogued " + std::to_string(expect.size) + " bytes, mtime " + std::to_string(expect.mtime_ns) + ")");
    }

    [[noreturn]] void fail(int err, const std::string& relpath, const char* what) const {
        throw OriginError(err, "origin file '" + (root_ / relpath).string() + "': " + what + ": " + std::strerror(err));
    }

private:
    static inline thread_local const FileVersion* expected_ = nullptr;  // read()'s `expect`, for read_impl
    std::filesystem::path root_;
    detail::UniqueFd fd_;
};

}  // namespace tiercache
