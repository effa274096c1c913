// The cache: a sample's way from the origin to a reader, top to bottom.
//
//   OwnerCache::read / read_chunk / acquire / prefetch, each through locate():
//     1. a memory tier holds it (dram, then pmem, cxl)?  pin it, copy from (or hand out) its
//        bytes; a hit below dram may promote it, as that tier's policy says      -> hit
//     2. the nvme tier holds it?   read it whole, verify its checksum, promote it
//        into a memory tier that admits it (the nvme copy stays)                   -> hit
//     3. otherwise                 read it from the origin into the first tier whose
//        policy admits it (whole, checksummed, published), or just the asked-for
//        bytes if none does                                                        -> miss
//
// What goes where is each tier's policy's call. The default, "plan", places by next use once
// an epoch plan is set (set_plan: the EpochLoader and the mount's plan file do it), and a
// Prefetcher (prefetch()) brings the plan's next samples in just ahead of the reader.
//
// Placement moves samples between tiers under one lock (placement_mutex_): a sample evicted
// from a faster tier is demoted to the next one with room, not dropped. Samples read from the
// origin are also written through to nvme, so a restart finds them: by a background writer
// (nvme_writer.hpp; bounded, never waited for), so a miss answers once the origin's bytes are
// in memory. No disk I/O runs under the lock (Placement: what a step leaves for nvme runs once
// it is let go). Reads take no lock.
// Thread-safe: any number of threads may read at once.
//
// Consistency with the origin: every origin read checks the file it opened against the
// catalog's size and mtime (Origin::read with a FileVersion), before and after reading, so a
// miss never takes bytes of a file that changed; it fails with OriginChanged (EIO) instead,
// keeps nothing, and revalidates the sample. revalidate(id) stats the file: on a change it
// drops the sample from every tier and bumps its version (a fetch in flight across the change
// publishes nothing), and takes the new mtime when the size is the same (later reads get the
// new bytes); a file deleted, resized or no longer a regular file fails its reads with EIO.
//
// Shared (Config::share): the process that opens the cache owns it (OwnerCache); other
// processes join with Cache::attach(name) (AttachedCache) and read the dram tier straight from
// the shared segment, asking the owner for the rest (client.hpp, owner.hpp). Loaders, the
// prefetcher and readers take a Cache&, which is either; what only the owner can do
// (revalidate, flush, every job's plans, zero-copy pins) is OwnerCache's.
#pragma once
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "catalog.hpp"
#include "client.hpp"
#include "config.hpp"
#include "detail/xxh3.hpp"
#include "epoch_plan.hpp"
#include "error.hpp"
#include "memory_tier.hpp"
#include "next_use.hpp"
#include "numa_region.hpp"
#include "nvme_tier.hpp"
#include "nvme_writer.hpp"
#include "origin.hpp"
#include "owner.hpp"
#include "pmem_region.hpp"
#include "readahead.hpp"
#include "record.hpp"
#include "sample_ref.hpp"
#include "segment.hpp"
#include "share.hpp"
#include "stats.hpp"

namespace tiercache {

// Bytes of one read without a copy: a span of tier memory that `ref` keeps pinned, or bytes
// in the caller's scratch buffer (or, after an nvme or origin read of a whole sample, in a
// buffer of the calling thread's, valid until its next read).
struct Chunk {
    SampleRef ref;
    std::span<const std::byte> bytes;
    // The read waited on the origin (its own fetch, or another reader's of the same sample):
    // a stall, as the mount's per-job metrics count them. Always false for an attached client.
    bool waited = false;
};

class OwnerCache;
class AttachedCache;

// What a loader, a prefetcher or a reader reads through: a cache this process owns
// (OwnerCache: Cache::open) or one another process owns and this one joined (AttachedCache:
// Cache::attach). Both hold the catalog; what only an owner can do (revalidate, flush, the
// jobs' plans, zero-copy pins) is OwnerCache's alone, so no call silently does nothing.
class Cache {
public:
    // Scans the origin and builds the tiers. Throws std::invalid_argument for a bad config
    // and std::runtime_error when the origin cannot be scanned or a tier made.
    static OwnerCache open(const Config& config);
    // Joins the shared cache `name` that another process owns. Throws OwnerGone when none
    // serves it, std::runtime_error when this user may not join or the versions differ.
    static AttachedCache attach(const std::string& name, AttachOptions options = {});

    virtual ~Cache() = default;
    Cache(const Cache&) = delete;
    Cache& operator=(const Cache&) = delete;

    const Catalog& catalog() const noexcept { return catalog_; }
    // Whether this process joined another's cache (attach) rather than owning it.
    virtual bool attached() const noexcept = 0;

    // Throws UnknownSample for an id outside the catalog.
    std::uint64_t size(SampleId id) const {
        check(id);
        return catalog_.size_of(id);
    }

    // The id of a relative path ("class/file.jpg"), or UnknownSample naming it.
    SampleId id_of(std::string_view relpath) const {
        if (auto id = catalog_.find(relpath)) return *id;
        throw UnknownSample("no sample '" + std::string(relpath) + "' in " + where());
    }

    // Copies bytes [offset, offset + dest.size()) of sample `id` into dest; returns how many
    // (fewer only at the end of the sample). Throws UnknownSample or OriginError.
    virtual std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) = 0;

    // Copies record `r` (its first dest.size() bytes, if fewer) into dest; returns how many.
    // Throws UnknownSample for a file outside the catalog, std::invalid_argument for a range
    // outside its file (record.hpp), OriginError as read() does.
    std::size_t read(const Record& r, std::span<std::byte> dest) {
        check(r.file);
        check_record(catalog_, r);
        return read(r.file, r.offset, dest.first(static_cast<std::size_t>(std::min<std::uint64_t>(dest.size(), r.length))));
    }

    // Like read(), without a copy when the bytes lie in one extent held in a memory tier.
    // `scratch` (at least the length wanted) receives them otherwise.
    virtual Chunk read_chunk(SampleId id, std::uint64_t offset, std::span<std::byte> scratch) = 0;

    // ---- plans and prefetch ----------------------------------------------------------------

    // Tells the plan-aware policy this epoch's order and, for a seeded plan, the next one's.
    // Replaces any plan before; reads from here on count as this epoch's. Ids outside the
    // catalog are left out.
    void set_plan(const EpochPlan& plan) {
        const std::optional<EpochPlan> next = plan.next_epoch();
        set_plan(plan.order(), next ? next->order() : std::span<const SampleId>{});
    }
    void set_plan(std::span<const SampleId> current, std::span<const SampleId> next = {}) {
        set_plan(std::span<const Record>(whole_files(current)), whole_files(next));
    }
    // A plan of records (a shard's members, an LMDB's values...): `plan`'s order, and the next
    // epoch's for a seeded plan, as positions into `records`. Throws std::invalid_argument
    // when the plan is not over records.size() positions.
    void set_plan(const EpochPlan& plan, std::span<const Record> records) {
        const std::optional<EpochPlan> next = plan.next_epoch();
        set_plan(std::span<const Record>(records_in_order(plan, records)), next ? records_in_order(*next, records) : std::vector<Record>{});
    }
    // This epoch's records in read order, and the next one's when known: this process's plan
    // (the owner serves the union of every job's). Throws std::invalid_argument naming the
    // first record outside the catalog (record.hpp).
    virtual void set_plan(std::span<const Record> current, std::span<const Record> next = {}) = 0;
    // Back to no plan from this process: the plan policy acts as no-evict if no other job has one.
    virtual void clear_plan() = 0;

    enum class Prefetched { resident, fetched, raced, rejected };  // resident must stay 0 (client.hpp)

    // Brings `id` (each of its extents) into the fastest memory tier whose policy takes it,
    // from nvme or the origin, without counting it as read. Does not wait for a fetch in
    // flight (raced), nor read what no tier would keep (rejected). Throws OriginError as reads
    // do. Of several extents: fetched if any was, else raced, rejected, resident in that order.
    Prefetched prefetch(SampleId id) {
        check(id);
        return prefetch(whole_file(catalog_, id));
    }
    // The same for the extents record `r` touches. Throws as read(record) does.
    virtual Prefetched prefetch(const Record& r) = 0;

    // Each file of `ids` whole, ids outside the catalog left out.
    std::vector<Record> whole_files(std::span<const SampleId> ids) const {
        std::vector<Record> out;
        out.reserve(ids.size());
        for (const SampleId id : ids)
            if (catalog_.contains(id)) out.push_back(whole_file(catalog_, id));
        return out;
    }

    LoaderCounters& loader_counters() noexcept { return loader_counters_; }
    PrefetchCounters& prefetch_counters() noexcept { return prefetch_counters_; }

    // The owner's counters (shared by every job) and this process's loader and prefetch ones.
    virtual Stats stats() const = 0;

protected:
    Cache() = default;

    // Where the catalog came from, for messages.
    virtual std::string where() const = 0;

    void check(SampleId id) const {
        if (!catalog_.contains(id))
            throw UnknownSample("sample id " + std::to_string(id) + " out of range (catalog holds " +
                                std::to_string(catalog_.size()) + ")");
    }
    void check_records(std::span<const Record> current, std::span<const Record> next) const {
        for (const auto& list : {current, next})
            for (const Record& r : list) check_record(catalog_, r);
    }
    // This process's loader counters into `s`.
    void add_loader_counters(Stats& s) const {
        const LoaderCounters& l = loader_counters_;
        s.loader_batches = l.batches.load(), s.loader_samples = l.samples.load(), s.loader_bytes = l.bytes.load();
        s.loader_wait_ns = l.wait_ns.load(), s.loader_held_ns = l.held_ns.load();
    }

    Catalog catalog_;                     // set by the constructor of each kind
    LoaderCounters loader_counters_;      // this process's
    PrefetchCounters prefetch_counters_;  // this process's prefetchers'
};

// The cache this process owns: the tiers, the catalog's segment, the origin, and (shared) the
// channel attached clients ask.
class OwnerCache final : public Cache {
public:
    using Cache::prefetch;
    using Cache::read;
    using Cache::set_plan;

    // For tests: read through `origin` (a slow or failing double) instead of the config's.
    OwnerCache(const Config& config, std::unique_ptr<Origin> origin) : config_(config) {
        config_.validate();
        origin_ = origin ? std::move(origin) : std::make_unique<Origin>(config_.origin());
        const ScanResult scan = scan_origin(config_.origin(), config_.hidden_at_root());
        const std::uint64_t dram = config_.dram_bytes();
        const std::size_t memory_tiers = config_.tiers().size();
        const std::uint64_t extents = scan.extent_count(config_.extent_bytes());
        // Room for the catalog, the slots of every tier, the single-flight words, and the dram
        // tier's bytes with the allocator's overhead.
        const std::uint64_t segment_bytes = scan.segment_bytes(config_.extent_bytes()) + memory_tiers * extents * sizeof(SampleSlot) +
                                            extents * sizeof(std::uint32_t) + with_overhead(dram);
        std::optional<SharePaths> shared;
        ShareAccess access;
        if (!config_.share().empty()) {
            shared = SharePaths::of(config_.segment_dir(), config_.share());
            access = ShareAccess::for_group(config_.share_group());
            if (const std::size_t n = reap_stale_shares(config_.segment_dir()))
                log(LogLevel::info, "removed ", n, " shared cache(s) whose owner died in ", config_.segment_dir().string());
            owner_lock_ = std::make_unique<OwnerLock>(*shared, config_.share(), access);
            const std::filesystem::path building = shared->segment.string() + ".building-" + std::to_string(::getpid());
            segment_ = std::make_unique<Segment>(building, segment_bytes, access.file_mode);
            access.apply(building, access.file_mode);
        } else {
            segment_ = std::make_unique<Segment>(config_.segment_dir(), segment_bytes);
        }
        catalog_ = Catalog::place(*segment_, scan, config_.extent_bytes());
        origin_counters_ = segment_->construct_array<OriginCounters>("origin.counters", 1);
        fetching_ = segment_->construct_array<std::atomic<std::uint32_t>>("cache.fetching", std::max<std::size_t>(catalog_.extent_count(), 1));
        versions_ = std::make_unique<std::atomic<std::uint32_t>[]>(std::max<std::size_t>(catalog_.size(), 1));
        gone_ = std::make_unique<std::atomic<bool>[]>(std::max<std::size_t>(catalog_.size(), 1));
        next_use_ = std::make_unique<NextUse>(catalog_.extent_count());
        for (const TierConfig& t : config_.tiers()) add_tier(t);
        readahead_ = std::make_unique<Readahead>(catalog_, config_.readahead(), kReadaheadThreads,
                                                 [this](ExtentId e) { (void)locate(e, {.prefetch = true}); });
        log(LogLevel::info, "catalog: ", catalog_.size(), " samples (", format_size(catalog_.total_bytes()), ", ",
            catalog_.extent_count(), " extents of up to ", format_size(catalog_.extent_bytes()), ") in ", catalog_.dir_count(),
            " directories", scan.skipped ? ", " + std::to_string(scan.skipped) + " entries skipped" : "",
            "; policy ", config_.policy());
        for (const auto& tier : memory_)
            log(LogLevel::info, tier->name(), " tier: ", format_size(tier->capacity()), " in ", tier->region().describe());
        if (shared) {
            SegmentHeader& h = segment_->header();
            h.catalog_header = segment_->offset_of(catalog_.header()), h.catalog_samples = segment_->offset_of(catalog_.samples());
            h.catalog_dirs = segment_->offset_of(catalog_.dirs()), h.catalog_paths = segment_->offset_of(catalog_.paths());
            h.catalog_extents = segment_->offset_of(catalog_.extents());
            h.dram_slots = segment_->offset_of(memory_.front()->slots()), h.dram_counters = segment_->offset_of(&memory_.front()->counters());
            h.origin_counters = segment_->offset_of(origin_counters_);
            h.dram_capacity = memory_.front()->capacity();
            segment_->publish_as(shared->segment);
            service_ = std::make_unique<Service>(*this);
            channel_ = std::make_unique<OwnerChannel>(*service_, *segment_, *shared, access);
            if (!config_.serve_later()) serve();
            log(LogLevel::info, "shared as '", config_.share(), "': ", shared->segment.string(), ", ", shared->socket.string(),
                access.group ? " (group " + config_.share_group() + " may attach)" : " (this user only)");
        }
    }
    explicit OwnerCache(const Config& config) : OwnerCache(config, nullptr) {}
    ~OwnerCache() override = default;

    const Config& config() const noexcept { return config_; }
    bool attached() const noexcept override { return false; }

    // A shared cache's owner starts answering clients (done by open unless Config::serve_later).
    void serve() {
        if (!channel_) return;
        owner_lock_->note_pid();
        channel_->start();
    }

    std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) override {
        Chunk chunk = read_chunk(id, offset, dest);
        if (!chunk.bytes.empty() && chunk.bytes.data() != dest.data())
            std::memcpy(dest.data(), chunk.bytes.data(), chunk.bytes.size());
        return chunk.bytes.size();
    }

    Chunk read_chunk(SampleId id, std::uint64_t offset, std::span<std::byte> scratch) override {
        const std::uint64_t size = this->size(id);
        if (offset >= size || scratch.empty()) return {};
        const std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(scratch.size(), size - offset));
        if (readahead_) readahead_->observe(id, offset, length);
        const ExtentId first = catalog_.extent_at(id, offset), last = catalog_.extent_at(id, offset + length - 1);
        if (first == last) return read_part(first, offset - catalog_.extent_start(first), scratch.first(length));
        // Across extents: each one's part into scratch, the missing ones after the first fetched
        // meanwhile on the readahead threads (one origin read's wait, not one per extent).
        std::vector<ExtentId> missing;
        for (ExtentId e = first + 1; e <= last; ++e)
            if (!memory_.front()->resident(e)) missing.push_back(e);
        readahead_->fetch_alongside(missing);
        Chunk out{{}, {}, false};
        std::size_t done = 0;
        for (ExtentId e = first; e <= last && done < length; ++e) {
            const std::uint64_t within = offset + done - catalog_.extent_start(e);
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(length - done, catalog_.extent_length(e) - within));
            const Chunk part = read_part(e, within, scratch.subspan(done, n));
            if (!part.bytes.empty() && part.bytes.data() != scratch.data() + done)
                std::memcpy(scratch.data() + done, part.bytes.data(), part.bytes.size());
            out.waited = out.waited || part.waited;
            done += part.bytes.size();
            if (part.bytes.size() < n) break;  // the origin file ended early (a read that changed is an error)
        }
        out.bytes = scratch.first(done);
        return out;
    }

    // The whole sample pinned in a memory tier (zero-copy), bringing it in if a tier's policy
    // admits it; empty when it stays out, or when it is larger than one extent (no tier holds
    // it in one piece): read() then. (An attached client pins nothing: a pin outliving a
    // killed client would hold the bytes forever.)
    SampleRef acquire(SampleId id) {
        check(id);
        if (catalog_.extents_of(id) != 1) return {};
        const ExtentId e = catalog_.first_extent(id);
        next_use_->consume(e, 0, catalog_.extent_length(e) + 1);  // a read of it all: any one use
        Found found = locate(e, {.read_bytes = catalog_.extent_length(e)});
        return std::move(found.ref);  // held on nvme only, or by no tier: nothing pinned
    }

    // ---- consistency with the origin ------------------------------------------------------

    enum class Revalidated { unchanged, changed, gone };

    // Stats the origin file of `id` against the catalog. Unchanged: nothing happens. Changed
    // (same size, another mtime at least a second old): every tier drops the sample and the
    // catalog takes the new mtime, so the next read fetches the new bytes. Gone (deleted, another size, not a
    // regular file): every tier drops it, and its reads fail with EIO until the file is back
    // as catalogued. A change is reported once, to on_change's callback, after the locks are
    // let go.
    Revalidated revalidate(SampleId id) {
        check(id);
        struct stat st {};
        const int err = origin_->stat(catalog_.path(id), st);
        const bool same_size = err == 0 && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) == catalog_.size_of(id);
        const std::int64_t mtime = same_size ? detail::mtime_ns_of(st) : 0;
        // A new mtime is taken only once it is kSettleNs old: a write still under way (its
        // mtime is set when it starts) or one to come within the filesystem's timestamp
        // granularity would otherwise leave the mtime as taken, and torn bytes would pass the
        // reads' check. Until then the file counts as gone (EIO); a read or the next pass looks again.
        const bool settled = same_size && (mtime == catalog_.mtime_of(id) || now_ns() - mtime >= kSettleNs);
        const bool present = same_size && settled;
        {
            Placement placement(*this);
            const bool was_gone = gone_[id].load();
            if (present && !was_gone && mtime == catalog_.mtime_of(id)) return Revalidated::unchanged;
            if (!present && was_gone) return Revalidated::gone;  // known already
            versions_[id].fetch_add(1);  // before the drops: a fetch in flight keeps nothing now
            for (ExtentId e = catalog_.first_extent(id), end = e + catalog_.extents_of(id); e < end; ++e) {
                for (auto& tier : memory_)
                    if (tier->resident(e)) tier->evict(e);  // readers that pinned it finish with the old bytes
                if (nvme_) deferred_nvme_.push_back({e, {}, 0, 0, true});  // gone once this returns
            }
            if (present) catalog_.set_mtime(id, mtime);
            gone_[id].store(!present);
        }
        log(LogLevel::info, "origin file '", catalog_.path(id), "' ",
            present ? std::string("changed: cached copies dropped, new bytes from now on")
                    : "is " + std::string(err ? std::strerror(err) : same_size ? "being changed (mtime under a second old)" : "of another size or type") +
                          ": cached copies dropped, reads fail with EIO" + (same_size ? " until it settles" : ""));
        if (on_change_) on_change_(id);
        return present ? Revalidated::changed : Revalidated::gone;
    }

    static constexpr std::int64_t kSettleNs = 1'000'000'000;
    static std::int64_t now_ns() {
        timespec t {};
        ::clock_gettime(CLOCK_REALTIME, &t);
        return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
    }

    // Called (from the thread that noticed) with every sample revalidate() found changed or
    // gone. Set it before the cache is used by other threads.
    void on_change(std::function<void(SampleId)> callback) { on_change_ = std::move(callback); }

    // ---- plans and prefetch ----------------------------------------------------------------

    void set_plan(std::span<const Record> current, std::span<const Record> next = {}) override {
        set_plan(NextUse::kLocalJob, current, next);
    }
    void clear_plan() override { remove_plan(NextUse::kLocalJob); }

    // The owner's view: each job's plan, whose union the plan policy serves (a sample's next
    // use is its soonest across jobs). The mount keys jobs by the pid writing its plan file;
    // attached clients get theirs from the channel.
    void set_plan(JobId job, std::span<const SampleId> current, std::span<const SampleId> next) {
        set_plan(job, std::span<const Record>(whole_files(current)), whole_files(next));
    }
    void set_plan(JobId job, std::span<const Record> current, std::span<const Record> next) {
        check_records(current, next);
        next_use_->set(job, uses_in_order(current), uses_in_order(next), current.size());
        log(LogLevel::debug, "plan of job ", job, ": ", current.size(), " records this epoch", next.empty() ? "" : ", next epoch's known");
    }
    void remove_plan(JobId job) {
        next_use_->remove(job);
    }

    // The extents each record touches, in order, each used from the record's first byte in it
    // (0 in the extents it continues into): what the plan policy ranks.
    std::vector<NextUse::PlannedUse> uses_in_order(std::span<const Record> records) const {
        std::vector<NextUse::PlannedUse> out;
        out.reserve(records.size());
        for (const Record& r : records) {
            if (r.length == 0) continue;  // reads nothing
            for (ExtentId e = catalog_.extent_at(r.file, r.offset), last = catalog_.extent_at(r.file, r.offset + r.length - 1); e <= last; ++e)
                out.push_back({e, static_cast<std::uint32_t>(std::max(r.offset, catalog_.extent_start(e)) - catalog_.extent_start(e))});
        }
        return out;
    }

    Prefetched prefetch(const Record& r) override {
        check(r.file);
        check_record(catalog_, r);
        bool fetched = false, raced = false, rejected = false;
        const ExtentId first = catalog_.extent_at(r.file, r.offset);
        const ExtentId last = r.length == 0 ? first : catalog_.extent_at(r.file, r.offset + r.length - 1);
        for (ExtentId e = first; e <= last; ++e) {
            const Found found = locate(e, {.prefetch = true});
            fetched = fetched || found.moved;
            raced = raced || found.kind == Found::raced;
            rejected = rejected || found.kind == Found::rejected || (found.kind == Found::buffer && !found.moved);  // on nvme, no room above
        }
        return fetched ? Prefetched::fetched : raced ? Prefetched::raced : rejected ? Prefetched::rejected : Prefetched::resident;
    }

    // Writes the nvme tier's index, so that a restart finds it warm (also done on close).
    void flush() {
        if (nvme_) nvme_->flush();
    }

    // Waits until the nvme write-through queued so far is written (or found stale). Reads never
    // need it; tests and tools that look at the nvme tier do. Returns at once while paused.
    void wait_for_nvme_writes() {
        if (nvme_writer_) nvme_writer_->drain();
    }

    // For tests: holds the nvme write-through back (queued, not written) until called with false.
    void pause_nvme_writes_for_testing(bool paused) {
        if (nvme_writer_) nvme_writer_->pause(paused);
    }

    // The XXH3-64 checksum taken when the sample's first extent (a small file's only one)
    // entered the cache, if a memory tier holds it.
    std::optional<std::uint64_t> resident_checksum(SampleId id) {
        check(id);
        for (auto& tier : memory_)
            if (auto sum = tier->checksum(catalog_.first_extent(id))) return sum;
        return std::nullopt;
    }

    Stats stats() const override {
        Stats s = owner_stats();
        add_loader_counters(s);
        return s;
    }

private:
    std::string where() const override { return config_.origin().string(); }

    // What the channel asks of the owner.
    struct Service final : OwnerService {
        explicit Service(OwnerCache& c) : cache(c) {}
        std::size_t samples() const override { return cache.catalog_.size(); }
        std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) override { return cache.read(id, offset, dest); }
        std::uint32_t prefetch(const Record& r) override { return static_cast<std::uint32_t>(cache.prefetch(r)); }
        void set_plan(JobId job, std::span<const Record> current, std::span<const Record> next) override {
            cache.set_plan(job, current, next);
        }
        void remove_plan(JobId job) override { cache.remove_plan(job); }
        void hits(std::span<const detail::SharedHit> hits) override {
            MemoryTier& dram = *cache.memory_.front();
            for (const detail::SharedHit& h : hits) {
                if (h.id >= cache.catalog_.extent_count()) continue;
                dram.counters().hits.fetch_add(1, std::memory_order_relaxed);
                dram.counters().bytes_read.fetch_add(h.bytes, std::memory_order_relaxed);
                dram.policy().on_hit(h.id);
                cache.next_use_->consume(h.id, h.offset, std::uint64_t{h.offset} + h.bytes);
            }
        }
        std::string stats_json() override { return to_json(cache.stats()).dump(); }
        // The nvme index is what makes a restart warm; an owner killed with kill -9 never
        // gets to save it on close, so it is saved while it changes (rewriting it costs
        // about 50 bytes a sample, so only then).
        void every_few_seconds() override {
            if (!cache.nvme_) return;
            const TierCounters& c = cache.nvme_->counters();
            const std::uint64_t changes = c.insertions.load() + c.evictions.load() + c.checksum_failures.load();
            if (changes == saved_changes) return;
            cache.flush();
            saved_changes = changes;
        }
        std::uint64_t saved_changes = 0;  // the heartbeat thread's alone
        OwnerCache& cache;
    };

    Stats owner_stats() const {
        Stats s;
        for (const auto& tier : memory_) s.tiers.push_back(TierStats::from(tier->name(), tier->region().describe(), tier->counters()));
        if (nvme_) s.tiers.push_back(TierStats::from("nvme", nvme_->describe(), nvme_->counters()));
        s.origin_bytes_read = origin_counters_->bytes_read.load();
        s.origin_reads = origin_counters_->reads.load();
        s.origin_errors = origin_counters_->errors.load();
        s.samples = catalog_.size();
        s.dataset_bytes = catalog_.total_bytes();
        s.extents = catalog_.extent_count();
        s.extent_bytes = catalog_.extent_bytes();
        s.segment_bytes = segment_->size();
        s.policy = config_.policy();
        s.plan_samples = next_use_->planned_samples();
        s.plan_jobs = next_use_->jobs().size();
        if (channel_) s.share_name = config_.share(), s.share_connections = channel_->connections(), s.share_jobs = channel_->jobs();
        const PrefetchCounters& p = prefetch_counters_;
        s.prefetch_issued = p.issued.load(), s.prefetch_fetched = p.fetched.load(), s.prefetch_resident = p.resident.load();
        s.prefetch_raced = p.raced.load(), s.prefetch_rejected = p.rejected.load(), s.prefetch_errors = p.errors.load();
        s.prefetch_bytes = p.bytes.load();
        if (nvme_writer_) {
            const NvmeWriterCounters& w = nvme_writer_->counters();
            s.nvme_writes_queued = w.queued.load(), s.nvme_writes_skipped = w.skipped.load(), s.nvme_writes_retried = w.retried.load();
            s.nvme_writes_written = w.written.load(), s.nvme_writes_dropped = w.dropped.load(), s.nvme_writes_awaited = w.awaited.load();
            s.nvme_write_queue_bytes = nvme_writer_->queued_bytes(), s.nvme_write_queue_capacity = nvme_writer_->max_bytes();
        }
        return s;
    }

    // A region's size for `capacity` bytes of samples: the allocator's headers and
    // fragmentation take about 1/16 for ~100 KiB samples.
    static std::uint64_t with_overhead(std::uint64_t capacity) { return capacity + capacity / 16 + (16u << 20); }

    void add_tier(const TierConfig& t) {
        const std::uint64_t capacity = tier_bytes(t);
        const std::byte* base = nullptr;  // private regions: slots hold absolute addresses
        switch (t.kind) {
            case TierKind::dram:
                regions_.push_back(std::make_unique<SegmentRegion>(*segment_));
                base = segment_->at(0);  // offsets into the segment, meaningful to any process mapping it
                break;
            case TierKind::pmem:
                regions_.push_back(std::make_unique<PmemRegion>(t.dir, with_overhead(capacity)));
                break;
            case TierKind::cxl:
                regions_.push_back(std::make_unique<NumaRegion>(t.node, with_overhead(capacity)));
                break;
            case TierKind::nvme:
                nvme_ = std::make_unique<NvmeTier>(catalog_, t.dir, capacity);
                log(LogLevel::info, nvme_->describe(), ": ", nvme_->warm_samples(), " samples warm from its index");
                nvme_writer_ = std::make_unique<NvmeWriter>(
                    write_queue_bytes(), [this](const NvmeWrite& w) { return store(w); }, [this](ExtentId e) { end_flight(e); },
                    [this](ExtentId e) { return write_back(e); });
                return;
        }
        memory_.push_back(std::make_unique<MemoryTier>(t.name(), *segment_, catalog_, *regions_.back(), base, capacity,
                                                       make_policy(config_.policy(), catalog_.extent_count(), *next_use_)));
    }

    // ---- finding an extent: memory -> nvme -> the origin ----------------------------------

    // Bytes [within, within + scratch.size()) of extent `e` (all inside it): pinned in a memory
    // tier, in the thread's buffer (from nvme), or read into scratch from the origin.
    Chunk read_part(ExtentId e, std::uint64_t within, std::span<std::byte> scratch) {
        // Before placement: its next use is no longer this one. Once per read of a record (by
        // the read of its first byte), not per chunk: reads are not tied to a job, and a
        // second chunk would use up another job's use of it.
        next_use_->consume(e, within, within + scratch.size());
        Found found = locate(e, {.read_bytes = scratch.size()});
        if (found.kind == Found::memory) {
            const auto bytes = found.ref.bytes().subspan(within, scratch.size());
            return {std::move(found.ref), bytes, found.waited};
        }
        if (found.kind == Found::buffer) return {{}, found.whole.subspan(within, scratch.size()), found.waited};
        // Rejected: no tier takes it, so just the bytes asked for.
        const std::size_t n = read_origin(catalog_.file_of(e), catalog_.extent_start(e) + within, scratch, false);
        return {{}, scratch.first(n), true};
    }

    // How the caller of locate() uses what it finds.
    struct Use {
        // A read counts a hit or miss in each tier it looks in, and waits for another
        // thread's fetch of the extent. A prefetch counts nothing, pins nothing, moves a
        // resident extent up, and does not wait (raced).
        bool prefetch = false;
        std::uint64_t read_bytes = 0;  // a read's length, for the tier's bytes_read
    };

    // Where locate() found or put the extent.
    struct Found {
        enum Kind {
            memory,    // in a memory tier: `ref` pins it (empty for a prefetch of a resident one)
            buffer,    // whole in the calling thread's buffer (`whole`), verified: on nvme only
            raced,     // another thread is fetching it and the caller does not wait
            rejected,  // no tier admits it: the caller reads the origin itself, or gives up
        } kind;
        SampleRef ref;
        std::span<const std::byte> whole;
        bool waited = false;  // it waited on the origin (its own fetch or another's): a stall
        bool moved = false;   // this call brought it in: from nvme into memory, or from the origin
    };

    // The one way an extent is looked for and brought in, for read_chunk, acquire and prefetch.
    Found locate(ExtentId e, const Use& use) {
        bool waited = false;
        for (;;) {
            if (std::optional<SampleRef> in = find_in_memory(e, use)) return {Found::memory, std::move(*in), {}, waited};
            // A prefetch asks the index first, so that it counts no nvme miss.
            if (nvme_ && (!use.prefetch || nvme_->contains(e))) {
                const std::span<std::byte> whole = thread_buffer(catalog_.extent_length(e));
                if (NvmeHit got = read_nvme(e, whole); got.hit) {
                    if (got.promoted) return {Found::memory, std::move(got.promoted), {}, waited, true};
                    return {Found::buffer, {}, whole, waited, false};
                }
            }
            const Fetch fetch = begin_fetch(e);
            switch (fetch.kind) {
                case Fetch::wait:
                    if (use.prefetch) return {Found::raced, {}, {}};
                    fetching_[e].wait(1);
                    waited = true;
                    continue;
                case Fetch::bypass: return {Found::rejected, {}, {}, waited};
                case Fetch::nvme: {
                    const std::span<std::byte> whole = thread_buffer(catalog_.extent_length(e));
                    finish_nvme_fetch(e, fetch.version, whole);
                    return {Found::buffer, {}, whole, true, true};
                }
                case Fetch::memory: {
                    SampleRef ref = finish_fetch(e, fetch);
                    waited = true;
                    // Empty: revalidated while it was read, nothing kept. A reader looks again.
                    if (ref || use.prefetch) return {Found::memory, std::move(ref), {}, true, true};
                    continue;
                }
            }
        }
    }

    // The extent in the fastest memory tier holding it: pinned, counting a hit there and a
    // miss in each tier above, and maybe promoted; for a prefetch (nothing counted), not
    // pinned, and moved up whole if a faster tier would take it. Nothing if no tier holds it.
    std::optional<SampleRef> find_in_memory(ExtentId e, const Use& use) {
        for (std::size_t k = 0; k < memory_.size(); ++k) {
            MemoryTier& tier = *memory_[k];
            if (use.prefetch) {
                if (!tier.resident(e)) continue;
                if (k > 0 && promotion_possible(e, k)) move_up(e, k);
                return SampleRef{};
            }
            if (SampleRef ref = tier.pin(e)) {
                tier.counters().hits.fetch_add(1, std::memory_order_relaxed);
                tier.counters().bytes_read.fetch_add(use.read_bytes, std::memory_order_relaxed);
                tier.policy().on_hit(e);
                if (k > 0 && promotion_possible(e, k)) promote(e, k, ref);
                return ref;
            }
            tier.counters().misses.fetch_add(1, std::memory_order_relaxed);
        }
        return std::nullopt;
    }

    // Whether a tier faster than `k` could take `e` now, checked without the lock so that
    // hits below a full no-evict tier cost nothing.
    bool promotion_possible(ExtentId e, std::size_t k) {
        for (std::size_t j = 0; j < k; ++j)
            if (memory_[j]->policy().evicts() || memory_[j]->free_bytes() >= catalog_.extent_length(e)) return true;
        return false;
    }

    // Moves `e` from tier k (where `from` pins it) to the fastest tier above that admits it.
    void promote(ExtentId e, std::size_t k, const SampleRef& from) {
        Placement placement(*this);
        if (fetching_[e].load() != 0 || !memory_[k]->resident(e)) return;  // on the move already
        if (place_copy(e, from.bytes(), *memory_[k]->checksum(e), 0, k, Counted::promotion)) {
            // Making room above may have demoted a victim into tier k and evicted `e` from it
            // already; otherwise it goes now (the reader's pin keeps its bytes).
            if (memory_[k]->resident(e)) memory_[k]->evict(e);
        }
    }

    // Like promote(), for a sample no reader of ours pins: it leaves tier k first, so that the
    // victim a faster tier demotes can take its room instead of pushing out another sample.
    // Only when a faster tier's policy would take it; otherwise it stays where it is.
    void move_up(ExtentId e, std::size_t k) {
        Placement placement(*this);
        if (fetching_[e].load() != 0 || !memory_[k]->resident(e)) return;
        const std::uint64_t size = catalog_.extent_length(e);
        bool wanted_above = false;
        for (std::size_t j = 0; j < k && !wanted_above; ++j)
            wanted_above = size <= memory_[j]->capacity() && memory_[j]->policy().admit(e, size, memory_[j]->free_bytes());
        if (!wanted_above) return;
        const std::uint64_t checksum = *memory_[k]->checksum(e);
        std::span<std::byte> copy = thread_buffer(catalog_.extent_length(e));
        {
            SampleRef from = memory_[k]->pin(e);
            if (!from) return;
            std::memcpy(copy.data(), from.bytes().data(), copy.size());
        }
        memory_[k]->evict(e);
        // Back into tier k at worst, its room being free; a promotion only above it.
        if (const auto placed = place_copy(e, copy, checksum, 0, memory_.size(), Counted::nothing); placed && *placed < k)
            memory_[*placed]->counters().promotions.fetch_add(1, std::memory_order_relaxed);
    }

    // ---- the placement lock ----------------------------------------------------------------

    // What a placement step leaves the nvme tier to do: write a demoted extent's copy, or drop
    // a copy (whose slab may then be recycled, a header write that waits for the slab's readers).
    struct DeferredNvme {
        ExtentId extent;
        std::vector<std::byte> bytes;  // write: a copy of the extent's bytes
        std::uint64_t checksum = 0;
        std::uint32_t version = 0;     // the file's, when it was demoted: written only if still so
        bool erase = false;
        bool single_flight = false;    // the write ends the extent's fetch (demote marked it in flight)
    };

    // The placement lock for one placement step. Disk I/O never runs under it: what the step
    // left for the nvme tier (deferred_nvme_) runs once it is let go, on the same thread, before
    // the step's caller goes on. A reader meanwhile may miss a demoted extent (one origin read
    // more) or still find a dropped copy (a read concurrent with the change): never wrong bytes,
    // since a copy of a changed file is never promoted (versions_) and never written (below).
    class Placement {
    public:
        explicit Placement(OwnerCache& cache) : cache_(cache), lock_(cache.placement_mutex_) {}
        Placement(const Placement&) = delete;
        Placement& operator=(const Placement&) = delete;
        ~Placement() {
            std::vector<DeferredNvme> work;
            work.swap(cache_.deferred_nvme_);
            lock_.unlock();
            for (DeferredNvme& w : work) cache_.run_deferred(w);
        }

    private:
        OwnerCache& cache_;
        std::unique_lock<std::mutex> lock_;
    };

    void run_deferred(DeferredNvme& w) noexcept {
        try {
            // A demoted copy goes to the writer as well, if it has room (it then ends the flight);
            // when full, it is written here, as it always was: it left memory, so nothing else would.
            if (!w.erase && nvme_writer_ && version_of(w.extent).load() == w.version) {
                NvmeWrite write{w.extent, {}, std::move(w.bytes), w.checksum, w.version, w.single_flight};
                if (nvme_writer_->offer(std::move(write))) return;
                w.bytes = std::move(write.owned);
            }
            if (!w.erase && version_of(w.extent).load() == w.version && put_nvme(w.extent, w.bytes, w.checksum) &&
                version_of(w.extent).load() == w.version) {
                if (w.single_flight) end_flight(w.extent);
                return;
            }
            if (w.erase || version_of(w.extent).load() != w.version) nvme_->erase(w.extent);  // a copy dropped is always safe
        } catch (const std::exception& e) {
            log(LogLevel::warn, "nvme: ", w.erase ? "dropping" : "writing", " a copy of '", catalog_.path(catalog_.file_of(w.extent)),
                "' at ", catalog_.extent_start(w.extent), ": ", e.what());
        }
        if (w.single_flight) end_flight(w.extent);  // not stored: its next reader goes to the origin
    }

    // ---- placement: placement_mutex_ held ------------------------------------------------

    // Room for `e` in memory tier k if its policy admits it, demoting that tier's victims
    // as needed; the reserved block, or nullptr. A victim still pinned (a reader copying it, or
    // its queued nvme write) keeps its room until let go: while that much room is on its way,
    // `e` goes elsewhere this time rather than more being demoted for it (a writer lagging
    // behind would otherwise empty the tier, one victim per miss, and gain no room by it).
    std::byte* admit_into(std::size_t k, ExtentId e) {
        MemoryTier& tier = *memory_[k];
        const std::uint64_t size = catalog_.extent_length(e);
        if (size == 0 || size > tier.capacity() || !tier.policy().admit(e, size, tier.free_bytes())) return nullptr;
        if (std::byte* bytes = tier.reserve(e)) return bytes;
        while (tier.policy().evicts() && tier.pinned_evicted_bytes() < size) {
            const auto victim = tier.policy().victim_for(e);
            if (!victim) break;
            demote(k, *victim);
            if (std::byte* bytes = tier.reserve(e)) return bytes;
        }
        return nullptr;
    }

    enum class Counted { nothing, promotion };

    // Admit, copy, publish (and count): puts a copy of `bytes` (sample `e`, with `checksum`)
    // into the first memory tier in [first, last) whose policy admits it, demoting that tier's
    // victims as needed. The tier it went to, or nothing. `pinned`, if given, receives the
    // caller's pinned view of the new copy.
    std::optional<std::size_t> place_copy(ExtentId e, std::span<const std::byte> bytes, std::uint64_t checksum,
                                          std::size_t first, std::size_t last, Counted counted, SampleRef* pinned = nullptr) {
        for (std::size_t j = first; j < last; ++j) {
            std::byte* block = admit_into(j, e);
            if (block == nullptr) continue;
            populate_for_write({block, bytes.size()});  // fewer faults inside the copy, under the lock
            std::memcpy(block, bytes.data(), bytes.size());
            SampleRef ref = memory_[j]->publish(e, block, checksum);
            if (counted == Counted::promotion) memory_[j]->counters().promotions.fetch_add(1, std::memory_order_relaxed);
            if (pinned) *pinned = std::move(ref);
            return j;
        }
        return std::nullopt;
    }

    // Evicts `e` from memory tier k, first copying it to the next tier down that admits it.
    void demote(std::size_t k, ExtentId e) {
        MemoryTier& tier = *memory_[k];
        if (SampleRef from = tier.pin(e)) {
            const std::uint64_t checksum = *tier.checksum(e);
            bool placed = place_copy(e, from.bytes(), checksum, k + 1, memory_.size(), Counted::nothing).has_value();
            if (!placed && nvme_) {
                // Written through when it came in, as a rule (or its write-through, still queued,
                // goes first and its readers wait for it); else a copy is written once the
                // placement lock is let go (no disk I/O under it).
                if (!nvme_->contains(e) && !await_write_through(e)) {
                    // On no tier until that copy lands: its fetch is in flight till then (run_deferred
                    // ends it), so a reader meanwhile waits for the write, not the origin.
                    const bool flight = fetching_[e].load() == 0;
                    if (flight) fetching_[e].store(1);
                    deferred_nvme_.push_back({e, {from.bytes().begin(), from.bytes().end()}, checksum, version_of(e).load(), false, flight});
                }
                placed = true;
            }
            if (placed) tier.counters().demotions.fetch_add(1, std::memory_order_relaxed);
        }
        tier.evict(e);
    }

    // Extent `e`, leaving memory, is not on nvme yet: if its write-through is still queued (or
    // under way), its fetch is in flight until that write lands (nvme_writer.hpp, take_flight),
    // so that its readers wait for the write instead of reading the origin again. Set before
    // the hand-over: the writer may end it at once.
    bool await_write_through(ExtentId e) {
        if (!nvme_writer_ || fetching_[e].load() != 0) return false;
        fetching_[e].store(1);
        if (nvme_writer_->take_flight(e, version_of(e).load())) return true;
        fetching_[e].store(0);  // no reader saw it: it is set and cleared under the placement lock
        return false;
    }

    // Stores a copy on nvme (if not there already), evicting its oldest slab when full and
    // the policy evicts. Thread-safe: the nvme tier locks itself.
    bool put_nvme(ExtentId e, std::span<const std::byte> bytes, std::uint64_t checksum) {
        // A copy that cannot be written is only a copy lost: the read, and the single-flight
        // state of the miss around it, must go on (an exception here would leave them stuck).
        try {
            if (nvme_->put(e, bytes, checksum)) return true;
            const bool evicts = memory_.back()->policy().evicts();  // one policy for every tier
            return evicts && nvme_->admitting() && nvme_->evict_oldest_slab() && nvme_->put(e, bytes, checksum);
        } catch (const std::exception& error) {
            log(LogLevel::warn, "nvme: could not store '", catalog_.path(catalog_.file_of(e)), "' at ", catalog_.extent_start(e), ": ",
                error.what());
            return false;
        }
    }

    // ---- nvme -----------------------------------------------------------------------------

    // A buffer of the calling thread's for whole samples read from nvme or the origin.
    static std::span<std::byte> thread_buffer(std::uint64_t size) {
        thread_local std::vector<std::byte> buffer;
        if (buffer.size() < size) buffer.resize(size);
        return {buffer.data(), static_cast<std::size_t>(size)};
    }

    struct NvmeHit {
        bool hit = false;    // `whole` holds the sample, verified
        SampleRef promoted;  // its copy in a memory tier, if one took it
    };

    // Reads `e` from nvme into `whole`, then promotes it into the first memory tier that
    // admits it. The nvme copy stays: it is what makes a restart warm.
    NvmeHit read_nvme(ExtentId e, std::span<std::byte> whole) {
        const std::uint32_t version = version_of(e).load();
        if (nvme_->get(e, whole) != NvmeRead::hit) return {};  // absent, or a bad copy dropped: the origin again
        if (!promotion_possible(e, memory_.size())) return {true, {}};
        const auto stored = nvme_->checksum(e);  // the bytes were just verified against it
        const std::uint64_t checksum = stored ? *stored : detail::xxh3(whole);
        Placement placement(*this);
        if (fetching_[e].load() != 0) return {true, {}};
        if (version_of(e).load() != version) return {true, {}};  // the file changed meanwhile: keep no copy of it
        for (const auto& tier : memory_)
            if (tier->resident(e)) return {true, {}};  // promoted by another reader meanwhile
        SampleRef promoted;
        place_copy(e, whole, checksum, 0, memory_.size(), Counted::promotion, &promoted);
        return {true, std::move(promoted)};
    }

    // ---- misses ---------------------------------------------------------------------------

    // What a miss does: wait for another thread's fetch of the same sample, read it into a
    // memory tier's reserved block, or bypass the tiers.
    struct Fetch {
        enum Kind { wait, memory, nvme, bypass } kind;
        std::size_t tier = 0;
        std::byte* bytes = nullptr;
        std::uint32_t version = 0;  // the sample's, when the fetch began: publish only if still so
    };

    Fetch begin_fetch(ExtentId e) {
        Placement placement(*this);
        if (fetching_[e].load() != 0) return {Fetch::wait};
        // Landed on nvme since the caller looked there (a demoted copy's write): look again.
        if (nvme_ && nvme_->contains(e)) return {Fetch::wait};
        for (std::size_t k = 0; k < memory_.size(); ++k) {
            if (memory_[k]->resident(e)) return {Fetch::wait};  // arrived meanwhile: look again
            if (std::byte* bytes = admit_into(k, e)) {
                fetching_[e].store(1);
                return {Fetch::memory, k, bytes, version_of(e).load()};
            }
        }
        for (auto& tier : memory_) tier->counters().rejections.fetch_add(1, std::memory_order_relaxed);
        if (nvme_ && nvme_->admitting() && catalog_.extent_length(e) > 0) {
            fetching_[e].store(1);
            return {Fetch::nvme, 0, nullptr, version_of(e).load()};
        }
        return {Fetch::bypass};
    }

    // Reads the whole sample from the origin into `whole` and hands a copy to the nvme writer
    // (no memory tier holds these bytes). The fetch stays in flight until it is written, so a
    // reader of the same extent meanwhile waits for it rather than reading the origin again.
    // When the writer is full, it is written here, as before the writer: these bytes are
    // nowhere else, and skipping them would cost an origin read for every later read of them
    // (the kernel's second READ of a file included), so the nvme device, the bottleneck then,
    // slows the reader down instead.
    void finish_nvme_fetch(ExtentId e, std::uint32_t version, std::span<std::byte> whole) {
        auto done = [this, e] {
            fetching_[e].store(0);
            fetching_[e].notify_all();
        };
        try {
            read_extent(e, whole);
        } catch (...) {
            done();
            throw;
        }
        NvmeWrite write{e, {}, {whole.begin(), whole.end()}, detail::xxh3(whole), version, true};
        if (!nvme_writer_->offer(std::move(write))) write_through(write);  // ends the fetch too
    }

    // Reads the whole sample from the origin into the reserved block, checksums and
    // publishes it. On an origin error the block goes back and the error propagates. Empty
    // when the sample was revalidated meanwhile (nothing kept): the caller looks again.
    SampleRef finish_fetch(ExtentId e, const Fetch& fetch) {
        MemoryTier& tier = *memory_[fetch.tier];
        const std::uint64_t size = catalog_.extent_length(e);
        try {
            populate_for_write({fetch.bytes, size});  // its pages, in one call: not a fault each inside the read
            read_extent(e, {fetch.bytes, size});
        } catch (...) {
            {
                Placement placement(*this);
                tier.abort(e, fetch.bytes);
                fetching_[e].store(0);
            }
            fetching_[e].notify_all();
            throw;
        }
        const std::uint64_t checksum = detail::xxh3({fetch.bytes, size});
        SampleRef ref;
        // Written through to nvme as well, so that a restart finds it warm and a later demotion
        // from the memory tiers costs no write: by the writer, holding a pin of its own on the
        // published copy (no copy made; see nvme_writer.hpp), once this read has its answer.
        NvmeWrite write;
        {
            Placement placement(*this);
            if (version_of(e).load() == fetch.version) {
                ref = tier.publish(e, fetch.bytes, checksum);
                if (nvme_writer_) write = {e, tier.pin(e), {}, checksum, fetch.version};
            } else {  // revalidated while we read it: these bytes may be the old ones, keep none of them
                tier.abort(e, fetch.bytes);
            }
            fetching_[e].store(0);
        }
        fetching_[e].notify_all();
        if (write.pinned && !nvme_writer_->offer(std::move(write))) nvme_writer_->remember(e);  // full: written once it has room
        return ref;
    }

    // ---- the nvme writer's thread (nvme_writer.hpp) ------------------------------------------

    // Room the writer may hold queued: a sixteenth of the dram tier, 16 to 64 MiB, and one extent.
    std::uint64_t write_queue_bytes() const {
        const std::uint64_t bound = std::clamp<std::uint64_t>(config_.dram_bytes() / 16, 16ull << 20, 64ull << 20);
        return std::max<std::uint64_t>(bound, catalog_.extent_bytes());
    }

    // A write done by its caller (the writer had no room): stored, then the extent's fetch ended
    // if the write carried it. False: not stored.
    bool write_through(const NvmeWrite& w) noexcept {
        const bool stored = store(w);
        if (w.single_flight) end_flight(w.extent);
        return stored;
    }

    void end_flight(ExtentId e) noexcept {
        fetching_[e].store(0);
        fetching_[e].notify_all();
    }

    // One write: stored if the file is still the version read, and dropped again if it changed
    // while being written (as run_deferred does). False: not stored.
    bool store(const NvmeWrite& w) noexcept {
        bool stored = false;
        try {
            if (version_of(w.extent).load() == w.version && put_nvme(w.extent, w.bytes(), w.checksum)) {
                stored = version_of(w.extent).load() == w.version;
                if (!stored) nvme_->erase(w.extent);  // revalidated meanwhile: not the current bytes
            }
        } catch (const std::exception& error) {
            log(LogLevel::warn, "nvme: writing a copy of '", catalog_.path(catalog_.file_of(w.extent)), "' at ",
                catalog_.extent_start(w.extent), ": ", error.what());
        }
        return stored;
    }

    // A write-through the writer had no room for, once it has: the copy in a memory tier, if one
    // still holds it and nvme does not. Pinned under the lock, where a resident copy is always
    // of the file's current version (revalidate bumps the version and evicts in one step).
    bool write_back(ExtentId e) noexcept {
        try {
            if (nvme_->contains(e)) return false;
            NvmeWrite write;
            {
                Placement placement(*this);
                if (fetching_[e].load() != 0) return false;  // a fetch under way writes it through itself
                for (auto& tier : memory_) {
                    if (SampleRef ref = tier->pin(e)) {
                        write = {e, std::move(ref), {}, *tier->checksum(e), version_of(e).load()};
                        break;
                    }
                }
            }
            return write.pinned && write_through(write);
        } catch (const std::exception& error) {
            log(LogLevel::warn, "nvme: writing back '", catalog_.path(catalog_.file_of(e)), "' at ", catalog_.extent_start(e), ": ",
                error.what());
            return false;
        }
    }

    // Extent `e` from the origin into `dest` (its length): all of it, or OriginError.
    void read_extent(ExtentId e, std::span<std::byte> dest) { read_origin(catalog_.file_of(e), catalog_.extent_start(e), dest, true); }

    // The version of the file extent `e` is part of (revalidate() bumps it).
    std::atomic<std::uint32_t>& version_of(ExtentId e) const { return versions_[catalog_.file_of(e)]; }

    // `whole`: the read must fill dest, or the origin changed under us. Whole reads are the
    // ones a tier keeps, so the origin's page cache gives those pages back.
    std::size_t read_origin(SampleId id, std::uint64_t offset, std::span<std::byte> dest, bool whole) {
        try {
            const FileVersion version{catalog_.size_of(id), catalog_.mtime_of(id)};
            if (gone_[id].load())
                throw OriginChanged("origin file '" + (config_.origin() / catalog_.path(id)).string() +
                                    "' changed since the scan: gone, resized, or still being written (remount to see it as it is now)");
            const std::size_t n = origin_->read(catalog_.path(id), offset, dest, whole ? AfterRead::drop : AfterRead::keep, &version);
            origin_counters_->reads.fetch_add(1, std::memory_order_relaxed);
            origin_counters_->bytes_read.fetch_add(n, std::memory_order_relaxed);
            if (whole && n != dest.size())
                throw OriginError(EIO, "origin file '" + (config_.origin() / catalog_.path(id)).string() + "' is " +
                                           std::to_string(offset + n) + " bytes, catalogued as " +
                                           std::to_string(catalog_.size_of(id)) + ": it changed since the scan");
            return n;
        } catch (const OriginChanged&) {
            origin_counters_->errors.fetch_add(1, std::memory_order_relaxed);
            revalidate(id);  // no lock is held here: drop stale copies, take the new version
            throw;
        } catch (const OriginError&) {
            origin_counters_->errors.fetch_add(1, std::memory_order_relaxed);
            throw;
        }
    }

    Config config_;
    std::unique_ptr<OwnerLock> owner_lock_;              // shared: this process's claim on the name
    std::unique_ptr<Origin> origin_;
    std::unique_ptr<Segment> segment_;                   // catalog (catalog_ views it), slots, counters, dram bytes
    OriginCounters* origin_counters_ = nullptr;          // in the segment
    std::atomic<std::uint32_t>* fetching_ = nullptr;     // in the segment: 1 while a miss reads the sample
    // Per sample, this process's: bumped (under placement_mutex_) when revalidate finds its
    // file changed; a fetch or nvme promotion that began under another version keeps nothing.
    std::unique_ptr<std::atomic<std::uint32_t>[]> versions_;
    std::unique_ptr<std::atomic<bool>[]> gone_;          // written under placement_mutex_: the file is not as catalogued
    std::function<void(SampleId)> on_change_;            // set before use; called with no lock held
    std::unique_ptr<NextUse> next_use_;                  // the plan, for every tier's plan policy (outlives them)
    std::vector<std::unique_ptr<MemoryRegion>> regions_; // one per memory tier
    std::vector<std::unique_ptr<MemoryTier>> memory_;    // fastest first
    std::unique_ptr<NvmeTier> nvme_;                     // the slowest tier, if configured

    // Lock order: placement_mutex_, then a policy's own lock or the nvme tier's index lock.
    // Readers take neither.
    std::mutex placement_mutex_;  // protects every tier's placement: reserve, publish, evict, demote, promote
    std::vector<DeferredNvme> deferred_nvme_;  // protected by placement_mutex_: for Placement to run once it is let go

    // The nvme write-through's thread: after the tiers, the catalog, the versions and the lock
    // above (it uses them all, and finishes its queue before they go), before the readahead
    // threads and the channel (which hand it writes). Made with the nvme tier, if any.
    std::unique_ptr<NvmeWriter> nvme_writer_;

    // Its threads fetch through locate(): they end before the tiers go.
    static constexpr std::uint32_t kReadaheadThreads = 4;
    std::unique_ptr<Readahead> readahead_;

    // Shared: last, so that the channel stops (and its threads end) before what they use goes.
    std::unique_ptr<Service> service_;
    std::unique_ptr<OwnerChannel> channel_;
};

// A cache another process owns, joined: reads of extents its dram tier holds come straight
// from the shared segment, the rest (and plans, prefetches, stats) from the owner over its
// channel (client.hpp).
class AttachedCache final : public Cache {
public:
    using Cache::prefetch;
    using Cache::read;
    using Cache::set_plan;

    AttachedCache(const std::string& name, AttachOptions options) : client_(std::make_unique<CacheClient>(name, std::move(options))) {
        catalog_ = client_->catalog();
    }

    bool attached() const noexcept override { return true; }
    // The shared cache's name.
    const std::string& name() const noexcept { return client_->name(); }

    std::size_t read(SampleId id, std::uint64_t offset, std::span<std::byte> dest) override {
        const std::uint64_t size = this->size(id);
        return client_->read(id, offset, dest.first(static_cast<std::size_t>(std::min<std::uint64_t>(dest.size(), size - std::min(offset, size)))));
    }
    // Always a copy: a client pins nothing (a pin outliving a killed client would hold the bytes forever).
    Chunk read_chunk(SampleId id, std::uint64_t offset, std::span<std::byte> scratch) override {
        return {{}, scratch.first(read(id, offset, scratch))};
    }

    // The owner keeps it as this job's.
    void set_plan(std::span<const Record> current, std::span<const Record> next = {}) override {
        check_records(current, next);
        client_->set_plan(current, next);
    }
    void clear_plan() override { client_->clear_plan(); }

    Prefetched prefetch(const Record& r) override {
        check(r.file);
        check_record(catalog_, r);
        return static_cast<Prefetched>(client_->prefetch(r));
    }

    Stats stats() const override {
        Stats s = client_->stats();
        add_loader_counters(s);
        const PrefetchCounters& p = prefetch_counters_;  // the owner's are for its own prefetchers
        s.prefetch_issued = p.issued.load(), s.prefetch_fetched = p.fetched.load(), s.prefetch_resident = p.resident.load();
        s.prefetch_raced = p.raced.load(), s.prefetch_rejected = p.rejected.load(), s.prefetch_errors = p.errors.load();
        s.prefetch_bytes = p.bytes.load();
        return s;
    }

private:
    std::string where() const override { return "shared cache '" + client_->name() + "'"; }

    std::unique_ptr<CacheClient> client_;
};

inline OwnerCache Cache::open(const Config& config) { return OwnerCache(config); }
inline AttachedCache Cache::attach(const std::string& name, AttachOptions options) { return AttachedCache(name, std::move(options)); }

}  // namespace tiercache
