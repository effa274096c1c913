// Epoch e reads the files in the order of a Fisher-Yates shuffle seeded by (seed, e),
// applied to the byte-sorted listing: the same order for the same tree on every machine,
// so a run over the origin and a run over the mount can read in exactly the same order.
#include "bench_read.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "file_list.hpp"
#include "human.hpp"
#include <tiercache/detail/prng.hpp>
#include <tiercache/record_index.hpp>
#include "progress.hpp"
#include "read_files.hpp"

namespace tiercache::cli {

namespace {

// read_bytes of /proc/self/io: bytes this process caused to be read from storage.
std::uint64_t storage_read_bytes() {
    std::ifstream io("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (io >> key >> value)
        if (key == "read_bytes:") return value;
    return 0;
}

}  // namespace

namespace fs = std::filesystem;
using namespace tiercache::detail;  // Rng, shuffle, stream purposes

namespace {

// Tells the mount the epoch's order: one relative path (or `PATH OFFSET LENGTH` record) per
// line, in one write(), then reads the plan back, which makes the mount apply it at once.
// Throws naming the plan file.
void write_plan(const fs::path& dir, const std::vector<ReadItem>& order) {
    const fs::path plan = dir / ".tiercache" / "plan";
    std::string text;
    for (const auto& item : order) {
        text += item.path.lexically_relative(dir).string();
        if (item.length != ReadItem::kWhole) text += " " + std::to_string(item.offset) + " " + std::to_string(item.length);
        text += "\n";
    }
    const int fd = ::open(plan.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + plan.string() + " (is " + dir.string() + " a tiercache mount?): " + std::strerror(errno));
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            throw std::runtime_error("the mount refused the plan written to " + plan.string() + ": " + std::strerror(err));
        }
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    std::ifstream back(plan);  // applies it now
    const auto status = nlohmann::json::parse(std::istreambuf_iterator<char>(back), std::istreambuf_iterator<char>(), nullptr, false);
    if (status.is_discarded() || status.value("state", "") != "active")
        throw std::runtime_error("the plan written to " + plan.string() + " is not active: " +
                                 (status.is_discarded() ? std::string("unreadable status") : status.dump()));
}

std::string hex64(std::uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(value));
    return text;
}

}  // namespace

int run_bench_read(const BenchReadOptions& options) {
    std::vector<ReadItem> sorted;
    if (options.records.empty()) {
        for (auto& file : list_files(options.dir, options.dir / ".tiercache", /*with_sizes=*/false)) sorted.push_back({std::move(file.path)});
    } else {
        const RecordIndex index = RecordIndex::load(options.records);
        for (const auto& e : index.entries()) sorted.push_back({options.dir / e.path, e.offset, e.length});
    }
    const char* unit = options.records.empty() ? "file" : "record";
    if (!options.json)
        std::printf("bench read: %s under %s, %s, seed %llu, %s\n", count_of(sorted.size(), unit).c_str(),
                    quoted(options.dir).c_str(), count_of(options.readers, "reader").c_str(),
                    static_cast<unsigned long long>(options.seed), count_of(options.epochs, "epoch").c_str());
    std::fflush(stdout);  // before any progress line on stderr

    bool any_failed = false;
    for (std::uint64_t epoch = 0; epoch < options.epochs; ++epoch) {
        std::vector<ReadItem> order = sorted;
        Rng rng = Rng::stream(options.seed, kShuffleStream, epoch);
        shuffle(order, rng);
        if (options.plan) write_plan(options.dir, order);

        LiveCounts live;
        const std::uint64_t storage_before = storage_read_bytes();
        const auto start = std::chrono::steady_clock::now();
        auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
        ReadTotals totals;
        {
            // A live line is for a person: into a log it would only add noise.
            ProgressLine progress(options.progress && stderr_is_terminal(), [&] {
                const auto files = live.files.load();
                return "epoch " + std::to_string(epoch) + ": " + with_commas(files) + "/" +
                       with_commas(order.size()) + " " + unit + "s, " +
                       rounded(static_cast<double>(files) / std::max(elapsed(), 1e-3)) + " " + unit + "s/s";
            });
            totals = read_items(order, options.readers, options.verify, live);
            progress.finish();
        }
        const double seconds = elapsed();
        const double files_per_s = static_cast<double>(totals.files) / seconds;
        const double mb_per_s = static_cast<double>(totals.bytes) / 1e6 / seconds;

        if (options.json) {
            // "files": what was read, files or records (then "records" is true).
            nlohmann::ordered_json line{{"epoch", epoch},
                                        {"files", totals.files},
                                        {"records", !options.records.empty()},
                                        {"bytes", totals.bytes},
                                        {"errors", totals.failed},
                                        {"seconds", seconds},
                                        {"files_per_s", files_per_s},
                                        {"mb_per_s", mb_per_s},
                                        {"readers", options.readers},
                                        {"seed", options.seed},
                                        // What this process's reads made the kernel fetch from
                                        // storage: origin bytes for reads of a local directory
                                        // (0 through a FUSE mount: the daemon reads, not us).
                                        {"storage_read_bytes", storage_read_bytes() - storage_before}};
            if (options.verify) line["digest"] = hex64(totals.digest_sum);
            std::printf("%s\n", line.dump().c_str());
        } else {
            std::printf("epoch %llu: %s, %s, %.3f s, %s %ss/s, %s MB/s", static_cast<unsigned long long>(epoch),
                        count_of(totals.files, unit).c_str(), human_bytes(static_cast<double>(totals.bytes)).c_str(),
                        seconds, rounded(files_per_s).c_str(), unit, rounded(mb_per_s).c_str());
            if (options.verify) std::printf(", digest %s", hex64(totals.digest_sum).c_str());
            if (totals.failed) std::printf(", %s FAILED", with_commas(totals.failed).c_str());
            std::printf("\n");
        }
        std::fflush(stdout);
        if (totals.failed) {
            any_failed = true;
            print_failures("tiercache bench read", totals);
        }
    }
    return any_failed ? 1 : 0;
}

}  // namespace tiercache::cli
