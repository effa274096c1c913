// The origin: the slow directory the dataset lives in. Read-only, always: nothing here opens
// it for writing. No descriptor is held per file (ImageNet has 1.28 M files and the open-file
// limit may be 20,000): each read opens, preads and closes, beneath one directory descriptor.
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
#include <unistd.h>

#include "detail/open_beneath.hpp"
#include "detail/unique_fd.hpp"
#include "error.hpp"

namespace tiercache {

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
    std::size_t read(std::string_view relpath, std::uint64_t offset, std::span<std::byte> dest,
                     AfterRead after = AfterRead::keep) {
        return read_impl(std::string(relpath), offset, dest, after);
    }

    const std::filesystem::path& root() const noexcept { return root_; }

protected:
    // A test double (a slow or failing origin) overrides this.
    virtual std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest,
                                  AfterRead after) {
        detail::UniqueFd fd{detail::open_beneath(fd_.get(), relpath, O_RDONLY | O_NOATIME)};
        if (!fd && errno == EPERM)  // O_NOATIME needs ownership (or CAP_FOWNER)
            fd = detail::UniqueFd{detail::open_beneath(fd_.get(), relpath, O_RDONLY)};
        if (!fd) fail(errno, relpath, errno == EXDEV ? "resolves outside the origin" : "cannot open");
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
        // Advice only: clean pages go, and a failure costs nothing but the memory.
        if (after == AfterRead::drop)
            (void)::posix_fadvise(fd.get(), static_cast<off_t>(offset), static_cast<off_t>(done), POSIX_FADV_DONTNEED);
        return done;
    }

    [[noreturn]] void fail(int err, const std::string& relpath, const char* what) const {
        throw OriginError(err, "origin file '" + (root_ / relpath).string() + "': " + what + ": " + std::strerror(err));
    }

private:
    std::filesystem::path root_;
    detail::UniqueFd fd_;
};

}  // namespace tiercache
