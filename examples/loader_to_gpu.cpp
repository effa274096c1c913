// Epochs of a dataset as batches in pinned memory, copied to the GPU when there is one: the
// README's loop, with one ring for the whole run.
//   tiercache-example-loader ORIGIN [BATCH] [EPOCHS]
// The CUDA calls here are the application's own (it links libcudart, as a training program
// does); tiercache's are made through the runtime it loads itself.
#include <tiercache/tiercache.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>

int main(int argc, char** argv) try {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ORIGIN [BATCH] [EPOCHS]\n", argv[0]);
        return 2;
    }
    const std::size_t batch_size = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 32;
    const unsigned epochs = argc > 3 ? static_cast<unsigned>(std::strtoul(argv[3], nullptr, 10)) : 1;
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(argv[1]).dram("1GiB"));
#ifdef TIERCACHE_HAVE_CUDA
    int device = -1;
    cudaStream_t stream = nullptr;
    const bool gpu = cudaGetDevice(&device) == cudaSuccess && cudaStreamCreate(&stream) == cudaSuccess;
    void* batch_on_gpu = nullptr;  // what the training step reads; grown with the ring
    std::uint64_t batch_on_gpu_bytes = 0;
#endif
    tiercache::PinnedRing ring;  // one for the run: allocated at the first epoch, reused after
    for (unsigned epoch = 0; epoch < epochs; ++epoch) {
        const tiercache::EpochPlan plan{cache.catalog().size(), /*seed*/ 42, epoch, /*rank*/ 0, /*world*/ 1};
        // device: the current one by default (LoaderOptions::device names one, e.g. the local rank's).
        tiercache::EpochLoader loader{cache, plan, {.batch = batch_size, .depth = 8, .threads = 4, .prefetch_window = 256, .ring = &ring}};
#ifdef TIERCACHE_HAVE_CUDA
        if (gpu && loader.buffer_bytes() > batch_on_gpu_bytes) {
            cudaStreamSynchronize(stream);
            cudaFree(batch_on_gpu);
            if (cudaMalloc(&batch_on_gpu, loader.buffer_bytes()) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
            batch_on_gpu_bytes = loader.buffer_bytes();
        }
#endif
        while (auto batch = loader.next()) {
#ifdef TIERCACHE_HAVE_CUDA
            // One cudaMemcpyAsync of the whole batch. The Batch may go right after: the ring waits
            // for the copy (an event) before it refills that buffer.
            if (gpu) batch->copy_to_device(batch_on_gpu, stream);
#endif
            // ... the training step would run here, on `stream`, reading batch_on_gpu ...
        }
        const tiercache::LoaderStats s = loader.stats();
        std::printf("epoch %u: %llu batches, %llu samples, %s; waited %.3f s, held %.3f s: stall %.1f%%\n", epoch,
                    static_cast<unsigned long long>(s.batches), static_cast<unsigned long long>(s.samples),
                    tiercache::format_size(s.bytes).c_str(), s.wait_seconds, s.held_seconds, 100 * s.stall_fraction());
    }
#ifdef TIERCACHE_HAVE_CUDA
    if (gpu) {
        cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
        cudaFree(batch_on_gpu);
    }
#endif
    std::printf("the ring was allocated %zu time(s) for %u epoch(s)\n", ring.allocations(), epochs);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
