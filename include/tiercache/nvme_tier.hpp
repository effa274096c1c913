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
#pragma once
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "catalog.hpp"
#include "detail/nvme_format.hpp"
#include "detail/nvme_io.hpp"
#include "detail/unique_fd.hpp"
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
        : catalog_(catalog), dir_(std::move(dir)) {
        options.validate(capacity);
        slab_bytes_ = options.slab_bytes_for(capacity);
        slab_count_ = static_cast<std::uint32_t>(capacity / slab_bytes_);
        capacity_ = slab_count_ * slab_bytes_;
        direct_io_ = options.direct_io;
        slabs_ = std::make_unique<Slab[]>(slab_count_);
        locations_.resize(catalog_.extent_count());
        counters_.capacity_bytes = capacity_;
        open_dir();
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
        if (bytes.empty() || extent > slab_bytes_ - detail::kNvmeBlock) return reject();
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
                if (!admitting_) return reject();
                got = reserve_locked(extent, sealed_empty);
                if (!got && unreserved_.empty()) return reject();  // every slab is in use: the caller evicts
            }
            if (sealed_empty) recycle(*sealed_empty);
            if (got) {
                r = *got;
                break;
            }
            if (!grow()) return reject();
        }

        Slab& slab = slabs_[r.slab];
        int err = 0;
        bool published = false;
        std::optional<std::uint32_t> emptied;
        {
            std::shared_lock io(slab.io);  // keeps the slab from being reused under the write
            // A slab evicted since we reserved may be someone else's now: write nothing into it.
            const bool current = slab.generation.load() == r.generation;
            if (current) err = write_sample(slab, r.offset, bytes);
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
                        emptied = release_locked(old.slab);
                    published = true;
                } else {
                    emptied = retire_if_empty_locked(r.slab);
                }
            }
        }
        if (emptied) recycle(*emptied);
        if (err != 0) {
            std::lock_guard lock(index_mutex_);
            if (err == ENOSPC || err == EDQUOT) {
                stop_admitting_locked(err);
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
            if (loc.slab != kNoSlab) generation = slabs_[loc.slab].generation.load();
        }
        if (loc.slab == kNoSlab) return miss(NvmeRead::absent);

        Slab& slab = slabs_[loc.slab];
        const std::uint64_t offset = std::uint64_t{loc.block} * detail::kNvmeBlock;
        int err = 0;
        {
            std::shared_lock io(slab.io);
            // Evicted (and maybe reused) since we looked it up: its bytes are not ours any more.
            if (slab.generation.load() != generation) return miss(NvmeRead::absent);
            err = read_sample(slab, offset, dest);
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
        if (emptied) recycle(*emptied);
        return true;
    }

    // Drops every sample of the oldest slab in use (first opened, first out) and makes the
    // slab free; each dropped sample counts as an eviction. Waits for reads inside that slab
    // to finish. False when no slab is in use.
    bool evict_oldest_slab() {
        std::uint32_t s = kNoSlab;
        {
            std::lock_guard lock(index_mutex_);
            if (fifo_.empty()) return false;
            s = fifo_.front();
            Slab& slab = slabs_[s];
            std::uint64_t dropped = 0;
            for (const ExtentId id : slab.ids) {
                if (locations_[id].slab != s) continue;  // erased, or replaced by a newer copy elsewhere
                locations_[id] = {};
                ++dropped;
            }
            slab.live = 0;
            counters_.evictions.fetch_add(dropped, std::memory_order_relaxed);
            counters_.resident_samples.fetch_sub(dropped, std::memory_order_relaxed);
            retire_locked(s);
        }
        recycle(s);
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
        std::vector<std::byte> file;
        std::vector<std::uint32_t> in_use;
        std::vector<std::pair<ExtentId, Location>> stored;
        detail::NvmeIndexHeader header{};
        {
            std::lock_guard lock(index_mutex_);
            file.resize(sizeof header + slab_count_ * sizeof(detail::NvmeIndexSlab));
            for (std::uint32_t s = 0; s < slab_count_; ++s) {
                const Slab& slab = slabs_[s];
                detail::NvmeIndexSlab rec{};
                if (slab.use == SlabUse::open || slab.use == SlabUse::sealed) {
                    rec = {slab.generation.load(), slab.fill, slab.fifo_seq,
                           slab.use == SlabUse::open ? detail::kSlabOpen : detail::kSlabSealed, 0};
                    in_use.push_back(s);
                }
                std::memcpy(file.data() + sizeof header + s * sizeof rec, &rec, sizeof rec);
            }
            for (ExtentId id = 0; id < locations_.size(); ++id)
                if (locations_[id].slab != kNoSlab) stored.emplace_back(id, locations_[id]);
        }
        // Every byte the snapshot names was written before it was taken: sync it before the
        // index can point at it.
        for (const std::uint32_t s : in_use)
            if (slabs_[s].dirty.exchange(false) && ::fdatasync(slabs_[s].fd.get()) != 0)
                throw std::runtime_error("cannot save the index: fdatasync of '" + slab_path(s).string() + "': " + std::strerror(errno));

        const std::size_t first_entry = file.size();
        file.resize(first_entry + stored.size() * sizeof(detail::NvmeIndexEntry));
        for (std::size_t i = 0; i < stored.size(); ++i) {
            const auto& [id, loc] = stored[i];
            const SampleId of = catalog_.file_of(id);
            const detail::NvmeIndexEntry entry{path_hash(catalog_.path(of)), catalog_.size_of(of), catalog_.mtime_of(of),
                                               loc.checksum, std::uint64_t{loc.block} * detail::kNvmeBlock, loc.slab, id,
                                               id - catalog_.first_extent(of), static_cast<std::uint32_t>(catalog_.extent_length(id))};
            std::memcpy(file.data() + first_entry + i * sizeof entry, &entry, sizeof entry);
        }
        header.magic = detail::kNvmeIndexMagic;
        header.version = detail::kNvmeIndexVersion;
        header.slab_bytes = slab_bytes_;
        header.slab_count = slab_count_;
        header.entry_count = stored.size();
        header.extent_bytes = catalog_.extent_bytes();
        header.payload_xxh3 = detail::xxh3(std::span<const std::byte>(file).subspan(sizeof header));
        header.saved_unix_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        header.header_xxh3 = header_hash(header);
        std::memcpy(file.data(), &header, sizeof header);
        detail::replace_file_atomically(dir_fd_.get(), dir_, kIndexName, file);
    }
    void flush() { save_index(); }

    TierCounters& counters() noexcept { return counters_; }
    const TierCounters& counters() const noexcept { return counters_; }
    // Whole slabs. counters().used_bytes counts the slabs in use (open or holding samples),
    // whole, whatever part of them live samples fill: it is the disk space the tier holds
    // for samples, and it never exceeds this.
    std::uint64_t capacity() const noexcept { return capacity_; }
    std::uint64_t slab_bytes() const noexcept { return slab_bytes_; }
    std::uint32_t slab_count() const noexcept { return slab_count_; }
    bool direct_io() const noexcept { return direct_io_; }
    const std::filesystem::path& dir() const noexcept { return dir_; }
    // Samples the index brought back when this tier was made.
    std::size_t warm_samples() const noexcept { return warm_; }
    // False after the disk filled up, until eviction or erase frees a slab.
    bool admitting() const {
        std::lock_guard lock(index_mutex_);
        return admitting_;
    }

    std::filesystem::path slab_path(std::uint32_t slab) const { return dir_ / slab_name(slab); }

    // "nvme: /nvme/tc, 12 slabs of 64 MiB, O_DIRECT"
    std::string describe() const {
        return "nvme: " + dir_.string() + ", " + std::to_string(slab_count_) + (slab_count_ == 1 ? " slab of " : " slabs of ") +
               exact_size(slab_bytes_) + (direct_io_ ? ", O_DIRECT" : ", buffered");
    }

private:
    static constexpr std::uint32_t kNoSlab = 0xFFFF'FFFF;
    static constexpr const char* kIndexName = "index.tci";

    // Where a stored sample is. Absent: slab == kNoSlab.
    struct Location {
        std::uint32_t slab = kNoSlab;
        std::uint32_t block = 0;     // offset in the slab file / kNvmeBlock
        std::uint64_t checksum = 0;  // XXH3-64 of its bytes
        bool operator==(const Location&) const = default;
    };
    static_assert(sizeof(Location) == 16);

    // unreserved: no file yet (or one to replace). free: a file with its space, holding no
    // samples. open: being appended to. sealed: full, waiting for eviction. draining: evicted,
    // waiting for the readers inside it before it is free again. broken: its header could not
    // be rewritten; never used again in this process.
    enum class SlabUse : std::uint8_t { unreserved, free, open, sealed, draining, broken };

    struct Slab {
        std::shared_mutex io;                       // shared: a pread/pwrite of its bytes is in progress;
                                                    // exclusive (briefly): the barrier before reuse
        std::atomic<std::uint64_t> generation{0};   // written with index_mutex_ held; +1 when it stops being in use
        std::atomic<bool> dirty{false};             // written since the last save_index()
        detail::UniqueFd fd;                        // set once, by grow() or load(), before anyone can reach it
        // Protected by index_mutex_:
        SlabUse use = SlabUse::unreserved;
        std::uint64_t fill = detail::kNvmeBlock;    // append point; block 0 is the header
        std::uint64_t fifo_seq = 0;                 // when it was opened: eviction order
        std::uint32_t live = 0;                     // samples stored in it now
        std::uint32_t writing = 0;                  // reservations whose put() has not finished
        std::vector<ExtentId> ids;                  // samples put in it (some since erased or replaced)
    };

    struct Reservation {
        std::uint32_t slab = kNoSlab;
        std::uint64_t offset = 0;
        std::uint64_t generation = 0;
    };

    static std::string slab_name(std::uint32_t slab) {
        char name[32];
        std::snprintf(name, sizeof name, "slab-%05u.tcs", slab);
        return name;
    }

    static std::string exact_size(std::uint64_t bytes) {
        if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + " GiB";
        if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
        if (bytes % (1ull << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
        return format_size(bytes);
    }

    static std::uint64_t path_hash(std::string_view path) noexcept {
        return detail::xxh3(std::as_bytes(std::span<const char>(path.data(), path.size())));
    }
    template <class Header>
    static std::uint64_t header_hash(const Header& h) noexcept {
        return detail::xxh3(std::as_bytes(std::span(&h, 1)).first(offsetof(Header, header_xxh3)));
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
    // "sample 'a/b.jpg' (extent 7)", or "'shard.tar' bytes [1048576, 2097152) (extent 9)"
    std::string describe(ExtentId id) const {
        const SampleId file = catalog_.file_of(id);
        std::string out = catalog_.extents_of(file) == 1 ? "sample '" + std::string(catalog_.path(file)) + "'"
                                                          : "'" + std::string(catalog_.path(file)) + "' bytes [" +
                                                                std::to_string(catalog_.extent_start(id)) + ", " +
                                                                std::to_string(catalog_.extent_start(id) + catalog_.extent_length(id)) + ")";
        return out + " (extent " + std::to_string(id) + ")";
    }

    bool reject() noexcept {
        counters_.rejections.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    NvmeRead miss(NvmeRead why) noexcept {
        counters_.misses.fetch_add(1, std::memory_order_relaxed);
        return why;
    }

    int slab_open_flags() const noexcept { return O_RDWR | O_CLOEXEC | (direct_io_ ? O_DIRECT : 0); }

    // ---- placement (index_mutex_ held) ----------------------------------------------------

    // Room for `extent` bytes at the open slab's end, opening a free slab when it has none.
    // Empty when no free slab is left (then the caller grows the tier or gives up). When the
    // slab it seals holds nothing, `sealed_empty` names it: the caller recycle()s it.
    std::optional<Reservation> reserve_locked(std::uint64_t extent, std::optional<std::uint32_t>& sealed_empty) {
        if (open_ == kNoSlab || slabs_[open_].fill + extent > slab_bytes_) {
            if (free_.empty()) return std::nullopt;
            if (open_ != kNoSlab) {
                const std::uint32_t sealed = std::exchange(open_, kNoSlab);
                slabs_[sealed].use = SlabUse::sealed;
                sealed_empty = retire_if_empty_locked(sealed);
            }
            open_ = free_.back();
            free_.pop_back();
            Slab& slab = slabs_[open_];
            slab.use = SlabUse::open;
            slab.fill = detail::kNvmeBlock;
            slab.fifo_seq = next_fifo_seq_++;
            slab.live = 0;
            slab.writing = 0;
            slab.ids.clear();
            fifo_.push_back(open_);
            counters_.used_bytes.fetch_add(slab_bytes_);
        }
        Slab& slab = slabs_[open_];
        const Reservation r{open_, slab.fill, slab.generation.load()};
        slab.fill += extent;
        ++slab.writing;
        return r;
    }

    // Forgets where `id` is. Returns its slab when that slab is now empty and sealed: the
    // caller recycle()s it once it holds no lock.
    std::optional<std::uint32_t> drop_locked(ExtentId id) {
        const std::uint32_t s = std::exchange(locations_[id], Location{}).slab;
        if (s == kNoSlab) return std::nullopt;
        counters_.resident_samples.fetch_sub(1, std::memory_order_relaxed);
        return release_locked(s);
    }

    // One sample fewer in slab `s`; as drop_locked().
    std::optional<std::uint32_t> release_locked(std::uint32_t s) {
        --slabs_[s].live;
        return retire_if_empty_locked(s);
    }

    // A sealed slab with no samples and no write in progress is retired; returns it then.
    std::optional<std::uint32_t> retire_if_empty_locked(std::uint32_t s) {
        const Slab& slab = slabs_[s];
        if (slab.use != SlabUse::sealed || slab.live != 0 || slab.writing != 0) return std::nullopt;
        retire_locked(s);
        return s;
    }

    // Takes slab `s` out of use: no new reader or writer gets in after the generation moves.
    void retire_locked(std::uint32_t s) {
        Slab& slab = slabs_[s];
        if (open_ == s) open_ = kNoSlab;
        fifo_.erase(std::find(fifo_.begin(), fifo_.end(), s));
        slab.use = SlabUse::draining;
        slab.ids.clear();
        slab.live = 0;
        slab.writing = 0;  // writers still inside see the new generation and count nothing
        slab.generation.fetch_add(1);
    }

    void stop_admitting_locked(int err) {
        if (!admitting_) return;
        admitting_ = false;
        grow_paused_until_ = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        const std::uint64_t reserved = slab_count_ - unreserved_.size();
        log(LogLevel::warn, "nvme tier: ", dir_.string(), " is full (", std::strerror(err), ") after ", reserved,
            reserved == 1 ? " slab (" : " slabs (", format_size(reserved * slab_bytes_),
            "): no longer admitting until eviction frees a slab");
    }

    void drop_if_unchanged(ExtentId id, const Location& seen, std::uint64_t generation) {
        std::optional<std::uint32_t> emptied;
        {
            std::lock_guard lock(index_mutex_);
            // A put() may have replaced it with a good copy meanwhile: keep that one.
            if (locations_[id] != seen || slabs_[seen.slab].generation.load() != generation) return;
            emptied = drop_locked(id);
        }
        if (emptied) recycle(*emptied);
    }

    // ---- slab lifecycle (no lock held on entry) -------------------------------------------

    // Makes a slab free again after retire_locked(): waits for every reader and writer that
    // saw the old generation, then writes the new generation into the slab's header, so an
    // index saved before can never match bytes written after.
    void recycle(std::uint32_t s) {
        Slab& slab = slabs_[s];
        { std::unique_lock barrier(slab.io); }
        const int err = write_slab_header(slab.fd.get(), s, slab.generation.load());
        std::lock_guard lock(index_mutex_);
        counters_.used_bytes.fetch_sub(slab_bytes_);
        if (err != 0) {
            slab.use = SlabUse::broken;
            log(LogLevel::error, "nvme tier: rewriting the header of ", slab_path(s).string(), ": ", std::strerror(err),
                ": slab taken out of service");
            return;
        }
        slab.use = SlabUse::free;
        slab.fill = detail::kNvmeBlock;
        free_.push_back(s);
        if (!admitting_) {
            admitting_ = true;
            log(LogLevel::info, "nvme tier: ", dir_.string(), ": ", slab_name(s), " freed: admitting again");
        }
    }

    // Creates the next slab file and reserves its space. False when the disk is full (then the
    // tier stops admitting, and tries growing again a minute later at the earliest) or the
    // file cannot be made.
    bool grow() {
        std::lock_guard grow_lock(grow_mutex_);
        std::uint32_t s = kNoSlab;
        std::uint64_t generation = 0;
        {
            std::lock_guard lock(index_mutex_);
            if (!free_.empty()) return true;  // another thread grew it, or a slab was freed
            if (!admitting_ || unreserved_.empty() || std::chrono::steady_clock::now() < grow_paused_until_) return false;
            s = unreserved_.back();
            generation = slabs_[s].generation.load() + 1;
        }
        const std::string name = slab_name(s);
        detail::UniqueFd fd{::openat(dir_fd_.get(), name.c_str(), slab_open_flags() | O_CREAT | O_TRUNC, 0600)};
        int err = fd ? detail::reserve_file(fd.get(), slab_bytes_) : errno;
        if (err == 0) err = write_slab_header(fd.get(), s, generation);
        if (err != 0) {
            fd.reset();
            ::unlinkat(dir_fd_.get(), name.c_str(), 0);  // give back whatever fallocate took
            std::lock_guard lock(index_mutex_);
            if (err == ENOSPC || err == EDQUOT) {
                stop_admitting_locked(err);
            } else {
                grow_paused_until_ = std::chrono::steady_clock::now() + std::chrono::minutes(1);
                log(LogLevel::error, "nvme tier: cannot create ", slab_path(s).string(), ": ", std::strerror(err),
                    ": the tier stays at ", slab_count_ - unreserved_.size(), " slabs for now");
            }
            return false;
        }
        std::lock_guard lock(index_mutex_);
        Slab& slab = slabs_[s];
        slab.fd = std::move(fd);
        slab.generation.store(generation);
        slab.use = SlabUse::free;
        unreserved_.pop_back();
        free_.push_back(s);
        return true;
    }

    // ---- I/O ------------------------------------------------------------------------------

    int write_sample(const Slab& slab, std::uint64_t offset, std::span<const std::byte> bytes) const {
        if (!direct_io_) return detail::pwrite_full(slab.fd.get(), bytes, offset);
        const auto bounce = detail::nvme_bounce(bytes.size());
        std::memcpy(bounce.data(), bytes.data(), bytes.size());
        std::memset(bounce.data() + bytes.size(), 0, bounce.size() - bytes.size());
        return detail::pwrite_full(slab.fd.get(), bounce, offset);
    }

    int read_sample(const Slab& slab, std::uint64_t offset, std::span<std::byte> dest) const {
        if (!direct_io_) return detail::pread_full(slab.fd.get(), dest, offset);
        // Whole blocks straight into dest when it allows, else through the bounce buffer.
        if (reinterpret_cast<std::uintptr_t>(dest.data()) % detail::kNvmeBlock == 0 && dest.size() % detail::kNvmeBlock == 0)
            return detail::pread_full(slab.fd.get(), dest, offset);
        const auto bounce = detail::nvme_bounce(dest.size());
        if (const int err = detail::pread_full(slab.fd.get(), bounce, offset)) return err;
        std::memcpy(dest.data(), bounce.data(), dest.size());
        return 0;
    }

    int write_slab_header(int fd, std::uint32_t s, std::uint64_t generation) const {
        detail::NvmeSlabHeader h{detail::kNvmeSlabMagic, detail::kNvmeSlabVersion, slab_bytes_, generation, s, 0, 0};
        h.header_xxh3 = header_hash(h);
        const auto block = detail::nvme_bounce(detail::kNvmeBlock);
        std::memset(block.data(), 0, block.size());
        std::memcpy(block.data(), &h, sizeof h);
        if (const int err = detail::pwrite_full(fd, block, 0)) return err;
        return ::fdatasync(fd) == 0 ? 0 : errno;
    }

    // The slab's generation from its header; empty when the header is not one of ours.
    std::optional<std::uint64_t> read_slab_header(int fd, std::uint32_t s) const {
        const auto block = detail::nvme_bounce(detail::kNvmeBlock);
        if (detail::pread_full(fd, block, 0) != 0) return std::nullopt;
        detail::NvmeSlabHeader h;
        std::memcpy(&h, block.data(), sizeof h);
        if (h.magic != detail::kNvmeSlabMagic || h.version != detail::kNvmeSlabVersion || h.slab_bytes != slab_bytes_ ||
            h.slab != s || h.header_xxh3 != header_hash(h))
            return std::nullopt;
        return h.generation;
    }

    // ---- construction -----------------------------------------------------------------------

    void open_dir() {
        const std::string where = "nvme tier directory '" + dir_.string() + "'";
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        if (ec) throw std::runtime_error(where + ": cannot create it: " + ec.message());
        dir_fd_ = detail::UniqueFd{::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (!dir_fd_) throw std::runtime_error(where + ": " + std::strerror(errno));
        // Two tiers on one directory would overwrite each other's slabs and index.
        if (::flock(dir_fd_.get(), LOCK_EX | LOCK_NB) != 0)
            throw std::runtime_error(where + (errno == EWOULDBLOCK ? ": in use by another nvme tier (this process or another)"
                                                                  : ": cannot lock it: " + std::string(std::strerror(errno))));
        // Can we write here, and does the filesystem take O_DIRECT (tmpfs before Linux 6.6 does not)?
        const char* probe = ".write-probe";
        auto try_write = [&](int flags) -> int {
            detail::UniqueFd fd{::openat(dir_fd_.get(), probe, flags | O_CREAT | O_TRUNC, 0600)};
            if (!fd) return errno;
            const auto block = detail::nvme_bounce(detail::kNvmeBlock);
            std::memset(block.data(), 0, block.size());
            return detail::pwrite_full(fd.get(), block, 0);
        };
        int err = try_write(slab_open_flags());
        if (err == EINVAL && direct_io_) {
            direct_io_ = false;
            err = try_write(slab_open_flags());
            if (err == 0) log(LogLevel::warn, where, " does not support O_DIRECT: the tier reads and writes through the page cache");
        }
        ::unlinkat(dir_fd_.get(), probe, 0);
        if (err != 0) throw std::runtime_error(where + " is not writable: " + std::strerror(err));
    }

    // What load() found of one slab file.
    struct SlabFile {
        bool exists = false;
        std::uint64_t size = 0;
        std::optional<std::uint64_t> generation;  // from a valid header
        detail::UniqueFd fd;
    };

    // An index entry matched to the catalog.
    struct Kept {
        ExtentId id;
        Location loc;
    };

    void load() {
        remove_slab_files_beyond_capacity();
        std::vector<SlabFile> files(slab_count_);
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            SlabFile& f = files[s];
            f.fd = detail::UniqueFd{::openat(dir_fd_.get(), slab_name(s).c_str(), slab_open_flags())};
            if (!f.fd) {
                if (errno != ENOENT) log(LogLevel::warn, "nvme tier: cannot open ", slab_path(s).string(), ": ", std::strerror(errno));
                continue;
            }
            struct stat st {};
            if (::fstat(f.fd.get(), &st) != 0) continue;
            f.exists = true;
            f.size = static_cast<std::uint64_t>(st.st_size);
            if (f.size == slab_bytes_) f.generation = read_slab_header(f.fd.get(), s);
        }

        std::vector<detail::NvmeIndexSlab> index_slabs;
        std::vector<Kept> kept;
        std::string why;
        const bool had_index = ::faccessat(dir_fd_.get(), kIndexName, F_OK, 0) == 0;
        if (had_index && !read_index(files, index_slabs, kept, why)) {
            log(LogLevel::warn, "nvme tier: discarding ", (dir_ / kIndexName).string(), ": ", why, "; starting cold");
            ::unlinkat(dir_fd_.get(), kIndexName, 0);
            index_slabs.clear();
            kept.clear();
        }
        index_slabs.resize(slab_count_);  // slabs past the index's own count are free

        // Slabs the index has in use, with the header generation it saved, become open/sealed.
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            Slab& slab = slabs_[s];
            SlabFile& f = files[s];
            const detail::NvmeIndexSlab& rec = index_slabs[s];
            const bool in_use = rec.state == detail::kSlabOpen || rec.state == detail::kSlabSealed;
            if (f.exists && f.size == slab_bytes_) {
                slab.fd = std::move(f.fd);
                slab.generation.store(std::max(f.generation.value_or(0), rec.generation));
                if (in_use) {
                    slab.use = rec.state == detail::kSlabOpen ? SlabUse::open : SlabUse::sealed;
                    slab.fill = rec.fill_bytes;
                    slab.fifo_seq = rec.fifo_seq;
                } else if (f.generation) {
                    slab.use = SlabUse::free;
                } else {
                    slab.use = SlabUse::draining;  // a file of the right size with a bad header: recycled below
                }
            } else if (f.exists) {
                f.fd.reset();
                ::unlinkat(dir_fd_.get(), slab_name(s).c_str(), 0);  // wrong size: made again when needed
            }
        }
        for (const Kept& k : kept) {
            locations_[k.id] = k.loc;
            ++slabs_[k.loc.slab].live;
            slabs_[k.loc.slab].ids.push_back(k.id);
        }
        warm_ = kept.size();
        counters_.resident_samples.store(warm_);

        std::vector<std::uint32_t> in_use, to_recycle;
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            Slab& slab = slabs_[s];
            if (slab.use == SlabUse::sealed && slab.live == 0) {
                slab.use = SlabUse::draining;  // nothing left in it: free, under a new generation
                slab.generation.fetch_add(1);
            }
            if (slab.use == SlabUse::draining) {
                to_recycle.push_back(s);
                counters_.used_bytes.fetch_add(slab_bytes_);  // recycle() takes it off again
            }
            if (slab.use == SlabUse::open || slab.use == SlabUse::sealed) in_use.push_back(s);
            if (slab.use == SlabUse::free) free_.push_back(s);
            if (slab.use == SlabUse::open) open_ = s;
            if (slab.use == SlabUse::unreserved) unreserved_.push_back(s);
        }
        std::sort(in_use.begin(), in_use.end(), [&](auto a, auto b) { return slabs_[a].fifo_seq < slabs_[b].fifo_seq; });
        for (const std::uint32_t s : in_use) {
            fifo_.push_back(s);
            next_fifo_seq_ = std::max(next_fifo_seq_, slabs_[s].fifo_seq + 1);
        }
        counters_.used_bytes.fetch_add(in_use.size() * slab_bytes_);
        std::reverse(unreserved_.begin(), unreserved_.end());  // lowest number taken first
        std::reverse(free_.begin(), free_.end());
        for (const std::uint32_t s : to_recycle) {
            slabs_[s].generation.fetch_add(1);
            recycle(s);
        }
        if (had_index)
            log(LogLevel::info, "nvme tier: ", dir_.string(), ": ", warm_, warm_ == 1 ? " sample" : " samples", " warm in ",
                in_use.size(), in_use.size() == 1 ? " slab" : " slabs");
    }

    // Slab files numbered past the capacity (it shrank since they were made) hold disk space
    // the tier must not keep.
    void remove_slab_files_beyond_capacity() {
        std::error_code ec;
        std::size_t removed = 0;
        for (auto it = std::filesystem::directory_iterator(dir_, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
            const std::string name = it->path().filename().string();
            unsigned number = 0;
            int consumed = 0;
            if (std::sscanf(name.c_str(), "slab-%u.tcs%n", &number, &consumed) == 1 && static_cast<std::size_t>(consumed) == name.size() &&
                number >= slab_count_ && name == slab_name(number)) {
                ::unlinkat(dir_fd_.get(), name.c_str(), 0);
                ++removed;
            }
        }
        if (removed > 0)
            log(LogLevel::info, "nvme tier: ", dir_.string(), ": removed ", removed, " slab files beyond the capacity of ",
                slab_count_, " slabs");
    }

    // Reads and verifies index.tci against the slab files and the catalog. Fills `slabs`
    // (one record per slab the index has) and `kept` (entries still matching the catalog) and
    // returns true; or returns false with `why`, and the whole index must be discarded.
    bool read_index(const std::vector<SlabFile>& files, std::vector<detail::NvmeIndexSlab>& slabs, std::vector<Kept>& kept,
                    std::string& why) const {
        auto fail = [&](std::string reason) {
            why = std::move(reason);
            return false;
        };
        std::vector<std::byte> file;
        {
            detail::UniqueFd fd{::openat(dir_fd_.get(), kIndexName, O_RDONLY | O_CLOEXEC)};
            struct stat st {};
            if (!fd || ::fstat(fd.get(), &st) != 0) return fail(std::string("cannot open it: ") + std::strerror(errno));
            file.resize(static_cast<std::size_t>(st.st_size));
            if (const int err = detail::pread_full(fd.get(), file, 0)) return fail(std::string("cannot read it: ") + std::strerror(err));
        }
        detail::NvmeIndexHeader h{};
        if (file.size() < sizeof h) return fail("truncated: " + std::to_string(file.size()) + " bytes, less than its 64-byte header");
        std::memcpy(&h, file.data(), sizeof h);
        if (h.magic != detail::kNvmeIndexMagic) return fail("not a tiercache nvme index (bad magic)");
        if (h.version != detail::kNvmeIndexVersion)
            return fail("format version " + std::to_string(h.version) + ", this build reads version " + std::to_string(detail::kNvmeIndexVersion));
        if (h.header_xxh3 != header_hash(h)) return fail("its header checksum does not match");
        if (h.slab_bytes != slab_bytes_)
            return fail("written for slabs of " + std::to_string(h.slab_bytes) + " bytes, this tier uses " + std::to_string(slab_bytes_));
        if (h.extent_bytes != catalog_.extent_bytes())
            return fail("written for extents of " + std::to_string(h.extent_bytes) + " bytes, this cache uses " +
                        std::to_string(catalog_.extent_bytes()));
        const std::uint64_t room = file.size() - sizeof h;
        const std::uint64_t slab_part = std::uint64_t{h.slab_count} * sizeof(detail::NvmeIndexSlab);
        if (slab_part > room || h.entry_count > (room - slab_part) / sizeof(detail::NvmeIndexEntry) ||
            room != slab_part + h.entry_count * sizeof(detail::NvmeIndexEntry)) {
            const double want = static_cast<double>(sizeof h) + static_cast<double>(slab_part) +
                                static_cast<double>(h.entry_count) * sizeof(detail::NvmeIndexEntry);
            return fail(std::string(want > static_cast<double>(file.size()) ? "truncated" : "longer than its header says") + ": " +
                        std::to_string(file.size()) + " bytes for " + std::to_string(h.slab_count) + " slabs and " +
                        std::to_string(h.entry_count) + " entries");
        }
        if (detail::xxh3(std::span<const std::byte>(file).subspan(sizeof h)) != h.payload_xxh3)
            return fail("its payload checksum does not match");

        slabs.resize(h.slab_count);
        if (slab_part > 0) std::memcpy(slabs.data(), file.data() + sizeof h, slab_part);  // none: data() may be null
        std::size_t open = 0;
        std::vector<std::uint64_t> seqs;
        for (std::uint32_t s = 0; s < h.slab_count; ++s) {
            const auto& rec = slabs[s];
            const std::string which = "slab " + std::to_string(s);
            if (rec.state > detail::kSlabSealed) return fail(which + ": unknown state " + std::to_string(rec.state));
            if (rec.state == detail::kSlabFree) continue;
            if (rec.fill_bytes % detail::kNvmeBlock != 0 || rec.fill_bytes < detail::kNvmeBlock || rec.fill_bytes > slab_bytes_)
                return fail(which + ": fill " + std::to_string(rec.fill_bytes) + " out of range");
            open += rec.state == detail::kSlabOpen;
            seqs.push_back(rec.fifo_seq);
            if (s >= slab_count_) continue;  // past our capacity: its entries go below
            if (!files[s].exists) return fail("slab file " + slab_path(s).string() + " is missing");
            if (files[s].size != slab_bytes_)
                return fail("slab file " + slab_path(s).string() + " is " + std::to_string(files[s].size) + " bytes, not " +
                            std::to_string(slab_bytes_));
        }
        if (open > 1) return fail(std::to_string(open) + " slabs open at once");
        std::sort(seqs.begin(), seqs.end());
        if (std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) return fail("two slabs share a FIFO position");

        std::vector<detail::NvmeIndexEntry> entries(h.entry_count);
        if (!entries.empty()) std::memcpy(entries.data(), file.data() + sizeof h + slab_part, entries.size() * sizeof(detail::NvmeIndexEntry));
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const auto& e = entries[i];
            const std::string which = "entry " + std::to_string(i);
            if (e.slab >= h.slab_count) return fail(which + ": slab " + std::to_string(e.slab) + " out of range");
            const auto& rec = slabs[e.slab];
            if (rec.state == detail::kSlabFree) return fail(which + ": in slab " + std::to_string(e.slab) + ", which is free");
            if (e.size == 0 || e.size > h.extent_bytes || e.offset % detail::kNvmeBlock != 0 || e.offset < detail::kNvmeBlock || e.offset > rec.fill_bytes ||
                e.size > rec.fill_bytes - e.offset)
                return fail(which + ": bytes [" + std::to_string(e.offset) + ", +" + std::to_string(e.size) +
                            ") outside the used part of slab " + std::to_string(e.slab));
        }
        std::vector<std::uint32_t> order(entries.size());
        for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), [&](auto a, auto b) {
            return std::pair(entries[a].slab, entries[a].offset) < std::pair(entries[b].slab, entries[b].offset);
        });
        for (std::size_t k = 1; k < order.size(); ++k) {
            const auto& a = entries[order[k - 1]];
            const auto& b = entries[order[k]];
            if (a.slab == b.slab && a.offset + detail::nvme_round_up(a.size) > b.offset)
                return fail("entries overlap in slab " + std::to_string(a.slab) + " at offset " + std::to_string(b.offset));
        }

        // Everything verifies: now match entries to the catalog, slab by slab.
        std::vector<bool> slab_current(h.slab_count, false);
        std::size_t beyond = 0, reused = 0, changed = 0;
        for (std::uint32_t s = 0; s < std::min(h.slab_count, slab_count_); ++s) {
            if (slabs[s].state == detail::kSlabFree) continue;
            if (files[s].generation == slabs[s].generation) {
                slab_current[s] = true;
            } else {
                log(LogLevel::warn, "nvme tier: ", slab_path(s).string(), " was reused or rewritten after the index was saved",
                    " (header generation ", files[s].generation ? std::to_string(*files[s].generation) : "unreadable",
                    ", index says ", slabs[s].generation, "): its entries dropped");
                slabs[s] = {};
            }
        }
        for (std::uint32_t s = slab_count_; s < h.slab_count; ++s) slabs[s] = {};
        std::optional<std::unordered_map<std::uint64_t, SampleId>> by_path;  // built only if a hint misses
        std::vector<bool> seen(catalog_.extent_count(), false);
        for (const auto& e : entries) {
            if (e.slab >= slab_count_) { ++beyond; continue; }
            if (!slab_current[e.slab]) { ++reused; continue; }
            // The extent of file `f` the entry names, if it is the same file and range.
            auto extent_of = [&](SampleId f) -> std::optional<ExtentId> {
                const SampleRecord& rec = catalog_.sample(f);
                if (path_hash(catalog_.path(f)) != e.path_xxh3 || rec.size != e.file_size || rec.mtime_ns != e.mtime_ns ||
                    e.extent >= catalog_.extents_of(f))
                    return std::nullopt;
                const ExtentId x = catalog_.first_extent(f) + e.extent;
                if (catalog_.extent_length(x) != e.size) return std::nullopt;
                return x;
            };
            std::optional<ExtentId> id;
            if (e.id_hint < catalog_.extent_count()) id = extent_of(catalog_.file_of(e.id_hint));
            if (!id) {
                if (!by_path) {
                    by_path.emplace();
                    by_path->reserve(catalog_.size());
                    for (SampleId c = 0; c < catalog_.size(); ++c) by_path->emplace(path_hash(catalog_.path(c)), c);
                }
                if (auto it = by_path->find(e.path_xxh3); it != by_path->end()) id = extent_of(it->second);
            }
            if (!id) { ++changed; continue; }
            if (seen[*id]) return fail(describe(*id) + " appears twice");
            seen[*id] = true;
            kept.push_back({*id, {e.slab, static_cast<std::uint32_t>(e.offset / detail::kNvmeBlock), e.checksum}});
        }
        if (beyond > 0)
            log(LogLevel::info, "nvme tier: ", beyond, " index entries dropped: their slabs are past the capacity of ", slab_count_, " slabs");
        if (changed > 0)
            log(LogLevel::info, "nvme tier: ", changed, " index entries dropped: their origin files changed or are gone");
        (void)reused;  // logged per slab above
        return true;
    }

    const Catalog& catalog_;
    const std::filesystem::path dir_;
    std::uint64_t slab_bytes_ = 0;
    std::uint32_t slab_count_ = 0;
    std::uint64_t capacity_ = 0;
    bool direct_io_ = false;                // fixed after construction
    detail::UniqueFd dir_fd_;               // holds the flock that keeps other tiers out of dir_
    std::unique_ptr<Slab[]> slabs_;         // slab_count_ of them; each carries its own io lock
    TierCounters counters_;
    std::size_t warm_ = 0;

    // Lock order: save_mutex_, grow_mutex_, a slab's io (one at a time), index_mutex_.
    // index_mutex_ is innermost and held only for bookkeeping: no disk I/O under it.
    std::mutex save_mutex_;                 // one save_index() at a time (they share a temp file)
    std::mutex grow_mutex_;                 // one slab file created at a time
    mutable std::mutex index_mutex_;
    std::vector<Location> locations_;       // protected by index_mutex_; one per catalogued sample
    std::deque<std::uint32_t> fifo_;        // protected by index_mutex_; slabs in use, oldest first
    std::vector<std::uint32_t> free_;       // protected by index_mutex_; reserved, empty slabs
    std::vector<std::uint32_t> unreserved_; // protected by index_mutex_; slabs with no file yet, lowest last
    std::uint32_t open_ = kNoSlab;          // protected by index_mutex_; the slab being appended to
    std::uint64_t next_fifo_seq_ = 1;       // protected by index_mutex_
    bool admitting_ = true;                 // protected by index_mutex_; false from a full disk until a slab is freed
    std::chrono::steady_clock::time_point grow_paused_until_{};  // protected by index_mutex_
};

}  // namespace tiercache
