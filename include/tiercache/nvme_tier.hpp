// The nvme tier: extents (extent.hpp; a small file's is the whole file) in a directory on a local SSD, packed into a few large slab
// files (slab-00000.tcs, ...) at 4 KiB-aligned offsets, found again after a restart through
// a persisted index (index.tci). See detail/nvme_format.hpp for both on-disk formats.
//
// Why slabs: ImageNet has 1.28 M files and the open-file limit here is 20,000, shared with the
// origin reads and the FUSE session, so the tier holds one descriptor per slab (opened once),
// never one per sample. Why log-structured: appending to the open slab and evicting whole
// slabs oldest-first (as flash caches such as CacheLib's navy do) writes each flash block
// once, needs no allocator on disk, and frees space in large contiguous pieces.
//
// Integrity: each sample's XXH3-64 is kept in memory and in the index, and every read is
// verified. A mismatch is counted, the copy dropped (never served again) and `corrupt`
// returned, so the caller refetches from the origin and may put() it again: the repair.
// The index is trusted only when it verifies completely; otherwise it is discarded whole.
//
// Memory: 16 bytes per extent (its location and checksum) plus 4 bytes per stored extent (the
// slab's list, for eviction): about 26 MiB for ImageNet-1K (one extent a file), 20 MiB for
// 1 TiB of 1 MiB extents.
//
// The ids here are extents (ExtentId); "sample" in the names below means the extent stored.
//
// Where each part is: this header has the options, NvmeTier (the extents' locations, put, get,
// erase, eviction, and the lock); detail/nvme_slabs.hpp the slab files and their lifecycle
// (growing, the ring of slabs in use, recycling, the directory); detail/nvme_index.hpp saving
// and verifying index.tci; detail/nvme_format.hpp both on-disk formats; detail/nvme_io.hpp the
// file I/O underneath.
#pragma once
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catalog.hpp"
#include "detail/nvme_format.hpp"
#include "detail/nvme_index.hpp"
#include "detail/nvme_slabs.hpp"
#include "detail/xxh3.hpp"
#include "error.hpp"
#include "log.hpp"
#include "size.hpp"
#include "stats.hpp"

namespace tiercache {

// How the tier reads and writes, and how big its slab files are. validate() throws
// std::invalid_argument naming the bad value:
//   NvmeOptions{.slab_bytes = 256 * 1024, .direct_io = false}.validate(4 << 20);
struct NvmeOptions {
    // One open descriptor per slab file: at most this many, whatever slab_bytes says.
    static constexpr std::uint64_t kMaxSlabFiles = 4096;

    // Bytes per slab file, a multiple of 4096; 0 (the default) chooses from the capacity:
    // 64 MiB, but never more than 1024 slabs, so 800 GiB gets 800 MiB slabs and 1,024
    // descriptors instead of 12,800 (which, with a 20,000 RLIMIT_NOFILE shared with
    // everything else in the process, would starve the origin and FUSE of descriptors); and
    // at least 16 slabs for a small tier, so evicting the oldest slab frees 1/16 of it, not
    // all. The first 4 KiB of every slab is its header.
    std::uint64_t slab_bytes = 0;

    // O_DIRECT reads and writes (through an aligned bounce buffer), or the page cache.
    // Measured with tiercache-bench-nvme (bench/nvme_read.cpp) on these machines (2 vCPUs,
    // virtio disk cached by the host, ext4, read_ahead_kb 8192), 2026-11-22: 2 GiB of ~110 KiB
    // samples in 44 slabs of 64 MiB, one shuffled pass of verified whole-sample get()s after
    // dropping the page cache (cold), then another (warm); medians of 3 runs, the range over
    // two invocations, samples/s:
    //
    //                                     1 thread               4 threads
    //                                 cold        warm        cold        warm
    //   O_DIRECT                   4.9k-5.5k   4.8k-5.6k   5.9k-6.2k   5.8k-6.0k
    //   buffered, RAM to spare     6.2k-6.6k   31k-41k     9.2k-9.4k   65k-67k   page cache +2.0 GiB
    //   O_DIRECT, 256 MiB cgroup   5.0k-8.7k   6.1k-8.0k   7.6k-8.3k   7.3k-8.4k
    //   buffered, 256 MiB cgroup   4.1k-4.3k   3.7k-3.9k   6.0k-6.4k   5.4k-5.7k  page cache +243 MiB
    //
    // (O_DIRECT does not touch the page cache, so its two pairs of rows differ by noise alone.)
    // O_DIRECT is the default. With RAM to spare, buffered reads win cold (readahead brings in
    // neighbours that the rest of the pass then hits) and win warm 6-11x, but only by keeping
    // a second copy of the tier's bytes in the page cache, memory the dram tier should hold
    // under its own policy instead (and LRU thrashes under shuffled epochs). A host that
    // needs an nvme tier is one whose data does not fit in DRAM; there, with the page cache
    // held to 256 MiB (1/8 of the data) by a memory cgroup, buffered was 1.2-2.1x slower cold
    // and 1.3-2.2x slower warm than O_DIRECT. Turn it off only where the tier's data fits in
    // RAM that nothing else wants, or where the filesystem refuses O_DIRECT (then the tier
    // falls back by itself and logs it).
    bool direct_io = true;

    // The slab size used for `capacity`: slab_bytes, or the automatic choice when it is 0.
    std::uint64_t slab_bytes_for(std::uint64_t capacity) const noexcept {
        if (slab_bytes != 0) return slab_bytes;
        constexpr std::uint64_t kPreferred = 64ull << 20, kMinSlabs = 16, kMaxSlabs = 1024;
        std::uint64_t s = std::max(kPreferred, detail::nvme_round_up((capacity + kMaxSlabs - 1) / kMaxSlabs));
        if (capacity / s < kMinSlabs) s = std::max(detail::nvme_round_down(capacity / kMinSlabs), 2 * detail::kNvmeBlock);
        return s;
    }

    void validate(std::uint64_t capacity) const {
        auto bytes = [](std::uint64_t n) { return format_size(n) + " (" + std::to_string(n) + " bytes)"; };
        if (capacity < 2 * detail::kNvmeBlock)
            throw std::invalid_argument("nvme capacity " + bytes(capacity) + ": at least 8 KiB (one slab of a 4 KiB header and 4 KiB of samples)");
        if (slab_bytes == 0) return;
        if (slab_bytes % detail::kNvmeBlock != 0)
            throw std::invalid_argument("nvme slab_bytes " + std::to_string(slab_bytes) + ": not a multiple of 4096");
        if (slab_bytes < 2 * detail::kNvmeBlock)
            throw std::invalid_argument("nvme slab_bytes " + std::to_string(slab_bytes) + ": at least 8192 (a 4 KiB header and room for samples)");
        if (slab_bytes > capacity)
            throw std::invalid_argument("nvme slab_bytes " + bytes(slab_bytes) + " is larger than the capacity " + bytes(capacity));
        if (capacity / slab_bytes > kMaxSlabFiles)
            throw std::invalid_argument("nvme slab_bytes " + bytes(slab_bytes) + " for a capacity of " + format_size(capacity) +
                                        " makes " + std::to_string(capacity / slab_bytes) + " slab files, one open descriptor each; at most " +
                                        std::to_string(kMaxSlabFiles) + ": raise slab_bytes, or leave it 0 to scale with the capacity");
    }
};

// What get() found. `corrupt` and `io_error` also drop the copy: it is never served again.
enum class NvmeRead { hit, absent, corrupt, io_error };

inline const char* to_string(NvmeRead r) noexcept {
    switch (r) {
        case NvmeRead::hit: return "hit";
        case NvmeRead::absent: return "absent";
        case NvmeRead::corrupt: return "corrupt";
        case NvmeRead::io_error: return "io_error";
    }
    return "?";
}

class NvmeTier {
public:
    // Uses (creating it if missing) `dir` for up to `capacity` bytes, rounded down to whole
    // slabs, and loads the index found there. Throws std::invalid_argument for bad options and
    // std::runtime_error naming `dir` when it cannot be created or written, or when another
    // NvmeTier (in this process or another) is using it.
    NvmeTier(const Catalog& catalog, std::filesystem::path dir, std::uint64_t capacity, NvmeOptions options = {})
        : catalog_(catalog),
          slabs_(std::move(dir), validated_slab_bytes(options, capacity), capacity, options.direct_io, index_mutex_,
                 counters_.used_bytes),
          index_file_(catalog_, slabs_) {
        locations_.resize(catalog_.extent_count());
        counters_.capacity_bytes = slabs_.capacity();
        load();
    }
    NvmeTier(const NvmeTier&) = delete;
    NvmeTier& operator=(const NvmeTier&) = delete;

    // Saves the index, so the next process with this dir starts warm.
    ~NvmeTier() {
        try {
            save_index();
        } catch (const std::exception& e) {
            log(LogLevel::error, "nvme tier: ", e.what(), ": the next start will be cold for what changed since the last save");
        }
    }

    // Stores a copy of sample `id`. `checksum` is the XXH3-64 of `bytes` taken when the sample
    // entered the cache; it is checked again here, so bytes damaged in between are not stored.
    // Returns false, storing nothing, when the tier is full (every slab in use: the caller may
    // evict_oldest_slab() and try again), when the disk is full, or when the write fails. A
    // sample already stored is replaced, unless it holds the same checksum. Throws
    // UnknownSample, or std::invalid_argument when bytes.size() is not the sample's size.
    bool put(ExtentId id, std::span<const std::byte> bytes, std::uint64_t checksum) {
        check_id(id);
        check_size(id, bytes.size(), "put");
        const std::uint64_t extent = detail::nvme_round_up(bytes.size());
        if (bytes.empty() || extent > slabs_.slab_bytes() - detail::kNvmeBlock) return reject();
        if (detail::xxh3(bytes) != checksum) {
            counters_.checksum_failures.fetch_add(1, std::memory_order_relaxed);
            log(LogLevel::warn, "nvme tier: ", describe(id), " handed to put() does not match its checksum: not stored");
            return false;
        }

        Reservation r;
        for (;;) {
            std::optional<std::uint32_t> sealed_empty;
            std::optional<Reservation> got;
            {
                std::lock_guard lock(index_mutex_);
                const Location& loc = locations_[id];
                if (loc.slab != kNoSlab && loc.checksum == checksum) return true;  // already here
                if (!slabs_.admitting_locked()) return reject();
                got = slabs_.reserve_locked(extent, sealed_empty);
                if (!got && !slabs_.has_unreserved_locked()) return reject();  // every slab is in use: the caller evicts
            }
            if (sealed_empty) slabs_.recycle(*sealed_empty);
            if (got) {
                r = *got;
                break;
            }
            if (!slabs_.grow()) return reject();
        }

        Slab& slab = slabs_.slab(r.slab);
        int err = 0;
        bool published = false;
        std::optional<std::uint32_t> emptied;
        {
            std::shared_lock io(slab.io);  // keeps the slab from being reused under the write
            // A slab evicted since we reserved may be someone else's now: write nothing into it.
            const bool current = slab.generation.load() == r.generation;
            if (current) err = slabs_.write_sample(slab, r.offset, bytes);
            std::lock_guard lock(index_mutex_);
            if (current && slab.generation.load() == r.generation) {
                --slab.writing;
                if (err == 0) {
                    // Publish the new copy first, then let the old one go: releasing the old one
                    // first could empty (and retire) this very slab.
                    const Location old = std::exchange(
                        locations_[id], Location{r.slab, static_cast<std::uint32_t>(r.offset / detail::kNvmeBlock), checksum});
                    ++slab.live;
                    slab.ids.push_back(id);
                    slab.dirty.store(true);
                    counters_.insertions.fetch_add(1, std::memory_order_relaxed);
                    if (old.slab == kNoSlab)
                        counters_.resident_samples.fetch_add(1, std::memory_order_relaxed);
                    else
                        emptied = slabs_.release_locked(old.slab);
                    published = true;
                } else {
                    emptied = slabs_.retire_if_empty_locked(r.slab);
                }
            }
        }
        if (emptied) slabs_.recycle(*emptied);
        if (err != 0) {
            std::lock_guard lock(index_mutex_);
            if (err == ENOSPC || err == EDQUOT) {
                slabs_.stop_admitting_locked(err);
            } else {
                log(LogLevel::error, "nvme tier: writing ", describe(id), " to ",
                    slab_path(r.slab).string(), " at offset ", r.offset, ": ", std::strerror(err), ": not stored");
            }
        }
        return published ? true : reject();
    }

    // Reads sample `id` whole into `dest` (exactly its size) and verifies its checksum.
    // `dest` holds the sample only on `hit`. On `corrupt` or `io_error` the copy is dropped
    // and the reason logged: the caller reads the origin instead, and may put() it again.
    // Throws UnknownSample, or std::invalid_argument when dest.size() is not the sample's size.
    NvmeRead get(ExtentId id, std::span<std::byte> dest) {
        check_id(id);
        check_size(id, dest.size(), "get");
        Location loc;
        std::uint64_t generation = 0;
        {
            std::lock_guard lock(index_mutex_);
            loc = locations_[id];
            if (loc.slab != kNoSlab) generation = slabs_.slab(loc.slab).generation.load();
        }
        if (loc.slab == kNoSlab) return miss(NvmeRead::absent);

        Slab& slab = slabs_.slab(loc.slab);
        const std::uint64_t offset = std::uint64_t{loc.block} * detail::kNvmeBlock;
        int err = 0;
        {
            std::shared_lock io(slab.io);
            // Evicted (and maybe reused) since we looked it up: its bytes are not ours any more.
            if (slab.generation.load() != generation) return miss(NvmeRead::absent);
            err = slabs_.read_sample(slab, offset, dest);
        }
        if (err != 0) {
            log(LogLevel::error, "nvme tier: reading ", describe(id), " from ",
                slab_path(loc.slab).string(), " at offset ", offset, ": ",
                err == ENODATA ? "the file ends early" : std::strerror(err), ": copy dropped");
            drop_if_unchanged(id, loc, generation);
            return miss(NvmeRead::io_error);
        }
        if (detail::xxh3(dest) != loc.checksum) {
            counters_.checksum_failures.fetch_add(1, std::memory_order_relaxed);
            log(LogLevel::warn, "nvme tier: checksum mismatch in ", slab_path(loc.slab).string(), " at offset ", offset,
                " for ", describe(id), ": copy dropped, to be fetched again from the origin");
            drop_if_unchanged(id, loc, generation);
            return miss(NvmeRead::corrupt);
        }
        counters_.hits.fetch_add(1, std::memory_order_relaxed);
        counters_.bytes_read.fetch_add(dest.size(), std::memory_order_relaxed);
        return NvmeRead::hit;
    }

    // Drops sample `id`; false if it was not stored. Its space comes back when the rest of
    // its slab is gone too (erased, or the slab evicted).
    bool erase(ExtentId id) {
        check_id(id);
        std::optional<std::uint32_t> emptied;
        {
            std::lock_guard lock(index_mutex_);
            if (locations_[id].slab == kNoSlab) return false;
            emptied = drop_locked(id);
        }
        if (emptied) slabs_.recycle(*emptied);
        return true;
    }

    // Drops every sample of the oldest slab in use (first opened, first out) and makes the
    // slab free; each dropped sample counts as an eviction. Waits for reads inside that slab
    // to finish. False when no slab is in use.
    bool evict_oldest_slab() {
        std::uint32_t s = kNoSlab;
        {
            std::lock_guard lock(index_mutex_);
            const std::optional<std::uint32_t> oldest = slabs_.oldest_locked();
            if (!oldest) return false;
            s = *oldest;
            Slab& slab = slabs_.slab(s);
            std::uint64_t dropped = 0;
            for (const ExtentId id : slab.ids) {
                if (locations_[id].slab != s) continue;  // erased, or replaced by a newer copy elsewhere
                locations_[id] = {};
                ++dropped;
            }
            slab.live = 0;
            counters_.evictions.fetch_add(dropped, std::memory_order_relaxed);
            counters_.resident_samples.fetch_sub(dropped, std::memory_order_relaxed);
            slabs_.retire_locked(s);
        }
        slabs_.recycle(s);
        return true;
    }

    bool contains(ExtentId id) const {
        check_id(id);
        std::lock_guard lock(index_mutex_);
        return locations_[id].slab != kNoSlab;
    }

    // The checksum of the stored copy, if there is one.
    std::optional<std::uint64_t> checksum(ExtentId id) const {
        check_id(id);
        std::lock_guard lock(index_mutex_);
        if (locations_[id].slab == kNoSlab) return std::nullopt;
        return locations_[id].checksum;
    }

    // Writes index.tci atomically (see detail/nvme_format.hpp), after making the slab bytes
    // it names durable. Safe to call while other threads read and write. Throws
    // std::runtime_error naming the file when it cannot be written.
    void save_index() {
        std::lock_guard save_lock(save_mutex_);
        std::vector<detail::NvmeIndexSlab> slab_records;
        std::vector<std::uint32_t> in_use;
        std::vector<std::pair<ExtentId, Location>> stored;
        {
            std::lock_guard lock(index_mutex_);
            slab_records = slabs_.index_records_locked(in_use);
            for (ExtentId id = 0; id < locations_.size(); ++id)
                if (locations_[id].slab != kNoSlab) stored.emplace_back(id, locations_[id]);
        }
        // Every byte the snapshot names was written before it was taken: sync it before the
        // index can point at it.
        slabs_.sync(in_use);
        index_file_.save(slab_records, stored);
    }
    void flush() { save_index(); }

    TierCounters& counters() noexcept { return counters_; }
    const TierCounters& counters() const noexcept { return counters_; }
    // Whole slabs. counters().used_bytes counts the slabs in use (open or holding samples),
    // whole, whatever part of them live samples fill: it is the disk space the tier holds
    // for samples, and it never exceeds this.
    std::uint64_t capacity() const noexcept { return slabs_.capacity(); }
    std::uint64_t slab_bytes() const noexcept { return slabs_.slab_bytes(); }
    std::uint32_t slab_count() const noexcept { return slabs_.slab_count(); }
    bool direct_io() const noexcept { return slabs_.direct_io(); }
    const std::filesystem::path& dir() const noexcept { return slabs_.dir(); }
    // Samples the index brought back when this tier was made.
    std::size_t warm_samples() const noexcept { return warm_; }
    // False after the disk filled up, until eviction or erase frees a slab.
    bool admitting() const {
        std::lock_guard lock(index_mutex_);
        return slabs_.admitting_locked();
    }

    std::filesystem::path slab_path(std::uint32_t slab) const { return slabs_.slab_path(slab); }

    // "nvme: /nvme/tc, 12 slabs of 64 MiB, O_DIRECT"
    std::string describe() const {
        const std::uint32_t count = slabs_.slab_count();
        return "nvme: " + dir().string() + ", " + std::to_string(count) + (count == 1 ? " slab of " : " slabs of ") +
               exact_size(slabs_.slab_bytes()) + (slabs_.direct_io() ? ", O_DIRECT" : ", buffered");
    }

private:
    static constexpr std::uint32_t kNoSlab = detail::kNvmeNoSlab;
    using Location = detail::NvmeLocation;
    using Slab = detail::NvmeSlab;
    using Reservation = detail::NvmeReservation;

    // NvmeOptions::validate(), then the slab size: for the member initialisers, so that bad
    // options throw before the directory is touched.
    static std::uint64_t validated_slab_bytes(const NvmeOptions& options, std::uint64_t capacity) {
        options.validate(capacity);
        return options.slab_bytes_for(capacity);
    }

    static std::string exact_size(std::uint64_t bytes) {
        if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + " GiB";
        if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
        if (bytes % (1ull << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
        return format_size(bytes);
    }

    void check_id(ExtentId id) const {
        if (id >= catalog_.extent_count())
            throw UnknownSample("nvme tier: extent id " + std::to_string(id) + " out of range (catalog holds " +
                                std::to_string(catalog_.extent_count()) + ")");
    }
    void check_size(ExtentId id, std::size_t size, const char* what) const {
        if (size != catalog_.extent_length(id))
            throw std::invalid_argument(std::string("nvme tier: ") + what + " of " + describe(id) + " with " + std::to_string(size) +
                                        " bytes; the extent has " + std::to_string(catalog_.extent_length(id)));
    }
    std::string describe(ExtentId id) const { return detail::nvme_describe(catalog_, id); }

    bool reject() noexcept {
        counters_.rejections.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    NvmeRead miss(NvmeRead why) noexcept {
        counters_.misses.fetch_add(1, std::memory_order_relaxed);
        return why;
    }

    // Forgets where `id` is (index_mutex_ held). Returns its slab when that slab is now empty
    // and sealed: the caller recycle()s it once it holds no lock.
    std::optional<std::uint32_t> drop_locked(ExtentId id) {
        const std::uint32_t s = std::exchange(locations_[id], Location{}).slab;
        if (s == kNoSlab) return std::nullopt;
        counters_.resident_samples.fetch_sub(1, std::memory_order_relaxed);
        return slabs_.release_locked(s);
    }

    void drop_if_unchanged(ExtentId id, const Location& seen, std::uint64_t generation) {
        std::optional<std::uint32_t> emptied;
        {
            std::lock_guard lock(index_mutex_);
            // A put() may have replaced it with a good copy meanwhile: keep that one.
            if (locations_[id] != seen || slabs_.slab(seen.slab).generation.load() != generation) return;
            emptied = drop_locked(id);
        }
        if (emptied) slabs_.recycle(*emptied);
    }

    // From the constructor: the slab files found, then the index over them when it verifies
    // (else it is removed and the tier starts cold), then the extents it brought back.
    void load() {
        std::vector<detail::NvmeSlabFile> files = slabs_.open_files();
        std::vector<detail::NvmeIndexSlab> index_slabs;
        std::vector<detail::NvmeKept> kept;
        std::string why;
        const bool had_index = index_file_.exists();
        if (had_index && !index_file_.read(files, index_slabs, kept, why)) {
            log(LogLevel::warn, "nvme tier: discarding ", index_file_.path().string(), ": ", why, "; starting cold");
            index_file_.remove();
            index_slabs.clear();
            kept.clear();
        }
        index_slabs.resize(slabs_.slab_count());  // slabs past the index's own count are free
        slabs_.adopt(files, index_slabs);
        for (const detail::NvmeKept& k : kept) {
            locations_[k.id] = k.loc;
            Slab& slab = slabs_.slab(k.loc.slab);
            ++slab.live;
            slab.ids.push_back(k.id);
        }
        warm_ = kept.size();
        counters_.resident_samples.store(warm_);
        const std::size_t in_use = slabs_.finish_load();
        if (had_index)
            log(LogLevel::info, "nvme tier: ", dir().string(), ": ", warm_, warm_ == 1 ? " sample" : " samples", " warm in ",
                in_use, in_use == 1 ? " slab" : " slabs");
    }

    const Catalog& catalog_;
    TierCounters counters_;
    std::size_t warm_ = 0;

    // Lock order: save_mutex_, slabs_'s grow mutex, a slab's io (one at a time), index_mutex_.
    // index_mutex_ is innermost and held only for bookkeeping: no disk I/O under it.
    std::mutex save_mutex_;                 // one save_index() at a time (they share a temp file)
    mutable std::mutex index_mutex_;        // protects locations_ and slabs_'s bookkeeping (one put() changes both)
    detail::NvmeSlabs slabs_;               // the slab files; declared after what it refers to
    detail::NvmeIndexFile index_file_;      // index.tci, beside them
    std::vector<Location> locations_;       // protected by index_mutex_; one per catalogued sample
};

}  // namespace tiercache
