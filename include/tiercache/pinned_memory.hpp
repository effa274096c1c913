// Host memory the GPU can copy from at full speed: what the loader's batch buffers live in.
//
// For a CUDA device (TIERCACHE_HAVE_CUDA, a runtime and a device present at run time): memory
// the driver has pinned and mapped for DMA, so cudaMemcpyAsync from it is one transfer with no
// staging copy: cudaHostAlloc, or where the buffer must sit on a given NUMA node (the GPU's,
// on a host with several), mmap + mbind + cudaHostRegister; if cudaHostAlloc fails, the
// registered kind too. If neither can be had it throws: with a device present, the buffer is
// never silently pageable. For no device: page-aligned anonymous memory locked with mlock, so
// the batch cannot be swapped out under a reader; if mlock is refused (RLIMIT_MEMLOCK without
// CAP_IPC_LOCK) the memory stays pageable, and kind() and describe() say so.
#pragma once
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <utility>

#include <numa.h>
#include <numaif.h>

#include "size.hpp"

#ifdef TIERCACHE_HAVE_CUDA
#include "detail/cuda_runtime.hpp"
#endif

namespace tiercache {

enum class PinnedKind {
    none,             // an empty buffer
    cuda_host,        // cudaHostAlloc: pinned and registered with the CUDA driver
    cuda_registered,  // mmap (+ mbind to a NUMA node) + cudaHostRegister: the same for copies
    mlock,            // page-locked with mlock (no CUDA, or no device)
    pageable,         // mlock was refused: ordinary memory
};

inline const char* to_string(PinnedKind kind) {
    switch (kind) {
        case PinnedKind::none: return "none";
        case PinnedKind::cuda_host: return "cudaHostAlloc";
        case PinnedKind::cuda_registered: return "cudaHostRegister";
        case PinnedKind::mlock: return "mlock";
        case PinnedKind::pageable: return "pageable";
    }
    return "?";
}

// A CUDA call that failed. earlier(): the error was the device's before this call (a kernel's,
// sticky or still pending), so what was being done is not its cause.
class CudaError : public std::runtime_error {
public:
    CudaError(const std::string& what, int code, bool earlier) : std::runtime_error(what), code_(code), earlier_(earlier) {}
    int code() const noexcept { return code_; }  // the cudaError_t
    bool earlier() const noexcept { return earlier_; }

private:
    int code_;
    bool earlier_;
};

namespace detail {

inline std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

// The NUMA node of PCI device `bus_id` ("0000:3B:00.0", as cudaDeviceGetPCIBusId writes it)
// from sysfs, or -1 where the kernel does not know (one node, or no such device).
inline int pci_numa_node(std::string bus_id, const std::filesystem::path& devices = "/sys/bus/pci/devices") {
    for (char& c : bus_id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::ifstream in(devices / bus_id / "numa_node");
    int node = -1;
    if (!(in >> node)) return -1;
    return node < 0 ? -1 : node;
}

// NUMA nodes with memory on this host (1 without NUMA support).
inline int numa_nodes() {
    if (::numa_available() < 0) return 1;
    return std::max(1, ::numa_num_configured_nodes());
}

}  // namespace detail

// The device a loader's memory is pinned for, as chosen from LoaderOptions::device.
struct DeviceChoice {
    int device = -1;     // the CUDA device; -1: none, host memory (mlock)
    int numa_node = -1;  // the device's NUMA node where the host has several and the kernel says; else -1
    std::string how;     // in words, for the log: "device 0 (the current device)", "no CUDA device: ..."
};

// The CUDA device the current thread would use, or -1 (built without CUDA, no runtime, no
// device, or any other CUDA error); `why` gets the reason for -1.
inline int current_cuda_device(std::string* why = nullptr) {
#ifdef TIERCACHE_HAVE_CUDA
    const detail::cuda::Runtime* rt = detail::cuda::runtime();
    if (rt == nullptr) {
        if (why) *why = detail::cuda::runtime_absence();
        return -1;
    }
    int count = 0, current = -1;
    cudaError_t err = rt->GetDeviceCount(&count);
    if (err == cudaSuccess && count > 0) err = rt->GetDevice(&current);
    if (err != cudaSuccess || count <= 0) {
        if (why) *why = "no CUDA device (" + (err != cudaSuccess ? "cudaGetDeviceCount: " + detail::cuda::error_text(*rt, err)
                                                                  : std::string("cudaGetDeviceCount found 0")) + ")";
        (void)rt->GetLastError();  // clear it, so it does not surface in an unrelated call
        return -1;
    }
    return current;
#else
    if (why) *why = "built without CUDA";
    return -1;
#endif
}

namespace detail {
inline constexpr int kCurrentDevice = -1;
inline constexpr int kHostOnly = -2;
}  // namespace detail

// Resolves `asked` (an index, detail::kCurrentDevice, detail::kHostOnly) now. Throws
// std::invalid_argument for an index that is not there (no runtime, no device, or too high):
// only the current device falls back to host memory.
inline DeviceChoice choose_device(int asked) {
    DeviceChoice c;
    if (asked == detail::kHostOnly) {
        c.how = "host memory asked for (kHostOnly)";
        return c;
    }
    if (asked < detail::kHostOnly)
        throw std::invalid_argument("loader: device " + std::to_string(asked) +
                                    " is neither a device index nor kCurrentDevice (-1) nor kHostOnly (-2)");
    std::string why;
    const int current = current_cuda_device(&why);
    if (current < 0) {
        if (asked >= 0) throw std::invalid_argument("loader: device " + std::to_string(asked) + " asked for, but " + why);
        c.how = why;
        return c;
    }
#ifdef TIERCACHE_HAVE_CUDA
    const detail::cuda::Runtime& rt = *detail::cuda::runtime();
    int count = 0;
    (void)rt.GetDeviceCount(&count);
    if (asked >= count)
        throw std::invalid_argument("loader: device " + std::to_string(asked) + " is not there: this host has " +
                                    std::to_string(count) + (count == 1 ? " CUDA device (0)" : " CUDA devices (0-" + std::to_string(count - 1) + ")"));
    c.device = asked >= 0 ? asked : current;
    c.how = "device " + std::to_string(c.device) + (asked >= 0 ? " (asked for)" : " (the current device)");
    char bus[32] = {};
    if (rt.DeviceGetPCIBusId(bus, sizeof bus, c.device) == cudaSuccess) {
        const int node = detail::pci_numa_node(bus);
        if (node >= 0 && detail::numa_nodes() > 1) c.numa_node = node;
        c.how += std::string(", PCI ") + bus + (node >= 0 ? ", NUMA node " + std::to_string(node) : std::string());
    } else {
        (void)rt.GetLastError();
    }
#endif
    return c;
}

// Which memory new PinnedBuffers get, in words for a log line: "pinned memory (cudaHostAlloc,
// device 0)", "page-locked host memory (mlock; no CUDA device (...))". `note`: which device, or
// why host memory, in words, instead of the default.
inline std::string describe(PinnedKind kind, int device = -1, const std::string& note = {}) {
    switch (kind) {
        case PinnedKind::none: return "no memory";
        case PinnedKind::cuda_host:
            return "pinned memory (cudaHostAlloc, " + (note.empty() ? "device " + std::to_string(device) : note) + ")";
        case PinnedKind::cuda_registered:
            return "pinned memory (mmap + cudaHostRegister, " + (note.empty() ? "device " + std::to_string(device) : note) + ")";
        case PinnedKind::mlock: {
            std::string why = note;
            if (why.empty()) (void)current_cuda_device(&why);
            return "page-locked host memory (mlock; " + (why.empty() ? std::string("no CUDA device") : why) + ")";
        }
        case PinnedKind::pageable: {
            rlimit limit{};
            ::getrlimit(RLIMIT_MEMLOCK, &limit);
            const std::string cap = limit.rlim_cur == RLIM_INFINITY ? "unlimited" : format_size(limit.rlim_cur);
            return "pageable host memory (mlock refused: RLIMIT_MEMLOCK is " + cap + "; raise it with ulimit -l)";
        }
    }
    return "?";
}

// Where a buffer's memory is for.
struct PinnedFor {
    int device = -1;     // a CUDA device; -1: host memory (mlock)
    int numa_node = -1;  // with a device: put the pages on this node (mbind); -1: wherever
};

// A move-only buffer of `size()` bytes in the best host memory available (see above).
class PinnedBuffer {
public:
    PinnedBuffer() = default;

    // For the current CUDA device, if there is one, else host memory. Throws std::bad_alloc
    // when no memory of any kind can be had.
    explicit PinnedBuffer(std::size_t bytes) : PinnedBuffer(bytes, PinnedFor{.device = current_cuda_device()}) {}

    // For `where`. Throws std::bad_alloc when no memory can be mapped, CudaError when a device
    // is given and neither cudaHostAlloc nor cudaHostRegister works.
    PinnedBuffer(std::size_t bytes, PinnedFor where) : size_(bytes) {
        // At least one page, so that an all-empty batch still has an address to hand out.
        const std::size_t page = detail::page_size();
        mapped_ = bytes == 0 ? page : (bytes + page - 1) / page * page;
#ifdef TIERCACHE_HAVE_CUDA
        if (where.device >= 0) {
            rt_ = detail::cuda::runtime();
            if (rt_ == nullptr) throw CudaError("pinned memory for device " + std::to_string(where.device) + ": " +
                                                    detail::cuda::runtime_absence(), 0, false);
            pin_for_device(where);
            return;
        }
#else
        (void)where;
#endif
        void* p = map();
        data_ = static_cast<std::byte*>(p);
        kind_ = ::mlock(p, mapped_) == 0 ? PinnedKind::mlock : PinnedKind::pageable;
    }

    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    PinnedBuffer(PinnedBuffer&& o) noexcept { take(o); }
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        if (this != &o) {
            release();
            take(o);
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
    void* map() const {
        void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        return p;
    }

#ifdef TIERCACHE_HAVE_CUDA
    void pin_for_device(PinnedFor where) {
        const detail::cuda::Runtime& rt = *rt_;
        detail::cuda::DeviceGuard guard(rt, where.device);
        std::string failures;
        if (where.numa_node < 0) {
            void* p = nullptr;
            const cudaError_t err = rt.HostAlloc(&p, mapped_, cudaHostAllocDefault);
            if (err == cudaSuccess) {
                data_ = static_cast<std::byte*>(p);
                kind_ = PinnedKind::cuda_host;
                return;
            }
            (void)rt.GetLastError();
            failures = "cudaHostAlloc: " + detail::cuda::error_text(rt, err) + "; ";
        }
        // Mapped here, placed on the node before the first touch, then pinned where it lies.
        void* p = map();
        if (where.numa_node >= 0) {
            std::unique_ptr<bitmask, decltype(&::numa_bitmask_free)> mask(::numa_allocate_nodemask(), &::numa_bitmask_free);
            ::numa_bitmask_setbit(mask.get(), static_cast<unsigned>(where.numa_node));
            // Preferred, not bound: a full node spills over rather than failing the touch.
            (void)::mbind(p, mapped_, MPOL_PREFERRED, mask->maskp, mask->size + 1, 0);
            std::memset(p, 0, mapped_);
        }
        const cudaError_t err = rt.HostRegister(p, mapped_, cudaHostRegisterDefault);
        if (err != cudaSuccess) {
            (void)rt.GetLastError();
            ::munmap(p, mapped_);
            throw CudaError("pinned memory of " + format_size(mapped_) + " for device " + std::to_string(where.device) +
                                ": " + failures + "cudaHostRegister: " + detail::cuda::error_text(rt, err) +
                                " (not falling back to pageable memory, whose copies are staged and synchronous)",
                            static_cast<int>(err), false);
        }
        data_ = static_cast<std::byte*>(p);
        kind_ = PinnedKind::cuda_registered;
    }
#endif

    void take(PinnedBuffer& o) noexcept {
        data_ = std::exchange(o.data_, nullptr);
        size_ = std::exchange(o.size_, 0);
        mapped_ = std::exchange(o.mapped_, 0);
        kind_ = std::exchange(o.kind_, PinnedKind::none);
#ifdef TIERCACHE_HAVE_CUDA
        rt_ = std::exchange(o.rt_, nullptr);
#endif
    }

    void release() noexcept {
        if (data_ == nullptr) return;
#ifdef TIERCACHE_HAVE_CUDA
        if (kind_ == PinnedKind::cuda_host) {
            (void)rt_->FreeHost(data_);
            data_ = nullptr;
            return;
        }
        if (kind_ == PinnedKind::cuda_registered) (void)rt_->HostUnregister(data_);
#endif
        ::munmap(data_, mapped_);  // unlocks too
        data_ = nullptr;
    }

    std::byte* data_ = nullptr;
    std::size_t size_ = 0;    // what was asked for
    std::size_t mapped_ = 0;  // whole pages
    PinnedKind kind_ = PinnedKind::none;
#ifdef TIERCACHE_HAVE_CUDA
    const detail::cuda::Runtime* rt_ = nullptr;  // the runtime that pinned it (cuda kinds)
#endif
};

}  // namespace tiercache
