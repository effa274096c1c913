// The unit of caching: an extent, a fixed-size, aligned byte range of one file. File f of
// `size` bytes is extents [first_extent(f), first_extent(f) + extents_in(size)): extent i
// covers bytes [i * extent_bytes, min(size, (i + 1) * extent_bytes)). A file no larger than one
// extent is one extent (an empty file too, of length 0, which no tier holds), so a dataset of
// small files (ImageFolder) caches whole files as before.
//
// Every tier, slot, fetch, checksum, plan position and nvme slab entry is per extent, so a read
// of a large file (LMDB, HDF5, a tar shard, a numpy memmap) fetches and keeps the extents it
// touches, never the whole file, and no buffer is ever larger than one extent.
//
// Memory per extent (bytes): 4 (the extent's file, in the catalog) + 32 per memory tier (its
// SampleSlot) + 4 (single-flight word) + 17 (next use: key, read time, pending count) + 9 per
// job with a plan + with nvme 40 (its location) and, resident there, 4 (its slab's list) + per
// resident extent the policy's ordered-set node (about 48). Measured by
// tiercache-bench-catalog --file-bytes 1TiB: 74.2 bytes per extent with dram and nvme, so 1 TiB
// in 1 MiB extents (1,048,576 of them) holds 74 MiB before any read.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "size.hpp"

namespace tiercache {

using ExtentId = std::uint32_t;

// 1 MiB: see the README's "Extents" (bench/extent_size measures the choice).
inline constexpr std::uint64_t kDefaultExtentBytes = std::uint64_t{1} << 20;
inline constexpr std::uint64_t kMinExtentBytes = std::uint64_t{64} << 10;   // below it, per-extent costs dominate
inline constexpr std::uint64_t kMaxExtentBytes = std::uint64_t{64} << 20;   // a thread's buffer holds one
inline constexpr std::uint64_t kExtentAlignment = 4096;                     // nvme's O_DIRECT block

// Throws std::invalid_argument naming `bytes` unless it is a legal extent size.
inline void check_extent_bytes(std::uint64_t bytes) {
    if (bytes < kMinExtentBytes || bytes > kMaxExtentBytes || bytes % kExtentAlignment != 0)
        throw std::invalid_argument("extent size " + format_size(bytes) + " (" + std::to_string(bytes) +
                                    " bytes) is not a multiple of 4 KiB between " + format_size(kMinExtentBytes) + " and " +
                                    format_size(kMaxExtentBytes));
}

// How many extents a file of `size` bytes is: at least one.
inline constexpr std::uint64_t extents_in(std::uint64_t size, std::uint64_t extent_bytes) noexcept {
    return size <= extent_bytes ? 1 : (size + extent_bytes - 1) / extent_bytes;
}

}  // namespace tiercache
