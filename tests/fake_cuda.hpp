// A CUDA device on the CPU, for the loader's tests where there is no GPU: installed in place of
// the runtime (detail::cuda::runtime_override) while a FakeCuda lives. One device; one queue for
// every stream, run in order by a worker thread, whose copies read their source only after a
// delay: a ring buffer refilled before its copy was done would show as wrong bytes on the device.
// Errors can be injected: a sticky one (as a faulted kernel leaves), or failing event waits.
#pragma once
#ifdef TIERCACHE_HAVE_CUDA
#include <tiercache/detail/cuda_runtime.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace test {

class FakeCuda {
public:
    explicit FakeCuda(std::chrono::microseconds copy_delay = std::chrono::microseconds(300)) : delay_(copy_delay) {
        instance() = this;
        worker_ = std::thread([this] { work(); });
        rt_.library = "fake";
        rt_.GetDeviceCount = [](int* n) { *n = 1; return cudaSuccess; };
        rt_.GetDevice = [](int* d) { *d = current(); return cudaSuccess; };
        rt_.SetDevice = [](int d) { return d == 0 ? (current() = d, cudaSuccess) : fail(cudaErrorInvalidDevice); };
        rt_.GetDeviceProperties = [](cudaDeviceProp* p, int) {
            *p = cudaDeviceProp{};
            std::strcpy(p->name, "fake device");
            return cudaSuccess;
        };
        rt_.DeviceGetPCIBusId = [](char* bus, int len, int) {
            std::strncpy(bus, "0000:00:00.0", static_cast<std::size_t>(len));
            return cudaSuccess;
        };
        rt_.RuntimeGetVersion = [](int* v) { *v = CUDART_VERSION; return cudaSuccess; };
        rt_.DriverGetVersion = [](int* v) { *v = CUDART_VERSION; return cudaSuccess; };
        rt_.PeekAtLastError = [] {
            const int sticky = instance()->sticky.load();
            return static_cast<cudaError_t>(sticky ? sticky : last_error());
        };
        rt_.GetLastError = [] {
            const cudaError_t e = instance()->rt_.PeekAtLastError();
            last_error() = 0;
            return e;
        };
        rt_.GetErrorName = [](cudaError_t e) -> const char* {
            switch (e) {
                case cudaSuccess: return "cudaSuccess";
                case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
                case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
                case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
                default: return "cudaErrorFake";
            }
        };
        rt_.GetErrorString = [](cudaError_t) -> const char* { return "injected by the fake device"; };
        rt_.HostAlloc = [](void** p, std::size_t n, unsigned) {
            *p = std::aligned_alloc(4096, (n + 4095) / 4096 * 4096);
            ++instance()->host_allocs;
            return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
        };
        rt_.FreeHost = [](void* p) { std::free(p); return cudaSuccess; };
        rt_.HostRegister = [](void*, std::size_t, unsigned) { return cudaSuccess; };
        rt_.HostUnregister = [](void*) { return cudaSuccess; };
        rt_.Malloc = [](void** p, std::size_t n) {
            *p = std::malloc(n == 0 ? 1 : n);
            return cudaSuccess;
        };
        rt_.Free = [](void* p) { std::free(p); return cudaSuccess; };
        rt_.Memcpy = [](void* dst, const void* src, std::size_t n, cudaMemcpyKind) {
            instance()->drain();
            std::memcpy(dst, src, n);
            return cudaSuccess;
        };
        rt_.MemcpyAsync = [](void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
            FakeCuda& f = *instance();
            if (const int sticky = f.sticky.load()) return fail(static_cast<cudaError_t>(sticky));
            if (dst == nullptr && n > 0) return fail(cudaErrorInvalidValue);
            f.enqueue([&f, dst, src, n] {
                std::this_thread::sleep_for(f.delay_);  // the copy engine reads the source late
                std::memcpy(dst, src, n);
            });
            return cudaSuccess;
        };
        rt_.MemsetAsync = [](void* dst, int value, std::size_t n, cudaStream_t) {
            instance()->enqueue([=] { std::memset(dst, value, n); });
            return cudaSuccess;
        };
        rt_.DeviceSynchronize = [] { instance()->drain(); return cudaSuccess; };
        rt_.StreamCreate = [](cudaStream_t* s) {
            *s = reinterpret_cast<cudaStream_t>(new char);
            return cudaSuccess;
        };
        rt_.StreamDestroy = [](cudaStream_t s) { delete reinterpret_cast<char*>(s); return cudaSuccess; };
        rt_.StreamSynchronize = [](cudaStream_t) { instance()->drain(); return cudaSuccess; };
        rt_.EventCreateWithFlags = [](cudaEvent_t* e, unsigned) {
            *e = reinterpret_cast<cudaEvent_t>(new std::uint64_t(0));
            ++instance()->events_made;
            return cudaSuccess;
        };
        rt_.EventRecord = [](cudaEvent_t e, cudaStream_t) {
            FakeCuda& f = *instance();
            std::lock_guard lock(f.mutex_);
            *ticket(e) = f.enqueued_;  // done once everything queued so far is
            return cudaSuccess;
        };
        rt_.EventQuery = [](cudaEvent_t e) {
            FakeCuda& f = *instance();
            if (const int err = f.event_error.load()) return static_cast<cudaError_t>(err);
            std::lock_guard lock(f.mutex_);
            if (f.done_ >= *ticket(e)) return cudaSuccess;
            ++f.not_ready;
            return cudaErrorNotReady;
        };
        rt_.EventSynchronize = [](cudaEvent_t e) {
            FakeCuda& f = *instance();
            if (const int err = f.event_error.load()) return static_cast<cudaError_t>(err);
            std::unique_lock lock(f.mutex_);
            f.cv_.wait(lock, [&] { return f.done_ >= *ticket(e); });
            return cudaSuccess;
        };
        rt_.EventElapsedTime = [](float* ms, cudaEvent_t, cudaEvent_t) { *ms = 1; return cudaSuccess; };
        rt_.EventDestroy = [](cudaEvent_t e) { delete ticket(e); return cudaSuccess; };
        tiercache::detail::cuda::runtime_override().store(&rt_);
    }
    FakeCuda(const FakeCuda&) = delete;
    FakeCuda& operator=(const FakeCuda&) = delete;
    ~FakeCuda() {
        tiercache::detail::cuda::runtime_override().store(nullptr);
        {
            std::lock_guard lock(mutex_);
            quit_ = true;
        }
        cv_.notify_all();
        worker_.join();
        instance() = nullptr;
    }

    std::atomic<int> sticky{0};       // a cudaError_t every call returns from now on (a faulted kernel)
    std::atomic<int> event_error{0};  // what event queries and waits return from now on
    std::atomic<std::uint64_t> not_ready{0};   // event queries that found the copies still running
    std::atomic<std::uint64_t> host_allocs{0};
    std::atomic<std::uint64_t> events_made{0};

    // A non-sticky error left by an earlier call on this thread (a bad kernel launch's).
    static void set_last_error(cudaError_t e) { last_error() = e; }

private:
    static FakeCuda*& instance() {
        static FakeCuda* f = nullptr;
        return f;
    }
    static int& current() {
        thread_local int d = 0;
        return d;
    }
    static int& last_error() {
        thread_local int e = 0;
        return e;
    }
    static cudaError_t fail(cudaError_t e) {
        last_error() = e;
        return e;
    }
    static std::uint64_t* ticket(cudaEvent_t e) { return reinterpret_cast<std::uint64_t*>(e); }

    void enqueue(std::function<void()> task) {
        {
            std::lock_guard lock(mutex_);
            queue_.push_back(std::move(task));
            ++enqueued_;
        }
        cv_.notify_all();
    }
    void drain() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return done_ == enqueued_; });
    }
    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
            if (queue_.empty()) return;
            std::function<void()> task = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            task();
            lock.lock();
            ++done_;
            cv_.notify_all();
        }
    }

    tiercache::detail::cuda::Runtime rt_;
    std::chrono::microseconds delay_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;  // protected by mutex_
    std::uint64_t enqueued_ = 0, done_ = 0;    // protected by mutex_: tasks queued and run
    bool quit_ = false;                         // protected by mutex_
    std::thread worker_;
};

}  // namespace test
#endif  // TIERCACHE_HAVE_CUDA
