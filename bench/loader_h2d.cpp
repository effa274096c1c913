// Host-to-device bandwidth of Batch::copy_to_device over a full epoch, against the physical
// limit: cudaMemcpyAsync of the same sizes from one cudaHostAlloc buffer. Both are timed with
// CUDA events around each copy only (not the loader's wait), medians of --runs epochs; the
// ratio should be >= 0.90: the batches are pinned and contiguous, one copy each.
//   tiercache-bench-loader-h2d [--samples 512] [--sample-size 110KiB] [--batch 64] [--runs 5]
// Without a CUDA device it says so and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <cuda_runtime_api.h>
#include <tiercache/tiercache.hpp>

#include "bench_support.hpp"

namespace tiercache::bench::loader_h2d {

namespace {

using tiercache::bench::median;
using tiercache::bench::TempFolder;

namespace fs = std::filesystem;

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Times `copy(bytes)` on `stream` with events; seconds.
template <class Copy>
double timed(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, Copy&& copy) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    copy();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms / 1000.0;
}

}  // namespace

// tiercache-bench-loader-h2d (bench/main.cpp runs it)
int run(int argc, char** argv) try {
    CLI::App app{"H2D bandwidth of EpochLoader batches against a plain pinned cudaMemcpyAsync"};
    std::size_t samples = 512, batch = 64;
    std::string sample_size = "110KiB";
    int runs = 5;
    app.add_option("--samples", samples, "samples in the data set");
    app.add_option("--sample-size", sample_size, "mean bytes per sample (+-30%)");
    app.add_option("--batch", batch, "samples per batch");
    app.add_option("--runs", runs, "epochs per side (the median is shown)")->check(CLI::PositiveNumber);
    CLI11_PARSE(app, argc, argv);

    const int device = tiercache::detail::cuda_device();
    if (device < 0) {
        int count = 0;
        const cudaError_t err = cudaGetDeviceCount(&count);
        std::printf("no CUDA device (%s): nothing to measure\n",
                    err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found 0");
        return 0;
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");

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
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(data.path).dram("1GiB"));
    const tiercache::LoaderOptions options{.batch = batch, .depth = 4, .threads = 4};

    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<std::uint64_t> sizes;  // each batch's bytes, for the baseline
    std::uint64_t max_bytes = 0;
    {
        tiercache::EpochLoader warm(cache, tiercache::EpochPlan(cache.catalog().size(), 1, 0), options);
        while (auto b = warm.next()) {
            sizes.push_back(b->bytes().size());
            max_bytes = std::max<std::uint64_t>(max_bytes, b->bytes().size());
        }
    }
    void* device_buffer = nullptr;
    void* host_buffer = nullptr;
    check(cudaMalloc(&device_buffer, max_bytes), "cudaMalloc");
    check(cudaHostAlloc(&host_buffer, max_bytes, cudaHostAllocDefault), "cudaHostAlloc");
    std::fill_n(static_cast<char*>(host_buffer), max_bytes, 1);

    std::vector<double> loader_gbs, plain_gbs;
    std::uint64_t epoch_bytes = 0;
    tiercache::PinnedKind kind = tiercache::PinnedKind::none;
    for (int r = 0; r < runs; ++r) {
        // The loader: one copy_to_device per batch of a whole epoch (warm: from the dram tier).
        tiercache::EpochLoader loader(cache, tiercache::EpochPlan(cache.catalog().size(), 1, 0), options);
        kind = loader.memory_kind();
        double seconds = 0;
        epoch_bytes = 0;
        while (auto b = loader.next()) {
            seconds += timed(stream, start, stop, [&] { b->copy_to_device(device_buffer, stream); });
            epoch_bytes += b->bytes().size();
        }
        loader_gbs.push_back(static_cast<double>(epoch_bytes) / seconds / 1e9);
        // The limit: the same sizes from one cudaHostAlloc buffer.
        seconds = 0;
        for (std::uint64_t n : sizes)
            seconds += timed(stream, start, stop, [&] {
                check(cudaMemcpyAsync(device_buffer, host_buffer, n, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
            });
        plain_gbs.push_back(static_cast<double>(epoch_bytes) / seconds / 1e9);
    }
    const double loader = median(loader_gbs), plain = median(plain_gbs);
    std::printf("device %d (%s); %zu samples, %s an epoch in %zu batches of %zu; batches in %s\n", device, prop.name, samples,
                tiercache::format_size(epoch_bytes).c_str(), sizes.size(), batch, tiercache::describe(kind).c_str());
    std::printf("copy_to_device          %8.2f GB/s (median of %d epochs)\n", loader, runs);
    std::printf("cudaMemcpyAsync pinned  %8.2f GB/s\n", plain);
    std::printf("ratio                   %8.3f (target >= 0.90)\n", loader / plain);

    cudaFreeHost(host_buffer);
    cudaFree(device_buffer);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}

}  // namespace tiercache::bench::loader_h2d
