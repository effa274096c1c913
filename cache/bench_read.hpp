// `tiercache bench read`: read every file of a tree (or every record of a record index) in
// shuffled epochs, like a training loop.
#pragma once

#include <cstdint>
#include <filesystem>

namespace tiercache::cli {

struct BenchReadOptions {
    std::filesystem::path dir;
    unsigned readers = 4;
    std::uint64_t seed = 1;
    std::uint64_t epochs = 1;
    bool verify = false;    // print an order-independent digest of the bytes read
    bool progress = false;  // live progress line on stderr
    bool json = false;      // one JSON object per epoch on stdout instead of text
    bool plan = false;      // write each epoch's order to DIR/.tiercache/plan first (a tiercache mount)
    // A record index (`tiercache index`): read its records, shuffled across every shard,
    // instead of whole files; its paths are relative to DIR.
    std::filesystem::path records;
};

// Returns the exit status: 0 when every read succeeded, 1 otherwise.
// Throws std::runtime_error when the tree cannot be listed.
int run_bench_read(const BenchReadOptions& options);

}  // namespace tiercache::cli
