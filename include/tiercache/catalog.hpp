// The catalog: every regular file of the origin as a sample (id, relative path, size, mtime),
// plus the directory tree the mount shows. Built once by a scan, then laid out in the segment.
//
// Layout: directories in breadth-first order, so each directory's subdirectories are one
// contiguous range, and its files are one contiguous range of sample ids; both ranges are
// sorted by name (bytewise), so a lookup is a binary search. Paths are bytes, never assumed
// to be UTF-8: names with spaces, newlines or invalid UTF-8 work.
//
// Each file is one or more extents (extent.hpp): its first extent's id is in its record, and
// every extent's file in one table, so either way is one lookup.
//
// Memory per sample: a 40-byte SampleRecord + its relative path (about 30 bytes for an
// ImageNet name like "n01440764/n01440764_10026.JPEG") = about 70 bytes, plus 4 bytes per
// extent, so 1.28 M samples of one extent each take about 90 MiB. (The cache adds a 32-byte
// SampleSlot per extent per memory tier; bench/ measures both.)
#pragma once
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <vector>

#include "detail/open_beneath.hpp"
#include "detail/unique_fd.hpp"
#include "extent.hpp"
#include "log.hpp"
#include "segment.hpp"

namespace tiercache {

using SampleId = std::uint32_t;
using DirId = std::uint32_t;
inline constexpr DirId kRootDir = 0;


// On-segment layout (offsets only, no pointers): see kSegmentVersion before changing it.
struct SampleRecord {
    std::uint64_t size;
    std::int64_t mtime_ns;
    std::uint64_t path_offset;  // into the path bytes
    std::uint32_t path_length;
    DirId dir;                  // the directory holding it
    ExtentId first_extent;      // its extents: [first_extent, first_extent + extents_in(size))
    std::uint32_t reserved;     // 0
};
static_assert(sizeof(SampleRecord) == 40);

struct DirRecord {
    std::uint64_t path_offset;  // "" for the root
    std::uint32_t path_length;
    DirId parent;
    DirId first_dir;            // subdirectories: [first_dir, first_dir + dir_count)
    std::uint32_t dir_count;
    SampleId first_sample;      // files: [first_sample, first_sample + sample_count)
    std::uint32_t sample_count;
    std::int64_t mtime_ns;
};
static_assert(sizeof(DirRecord) == 40);

struct CatalogHeader {
    std::uint64_t sample_count;
    std::uint64_t dir_count;
    std::uint64_t path_bytes;
    std::uint64_t total_bytes;  // sum of sample sizes
    std::uint64_t extent_bytes; // the extent size the files are cut into
    std::uint64_t extent_count; // extents of all files (the extents table's length)
};
static_assert(sizeof(CatalogHeader) == 48);

// What a scan found, in process memory, before it is laid out in a segment.
struct ScanResult {
    struct Dir {
        std::string path;
        DirId parent = 0;
        DirId first_dir = 0;
        std::uint32_t dir_count = 0;
        SampleId first_sample = 0;
        std::uint32_t sample_count = 0;
        std::int64_t mtime_ns = 0;
    };
    struct Sample {
        std::string path;
        DirId dir = 0;
        std::uint64_t size = 0;
        std::int64_t mtime_ns = 0;
    };
    std::vector<Dir> dirs;
    std::vector<Sample> samples;
    std::uint64_t path_bytes = 0;
    std::uint64_t total_bytes = 0;
    std::uint64_t skipped = 0;  // entries refused or unreadable; each one was logged

    // Extents of all files when cut into `extent_bytes`. Throws std::runtime_error when they
    // do not fit an ExtentId (a larger extent size would do).
    std::uint64_t extent_count(std::uint64_t extent_bytes) const {
        std::uint64_t n = 0;
        for (const Sample& s : samples) n += extents_in(s.size, extent_bytes);
        if (n >= 0xFFFF'FFF0ull)
            throw std::runtime_error("the dataset is " + std::to_string(n) + " extents of " + format_size(extent_bytes) +
                                     ", more than 4 billion: choose a larger extent size");
        return n;
    }

    // Bytes the catalog needs in a segment (records, paths, the extents table, and the
    // allocator's headroom).
    std::uint64_t segment_bytes(std::uint64_t extent_bytes = kDefaultExtentBytes) const {
        return sizeof(CatalogHeader) + samples.size() * sizeof(SampleRecord) + dirs.size() * sizeof(DirRecord) +
               path_bytes + extent_count(extent_bytes) * sizeof(SampleId) + 4096 * 2;
    }
};

namespace detail {

inline std::int64_t mtime_ns_of(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

inline std::string join_path(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + '/' + name;
}

}  // namespace detail

// Walks `origin` breadth-first. Regular files become samples; symlinks are followed only to
// regular files inside the origin (one pointing outside is refused and logged); symlinks to
// directories, devices, sockets and fifos are skipped; an entry at the root named in `hidden`
// (the mount's control folder, say) is skipped and logged. Throws std::runtime_error naming the
// origin when it is missing, not a directory, or unreadable.
inline ScanResult scan_origin(const std::filesystem::path& origin, const std::vector<std::string>& hidden = {}) {
    detail::UniqueFd origin_fd{::open(origin.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (!origin_fd)
        throw std::runtime_error("origin '" + origin.string() + "': " + std::strerror(errno));

    ScanResult scan;
    struct stat root_st {};
    ::fstat(origin_fd.get(), &root_st);
    scan.dirs.push_back({.path = "", .parent = kRootDir, .mtime_ns = detail::mtime_ns_of(root_st)});

    auto skip = [&](LogLevel level, const std::string& path, const std::string& why) {
        ++scan.skipped;
        log(level, "origin '", origin.string(), "': skipped '", path, "': ", why);
    };

    for (std::size_t d = 0; d < scan.dirs.size(); ++d) {
        const std::string dir_path = scan.dirs[d].path;  // copy: push_back below may reallocate
        detail::UniqueFd dir_fd{dir_path.empty() ? ::dup(origin_fd.get())
                                                 : detail::open_beneath(origin_fd.get(), dir_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)};
        if (!dir_fd) {
            if (d == 0) throw std::runtime_error("origin '" + origin.string() + "': " + std::strerror(errno));
            skip(LogLevel::warn, dir_path, std::string("cannot open directory: ") + std::strerror(errno));
            continue;
        }
        DIR* stream = ::fdopendir(dir_fd.get());
        if (stream == nullptr) {
            if (d == 0) throw std::runtime_error("origin '" + origin.string() + "': " + std::strerror(errno));
            skip(LogLevel::warn, dir_path, std::string("cannot list directory: ") + std::strerror(errno));
            continue;
        }
        const int fd = dir_fd.release();  // the DIR* owns it now; closedir closes it

        std::vector<std::pair<std::string, std::int64_t>> subdirs;  // name, mtime
        std::vector<ScanResult::Sample> files;
        int list_errno = 0;
        for (;;) {
            errno = 0;
            const dirent* entry = ::readdir(stream);
            if (entry == nullptr) {
                list_errno = errno;  // 0 at the end of the directory
                break;
            }
            const std::string name = entry->d_name;
            if (name == "." || name == "..") continue;
            const std::string path = detail::join_path(dir_path, name);
            if (d == 0 && std::find(hidden.begin(), hidden.end(), name) != hidden.end()) {
                skip(LogLevel::warn, path, "the name is reserved (the mount's control folder)");
                continue;
            }
            struct stat st {};
            if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                skip(LogLevel::warn, path, std::string("cannot stat: ") + std::strerror(errno));
                continue;
            }
            if (S_ISLNK(st.st_mode)) {
                detail::UniqueFd target{detail::open_beneath(origin_fd.get(), path, O_PATH)};
                if (!target) {
                    skip(LogLevel::warn, path, errno == EXDEV ? "symlink points outside the origin: refused"
                                                              : std::string("dangling symlink: ") + std::strerror(errno));
                    continue;
                }
                if (::fstat(target.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
                    skip(LogLevel::info, path, "symlink to something other than a regular file: not followed");
                    continue;
                }
            }
            if (S_ISDIR(st.st_mode)) {
                subdirs.emplace_back(name, detail::mtime_ns_of(st));
            } else if (S_ISREG(st.st_mode)) {
                files.push_back({.path = name, .dir = static_cast<DirId>(d), .size = static_cast<std::uint64_t>(st.st_size),
                                 .mtime_ns = detail::mtime_ns_of(st)});
            } else {
                skip(LogLevel::debug, path, "not a regular file or directory");
            }
        }
        ::closedir(stream);
        if (list_errno != 0) skip(LogLevel::warn, dir_path, std::string("listing stopped early: ") + std::strerror(list_errno));

        std::sort(subdirs.begin(), subdirs.end());
        std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });

        scan.dirs[d].first_dir = static_cast<DirId>(scan.dirs.size());
        scan.dirs[d].dir_count = static_cast<std::uint32_t>(subdirs.size());
        scan.dirs[d].first_sample = static_cast<SampleId>(scan.samples.size());
        scan.dirs[d].sample_count = static_cast<std::uint32_t>(files.size());
        for (auto& [name, mtime] : subdirs) {
            std::string path = detail::join_path(dir_path, name);
            scan.path_bytes += path.size();
            scan.dirs.push_back({.path = std::move(path), .parent = static_cast<DirId>(d), .mtime_ns = mtime});
        }
        for (auto& file : files) {
            file.path = detail::join_path(dir_path, file.path);
            scan.path_bytes += file.path.size();
            scan.total_bytes += file.size;
            scan.samples.push_back(std::move(file));
        }
        if (scan.samples.size() >= 0xFFFF'FFF0ull || scan.dirs.size() >= 0xFFFF'FFF0ull)
            throw std::runtime_error("origin '" + origin.string() + "': more than 4 billion entries");
    }
    return scan;
}

// A process's view of the catalog in a segment. Cheap to copy: it holds only addresses.
class Catalog {
public:
    Catalog() = default;

    // Copies `scan` into `segment`, its files cut into extents of `extent_bytes`.
    static Catalog place(Segment& segment, const ScanResult& scan, std::uint64_t extent_bytes = kDefaultExtentBytes) {
        check_extent_bytes(extent_bytes);
        const std::uint64_t extent_count = scan.extent_count(extent_bytes);
        auto* header = segment.construct_array<CatalogHeader>("catalog.header", 1);
        *header = {scan.samples.size(), scan.dirs.size(), scan.path_bytes, scan.total_bytes, extent_bytes, extent_count};
        auto* extents = segment.construct_array<SampleId>("catalog.extents", std::max<std::uint64_t>(extent_count, 1));
        auto* samples = segment.construct_array<SampleRecord>("catalog.samples", scan.samples.size());
        auto* dirs = segment.construct_array<DirRecord>("catalog.dirs", scan.dirs.size());
        auto* paths = segment.construct_array<char>("catalog.paths", std::max<std::uint64_t>(scan.path_bytes, 1));
        std::uint64_t at = 0;
        auto put = [&](const std::string& s) {
            std::memcpy(paths + at, s.data(), s.size());
            const std::uint64_t offset = at;
            at += s.size();
            return offset;
        };
        ExtentId next_extent = 0;
        for (std::size_t i = 0; i < scan.samples.size(); ++i) {
            const auto& s = scan.samples[i];
            samples[i] = {s.size, s.mtime_ns, put(s.path), static_cast<std::uint32_t>(s.path.size()), s.dir, next_extent, 0};
            for (std::uint64_t k = extents_in(s.size, extent_bytes); k > 0; --k) extents[next_extent++] = static_cast<SampleId>(i);
        }
        for (std::size_t i = 0; i < scan.dirs.size(); ++i) {
            const auto& d = scan.dirs[i];
            dirs[i] = {put(d.path), static_cast<std::uint32_t>(d.path.size()), d.parent, d.first_dir, d.dir_count,
                       d.first_sample, d.sample_count, d.mtime_ns};
        }
        return view(header, samples, dirs, paths, extents);
    }

    // The catalog another process placed, as a client maps it (share.hpp).
    static Catalog view(const CatalogHeader* header, const SampleRecord* samples, const DirRecord* dirs, const char* paths,
                        const SampleId* extents) {
        Catalog c;
        c.header_ = header, c.samples_ = samples, c.dirs_ = dirs, c.paths_ = paths, c.extents_ = extents;
        return c;
    }

    // Its tables, for the owner to tell clients where they lie.
    const CatalogHeader* header() const noexcept { return header_; }
    const SampleRecord* samples() const noexcept { return samples_; }
    const DirRecord* dirs() const noexcept { return dirs_; }
    const char* paths() const noexcept { return paths_; }
    const SampleId* extents() const noexcept { return extents_; }

    std::size_t size() const noexcept { return header_ ? header_->sample_count : 0; }
    std::size_t dir_count() const noexcept { return header_ ? header_->dir_count : 0; }
    std::uint64_t total_bytes() const noexcept { return header_ ? header_->total_bytes : 0; }
    bool contains(SampleId id) const noexcept { return id < size(); }

    // ---- extents (extent.hpp) ----
    std::uint64_t extent_bytes() const noexcept { return header_ ? header_->extent_bytes : kDefaultExtentBytes; }
    std::size_t extent_count() const noexcept { return header_ ? header_->extent_count : 0; }
    ExtentId first_extent(SampleId id) const { return samples_[id].first_extent; }
    std::uint32_t extents_of(SampleId id) const { return static_cast<std::uint32_t>(extents_in(samples_[id].size, extent_bytes())); }
    // The extent holding byte `offset` of sample `id` (offset below its size, or 0).
    ExtentId extent_at(SampleId id, std::uint64_t offset) const {
        return first_extent(id) + static_cast<ExtentId>(offset / extent_bytes());
    }
    SampleId file_of(ExtentId e) const { return extents_[e]; }
    // Where extent `e` starts in its file, and how many bytes it holds.
    std::uint64_t extent_start(ExtentId e) const { return std::uint64_t{e - first_extent(file_of(e))} * extent_bytes(); }
    std::uint64_t extent_length(ExtentId e) const {
        const std::uint64_t start = extent_start(e), size = samples_[file_of(e)].size;
        return std::min(extent_bytes(), size - std::min(start, size));
    }

    const SampleRecord& sample(SampleId id) const { return samples_[id]; }
    std::uint64_t size_of(SampleId id) const { return samples_[id].size; }
    // A sample's mtime changes (Cache::revalidate) when its file was rewritten with the same
    // size; sizes never change. Read it through here, not sample(id).mtime_ns.
    std::int64_t mtime_of(SampleId id) const {
        return std::atomic_ref<std::int64_t>(const_cast<std::int64_t&>(samples_[id].mtime_ns)).load(std::memory_order_relaxed);
    }
    // The owner's alone (a client maps the catalog read-only), under the cache's placement lock.
    void set_mtime(SampleId id, std::int64_t mtime_ns) const {
        std::atomic_ref<std::int64_t>(const_cast<std::int64_t&>(samples_[id].mtime_ns)).store(mtime_ns, std::memory_order_relaxed);
    }
    std::string_view path(SampleId id) const { return {paths_ + samples_[id].path_offset, samples_[id].path_length}; }
    std::string_view name(SampleId id) const { return basename(path(id)); }

    const DirRecord& dir(DirId id) const { return dirs_[id]; }
    std::string_view dir_path(DirId id) const { return {paths_ + dirs_[id].path_offset, dirs_[id].path_length}; }
    std::string_view dir_name(DirId id) const { return basename(dir_path(id)); }

    // An entry of a directory: a subdirectory or a sample.
    struct Child {
        bool is_dir;
        std::uint32_t index;  // DirId or SampleId
    };

    std::optional<Child> find_child(DirId parent, std::string_view name) const {
        const DirRecord& d = dirs_[parent];
        if (auto i = search(d.first_dir, d.dir_count, name, [this](std::uint32_t k) { return dir_name(k); }))
            return Child{true, *i};
        if (auto i = search(d.first_sample, d.sample_count, name, [this](std::uint32_t k) { return this->name(k); }))
            return Child{false, *i};
        return std::nullopt;
    }

    // The sample at a relative path ("class/file.jpg"; a leading '/' is allowed). Empty
    // components, "." and ".." never match, so no path can leave the dataset.
    std::optional<SampleId> find(std::string_view relpath) const {
        while (!relpath.empty() && relpath.front() == '/') relpath.remove_prefix(1);
        DirId dir = kRootDir;
        while (true) {
            const auto slash = relpath.find('/');
            const std::string_view part = relpath.substr(0, slash);
            if (part.empty() || part == "." || part == "..") return std::nullopt;
            const auto child = find_child(dir, part);
            if (!child) return std::nullopt;
            if (slash == std::string_view::npos) {
                if (child->is_dir) return std::nullopt;
                return child->index;
            }
            if (!child->is_dir) return std::nullopt;
            dir = child->index;
            relpath.remove_prefix(slash + 1);
        }
    }

private:
    static std::string_view basename(std::string_view path) {
        const auto slash = path.rfind('/');
        return slash == std::string_view::npos ? path : path.substr(slash + 1);
    }

    template <class NameOf>
    static std::optional<std::uint32_t> search(std::uint32_t first, std::uint32_t count, std::string_view name, NameOf name_of) {
        std::uint32_t lo = first, hi = first + count;
        while (lo < hi) {
            const std::uint32_t mid = lo + (hi - lo) / 2;
            const int cmp = name_of(mid).compare(name);
            if (cmp == 0) return mid;
            if (cmp < 0) lo = mid + 1; else hi = mid;
        }
        return std::nullopt;
    }

    const CatalogHeader* header_ = nullptr;
    const SampleRecord* samples_ = nullptr;
    const DirRecord* dirs_ = nullptr;
    const char* paths_ = nullptr;
    const SampleId* extents_ = nullptr;  // per extent: its file
};

}  // namespace tiercache
