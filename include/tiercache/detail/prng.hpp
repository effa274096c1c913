// Deterministic pseudo-random numbers for datasets and shuffles.
//
// We implement the generator and the transforms ourselves instead of using <random>'s
// distributions, whose output differs between standard libraries: a dataset generated
// or an epoch order shuffled with seed S must be the same bytes on every machine.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

namespace tiercache::detail {

// splitmix64's output function: a strong 64-bit mixer, used to derive seeds.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// xoshiro256** (Blackman & Vigna): fast, small state, good statistical quality.
class Rng {
public:
    explicit Rng(std::uint64_t seed) {
        // Seed the state with splitmix64, as the authors recommend: never all zero.
        for (auto& word : state_) {
            seed += 0x9e3779b97f4a7c15ULL;
            word = mix64(seed);
        }
    }

    // An independent stream for (seed, purpose, index), e.g. (seed, kFileStream, file_index):
    // each file or epoch gets its own generator, so results do not depend on thread scheduling.
    static Rng stream(std::uint64_t seed, std::uint64_t purpose, std::uint64_t index = 0) {
        return Rng{mix64(mix64(seed ^ mix64(purpose)) ^ index)};
    }

    std::uint64_t next() {
        const std::uint64_t result = std::rotl(state_[1] * 5, 7) * 9;
        const std::uint64_t t = state_[1] << 17;
        state_[2] ^= state_[0];
        state_[3] ^= state_[1];
        state_[1] ^= state_[2];
        state_[0] ^= state_[3];
        state_[2] ^= t;
        state_[3] = std::rotl(state_[3], 45);
        return result;
    }

    // Uniform in [0, 1), 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

    // Uniform integer in [0, bound), unbiased (rejects the few values that would skew
    // the modulo); bound must be > 0.
    std::uint64_t below(std::uint64_t bound) {
        const std::uint64_t threshold = (0 - bound) % bound;
        for (;;) {
            const std::uint64_t r = next();
            if (r >= threshold) return r % bound;
        }
    }

    // Standard normal by Box-Muller (one of the pair; simplicity beats the saved call).
    double normal() {
        const double u1 = 1.0 - uniform();  // (0, 1]: log(0) is never taken
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    }

private:
    std::uint64_t state_[4];
};

// Stream purposes, so that streams for different uses never coincide.
inline constexpr std::uint64_t kClassNameStream = 1;
inline constexpr std::uint64_t kFileStream = 2;
inline constexpr std::uint64_t kShuffleStream = 3;  // tiercache bench read's epochs
inline constexpr std::uint64_t kEpochStream = 4;    // EpochPlan: never change, plans are pinned by tests

// Fisher-Yates shuffle with our own generator (std::shuffle's use of the generator is
// implementation-defined, so its order would differ across standard libraries).
template <typename T>
void shuffle(std::vector<T>& items, Rng& rng) {
    for (std::size_t i = items.size(); i > 1; --i) {
        const std::size_t j = rng.below(i);
        std::swap(items[i - 1], items[j]);
    }
}

}  // namespace tiercache::detail
