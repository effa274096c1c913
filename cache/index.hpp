// `tiercache index`: the record index (record_index.hpp) of a dataset's tar shards.
#pragma once

#include <cstdint>
#include <filesystem>

#include <tiercache/record_index.hpp>

namespace tiercache::cli {

struct IndexOptions {
    std::filesystem::path dir;     // the dataset's root, as a mount's ORIGIN
    std::filesystem::path output;  // empty: stdout
};

// What index_shards() left out, and what it took.
struct IndexCounts {
    std::uint64_t shards = 0, records = 0, bytes = 0;
    std::uint64_t directories = 0, symlinks = 0, hard_links = 0, others = 0;  // members skipped
};

// Every regular-file member of every `.tar` file under `dir` (paths as the catalog names
// them, in catalog order; members in shard order): bytes [offset, offset + length) of the
// shard are the member's data. Throws std::runtime_error naming the shard for one that is
// not a tar, is corrupt or truncated, compressed (a byte range of it is not a member), or
// holds a sparse member (its data is not one range), or whose member name is not UTF-8.
RecordIndex index_shards(const std::filesystem::path& dir, IndexCounts& counts);

// Writes the index to stdout or, atomically, to options.output, and a summary to stderr.
// Throws std::runtime_error on failure (nothing is written to options.output then).
void run_index(const IndexOptions& options);

}  // namespace tiercache::cli
