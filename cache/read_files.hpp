// Reading a list of files whole, or records (byte ranges) of them, with N threads: the reader
// loop behind `bench read` and `warm`, shaped like the reader in REFERENCE.md (open, read 1 MiB
// chunks, close). A record is read with pread from a descriptor the thread keeps open per file,
// as a loader over tar shards keeps its shards open.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <vector>

namespace tiercache::cli {

// Updated while reading, for a progress line on another thread.
struct LiveCounts {
    std::atomic<std::uint64_t> files{0};
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> failures{0};
};

struct ReadFailure {
    std::filesystem::path path;
    int error = 0;  // errno
};

struct ReadTotals {
    std::uint64_t files = 0;    // read to the end without error
    std::uint64_t bytes = 0;
    std::uint64_t failed = 0;
    std::vector<ReadFailure> first_failures;  // a few, for the error report
    // Sum of the XXH3-64 of every file read, mod 2^64 (only with `digest`): independent
    // of order and thread count, so two runs over copies of a dataset can be compared.
    std::uint64_t digest_sum = 0;
};

// What to read: a whole file, or `length` bytes at `offset` of it.
struct ReadItem {
    static constexpr std::uint64_t kWhole = UINT64_MAX;
    std::filesystem::path path;
    std::uint64_t offset = 0;
    std::uint64_t length = kWhole;
};

// How many failing paths a report names; the rest are only counted.
inline constexpr std::size_t kFailuresShown = 5;

// Reads every file of `paths`. `readers` threads each take the next index from a shared
// counter, so the files are started in list order. Each thread reads into its own 1 MiB
// buffer and discards the bytes (hashing them first when `digest` is set).
ReadTotals read_files(const std::vector<std::filesystem::path>& paths, unsigned readers,
                      bool digest, LiveCounts& live);
// The same for items: a record that ends early (the file is shorter) is a failure (EIO).
ReadTotals read_items(const std::vector<ReadItem>& items, unsigned readers, bool digest, LiveCounts& live);

// Prints the first failures to stderr, "<command>: cannot read '<path>': <strerror>", and
// how many more there were.
void print_failures(const char* command, const ReadTotals& totals);

}  // namespace tiercache::cli
