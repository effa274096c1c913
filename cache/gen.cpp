// The dataset is a pure function of (files, classes, seed): the same bytes on every
// machine, whatever the thread count, so benchmarks and tests elsewhere can regenerate it
// instead of shipping it.
//
//   DIR/n01234567/n01234567_0.JPEG ...   K class folders, ImageNet-style synset names
//
// File j goes to class j % K (round-robin) as <class>_<j / K>.JPEG. Its size and bytes come
// from its own generator stream (seed, j), which is what lets threads write files in any
// order.
#include "gen.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "human.hpp"
#include <tiercache/detail/prng.hpp>
#include "progress.hpp"

namespace tiercache::cli {

namespace fs = std::filesystem;
using namespace tiercache::detail;  // Rng, shuffle, stream purposes

namespace {

// File sizes: lognormal with median 90 KiB and sigma 0.6335, so that the mean is
// 90 KiB * exp(sigma^2 / 2) = 110 KiB (ImageNet-1K's average JPEG), with a long right tail
// (1% of files above ~390 KiB). Clamped to [1 KiB, 8 MiB]; the clamps sit ~7 sigma out,
// so they do not move the mean.
constexpr double kMedianBytes = 90.0 * 1024;
constexpr double kSigma = 0.6335;
constexpr std::uint64_t kMinBytes = 1024;
constexpr std::uint64_t kMaxBytes = 8 << 20;

// Synset-like ids are drawn from the range real ImageNet ids use (n01440764 .. n15075141).
constexpr std::uint64_t kFirstSynset = 1'000'000;
constexpr std::uint64_t kSynsetRange = 15'000'000;

// A JFIF header (SOI, APP0 "JFIF" 1.01), so `file` and magic-number sniffers see a JPEG;
// the rest is noise and does not decode.
constexpr unsigned char kJpegHeader[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J',  'F',  'I', 'F',
                                         0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00};
constexpr unsigned char kJpegEnd[] = {0xFF, 0xD9};  // EOI

std::uint64_t file_size(Rng& rng) {
    const double bytes = kMedianBytes * std::exp(kSigma * rng.normal());
    return std::clamp(static_cast<std::uint64_t>(std::llround(bytes)), kMinBytes, kMaxBytes);
}

// K distinct ids, sorted so that class index order is name order (as ImageFolder sorts).
std::vector<std::string> class_names(std::uint64_t classes, std::uint64_t seed) {
    Rng rng = Rng::stream(seed, kClassNameStream);
    std::set<std::uint64_t> ids;
    while (ids.size() < classes) ids.insert(kFirstSynset + rng.below(kSynsetRange));
    std::vector<std::string> names;
    names.reserve(classes);
    for (const std::uint64_t id : ids) {
        char name[16];
        std::snprintf(name, sizeof name, "n%08llu", static_cast<unsigned long long>(id));
        names.emplace_back(name);
    }
    return names;
}

// Fills `bytes` bytes of noise, 8 at a time, stored little-endian so the content is the same
// on every machine, then stamps the JPEG markers.
void fill_file(std::vector<std::uint64_t>& words, std::uint64_t bytes, Rng& rng) {
    const std::size_t count = (bytes + 7) / 8;
    for (std::size_t i = 0; i < count; ++i) {
        std::uint64_t word = rng.next();
        if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
        words[i] = word;
    }
    auto* data = reinterpret_cast<unsigned char*>(words.data());
    std::memcpy(data, kJpegHeader, sizeof kJpegHeader);
    std::memcpy(data + bytes - sizeof kJpegEnd, kJpegEnd, sizeof kJpegEnd);
}

// Returns 0 or the errno of the failed step.
int write_file(const fs::path& path, const void* data, std::uint64_t bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    const auto* next = static_cast<const char*>(data);
    std::uint64_t left = bytes;
    int error = 0;
    while (left > 0) {
        const ssize_t n = ::write(fd, next, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            error = errno;
            break;
        }
        next += n;
        left -= static_cast<std::uint64_t>(n);
    }
    // close() can be where a full disk or quota is first reported.
    if (::close(fd) != 0 && error == 0 && errno != EINTR) error = errno;
    return error;
}

void prepare_dir(const fs::path& dir, bool force) {
    std::error_code ec;
    const fs::file_status status = fs::status(dir, ec);
    if (fs::exists(status)) {
        if (!fs::is_directory(status))
            throw std::runtime_error(quoted(dir) + " exists and is not a directory");
        const bool empty = fs::is_empty(dir, ec);
        if (ec) throw std::runtime_error("cannot read " + quoted(dir) + ": " + ec.message());
        if (!empty && !force)
            throw std::runtime_error(quoted(dir) + " exists and is not empty"
                                     " (use --force to write into it anyway)");
        return;
    }
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot create " + quoted(dir) + ": " + ec.message());
}

}  // namespace

void run_gen(const GenOptions& options) {
    if (options.classes == 0 || options.classes > kMaxGenClasses)
        throw std::runtime_error("--classes " + std::to_string(options.classes) +
                                 " is out of range: use 1 to " + std::to_string(kMaxGenClasses));
    if (options.classes > options.files && options.files > 0)
        throw std::runtime_error("--classes " + std::to_string(options.classes) + " exceeds --files " +
                                 std::to_string(options.files) +
                                 ": every class folder needs at least one file");

    const auto start = std::chrono::steady_clock::now();
    prepare_dir(options.dir, options.force);
    const std::vector<std::string> names = class_names(options.classes, options.seed);
    for (const auto& name : names) {
        std::error_code ec;
        fs::create_directory(options.dir / name, ec);
        if (ec) throw std::runtime_error("cannot create " + quoted(options.dir / name) + ": " + ec.message());
    }

    std::atomic<std::uint64_t> next_file{0};
    std::atomic<std::uint64_t> files_done{0};
    std::atomic<std::uint64_t> bytes_done{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::string error;  // first failure, protected by error_mutex

    auto writer = [&] {
        std::vector<std::uint64_t> words(kMaxBytes / 8);
        while (!failed.load(std::memory_order_relaxed)) {
            const std::uint64_t j = next_file.fetch_add(1, std::memory_order_relaxed);
            if (j >= options.files) break;
            const std::string& name = names[j % options.classes];
            const fs::path path = options.dir / name / (name + "_" + std::to_string(j / options.classes) + ".JPEG");
            Rng rng = Rng::stream(options.seed, kFileStream, j);
            const std::uint64_t bytes = file_size(rng);
            fill_file(words, bytes, rng);
            if (const int e = write_file(path, words.data(), bytes); e != 0) {
                std::lock_guard lock(error_mutex);
                if (!failed.exchange(true)) error = "cannot write " + quoted(path) + ": " + std::strerror(e);
                break;
            }
            files_done.fetch_add(1, std::memory_order_relaxed);
            bytes_done.fetch_add(bytes, std::memory_order_relaxed);
        }
    };

    {
        ProgressLine progress(stderr_is_terminal(), [&] {
            const std::uint64_t done = files_done.load();
            return "gen: " + with_commas(done) + "/" + with_commas(options.files) + " files, " +
                   human_bytes(static_cast<double>(bytes_done.load()));
        });
        // Writing is mostly page-cache copies and PRNG work: one thread per core pays.
        const unsigned writers = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < writers; ++t) threads.emplace_back(writer);
        for (auto& thread : threads) thread.join();
        progress.finish();
    }
    if (failed) throw std::runtime_error(error);

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::uint64_t files = files_done.load();
    const std::uint64_t bytes = bytes_done.load();
    std::printf("tiercache gen: wrote %s in %s to %s\n", count_of(files, "file").c_str(),
                count_of(options.classes, "class").c_str(), quoted(options.dir).c_str());
    std::printf("  total %s (%s bytes), mean file size %s, seed %llu\n", human_bytes(static_cast<double>(bytes)).c_str(),
                with_commas(bytes).c_str(),
                human_bytes(files ? static_cast<double>(bytes) / static_cast<double>(files) : 0.0).c_str(),
                static_cast<unsigned long long>(options.seed));
    std::printf("  %.2f s (%s files/s)\n", seconds, rounded(static_cast<double>(files) / seconds).c_str());
}

}  // namespace tiercache::cli
