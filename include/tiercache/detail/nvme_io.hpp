// The file I/O the nvme tier is made of: whole-range pread/pwrite that retry short transfers,
// block-aligned memory for O_DIRECT, space reservation with fallocate(2), and replacing a
// file atomically. Each returns an errno rather than throwing, so the tier decides what a
// failure means (a full disk stops admission; a bad read drops one copy).
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <utility>

#include "nvme_format.hpp"
#include "unique_fd.hpp"

namespace tiercache::detail {

// Memory aligned to kNvmeBlock, as O_DIRECT wants for the buffer as well as the offset.
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(std::size_t bytes) { resize(bytes); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    ~AlignedBuffer() { std::free(data_); }

    // Drops the contents; grows to at least `bytes`, rounded up to whole blocks.
    void resize(std::size_t bytes) {
        if (bytes <= size_) return;
        const std::size_t rounded = static_cast<std::size_t>(nvme_round_up(bytes));
        void* p = std::aligned_alloc(kNvmeBlock, rounded);
        if (p == nullptr) throw std::bad_alloc();
        std::free(data_);
        data_ = static_cast<std::byte*>(p);
        size_ = rounded;
    }
    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

private:
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

// This thread's bounce buffer for O_DIRECT transfers: at least `bytes`, whole blocks. It
// grows to the largest sample the thread has moved and stays, because allocating a few
// hundred KiB per read would map and unmap pages (and fault them in) on every call.
inline std::span<std::byte> nvme_bounce(std::size_t bytes) {
    thread_local AlignedBuffer buffer;
    buffer.resize(bytes);
    return {buffer.data(), static_cast<std::size_t>(nvme_round_up(bytes))};
}

// Reads exactly dest.size() bytes at `offset`. Returns 0, an errno, or ENODATA when the file
// ends first (someone truncated it under us).
inline int pread_full(int fd, std::span<std::byte> dest, std::uint64_t offset) noexcept {
    std::size_t done = 0;
    while (done < dest.size()) {
        const ssize_t n = ::pread(fd, dest.data() + done, dest.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return ENODATA;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

// Writes all of `src` at `offset`. Returns 0 or an errno (ENOSPC: the filesystem is full).
inline int pwrite_full(int fd, std::span<const std::byte> src, std::uint64_t offset) noexcept {
    std::size_t done = 0;
    while (done < src.size()) {
        const ssize_t n = ::pwrite(fd, src.data() + done, src.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

// Takes the blocks of [0, bytes) now, so a full disk shows here, once per slab, rather than
// as a failed write in the middle of serving. fallocate(2), not posix_fallocate(3): the
// latter silently falls back to writing zeros over the whole range where the filesystem
// lacks fallocate. Where it does (EOPNOTSUPP), the file is only sized (sparse) and ENOSPC can
// still come from a later write, which the tier handles too. Returns 0 or an errno.
inline int reserve_file(int fd, std::uint64_t bytes) noexcept {
    if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) == 0) return 0;
    if (errno != EOPNOTSUPP) return errno;
    return ::ftruncate(fd, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
}

// Replaces `dir`/`name` with `bytes` so that a crash at any point leaves the old file or the
// new one, never a mix: write a temp file, fsync it, rename it over the name, fsync the
// directory (the rename itself is only durable then). Throws std::runtime_error naming the path.
inline void replace_file_atomically(int dir_fd, const std::filesystem::path& dir, const std::string& name,
                                    std::span<const std::byte> bytes) {
    const std::string temp = name + ".tmp";
    auto fail = [&](const std::string& what, int err) {
        ::unlinkat(dir_fd, temp.c_str(), 0);
        throw std::runtime_error("cannot write '" + (dir / name).string() + "': " + what + ": " + std::strerror(err));
    };
    UniqueFd fd{::openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (!fd) fail("create " + temp, errno);
    if (const int err = pwrite_full(fd.get(), bytes, 0)) fail("write", err);
    if (::fsync(fd.get()) != 0) fail("fsync", errno);
    fd.reset();
    if (::renameat(dir_fd, temp.c_str(), dir_fd, name.c_str()) != 0) fail("rename", errno);
    if (::fsync(dir_fd) != 0) fail("fsync of the directory", errno);
}

}  // namespace tiercache::detail
