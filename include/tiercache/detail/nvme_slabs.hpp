// The nvme tier's slab files, from creation to reuse, and the directory they live in. A slab
// goes round
//   unreserved -> free -> open -> sealed -> draining -> free -> ...
// grow() creates its file and reserves its space (fallocate); reserve_locked() opens a free
// slab and appends to it until the next extent does not fit, then seals it; retire_locked()
// takes one out of use (the oldest, for eviction, or a sealed one left empty); recycle()
// waits for the readers and writers still inside it, writes a new generation into its header
// (fdatasync) and makes it free again. Also here: the reads and writes of extent bytes inside
// a slab (through an aligned bounce buffer under O_DIRECT), and the directory, locked against
// a second tier and probed for O_DIRECT.
//
// The on-disk layout is nvme_format.hpp's; nvme_index.hpp saves and checks the index over these
// slabs; nvme_tier.hpp maps extents to their places in them.
//
// Locking: which slab is open, free or in use, and each slab's fill, live count and ids, change
// together with the tier's extent locations, in one step of a put() or an eviction. So they
// are protected by the tier's index mutex (NvmeTier::index_mutex_, passed in; "index_mutex_"
// below), not by a mutex of their own. Methods named *_locked want it held; recycle() and
// grow() take it themselves. NvmeTier states the lock order.
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
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "../extent.hpp"
#include "../log.hpp"
#include "../size.hpp"
#include "nvme_format.hpp"
#include "nvme_io.hpp"
#include "unique_fd.hpp"

namespace tiercache::detail {

// A slab number that names none.
inline constexpr std::uint32_t kNvmeNoSlab = 0xFFFF'FFFF;

// unreserved: no file yet (or one to replace). free: a file with its space, holding no
// samples. open: being appended to. sealed: full, waiting for eviction. draining: evicted,
// waiting for the readers inside it before it is free again. broken: its header could not
// be rewritten; never used again in this process.
enum class NvmeSlabUse : std::uint8_t { unreserved, free, open, sealed, draining, broken };

struct NvmeSlab {
    std::shared_mutex io;                       // shared: a pread/pwrite of its bytes is in progress;
                                                // exclusive (briefly): the barrier before reuse
    std::atomic<std::uint64_t> generation{0};   // written with index_mutex_ held; +1 when it stops being in use
    std::atomic<bool> dirty{false};             // written since the last save_index()
    UniqueFd fd;                                // set once, by grow() or adopt(), before anyone can reach it
    // Protected by index_mutex_:
    NvmeSlabUse use = NvmeSlabUse::unreserved;
    std::uint64_t fill = kNvmeBlock;            // append point; block 0 is the header
    std::uint64_t fifo_seq = 0;                 // when it was opened: eviction order
    std::uint32_t live = 0;                     // samples stored in it now
    std::uint32_t writing = 0;                  // reservations whose put() has not finished
    std::vector<ExtentId> ids;                  // samples put in it (some since erased or replaced)
};

// Room taken in the open slab for one put(): valid while the slab keeps `generation`.
struct NvmeReservation {
    std::uint32_t slab = kNvmeNoSlab;
    std::uint64_t offset = 0;
    std::uint64_t generation = 0;
};

// What open_files() found of one slab file.
struct NvmeSlabFile {
    bool exists = false;
    std::uint64_t size = 0;
    std::optional<std::uint64_t> generation;  // from a valid header
    UniqueFd fd;
};

class NvmeSlabs {
public:
    // slab_bytes: as NvmeOptions::slab_bytes_for() chose it; capacity / slab_bytes slabs. Uses
    // (creating it if missing) `dir` and locks it; direct_io is dropped where the filesystem
    // refuses O_DIRECT. Throws std::runtime_error naming `dir` when it cannot be created or
    // written, or when another tier is using it. `used_bytes` counts the slabs in use, whole.
    NvmeSlabs(std::filesystem::path dir, std::uint64_t slab_bytes, std::uint64_t capacity, bool direct_io,
              std::mutex& index_mutex, std::atomic<std::uint64_t>& used_bytes)
        : index_mutex_(index_mutex),
          used_bytes_(used_bytes),
          dir_(std::move(dir)),
          slab_bytes_(slab_bytes),
          slab_count_(static_cast<std::uint32_t>(capacity / slab_bytes)),
          direct_io_(direct_io),
          slabs_(std::make_unique<NvmeSlab[]>(slab_count_)) {
        open_dir();
    }
    NvmeSlabs(const NvmeSlabs&) = delete;
    NvmeSlabs& operator=(const NvmeSlabs&) = delete;

    std::uint64_t slab_bytes() const noexcept { return slab_bytes_; }
    std::uint32_t slab_count() const noexcept { return slab_count_; }
    std::uint64_t capacity() const noexcept { return slab_count_ * slab_bytes_; }
    bool direct_io() const noexcept { return direct_io_; }
    const std::filesystem::path& dir() const noexcept { return dir_; }
    int dir_fd() const noexcept { return dir_fd_.get(); }
    std::filesystem::path slab_path(std::uint32_t slab) const { return dir_ / slab_name(slab); }

    static std::string slab_name(std::uint32_t slab) {
        char name[32];
        std::snprintf(name, sizeof name, "slab-%05u.tcs", slab);
        return name;
    }

    NvmeSlab& slab(std::uint32_t s) noexcept { return slabs_[s]; }
    const NvmeSlab& slab(std::uint32_t s) const noexcept { return slabs_[s]; }

    // ---- placement (index_mutex_ held) ----------------------------------------------------

    // False from a full disk until a slab is freed.
    bool admitting_locked() const noexcept { return admitting_; }
    // Some slab has no file yet: grow() may make one.
    bool has_unreserved_locked() const noexcept { return !unreserved_.empty(); }
    // The slab in use that was opened first: eviction takes it.
    std::optional<std::uint32_t> oldest_locked() const {
        if (fifo_.empty()) return std::nullopt;
        return fifo_.front();
    }

    // Room for `extent` bytes at the open slab's end, opening a free slab when it has none.
    // Empty when no free slab is left (then the caller grows the tier or gives up). When the
    // slab it seals holds nothing, `sealed_empty` names it: the caller recycle()s it.
    std::optional<NvmeReservation> reserve_locked(std::uint64_t extent, std::optional<std::uint32_t>& sealed_empty) {
        if (open_ == kNvmeNoSlab || slabs_[open_].fill + extent > slab_bytes_) {
            if (free_.empty()) return std::nullopt;
            if (open_ != kNvmeNoSlab) {
                const std::uint32_t sealed = std::exchange(open_, kNvmeNoSlab);
                slabs_[sealed].use = NvmeSlabUse::sealed;
                sealed_empty = retire_if_empty_locked(sealed);
            }
            open_ = free_.back();
            free_.pop_back();
            NvmeSlab& slab = slabs_[open_];
            slab.use = NvmeSlabUse::open;
            slab.fill = kNvmeBlock;
            slab.fifo_seq = next_fifo_seq_++;
            slab.live = 0;
            slab.writing = 0;
            slab.ids.clear();
            fifo_.push_back(open_);
            used_bytes_.fetch_add(slab_bytes_);
        }
        NvmeSlab& slab = slabs_[open_];
        const NvmeReservation r{open_, slab.fill, slab.generation.load()};
        slab.fill += extent;
        ++slab.writing;
        return r;
    }

    // One sample fewer in slab `s`. Returns `s` when that leaves it empty and sealed: the
    // caller recycle()s it once it holds no lock.
    std::optional<std::uint32_t> release_locked(std::uint32_t s) {
        --slabs_[s].live;
        return retire_if_empty_locked(s);
    }

    // A sealed slab with no samples and no write in progress is retired; returns it then.
    std::optional<std::uint32_t> retire_if_empty_locked(std::uint32_t s) {
        const NvmeSlab& slab = slabs_[s];
        if (slab.use != NvmeSlabUse::sealed || slab.live != 0 || slab.writing != 0) return std::nullopt;
        retire_locked(s);
        return s;
    }

    // Takes slab `s` out of use: no new reader or writer gets in after the generation moves.
    void retire_locked(std::uint32_t s) {
        NvmeSlab& slab = slabs_[s];
        if (open_ == s) open_ = kNvmeNoSlab;
        fifo_.erase(std::find(fifo_.begin(), fifo_.end(), s));
        slab.use = NvmeSlabUse::draining;
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

    // The index's record of every slab (the free ones zero), slab 0 first; `in_use` gets the
    // slabs open or sealed.
    std::vector<NvmeIndexSlab> index_records_locked(std::vector<std::uint32_t>& in_use) const {
        std::vector<NvmeIndexSlab> records(slab_count_);
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            const NvmeSlab& slab = slabs_[s];
            if (slab.use == NvmeSlabUse::open || slab.use == NvmeSlabUse::sealed) {
                records[s] = {slab.generation.load(), slab.fill, slab.fifo_seq,
                              slab.use == NvmeSlabUse::open ? kSlabOpen : kSlabSealed, 0};
                in_use.push_back(s);
            }
        }
        return records;
    }

    // ---- lifecycle (no lock held on entry) ------------------------------------------------

    // Makes a slab free again after retire_locked(): waits for every reader and writer that
    // saw the old generation, then writes the new generation into the slab's header, so an
    // index saved before can never match bytes written after.
    void recycle(std::uint32_t s) {
        NvmeSlab& slab = slabs_[s];
        { std::unique_lock barrier(slab.io); }
        const int err = write_slab_header(slab.fd.get(), s, slab.generation.load());
        std::lock_guard lock(index_mutex_);
        used_bytes_.fetch_sub(slab_bytes_);
        if (err != 0) {
            slab.use = NvmeSlabUse::broken;
            log(LogLevel::error, "nvme tier: rewriting the header of ", slab_path(s).string(), ": ", std::strerror(err),
                ": slab taken out of service");
            return;
        }
        slab.use = NvmeSlabUse::free;
        slab.fill = kNvmeBlock;
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
        std::uint32_t s = kNvmeNoSlab;
        std::uint64_t generation = 0;
        {
            std::lock_guard lock(index_mutex_);
            if (!free_.empty()) return true;  // another thread grew it, or a slab was freed
            if (!admitting_ || unreserved_.empty() || std::chrono::steady_clock::now() < grow_paused_until_) return false;
            s = unreserved_.back();
            generation = slabs_[s].generation.load() + 1;
        }
        const std::string name = slab_name(s);
        UniqueFd fd{::openat(dir_fd_.get(), name.c_str(), slab_open_flags() | O_CREAT | O_TRUNC, 0600)};
        int err = fd ? reserve_file(fd.get(), slab_bytes_) : errno;
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
        NvmeSlab& slab = slabs_[s];
        slab.fd = std::move(fd);
        slab.generation.store(generation);
        slab.use = NvmeSlabUse::free;
        unreserved_.pop_back();
        free_.push_back(s);
        return true;
    }

    // Makes what was written to `slabs` since the last call durable, before an index names it.
    // Throws std::runtime_error naming the slab file (for save_index(), the one caller).
    void sync(const std::vector<std::uint32_t>& slabs) {
        for (const std::uint32_t s : slabs)
            if (slabs_[s].dirty.exchange(false) && ::fdatasync(slabs_[s].fd.get()) != 0)
                throw std::runtime_error("cannot save the index: fdatasync of '" + slab_path(s).string() + "': " + std::strerror(errno));
    }

    // ---- extent I/O (the caller holds the slab's io shared) -------------------------------

    int write_sample(const NvmeSlab& slab, std::uint64_t offset, std::span<const std::byte> bytes) const {
        if (!direct_io_) return pwrite_full(slab.fd.get(), bytes, offset);
        const auto bounce = nvme_bounce(bytes.size());
        std::memcpy(bounce.data(), bytes.data(), bytes.size());
        std::memset(bounce.data() + bytes.size(), 0, bounce.size() - bytes.size());
        return pwrite_full(slab.fd.get(), bounce, offset);
    }

    int read_sample(const NvmeSlab& slab, std::uint64_t offset, std::span<std::byte> dest) const {
        if (!direct_io_) return pread_full(slab.fd.get(), dest, offset);
        // Whole blocks straight into dest when it allows, else through the bounce buffer.
        if (reinterpret_cast<std::uintptr_t>(dest.data()) % kNvmeBlock == 0 && dest.size() % kNvmeBlock == 0)
            return pread_full(slab.fd.get(), dest, offset);
        const auto bounce = nvme_bounce(dest.size());
        if (const int err = pread_full(slab.fd.get(), bounce, offset)) return err;
        std::memcpy(dest.data(), bounce.data(), dest.size());
        return 0;
    }

    // ---- loading (from the tier's constructor, before any other thread can call) ----------

    // Removes the slab files numbered past the capacity, then opens the others and reads
    // their headers: one record per slab, for the index to be checked against and adopt().
    std::vector<NvmeSlabFile> open_files() {
        remove_slab_files_beyond_capacity();
        std::vector<NvmeSlabFile> files(slab_count_);
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            NvmeSlabFile& f = files[s];
            f.fd = UniqueFd{::openat(dir_fd_.get(), slab_name(s).c_str(), slab_open_flags())};
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
        return files;
    }

    // Takes over the files open_files() found, with the index's record of each (`records`: one
    // per slab, zero for a slab the index has not or was discarded): the slabs the index has
    // in use, with the header generation it saved, become open or sealed.
    void adopt(std::vector<NvmeSlabFile>& files, const std::vector<NvmeIndexSlab>& records) {
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            NvmeSlab& slab = slabs_[s];
            NvmeSlabFile& f = files[s];
            const NvmeIndexSlab& rec = records[s];
            const bool in_use = rec.state == kSlabOpen || rec.state == kSlabSealed;
            if (f.exists && f.size == slab_bytes_) {
                slab.fd = std::move(f.fd);
                slab.generation.store(std::max(f.generation.value_or(0), rec.generation));
                if (in_use) {
                    slab.use = rec.state == kSlabOpen ? NvmeSlabUse::open : NvmeSlabUse::sealed;
                    slab.fill = rec.fill_bytes;
                    slab.fifo_seq = rec.fifo_seq;
                } else if (f.generation) {
                    slab.use = NvmeSlabUse::free;
                } else {
                    slab.use = NvmeSlabUse::draining;  // a file of the right size with a bad header: recycled below
                }
            } else if (f.exists) {
                f.fd.reset();
                ::unlinkat(dir_fd_.get(), slab_name(s).c_str(), 0);  // wrong size: made again when needed
            }
        }
    }

    // After adopt() and the samples the index brought back (each slab's live and ids): builds
    // the ring and the free lists, and recycles the slabs left empty. Returns how many slabs
    // are in use.
    std::size_t finish_load() {
        std::vector<std::uint32_t> in_use, to_recycle;
        for (std::uint32_t s = 0; s < slab_count_; ++s) {
            NvmeSlab& slab = slabs_[s];
            if (slab.use == NvmeSlabUse::sealed && slab.live == 0) {
                slab.use = NvmeSlabUse::draining;  // nothing left in it: free, under a new generation
                slab.generation.fetch_add(1);
            }
            if (slab.use == NvmeSlabUse::draining) {
                to_recycle.push_back(s);
                used_bytes_.fetch_add(slab_bytes_);  // recycle() takes it off again
            }
            if (slab.use == NvmeSlabUse::open || slab.use == NvmeSlabUse::sealed) in_use.push_back(s);
            if (slab.use == NvmeSlabUse::free) free_.push_back(s);
            if (slab.use == NvmeSlabUse::open) open_ = s;
            if (slab.use == NvmeSlabUse::unreserved) unreserved_.push_back(s);
        }
        std::sort(in_use.begin(), in_use.end(), [&](auto a, auto b) { return slabs_[a].fifo_seq < slabs_[b].fifo_seq; });
        for (const std::uint32_t s : in_use) {
            fifo_.push_back(s);
            next_fifo_seq_ = std::max(next_fifo_seq_, slabs_[s].fifo_seq + 1);
        }
        used_bytes_.fetch_add(in_use.size() * slab_bytes_);
        std::reverse(unreserved_.begin(), unreserved_.end());  // lowest number taken first
        std::reverse(free_.begin(), free_.end());
        for (const std::uint32_t s : to_recycle) {
            slabs_[s].generation.fetch_add(1);
            recycle(s);
        }
        return in_use.size();
    }

private:
    int slab_open_flags() const noexcept { return O_RDWR | O_CLOEXEC | (direct_io_ ? O_DIRECT : 0); }

    int write_slab_header(int fd, std::uint32_t s, std::uint64_t generation) const {
        NvmeSlabHeader h{kNvmeSlabMagic, kNvmeSlabVersion, slab_bytes_, generation, s, 0, 0};
        h.header_xxh3 = nvme_header_hash(h);
        const auto block = nvme_bounce(kNvmeBlock);
        std::memset(block.data(), 0, block.size());
        std::memcpy(block.data(), &h, sizeof h);
        if (const int err = pwrite_full(fd, block, 0)) return err;
        return ::fdatasync(fd) == 0 ? 0 : errno;
    }

    // The slab's generation from its header; empty when the header is not one of ours.
    std::optional<std::uint64_t> read_slab_header(int fd, std::uint32_t s) const {
        const auto block = nvme_bounce(kNvmeBlock);
        if (pread_full(fd, block, 0) != 0) return std::nullopt;
        NvmeSlabHeader h;
        std::memcpy(&h, block.data(), sizeof h);
        if (h.magic != kNvmeSlabMagic || h.version != kNvmeSlabVersion || h.slab_bytes != slab_bytes_ || h.slab != s ||
            h.header_xxh3 != nvme_header_hash(h))
            return std::nullopt;
        return h.generation;
    }

    void open_dir() {
        const std::string where = "nvme tier directory '" + dir_.string() + "'";
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        if (ec) throw std::runtime_error(where + ": cannot create it: " + ec.message());
        dir_fd_ = UniqueFd{::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (!dir_fd_) throw std::runtime_error(where + ": " + std::strerror(errno));
        // Two tiers on one directory would overwrite each other's slabs and index.
        if (::flock(dir_fd_.get(), LOCK_EX | LOCK_NB) != 0)
            throw std::runtime_error(where + (errno == EWOULDBLOCK ? ": in use by another nvme tier (this process or another)"
                                                                  : ": cannot lock it: " + std::string(std::strerror(errno))));
        // Can we write here, and does the filesystem take O_DIRECT (tmpfs before Linux 6.6 does not)?
        const char* probe = ".write-probe";
        auto try_write = [&](int flags) -> int {
            UniqueFd fd{::openat(dir_fd_.get(), probe, flags | O_CREAT | O_TRUNC, 0600)};
            if (!fd) return errno;
            const auto block = nvme_bounce(kNvmeBlock);
            std::memset(block.data(), 0, block.size());
            return pwrite_full(fd.get(), block, 0);
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

    std::mutex& index_mutex_;                   // the tier's: protects what is marked so, here and in NvmeSlab
    std::atomic<std::uint64_t>& used_bytes_;    // the tier's counter: slabs in use or draining, whole
    const std::filesystem::path dir_;
    const std::uint64_t slab_bytes_;
    const std::uint32_t slab_count_;
    bool direct_io_;                            // fixed after construction
    UniqueFd dir_fd_;                           // holds the flock that keeps other tiers out of dir_
    std::unique_ptr<NvmeSlab[]> slabs_;         // slab_count_ of them; each carries its own io lock

    std::mutex grow_mutex_;                 // one slab file created at a time; taken before index_mutex_
    std::deque<std::uint32_t> fifo_;        // protected by index_mutex_; slabs in use, oldest first
    std::vector<std::uint32_t> free_;       // protected by index_mutex_; reserved, empty slabs
    std::vector<std::uint32_t> unreserved_; // protected by index_mutex_; slabs with no file yet, lowest last
    std::uint32_t open_ = kNvmeNoSlab;      // protected by index_mutex_; the slab being appended to
    std::uint64_t next_fifo_seq_ = 1;       // protected by index_mutex_
    bool admitting_ = true;                 // protected by index_mutex_; false from a full disk until a slab is freed
    std::chrono::steady_clock::time_point grow_paused_until_{};  // protected by index_mutex_
};

}  // namespace tiercache::detail
