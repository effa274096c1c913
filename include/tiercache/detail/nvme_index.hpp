// The nvme tier's index file, index.tci: saving it, and loading it back only when it verifies
// completely (its checksums, its bounds, the slab files it names, their header generations),
// then keeping the entries that still match the catalog. The format, its version and when to
// bump it are nvme_format.hpp's. Also the in-memory form of an entry (NvmeLocation), which the
// tier keeps one of per catalogued extent.
#pragma once
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../catalog.hpp"
#include "../log.hpp"
#include "nvme_format.hpp"
#include "nvme_io.hpp"
#include "nvme_slabs.hpp"
#include "unique_fd.hpp"
#include "xxh3.hpp"

namespace tiercache::detail {

// Where a stored extent is. Absent: slab == kNvmeNoSlab.
struct NvmeLocation {
    std::uint32_t slab = kNvmeNoSlab;
    std::uint32_t block = 0;     // offset in the slab file / kNvmeBlock
    std::uint64_t checksum = 0;  // XXH3-64 of its bytes
    bool operator==(const NvmeLocation&) const = default;
};
static_assert(sizeof(NvmeLocation) == 16);

// An index entry matched to the catalog.
struct NvmeKept {
    ExtentId id;
    NvmeLocation loc;
};

// "sample 'a/b.jpg' (extent 7)", or "'shard.tar' bytes [1048576, 2097152) (extent 9)"
inline std::string nvme_describe(const Catalog& catalog, ExtentId id) {
    const SampleId file = catalog.file_of(id);
    std::string out = catalog.extents_of(file) == 1 ? "sample '" + std::string(catalog.path(file)) + "'"
                                                     : "'" + std::string(catalog.path(file)) + "' bytes [" +
                                                           std::to_string(catalog.extent_start(id)) + ", " +
                                                           std::to_string(catalog.extent_start(id) + catalog.extent_length(id)) + ")";
    return out + " (extent " + std::to_string(id) + ")";
}

// index.tci in the directory of `slabs`, for the extents of `catalog`. Holds no state of its
// own: a save writes a snapshot the tier took, a read fills what the tier then adopts.
class NvmeIndexFile {
public:
    static constexpr const char* kName = "index.tci";

    NvmeIndexFile(const Catalog& catalog, const NvmeSlabs& slabs) : catalog_(catalog), slabs_(slabs) {}

    std::filesystem::path path() const { return slabs_.dir() / kName; }
    bool exists() const { return ::faccessat(slabs_.dir_fd(), kName, F_OK, 0) == 0; }
    void remove() const { ::unlinkat(slabs_.dir_fd(), kName, 0); }

    // Writes index.tci atomically (replace_file_atomically) from a snapshot: `slabs`, every
    // slab's record (NvmeSlabs::index_records_locked()), and `stored`, each stored extent
    // with its location. The slab bytes it names must be durable already (NvmeSlabs::sync()).
    // Throws std::runtime_error naming the file when it cannot be written.
    void save(const std::vector<NvmeIndexSlab>& slabs, const std::vector<std::pair<ExtentId, NvmeLocation>>& stored) const {
        NvmeIndexHeader header{};
        const std::size_t slab_part = slabs.size() * sizeof(NvmeIndexSlab);
        std::vector<std::byte> file(sizeof header + slab_part);
        if (slab_part > 0) std::memcpy(file.data() + sizeof header, slabs.data(), slab_part);
        const std::size_t first_entry = file.size();
        file.resize(first_entry + stored.size() * sizeof(NvmeIndexEntry));
        for (std::size_t i = 0; i < stored.size(); ++i) {
            const auto& [id, loc] = stored[i];
            const SampleId of = catalog_.file_of(id);
            const NvmeIndexEntry entry{path_hash(catalog_.path(of)), catalog_.size_of(of), catalog_.mtime_of(of),
                                       loc.checksum, std::uint64_t{loc.block} * kNvmeBlock, loc.slab, id,
                                       id - catalog_.first_extent(of), static_cast<std::uint32_t>(catalog_.extent_length(id))};
            std::memcpy(file.data() + first_entry + i * sizeof entry, &entry, sizeof entry);
        }
        header.magic = kNvmeIndexMagic;
        header.version = kNvmeIndexVersion;
        header.slab_bytes = slabs_.slab_bytes();
        header.slab_count = static_cast<std::uint32_t>(slabs.size());
        header.entry_count = stored.size();
        header.extent_bytes = catalog_.extent_bytes();
        header.payload_xxh3 = xxh3(std::span<const std::byte>(file).subspan(sizeof header));
        header.saved_unix_ns = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        header.header_xxh3 = nvme_header_hash(header);
        std::memcpy(file.data(), &header, sizeof header);
        replace_file_atomically(slabs_.dir_fd(), slabs_.dir(), kName, file);
    }

    // Reads and verifies index.tci against the slab files (`files`, from
    // NvmeSlabs::open_files()) and the catalog. Fills `records` (one per slab the index has)
    // and `kept` (entries still matching the catalog) and returns true; or returns false with
    // `why`, and the whole index must be discarded.
    bool read(const std::vector<NvmeSlabFile>& files, std::vector<NvmeIndexSlab>& records, std::vector<NvmeKept>& kept,
              std::string& why) const {
        auto fail = [&](std::string reason) {
            why = std::move(reason);
            return false;
        };
        const std::uint64_t slab_bytes = slabs_.slab_bytes();
        const std::uint32_t slab_count = slabs_.slab_count();
        std::vector<std::byte> file;
        {
            UniqueFd fd{::openat(slabs_.dir_fd(), kName, O_RDONLY | O_CLOEXEC)};
            struct stat st {};
            if (!fd || ::fstat(fd.get(), &st) != 0) return fail(std::string("cannot open it: ") + std::strerror(errno));
            file.resize(static_cast<std::size_t>(st.st_size));
            if (const int err = pread_full(fd.get(), file, 0)) return fail(std::string("cannot read it: ") + std::strerror(err));
        }
        NvmeIndexHeader h{};
        if (file.size() < sizeof h) return fail("truncated: " + std::to_string(file.size()) + " bytes, less than its 64-byte header");
        std::memcpy(&h, file.data(), sizeof h);
        if (h.magic != kNvmeIndexMagic) return fail("not a tiercache nvme index (bad magic)");
        if (h.version != kNvmeIndexVersion)
            return fail("format version " + std::to_string(h.version) + ", this build reads version " + std::to_string(kNvmeIndexVersion));
        if (h.header_xxh3 != nvme_header_hash(h)) return fail("its header checksum does not match");
        if (h.slab_bytes != slab_bytes)
            return fail("written for slabs of " + std::to_string(h.slab_bytes) + " bytes, this tier uses " + std::to_string(slab_bytes));
        if (h.extent_bytes != catalog_.extent_bytes())
            return fail("written for extents of " + std::to_string(h.extent_bytes) + " bytes, this cache uses " +
                        std::to_string(catalog_.extent_bytes()));
        const std::uint64_t room = file.size() - sizeof h;
        const std::uint64_t slab_part = std::uint64_t{h.slab_count} * sizeof(NvmeIndexSlab);
        if (slab_part > room || h.entry_count > (room - slab_part) / sizeof(NvmeIndexEntry) ||
            room != slab_part + h.entry_count * sizeof(NvmeIndexEntry)) {
            const double want = static_cast<double>(sizeof h) + static_cast<double>(slab_part) +
                                static_cast<double>(h.entry_count) * sizeof(NvmeIndexEntry);
            return fail(std::string(want > static_cast<double>(file.size()) ? "truncated" : "longer than its header says") + ": " +
                        std::to_string(file.size()) + " bytes for " + std::to_string(h.slab_count) + " slabs and " +
                        std::to_string(h.entry_count) + " entries");
        }
        if (xxh3(std::span<const std::byte>(file).subspan(sizeof h)) != h.payload_xxh3)
            return fail("its payload checksum does not match");

        records.resize(h.slab_count);
        if (slab_part > 0) std::memcpy(records.data(), file.data() + sizeof h, slab_part);  // none: data() may be null
        std::size_t open = 0;
        std::vector<std::uint64_t> seqs;
        for (std::uint32_t s = 0; s < h.slab_count; ++s) {
            const auto& rec = records[s];
            const std::string which = "slab " + std::to_string(s);
            if (rec.state > kSlabSealed) return fail(which + ": unknown state " + std::to_string(rec.state));
            if (rec.state == kSlabFree) continue;
            if (rec.fill_bytes % kNvmeBlock != 0 || rec.fill_bytes < kNvmeBlock || rec.fill_bytes > slab_bytes)
                return fail(which + ": fill " + std::to_string(rec.fill_bytes) + " out of range");
            open += rec.state == kSlabOpen;
            seqs.push_back(rec.fifo_seq);
            if (s >= slab_count) continue;  // past our capacity: its entries go below
            if (!files[s].exists) return fail("slab file " + slabs_.slab_path(s).string() + " is missing");
            if (files[s].size != slab_bytes)
                return fail("slab file " + slabs_.slab_path(s).string() + " is " + std::to_string(files[s].size) + " bytes, not " +
                            std::to_string(slab_bytes));
        }
        if (open > 1) return fail(std::to_string(open) + " slabs open at once");
        std::sort(seqs.begin(), seqs.end());
        if (std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) return fail("two slabs share a FIFO position");

        std::vector<NvmeIndexEntry> entries(h.entry_count);
        if (!entries.empty()) std::memcpy(entries.data(), file.data() + sizeof h + slab_part, entries.size() * sizeof(NvmeIndexEntry));
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const auto& e = entries[i];
            const std::string which = "entry " + std::to_string(i);
            if (e.slab >= h.slab_count) return fail(which + ": slab " + std::to_string(e.slab) + " out of range");
            const auto& rec = records[e.slab];
            if (rec.state == kSlabFree) return fail(which + ": in slab " + std::to_string(e.slab) + ", which is free");
            if (e.size == 0 || e.size > h.extent_bytes || e.offset % kNvmeBlock != 0 || e.offset < kNvmeBlock || e.offset > rec.fill_bytes ||
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
            if (a.slab == b.slab && a.offset + nvme_round_up(a.size) > b.offset)
                return fail("entries overlap in slab " + std::to_string(a.slab) + " at offset " + std::to_string(b.offset));
        }

        // Everything verifies: now match entries to the catalog, slab by slab.
        std::vector<bool> slab_current(h.slab_count, false);
        std::size_t beyond = 0, reused = 0, changed = 0;
        for (std::uint32_t s = 0; s < std::min(h.slab_count, slab_count); ++s) {
            if (records[s].state == kSlabFree) continue;
            if (files[s].generation == records[s].generation) {
                slab_current[s] = true;
            } else {
                log(LogLevel::warn, "nvme tier: ", slabs_.slab_path(s).string(), " was reused or rewritten after the index was saved",
                    " (header generation ", files[s].generation ? std::to_string(*files[s].generation) : "unreadable",
                    ", index says ", records[s].generation, "): its entries dropped");
                records[s] = {};
            }
        }
        for (std::uint32_t s = slab_count; s < h.slab_count; ++s) records[s] = {};
        std::optional<std::unordered_map<std::uint64_t, SampleId>> by_path;  // built only if a hint misses
        std::vector<bool> seen(catalog_.extent_count(), false);
        for (const auto& e : entries) {
            if (e.slab >= slab_count) { ++beyond; continue; }
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
            if (seen[*id]) return fail(nvme_describe(catalog_, *id) + " appears twice");
            seen[*id] = true;
            kept.push_back({*id, {e.slab, static_cast<std::uint32_t>(e.offset / kNvmeBlock), e.checksum}});
        }
        if (beyond > 0)
            log(LogLevel::info, "nvme tier: ", beyond, " index entries dropped: their slabs are past the capacity of ", slab_count, " slabs");
        if (changed > 0)
            log(LogLevel::info, "nvme tier: ", changed, " index entries dropped: their origin files changed or are gone");
        (void)reused;  // logged per slab above
        return true;
    }

private:
    static std::uint64_t path_hash(std::string_view path) noexcept {
        return xxh3(std::as_bytes(std::span<const char>(path.data(), path.size())));
    }

    const Catalog& catalog_;
    const NvmeSlabs& slabs_;
};

}  // namespace tiercache::detail
