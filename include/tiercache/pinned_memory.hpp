// Host memory the GPU can copy from at full speed: what the loader's batch buffers live in.
//
// With CUDA (TIERCACHE_HAVE_CUDA) and a device present at run time, cudaHostAlloc: memory
// the driver has pinned and mapped for DMA, so cudaMemcpyAsync from it is one transfer
// with no staging copy. Otherwise page-aligned anonymous memory locked with mlock, so the
// batch cannot be swapped out under a reader; if mlock is refused (RLIMIT_MEMLOCK without
// CAP_IPC_LOCK) the memory stays pageable, and kind() and describe() say so.
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <utility>

#include "size.hpp"

#ifdef TIERCACHE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tiercache {

enum class PinnedKind {
    none,       // an empty buffer
    cuda_host,  // cudaHostAlloc: pinned and registered with the CUDA driver
    mlock,      // page-locked with mlock (no CUDA, or no device)
    pageable,   // mlock was refused: ordinary memory
};

inline const char* to_string(PinnedKind kind) {
    switch (kind) {
        case PinnedKind::none: return "none";
        case PinnedKind::cuda_host: return "cudaHostAlloc";
        case PinnedKind::mlock: return "mlock";
        case PinnedKind::pageable: return "pageable";
    }
    return "?";
}

namespace detail {

// The CUDA device that pinned buffers are made for, or -1: built without CUDA, no driver,
// no device, or any other CUDA error. Asked once per process: the answer cannot change
// under us in a way we could use, and the first CUDA call is slow (driver start-up).
inline int cuda_device() {
#ifdef TIERCACHE_HAVE_CUDA
    static const int device = [] {
        int count = 0;
        int current = -1;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0 || cudaGetDevice(&current) != cudaSuccess) {
            (void)cudaGetLastError();  // clear it, so it does not surface in an unrelated call
            return -1;
        }
        return current;
    }();
    return device;
#else
    return -1;
#endif
}

inline std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

}  // namespace detail

// Which memory new PinnedBuffers get on this host, in words for a log line:
// "pinned memory (cudaHostAlloc, device 0)", "page-locked host memory (mlock; no CUDA device)".
inline std::string describe(PinnedKind kind, int device = detail::cuda_device()) {
    switch (kind) {
        case PinnedKind::none: return "no memory";
        case PinnedKind::cuda_host: return "pinned memory (cudaHostAlloc, device " + std::to_string(device) + ")";
        case PinnedKind::mlock:
#ifdef TIERCACHE_HAVE_CUDA
            return "page-locked host memory (mlock; no CUDA device)";
#else
            return "page-locked host memory (mlock; built without CUDA)";
#endif
        case PinnedKind::pageable: {
            rlimit limit{};
            ::getrlimit(RLIMIT_MEMLOCK, &limit);
            const std::string cap = limit.rlim_cur == RLIM_INFINITY ? "unlimited" : format_size(limit.rlim_cur);
            return "pageable host memory (mlock refused: RLIMIT_MEMLOCK is " + cap + "; raise it with ulimit -l)";
        }
    }
    return "?";
}

// A move-only buffer of `size()` bytes in the best host memory available (see above).
class PinnedBuffer {
public:
    PinnedBuffer() = default;

    // Throws std::bad_alloc when no memory of any kind can be had.
    explicit PinnedBuffer(std::size_t bytes) : size_(bytes) {
        // At least one page, so that an all-empty batch still has an address to hand out.
        const std::size_t page = detail::page_size();
        mapped_ = bytes == 0 ? page : (bytes + page - 1) / page * page;
#ifdef TIERCACHE_HAVE_CUDA
        if (detail::cuda_device() >= 0) {
            void* p = nullptr;
            if (cudaHostAlloc(&p, mapped_, cudaHostAllocDefault) == cudaSuccess) {
                data_ = static_cast<std::byte*>(p);
                kind_ = PinnedKind::cuda_host;
                return;
            }
            (void)cudaGetLastError();  // out of pinned memory: fall back below
        }
#endif
        void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        data_ = static_cast<std::byte*>(p);
        kind_ = ::mlock(p, mapped_) == 0 ? PinnedKind::mlock : PinnedKind::pageable;
    }

    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    PinnedBuffer(PinnedBuffer&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, 0)),
          kind_(std::exchange(o.kind_, PinnedKind::none)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        if (this != &o) {
            release();
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
            mapped_ = std::exchange(o.mapped_, 0);
            kind_ = std::exchange(o.kind_, PinnedKind::none);
        }
        return *this;
    }
    ~PinnedBuffer() { release(); }

    std::byte* data() noexcept { return data_; }
    const std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    std::span<std::byte> span() noexcept { return {data_, size_}; }
    std::span<const std::byte> span() const noexcept { return {data_, size_}; }
    PinnedKind kind() const noexcept { return kind_; }
    explicit operator bool() const noexcept { return data_ != nullptr; }

private:
    void release() noexcept {
        if (data_ == nullptr) return;
#ifdef TIERCACHE_HAVE_CUDA
        if (kind_ == PinnedKind::cuda_host) {
            (void)cudaFreeHost(data_);
            data_ = nullptr;
            return;
        }
#endif
        ::munmap(data_, mapped_);  // unlocks too
        data_ = nullptr;
    }

    std::byte* data_ = nullptr;
    std::size_t size_ = 0;    // what was asked for
    std::size_t mapped_ = 0;  // whole pages
    PinnedKind kind_ = PinnedKind::none;
};

}  // namespace tiercache
