#include "read_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "human.hpp"

namespace tiercache::cli {

namespace {

constexpr std::size_t kChunkBytes = 1 << 20;

struct OneFile {
    std::uint64_t bytes = 0;
    int error = 0;  // errno, 0 on success
    std::uint64_t digest = 0;
};

OneFile read_one(const std::filesystem::path& path, std::vector<char>& buffer, bool digest,
                 LiveCounts& live) {
    OneFile result;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        result.error = errno;
        return result;
    }
    XXH3_state_t hash;
    if (digest) XXH3_64bits_reset(&hash);
    for (;;) {
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            result.error = errno;
            break;
        }
        if (n == 0) break;
        if (digest) XXH3_64bits_update(&hash, buffer.data(), static_cast<std::size_t>(n));
        result.bytes += static_cast<std::uint64_t>(n);
        live.bytes.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    }
    // A read-only close can still report a deferred error (e.g. from a FUSE daemon's flush).
    if (::close(fd) != 0 && result.error == 0 && errno != EINTR) result.error = errno;
    if (digest && result.error == 0) result.digest = XXH3_64bits_digest(&hash);
    return result;
}

}  // namespace

ReadTotals read_files(const std::vector<std::filesystem::path>& paths, unsigned readers,
                      bool digest, LiveCounts& live) {
    std::atomic<std::size_t> next_index{0};
    ReadTotals totals;
    std::mutex totals_mutex;  // protects totals, merged once per thread at its end

    auto reader = [&] {
        std::vector<char> buffer(kChunkBytes);
        ReadTotals mine;
        for (;;) {
            const std::size_t i = next_index.fetch_add(1, std::memory_order_relaxed);
            if (i >= paths.size()) break;
            const OneFile file = read_one(paths[i], buffer, digest, live);
            if (file.error != 0) {
                ++mine.failed;
                live.failures.fetch_add(1, std::memory_order_relaxed);
                if (mine.first_failures.size() < kFailuresShown)
                    mine.first_failures.push_back({paths[i], file.error});
                continue;
            }
            ++mine.files;
            mine.bytes += file.bytes;
            mine.digest_sum += file.digest;  // unsigned: wraps mod 2^64 by definition
            live.files.fetch_add(1, std::memory_order_relaxed);
        }
        std::lock_guard lock(totals_mutex);
        totals.files += mine.files;
        totals.bytes += mine.bytes;
        totals.failed += mine.failed;
        totals.digest_sum += mine.digest_sum;
        for (auto& failure : mine.first_failures)
            if (totals.first_failures.size() < kFailuresShown)
                totals.first_failures.push_back(std::move(failure));
    };

    const auto thread_count = std::clamp<std::size_t>(readers, 1, std::max<std::size_t>(paths.size(), 1));
    std::vector<std::thread> threads;
    threads.reserve(thread_count);
    for (std::size_t t = 0; t < thread_count; ++t) threads.emplace_back(reader);
    for (auto& thread : threads) thread.join();
    return totals;
}

void print_failures(const char* command, const ReadTotals& totals) {
    for (const auto& failure : totals.first_failures)
        std::fprintf(stderr, "%s: cannot read %s: %s\n", command, quoted(failure.path).c_str(),
                     std::strerror(failure.error));
    if (totals.failed > totals.first_failures.size())
        std::fprintf(stderr, "%s: ... and %s more files could not be read\n", command,
                     with_commas(totals.failed - totals.first_failures.size()).c_str());
}

}  // namespace tiercache::cli
