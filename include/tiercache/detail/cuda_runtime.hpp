// The CUDA runtime, loaded when first asked for: dlopen("libcudart.so.<major>") and dlsym of the
// few functions tiercache calls, so that nothing links libcudart and the same binary runs
// where it is absent (the loader then takes mlock'ed memory, as without a device).
//
// Where it is looked for, first found wins: $TIERCACHE_CUDART (a path; only that, when set),
// then the soname through the dynamic loader (LD_LIBRARY_PATH, ld.so.cache: the toolkit's and
// the driver packages' directories; a libcudart already loaded in the process, as PyTorch's,
// is found so), then /usr/local/cuda/lib64. The major version is the one of the headers built
// against (CUDART_VERSION): a runtime of another major version has another ABI.
//
// The function types are the headers' own (decltype), and each name is the one the headers map
// it to (cudaMemcpyAsync_ptsz under --default-stream per-thread), so no signature is retyped.
// Only with TIERCACHE_HAVE_CUDA: the headers are needed to build, never to run.
#pragma once
#ifdef TIERCACHE_HAVE_CUDA
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

namespace tiercache::detail::cuda {

// Each function: our member name, and the runtime's function (a macro for some: expanded first).
#define TIERCACHE_CUDA_FUNCTIONS(X)                    \
    X(GetDeviceCount, cudaGetDeviceCount)              \
    X(GetDevice, cudaGetDevice)                        \
    X(SetDevice, cudaSetDevice)                        \
    X(GetDeviceProperties, cudaGetDeviceProperties)    \
    X(DeviceGetPCIBusId, cudaDeviceGetPCIBusId)        \
    X(RuntimeGetVersion, cudaRuntimeGetVersion)        \
    X(DriverGetVersion, cudaDriverGetVersion)          \
    X(GetLastError, cudaGetLastError)                  \
    X(PeekAtLastError, cudaPeekAtLastError)            \
    X(GetErrorName, cudaGetErrorName)                  \
    X(GetErrorString, cudaGetErrorString)              \
    X(HostAlloc, cudaHostAlloc)                        \
    X(FreeHost, cudaFreeHost)                          \
    X(HostRegister, cudaHostRegister)                  \
    X(HostUnregister, cudaHostUnregister)              \
    X(Malloc, cudaMalloc)                              \
    X(Free, cudaFree)                                  \
    X(Memcpy, cudaMemcpy)                              \
    X(MemcpyAsync, cudaMemcpyAsync)                    \
    X(MemsetAsync, cudaMemsetAsync)                    \
    X(DeviceSynchronize, cudaDeviceSynchronize)        \
    X(StreamCreate, cudaStreamCreate)                  \
    X(StreamDestroy, cudaStreamDestroy)                \
    X(StreamSynchronize, cudaStreamSynchronize)        \
    X(EventCreateWithFlags, cudaEventCreateWithFlags)  \
    X(EventRecord, cudaEventRecord)                    \
    X(EventQuery, cudaEventQuery)                      \
    X(EventSynchronize, cudaEventSynchronize)          \
    X(EventElapsedTime, cudaEventElapsedTime)          \
    X(EventDestroy, cudaEventDestroy)

#define TIERCACHE_CUDA_STR2(x) #x
#define TIERCACHE_CUDA_STR(x) TIERCACHE_CUDA_STR2(x)  // expands a macro name (cudaMemcpyAsync_ptsz) first

// The runtime's functions, every one resolved, or the process has none (runtime() is null).
struct Runtime {
#define TIERCACHE_CUDA_MEMBER(name, fn) decltype(&::fn) name = nullptr;
    TIERCACHE_CUDA_FUNCTIONS(TIERCACHE_CUDA_MEMBER)
#undef TIERCACHE_CUDA_MEMBER
    std::string library;  // what was loaded, for the log
};

inline constexpr int kMajor = CUDART_VERSION / 1000;
inline std::string soname() { return "libcudart.so." + std::to_string(kMajor); }

struct Loaded {
    Runtime runtime;
    bool ok = false;
    std::string why;  // when not ok: what was tried and what the loader said
};

// Tries `path`; fills `out` when every function resolves.
inline bool try_load(const std::string& path, Loaded& out, std::string& why) {
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // never closed: kept for the process
    if (handle == nullptr) {
        const char* e = ::dlerror();
        why += (why.empty() ? "" : "; ") + std::string(e ? e : path + ": dlopen failed");
        return false;
    }
    Runtime rt;
    std::string missing;
#define TIERCACHE_CUDA_RESOLVE(name, fn)                                                        \
    rt.name = reinterpret_cast<decltype(rt.name)>(::dlsym(handle, TIERCACHE_CUDA_STR(fn)));     \
    if (rt.name == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(TIERCACHE_CUDA_STR(fn));
    TIERCACHE_CUDA_FUNCTIONS(TIERCACHE_CUDA_RESOLVE)
#undef TIERCACHE_CUDA_RESOLVE
    if (!missing.empty()) {
        why += (why.empty() ? "" : "; ") + path + " lacks " + missing;
        return false;
    }
    rt.library = path;
    out.runtime = std::move(rt);
    out.ok = true;
    return true;
}

inline const Loaded& loaded() {
    static const Loaded once = [] {
        Loaded l;
        std::string why;
        if (const char* env = std::getenv("TIERCACHE_CUDART"); env != nullptr && *env != '\0') {
            if (!try_load(env, l, why)) l.why = "no CUDA runtime (TIERCACHE_CUDART=" + std::string(env) + ": " + why + ")";
            return l;
        }
        for (const std::string& path : {soname(), "/usr/local/cuda/lib64/" + soname()})
            if (try_load(path, l, why)) return l;
        l.why = "no CUDA runtime (" + why + ")";
        return l;
    }();
    return once;
}

// A stand-in the tests install (a fake device on the CPU); null: the real one.
inline std::atomic<const Runtime*>& runtime_override() {
    static std::atomic<const Runtime*> rt{nullptr};
    return rt;
}

// The runtime, or null where none could be loaded (runtime_absence() says why).
inline const Runtime* runtime() {
    if (const Runtime* rt = runtime_override().load(std::memory_order_acquire)) return rt;
    const Loaded& l = loaded();
    return l.ok ? &l.runtime : nullptr;
}
inline std::string runtime_absence() { return loaded().why; }

// "cudaErrorIllegalAddress: an illegal memory access was encountered".
inline std::string error_text(const Runtime& rt, cudaError_t err) {
    const char* name = rt.GetErrorName(err);
    const char* text = rt.GetErrorString(err);
    return std::string(name ? name : "cudaError " + std::to_string(static_cast<int>(err))) + ": " + (text ? text : "?");
}

// An error that the device's earlier work (a kernel) left, which every later call returns: the
// context is unusable, and no copy queued now is the cause.
inline bool sticky(cudaError_t err) {
    switch (err) {
        case cudaErrorECCUncorrectable:
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchTimeout:
        case cudaErrorAssert:
        case cudaErrorHardwareStackError:
        case cudaErrorIllegalInstruction:
        case cudaErrorMisalignedAddress:
        case cudaErrorInvalidAddressSpace:
        case cudaErrorInvalidPc:
        case cudaErrorLaunchFailure:
            return true;
        default:
            return false;
    }
}

// Makes `device` current for its lifetime (not at all for -1), then puts the caller's back.
class DeviceGuard {
public:
    DeviceGuard(const Runtime& rt, int device) : rt_(rt) {
        if (device < 0 || rt.GetDevice(&previous_) != cudaSuccess || previous_ == device) {
            previous_ = -1;
            return;
        }
        if (rt.SetDevice(device) != cudaSuccess) previous_ = -1;
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;
    ~DeviceGuard() {
        if (previous_ >= 0) (void)rt_.SetDevice(previous_);
    }

private:
    const Runtime& rt_;
    int previous_ = -1;
};

}  // namespace tiercache::detail::cuda
#endif  // TIERCACHE_HAVE_CUDA
