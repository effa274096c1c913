// Host-to-device bandwidth of Batch::copy_to_device over whole epochs, against the physical
// limit: a plain cudaMemcpyAsync of the same sizes from one cudaHostAlloc buffer on the GPU's
// NUMA node. Both sides are timed the same way, with CUDA events around each copy only (not
// the loader's wait), after a warm-up epoch of each, on one stream; medians of --runs epochs,
// the loader's epochs over one PinnedRing as a training run has. The ratio should be >= the
// target (0.90): the batches are pinned and contiguous, one copy each.
//   tiercache-bench-loader-h2d [--samples 512] [--sample-size 110KiB] [--batch 64] [--runs 5] [--target 0.90]
// Exit status: 0 at or above the target, 1 below it (or on an error), 77 when there is no CUDA
// device (or runtime) and so nothing was measured; it says which.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <numa.h>
#include <sched.h>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::loader_h2d {

namespace {

using tiercache::bench::median;
using tiercache::bench::TempFolder;
namespace cuda = tiercache::detail::cuda;

constexpr int kNothingMeasured = 77;

void check(const cuda::Runtime& rt, cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cuda::error_text(rt, err));
}

// Times `copy()` on `stream` with events; seconds.
template <class Copy>
double timed(const cuda::Runtime& rt, cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, Copy&& copy) {
    check(rt, rt.EventRecord(start, stream), "cudaEventRecord");
    copy();
    check(rt, rt.EventRecord(stop, stream), "cudaEventRecord");
    check(rt, rt.EventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(rt, rt.EventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms / 1000.0;
}

// `bytes` of cudaHostAlloc memory on NUMA node `node` (-1: wherever): allocated and first touched
// by this thread while it runs on that node and prefers its memory, as the baseline's placement.
void* host_alloc_on(const cuda::Runtime& rt, std::size_t bytes, int node) {
    cpu_set_t saved;
    const bool bound = node >= 0 && ::sched_getaffinity(0, sizeof saved, &saved) == 0 && ::numa_run_on_node(node) == 0;
    if (bound) ::numa_set_preferred(node);
    void* p = nullptr;
    const cudaError_t err = rt.HostAlloc(&p, bytes, cudaHostAllocDefault);
    if (err == cudaSuccess) std::fill_n(static_cast<char*>(p), bytes, 1);
    if (bound) {
        ::numa_set_localalloc();
        (void)::sched_setaffinity(0, sizeof saved, &saved);
    }
    check(rt, err, "cudaHostAlloc (the baseline's buffer)");
    return p;
}

}  // namespace

// tiercache-bench-loader-h2d (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    CLI::App app{"H2D bandwidth of EpochLoader batches against a plain pinned cudaMemcpyAsync"};
    std::size_t samples = 512, batch = 64, depth = 4, threads = 4;
    std::string sample_size = "110KiB";
    int runs = 5;
    double target = 0.90;
    app.add_option("--samples", samples, "samples in the data set");
    app.add_option("--sample-size", sample_size, "mean bytes per sample (+-30%)");
    app.add_option("--batch", batch, "samples per batch")->check(CLI::PositiveNumber);
    app.add_option("--depth", depth, "the loader's ring depth")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "the loader's I/O threads")->check(CLI::PositiveNumber);
    app.add_option("--runs", runs, "epochs per side (the median is shown)")->check(CLI::PositiveNumber);
    app.add_option("--target", target, "the least loader/baseline ratio that passes");
    CLI11_PARSE(app, argc, argv);

    std::string why;
    const int device = tiercache::current_cuda_device(&why);
    if (device < 0) {
        std::printf("loader-h2d: MEASURED NOTHING: %s\n", why.c_str());
        return kNothingMeasured;
    }
    const cuda::Runtime& rt = *cuda::runtime();
    const tiercache::DeviceChoice choice = tiercache::choose_device(device);
    cudaDeviceProp prop{};
    check(rt, rt.GetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    int runtime_version = 0, driver_version = 0;
    (void)rt.RuntimeGetVersion(&runtime_version);
    (void)rt.DriverGetVersion(&driver_version);

    // A data set of JPEG-like sizes, read once so the epochs measured hit the dram tier.
    const std::uint64_t mean = tiercache::parse_size(sample_size);
    TempFolder data("tiercache-bench-h2d");
    std::mt19937_64 rng(1);
    for (std::size_t i = 0; i < samples; ++i) {
        std::vector<char> bytes(static_cast<std::size_t>(mean * 7 / 10 + rng() % (mean * 6 / 10)));
        for (char& c : bytes) c = static_cast<char>(rng());
        std::FILE* f = std::fopen((data.path / ("s" + std::to_string(i))).c_str(), "wb");
        if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0)
            throw std::runtime_error("cannot write the data set in " + data.path.string());
    }
    tiercache::set_log_level(tiercache::LogLevel::warn);
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(data.path).dram("2GiB"));
    tiercache::PinnedRing ring;  // one for every epoch, as a training run keeps it
    const tiercache::LoaderOptions options{.batch = batch, .depth = depth, .threads = threads, .device = device, .ring = &ring};
    const tiercache::EpochPlan plan(cache.catalog().size(), 1, 0);  // the same order each epoch: the same sizes both sides

    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    check(rt, rt.StreamCreate(&stream), "cudaStreamCreate");
    check(rt, rt.EventCreateWithFlags(&start, cudaEventDefault), "cudaEventCreate");
    check(rt, rt.EventCreateWithFlags(&stop, cudaEventDefault), "cudaEventCreate");
    std::vector<std::uint64_t> sizes;  // each batch's bytes, for the baseline
    std::uint64_t max_bytes = 0;
    {  // the data set into the dram tier
        tiercache::EpochLoader warm(cache, plan, options);
        while (auto b = warm.next()) {
            sizes.push_back(b->bytes().size());
            max_bytes = std::max<std::uint64_t>(max_bytes, b->bytes().size());
        }
    }
    void* device_buffer = nullptr;
    check(rt, rt.Malloc(&device_buffer, std::max<std::uint64_t>(max_bytes, 1)), "cudaMalloc");
    void* host_buffer = host_alloc_on(rt, std::max<std::uint64_t>(max_bytes, 1), choice.numa_node);

    // Warm-up, untimed: an epoch of each side (the copy engine, the TLBs, the ring's events).
    {
        tiercache::EpochLoader loader(cache, plan, options);
        while (auto b = loader.next()) b->copy_to_device(device_buffer, stream);
        for (std::uint64_t n : sizes)
            check(rt, rt.MemcpyAsync(device_buffer, host_buffer, n, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
        check(rt, rt.StreamSynchronize(stream), "cudaStreamSynchronize");
    }

    std::vector<double> loader_gbs, plain_gbs;
    std::uint64_t epoch_bytes = 0;
    std::string memory;
    for (int r = 0; r < runs; ++r) {
        // The loader: one copy_to_device per batch of a whole epoch (warm: from the dram tier).
        tiercache::EpochLoader loader(cache, plan, options);
        memory = loader.memory_description();
        double seconds = 0;
        epoch_bytes = 0;
        while (auto b = loader.next()) {
            seconds += timed(rt, stream, start, stop, [&] { b->copy_to_device(device_buffer, stream); });
            epoch_bytes += b->bytes().size();
        }
        loader_gbs.push_back(static_cast<double>(epoch_bytes) / seconds / 1e9);
        // The limit: the same sizes from one cudaHostAlloc buffer, timed the same way.
        seconds = 0;
        for (std::uint64_t n : sizes)
            seconds += timed(rt, stream, start, stop, [&] {
                check(rt, rt.MemcpyAsync(device_buffer, host_buffer, n, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
            });
        plain_gbs.push_back(static_cast<double>(epoch_bytes) / seconds / 1e9);
    }
    const double loader = median(loader_gbs), plain = median(plain_gbs), ratio = loader / plain;
    std::printf("device %d (%s, %s); CUDA runtime %d, driver %d (%s)\n", device, prop.name, choice.how.c_str(), runtime_version,
                driver_version, rt.library.c_str());
    std::printf("%zu samples, %s an epoch in %zu batches of %zu (largest %s); ring: %s; allocated %zu time(s) for %d+2 epochs\n",
                samples, tiercache::format_size(epoch_bytes).c_str(), sizes.size(), batch, tiercache::format_size(max_bytes).c_str(),
                memory.c_str(), ring.allocations(), runs);
    std::printf("copy_to_device          %8.2f GB/s (median of %d epochs, min %.2f, max %.2f)\n", loader, runs,
                *std::min_element(loader_gbs.begin(), loader_gbs.end()), *std::max_element(loader_gbs.begin(), loader_gbs.end()));
    std::printf("cudaMemcpyAsync pinned  %8.2f GB/s (cudaHostAlloc on NUMA node %d)\n", plain, choice.numa_node);
    const bool pass = ratio >= target;
    std::printf("ratio                   %8.3f (target >= %.2f): %s\n", ratio, target, pass ? "ok" : "BELOW TARGET");

    (void)rt.FreeHost(host_buffer);
    (void)rt.Free(device_buffer);
    (void)rt.EventDestroy(start);
    (void)rt.EventDestroy(stop);
    (void)rt.StreamDestroy(stream);
    return pass ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::loader_h2d
