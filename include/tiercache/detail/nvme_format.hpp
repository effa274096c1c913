// What the nvme tier writes to disk: the header block at the start of every slab file and
// the index file (index.tci) that lets a restarted process start warm. Plain little-endian
// structs of fixed size, written and read whole; the sizes are asserted so a compiler or a
// careless edit cannot change the layout silently.
//
// index.tci, in this order:
//   NvmeIndexHeader                                (64 bytes)
//   NvmeIndexSlab   x header.slab_count            (32 bytes each, slab 0 first)
//   NvmeIndexEntry  x header.entry_count           (56 bytes each, any order)
// header.payload_xxh3 is the XXH3-64 of everything after the header, so a flipped bit or a
// torn write anywhere is caught; header.header_xxh3 covers the header's own fields.
//
// slab-NNNNN.tcs: exactly slab_bytes long. Block 0 (4 KiB) holds NvmeSlabHeader; samples
// follow at 4 KiB-aligned offsets, so O_DIRECT can read them. A slab's generation goes up
// each time it is emptied and reused; the index records the generation each slab had when
// it was saved, so an index entry can never point at bytes that a later reuse wrote.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "xxh3.hpp"

namespace tiercache::detail {

static_assert(std::endian::native == std::endian::little, "the nvme tier's files are little-endian");

// Bump kNvmeIndexVersion when the layout or meaning of NvmeIndexHeader, NvmeIndexSlab or
// NvmeIndexEntry changes (2: entries are extents, the header says their size), and kNvmeSlabVersion when NvmeSlabHeader or the placement of
// samples inside a slab file changes. A process finding another version starts cold: it
// discards the index (and rewrites slab headers as it reuses slabs); it never guesses.
inline constexpr std::uint32_t kNvmeIndexVersion = 2;
inline constexpr std::uint32_t kNvmeSlabVersion = 1;
inline constexpr std::uint32_t kNvmeIndexMagic = 0x4E434354;  // "TCCN" read as bytes
inline constexpr std::uint32_t kNvmeSlabMagic = 0x53434354;   // "TCCS" read as bytes

// Alignment of every sample offset, of slab sizes and of O_DIRECT transfers. 4 KiB covers
// both 512-byte and 4 KiB logical blocks.
inline constexpr std::uint64_t kNvmeBlock = 4096;

inline constexpr std::uint64_t nvme_round_up(std::uint64_t n) noexcept { return (n + kNvmeBlock - 1) / kNvmeBlock * kNvmeBlock; }
inline constexpr std::uint64_t nvme_round_down(std::uint64_t n) noexcept { return n / kNvmeBlock * kNvmeBlock; }

struct NvmeIndexHeader {
    std::uint32_t magic;
    std::uint32_t version;
    std::uint64_t slab_bytes;
    std::uint32_t slab_count;    // NvmeIndexSlab records that follow
    std::uint32_t reserved0;     // 0
    std::uint64_t entry_count;   // NvmeIndexEntry records after the slab records
    std::uint64_t payload_xxh3;  // XXH3-64 of all bytes after this header
    std::uint64_t saved_unix_ns; // for humans and logs
    std::uint64_t extent_bytes;  // the catalog's extent size: entries of another one do not apply
    std::uint64_t header_xxh3;   // XXH3-64 of the 56 bytes before this field
};
static_assert(sizeof(NvmeIndexHeader) == 64);

enum NvmeSlabState : std::uint32_t { kSlabFree = 0, kSlabOpen = 1, kSlabSealed = 2 };

struct NvmeIndexSlab {
    std::uint64_t generation;  // must equal the slab file's header, or its entries are dropped
    std::uint64_t fill_bytes;  // append point: bytes of the file used, header block included
    std::uint64_t fifo_seq;    // order slabs were opened in: eviction takes the smallest
    std::uint32_t state;       // NvmeSlabState
    std::uint32_t reserved;    // 0
};
static_assert(sizeof(NvmeIndexSlab) == 32);

// One stored extent. The identity (path hash, file size, mtime, extent number) ties it to a
// range of an origin file: an entry whose file was renamed, rewritten or resized no longer
// matches the catalog.
struct NvmeIndexEntry {
    std::uint64_t path_xxh3;  // XXH3-64 of the file's relative path bytes
    std::uint64_t file_size;
    std::int64_t mtime_ns;
    std::uint64_t checksum;   // XXH3-64 of the extent's bytes
    std::uint64_t offset;     // into the slab file, a multiple of kNvmeBlock, >= kNvmeBlock
    std::uint32_t slab;
    std::uint32_t id_hint;    // ExtentId when saved: checked first, so a load rarely needs a map
    std::uint32_t extent;     // which of the file's extents (0: its first)
    std::uint32_t size;       // the extent's bytes
};
static_assert(sizeof(NvmeIndexEntry) == 56);

struct NvmeSlabHeader {
    std::uint32_t magic;
    std::uint32_t version;
    std::uint64_t slab_bytes;
    std::uint64_t generation;
    std::uint32_t slab;         // its own number, so a renamed file is caught
    std::uint32_t reserved;     // 0
    std::uint64_t header_xxh3;  // XXH3-64 of the 32 bytes before this field
};
static_assert(sizeof(NvmeSlabHeader) == 40 && sizeof(NvmeSlabHeader) <= kNvmeBlock);

// The header_xxh3 that NvmeIndexHeader and NvmeSlabHeader carry: the XXH3-64 of the header's
// bytes before that field.
template <class Header>
std::uint64_t nvme_header_hash(const Header& h) noexcept {
    return xxh3(std::as_bytes(std::span(&h, 1)).first(offsetof(Header, header_xxh3)));
}

}  // namespace tiercache::detail
