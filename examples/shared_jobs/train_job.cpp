// One training job of several on a host, sharing one cache: it attaches to the cache an owner
// serves (tiercache serve, or tiercache-fuse --share), registers its own shuffled plan (the
// owner places by the union of every job's plan), and reads its epochs through an EpochLoader.
// The first job to need a sample reads it from the origin; every other job gets it from the
// shared dram tier.
//   tiercache-example-shared-job NAME [SEED] [EPOCHS] [STEP_MS]
#include <tiercache/tiercache.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

int main(int argc, char** argv) try {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s NAME [SEED] [EPOCHS] [STEP_MS]\n", argv[0]);
        return 2;
    }
    const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
    const std::uint64_t epochs = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 2;
    const auto step = std::chrono::milliseconds(argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 2);

    auto cache = tiercache::Cache::attach(argv[1]);  // OwnerGone if nobody serves NAME
    for (std::uint64_t epoch = 0; epoch < epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        // This job's order: its own seed, like one point of a hyperparameter sweep. The loader
        // registers it with the owner (Cache::set_plan) before reading.
        const tiercache::EpochPlan plan{cache.catalog().size(), seed, epoch};
        tiercache::EpochLoader loader{cache, plan, {.batch = 64, .depth = 8, .threads = 8}};
        while (auto batch = loader.next()) {
            std::this_thread::sleep_for(step);  // the training step (batch->copy_to_device with CUDA)
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const tiercache::LoaderStats s = loader.stats();
        std::printf("job seed %llu epoch %llu: %llu samples, %s in %.2f s, stalled %.1f%% of the time\n",
                    static_cast<unsigned long long>(seed), static_cast<unsigned long long>(epoch),
                    static_cast<unsigned long long>(s.samples), tiercache::format_size(s.bytes).c_str(), seconds,
                    100 * s.stall_fraction());
    }
    const tiercache::Stats s = cache.stats();  // the owner's: every job's reads
    std::printf("shared cache '%s': origin read %s of a %s dataset; dram holds %s; %llu jobs attached\n", argv[1],
                tiercache::format_size(s.origin_bytes_read).c_str(), tiercache::format_size(s.dataset_bytes).c_str(),
                tiercache::format_size(s.tiers.front().used_bytes).c_str(), static_cast<unsigned long long>(s.share_jobs));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
