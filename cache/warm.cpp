#include "warm.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "file_list.hpp"
#include "human.hpp"
#include "progress.hpp"
#include "read_files.hpp"

namespace tiercache::cli {

namespace fs = std::filesystem;

namespace {

// A PATHS argument as a path inside the mount: relative ones are taken from the mount
// point (not the working directory), absolute ones must lie inside it.
fs::path resolve_inside(const fs::path& mount, const fs::path& path) {
    if (path.is_relative()) return mount / path;
    const fs::path relative = path.lexically_normal().lexically_relative(mount);
    if (relative.empty() || *relative.begin() == "..")
        throw std::runtime_error(quoted(path) + " is not inside the mount " + quoted(mount));
    return path;
}

// The directory at or above `dir` that holds .tiercache/stats, if any. A stats file that
// cannot be read (ENOTCONN: the daemon died) ends the search, with a note: the kernel may
// still hold pages of the files, so reading goes on.
std::optional<fs::path> find_mount_root(const fs::path& dir) {
    for (fs::path candidate = dir;; candidate = candidate.parent_path()) {
        const fs::path stats = candidate / ".tiercache" / "stats";
        std::error_code ec;
        if (fs::exists(stats, ec)) return candidate;
        if (ec) {
            std::fprintf(stderr, "tiercache warm: note: cannot read %s (%s); reading the files anyway\n",
                         quoted(stats).c_str(), ec.message().c_str());
            return candidate;
        }
        if (candidate == candidate.root_path()) return std::nullopt;
    }
}

}  // namespace

int run_warm(const WarmOptions& options) {
    std::error_code ec;
    const fs::path mount = fs::absolute(options.mountpoint, ec).lexically_normal();
    const fs::file_status status = fs::status(mount, ec);
    if (ec) throw std::runtime_error("cannot read " + quoted(options.mountpoint) + ": " + ec.message());
    // MOUNTPOINT may also be a folder or file inside a mount (`tiercache warm /mnt/ds/train`).
    const std::optional<fs::path> mount_root = find_mount_root(fs::is_directory(status) ? mount : mount.parent_path());
    const fs::path control = mount_root.value_or(mount) / ".tiercache";
    if (!mount_root)
        std::fprintf(stderr,
                     "tiercache warm: note: %s is not in a tiercache mount; reading it anyway "
                     "(that fills only the kernel page cache)\n",
                     quoted(options.mountpoint).c_str());

    std::vector<fs::path> roots;
    for (const auto& path : options.paths) roots.push_back(resolve_inside(mount, path));
    if (roots.empty()) roots.push_back(mount);

    std::vector<ListedFile> listed;
    for (const auto& root : roots) {
        auto files = list_files(root, control, /*with_sizes=*/true);
        listed.insert(listed.end(), std::make_move_iterator(files.begin()), std::make_move_iterator(files.end()));
    }
    // Overlapping PATHS would read a file twice; sort (byte order) and drop repeats.
    std::sort(listed.begin(), listed.end(),
              [](const ListedFile& a, const ListedFile& b) { return a.path.native() < b.path.native(); });
    listed.erase(std::unique(listed.begin(), listed.end(),
                             [](const ListedFile& a, const ListedFile& b) { return a.path == b.path; }),
                 listed.end());

    std::vector<fs::path> paths;
    std::uint64_t total_bytes = 0;
    for (auto& file : listed) {
        total_bytes += file.size;
        paths.push_back(std::move(file.path));
    }

    LiveCounts live;
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    ReadTotals totals;
    {
        // The bar's rate is that of the last 5 s (SlidingRate); render() is its only user.
        SlidingRate rate;
        rate.add(0, 0);
        ProgressLine progress(stderr_is_terminal(), [&] {
            ProgressFigures figures;
            figures.bytes_done = live.bytes.load();
            figures.bytes_total = std::max(total_bytes, figures.bytes_done);  // a file grown since the listing
            rate.add(elapsed(), static_cast<double>(figures.bytes_done));
            figures.bytes_per_s = rate.per_second();
            // Done before the window had a rate (a small or cached set): the average says it.
            if (!figures.bytes_per_s && figures.bytes_done == figures.bytes_total && elapsed() > 0)
                figures.bytes_per_s = static_cast<double>(figures.bytes_done) / elapsed();
            figures.files_done = live.files.load();
            figures.files_total = paths.size();
            figures.failed = live.failures.load();
            return progress_text(figures);
        });
        totals = read_files(paths, options.readers, /*digest=*/false, live);
        progress.finish();
    }
    const double seconds = elapsed();

    std::printf("tiercache warm: read %s, %s in %.1f s (%s/s)\n", count_of(totals.files, "file").c_str(),
                human_bytes(static_cast<double>(totals.bytes)).c_str(), seconds,
                human_bytes(static_cast<double>(totals.bytes) / std::max(seconds, 1e-3)).c_str());
    if (totals.failed == 0) return 0;
    std::fflush(stdout);
    print_failures("tiercache warm", totals);
    return 1;
}

}  // namespace tiercache::cli
