// `tiercache gen`: a synthetic ImageNet-like dataset.
#pragma once

#include <cstdint>
#include <filesystem>

namespace tiercache::cli {

// Limits for the command line; the class limit keeps drawing unique synset ids quick.
inline constexpr std::uint64_t kMaxGenFiles = 1'000'000'000;
inline constexpr std::uint64_t kMaxGenClasses = 1'000'000;

struct GenOptions {
    std::filesystem::path dir;
    std::uint64_t files = 10000;
    std::uint64_t classes = 100;
    std::uint64_t seed = 1;
    bool force = false;  // write into a directory that is not empty
};

// Writes the dataset and prints a summary; throws std::runtime_error on failure.
void run_gen(const GenOptions& options);

}  // namespace tiercache::cli
