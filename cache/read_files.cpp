#include "read_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
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

// Reads `item` from `fd` (a whole file from its start, a record from its offset with pread).
OneFile read_from(int fd, const ReadItem& item, std::vector<char>& buffer, bool digest, LiveCounts& live) {
    OneFile result;
    const bool whole = item.length == ReadItem::kWhole;
    XXH3_state_t hash;
    if (digest) XXH3_64bits_reset(&hash);
    while (whole || result.bytes < item.length) {
        const std::size_t want = whole ? buffer.size() : static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), item.length - result.bytes));
        const ssize_t n = whole ? ::read(fd, buffer.data(), want) : ::pread(fd, buffer.data(), want, static_cast<off_t>(item.offset + result.bytes));
        if (n < 0) {
            if (errno == EINTR) continue;
            result.error = errno;
            break;
        }
        if (n == 0) {
            if (!whole) result.error = EIO;  // the file ends inside the record
            break;
        }
        if (digest) XXH3_64bits_update(&hash, buffer.data(), static_cast<std::size_t>(n));
        result.bytes += static_cast<std::uint64_t>(n);
        live.bytes.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    }
    if (digest && result.error == 0) result.digest = XXH3_64bits_digest(&hash);
    return result;
}

OneFile read_one(const std::filesystem::path& path, std::vector<char>& buffer, bool digest,
                 LiveCounts& live) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {0, errno, 0};
    OneFile result = read_from(fd, {path}, buffer, digest, live);
    // A read-only close can still report a deferred error (e.g. from a FUSE daemon's flush).
    if (::close(fd) != 0 && result.error == 0 && errno != EINTR) result.error = errno;
    return result;
}

// Descriptors a reader thread keeps open, one per file it read records of.
class OpenFiles {
public:
    OpenFiles() = default;
    OpenFiles(const OpenFiles&) = delete;
    OpenFiles& operator=(const OpenFiles&) = delete;
    ~OpenFiles() {
        for (const auto& [path, fd] : fds_) ::close(fd);
    }
    // The file's descriptor, or -1 with errno set.
    int get(const std::filesystem::path& path) {
        if (const auto it = fds_.find(path.native()); it != fds_.end()) return it->second;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) fds_.emplace(path.native(), fd);
        return fd;
    }

private:
    std::unordered_map<std::string, int> fds_;
};

}  // namespace

ReadTotals read_files(const std::vector<std::filesystem::path>& paths, unsigned readers,
                      bool digest, LiveCounts& live) {
    std::vector<ReadItem> items;
    items.reserve(paths.size());
    for (const auto& path : paths) items.push_back({path});
    return read_items(items, readers, digest, live);
}

ReadTotals read_items(const std::vector<ReadItem>& items, unsigned readers, bool digest, LiveCounts& live) {
    std::atomic<std::size_t> next_index{0};
    ReadTotals totals;
    std::mutex totals_mutex;  // protects totals, merged once per thread at its end

    auto reader = [&] {
        std::vector<char> buffer(kChunkBytes);
        OpenFiles open_files;
        ReadTotals mine;
        for (;;) {
            const std::size_t i = next_index.fetch_add(1, std::memory_order_relaxed);
            if (i >= items.size()) break;
            const ReadItem& item = items[i];
            OneFile file;
            if (item.length == ReadItem::kWhole) {
                file = read_one(item.path, buffer, digest, live);
            } else if (const int fd = open_files.get(item.path); fd < 0) {
                file.error = errno;
            } else {
                file = read_from(fd, item, buffer, digest, live);
            }
            if (file.error != 0) {
                ++mine.failed;
                live.failures.fetch_add(1, std::memory_order_relaxed);
                if (mine.first_failures.size() < kFailuresShown)
                    mine.first_failures.push_back({item.path, file.error});
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

    const auto thread_count = std::clamp<std::size_t>(readers, 1, std::max<std::size_t>(items.size(), 1));
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
