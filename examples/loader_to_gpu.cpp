// One epoch of a dataset, as batches in pinned memory, copied to the GPU when there is one.
//   tiercache-example-loader ORIGIN [BATCH]
#include <tiercache/tiercache.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>

int main(int argc, char** argv) try {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ORIGIN [BATCH]\n", argv[0]);
        return 2;
    }
    const std::size_t batch_size = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 32;
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(argv[1]).dram("1GiB"));
    const tiercache::EpochPlan plan{cache.catalog().size(), /*seed*/ 42, /*epoch*/ 0, /*rank*/ 0, /*world*/ 1};
    tiercache::EpochLoader loader{cache, plan, {.batch = batch_size, .depth = 8, .threads = 4, .prefetch_window = 256}};

#ifdef TIERCACHE_HAVE_CUDA
    void* device = nullptr;
    cudaStream_t stream = nullptr;
    const bool gpu = tiercache::detail::cuda_device() >= 0 && cudaMalloc(&device, loader.buffer_bytes() + 1) == cudaSuccess &&
                     cudaStreamCreate(&stream) == cudaSuccess;
#endif
    while (auto batch = loader.next()) {
#ifdef TIERCACHE_HAVE_CUDA
        if (gpu) {
            batch->copy_to_device(device, stream);  // one cudaMemcpyAsync of the whole batch
            cudaStreamSynchronize(stream);          // the batch must stay until the copy is done
        }
#endif
        // ... the training step would run here ...
    }
#ifdef TIERCACHE_HAVE_CUDA
    if (gpu) {
        cudaStreamDestroy(stream);
        cudaFree(device);
    }
#endif
    const tiercache::LoaderStats s = loader.stats();
    std::printf("%llu batches, %llu samples, %s; waited %.3f s, held %.3f s: stall %.1f%%\n",
                static_cast<unsigned long long>(s.batches), static_cast<unsigned long long>(s.samples),
                tiercache::format_size(s.bytes).c_str(), s.wait_seconds, s.held_seconds, 100 * s.stall_fraction());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
