// tiercache-fuse ORIGIN MOUNTPOINT [options]: mounts ORIGIN read-only through the cache.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <memory>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <fuse_lowlevel.h>
#include <tiercache/config_file.hpp>
#include <tiercache/tiercache.hpp>

#include "direct_io_mmap.hpp"
#include "filesystem.hpp"
#include "kernel_cache.hpp"
#include "mount_options.hpp"
#include "metrics_textfile.hpp"

namespace {

namespace fs = std::filesystem;

struct Options {
    std::string origin;
    std::string mountpoint;
    bool foreground = false;
    bool debug = false;
    std::string dram = "10%";
    std::string pmem, cxl, nvme;  // DIR:SIZE, NODE:SIZE, DIR:SIZE
    std::string policy = "plan";
    std::string extent = "1MiB";
    std::uint32_t readahead = 8;
    std::string kernel_cache = "auto";  // on, off, or auto: chosen at mount (fuse/kernel_cache.hpp)
    std::string segment_dir = "/dev/shm";
    std::string log_file;
    std::string config_file;
    unsigned threads = 4;
    bool allow_other = false;
    unsigned prefetch_threads = 4;
    std::size_t prefetch_window = 1024;
    std::string prefetch_bytes;  // empty: a quarter of the dram tier, at most 1 GiB
    std::string share, group;     // a shared cache's name, and who else may attach
    double revalidate_s = 60;     // a full stat pass over the origin per this many seconds; 0: none
    std::string metrics_textfile;  // a node_exporter textfile directory; empty: none
    double metrics_interval_s = tiercache::fuse::MetricsTextfile::kDefaultIntervalSeconds;
};

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "tiercache-fuse: %s\n", message.c_str());
    std::exit(1);
}

// A mount over a non-empty directory would hide its files: refuse, as mount(8) users expect.
void check_mountpoint(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOTCONN) {
        // A FUSE mount whose daemon is gone (a crash, kill -9): nothing can serve it, and it
        // would keep a restart (systemd's Restart=on-failure, a remount) from mounting again.
        // Detach it; only root may, others are told how.
        if (::umount2(path.c_str(), MNT_DETACH) != 0)
            die("mountpoint '" + path + "': a dead FUSE mount (its daemon is gone): unmount it first (fusermount3 -u " + path + ")");
        std::fprintf(stderr, "tiercache-fuse: mountpoint '%s': detached a dead FUSE mount left there\n", path.c_str());
    }
    if (::stat(path.c_str(), &st) != 0) die("mountpoint '" + path + "': " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) die("mountpoint '" + path + "': not a directory");
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) die("mountpoint '" + path + "': " + std::strerror(errno));
    bool empty = true;
    while (const dirent* e = ::readdir(dir)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) { empty = false; break; }
    }
    ::closedir(dir);
    if (!empty) die("mountpoint '" + path + "': not empty");
}

// Frees what libfuse gave us on every way out of main().
struct Session {
    fuse_session* se = nullptr;
    bool mounted = false;
    bool handlers = false;
    ~Session() {
        if (se == nullptr) return;
        if (handlers) fuse_remove_signal_handlers(se);
        if (mounted) fuse_session_unmount(se);
        fuse_session_destroy(se);
    }
};

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    CLI::App app{"Mounts ORIGIN read-only at MOUNTPOINT, served through the tiercache cache.", "tiercache-fuse"};
    app.set_version_flag("--version", std::string("tiercache-fuse ") + TIERCACHE_VERSION);
    app.add_option("ORIGIN", opt.origin, "the dataset directory (never written); or origin in --config");
    app.add_option("MOUNTPOINT", opt.mountpoint, "an empty directory to mount on; or [mount] mountpoint in --config");
    app.add_option("--config", opt.config_file, "a TOML file with the tier list and any of these options (flags win)");
    app.add_flag("-f,--foreground", opt.foreground, "stay in the foreground (log to stderr)");
    app.add_flag("-d,--debug", opt.debug, "print every FUSE request (implies -f)");
    app.add_option("--dram", opt.dram,
                   "dram tier size: 512MiB, 2GiB, or 10% of RAM; 0: no dram caching (with no other tier, every read "
                   "the kernel passes on goes to the origin; add --kernel-cache off for a plain passthrough)")
        ->capture_default_str();
    app.add_option("--pmem", opt.pmem, "pmem tier: DIR:SIZE (a DAX filesystem, or any directory)");
    app.add_option("--cxl", opt.cxl, "cxl tier: NODE:SIZE, memory of a (CPU-less) NUMA node");
    app.add_option("--nvme", opt.nvme, "nvme tier: DIR:SIZE, slab files on a local SSD, warm across restarts");
    app.add_option("--policy", opt.policy, "admission/eviction: plan (by next use once a plan is written, else noevict), noevict (scan-resistant) or lru")->capture_default_str();
    app.add_option("--extent", opt.extent,
                   "the unit of caching: files up to this size are cached whole, larger ones by the ranges read "
                   "(a multiple of 4KiB from 64KiB to 64MiB)")
        ->capture_default_str();
    app.add_option("--readahead", opt.readahead, "extents read ahead of a sequential reader of a large file (0: none)")
        ->check(CLI::Range(0u, tiercache::Config::kMaxReadahead))
        ->capture_default_str();
    app.add_option("--kernel-cache", opt.kernel_cache,
                   "on: the kernel keeps file pages (warm reads need no request); off: every read reaches the cache, "
                   "as the plan orders; auto: on when the dataset fits the dram tier or the memory beside it, else off")
        ->check(CLI::IsMember({"on", "off", "auto"}))
        ->capture_default_str();
    app.add_option("--threads", opt.threads, "FUSE worker threads at most")->check(CLI::Range(1u, 256u))->capture_default_str();
    app.add_flag("--allow-other", opt.allow_other,
                 "let users other than the one mounting enter the mount (FUSE allow_other; a non-root mounter needs "
                 "user_allow_other in /etc/fuse.conf); file modes are still checked");
    app.add_option("--segment-dir", opt.segment_dir, "where the cache's memory segment lives (a tmpfs or DAX filesystem)")->capture_default_str();
    app.add_option("--share", opt.share,
                   "also serve the cache to processes that attach to NAME (Cache::attach): one copy, one origin read for all");
    app.add_option("--group", opt.group, "with --share: members of this group may attach too (files 0660; default 0600, this user only)");
    app.add_option("--log", opt.log_file, "append log lines to this file (default: stderr, lost once daemonized)");
    app.add_option("--prefetch-threads", opt.prefetch_threads,
                   "threads reading ahead in the order written to .tiercache/plan (0: no prefetch)")
        ->check(CLI::Range(0u, 256u))
        ->capture_default_str();
    app.add_option("--prefetch-window", opt.prefetch_window, "how many samples prefetch runs ahead of the reader")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 32))
        ->capture_default_str();
    app.add_option("--prefetch-bytes", opt.prefetch_bytes,
                   "how many bytes fetched ahead may wait for the reader: 256MiB, 1GiB (default: a quarter of the dram tier, at most 1GiB)");
    app.add_option("--revalidate", opt.revalidate_s,
                   "stat every origin file once per this many seconds (at most 10,000 a second), dropping cached copies "
                   "of files that changed; 0: never (changes are still caught by misses)")
        ->check(CLI::Range(0.0, 1e9))
        ->capture_default_str();
    app.add_option("--metrics-textfile", opt.metrics_textfile,
                   "also write .tiercache/metrics to DIR/tiercache_<mountpoint>.prom, for node_exporter's textfile "
                   "collector (renamed into place; removed at unmount)");
    app.add_option("--metrics-interval", opt.metrics_interval_s, "seconds between writes of the --metrics-textfile file")
        ->check(CLI::Range(0.1, 86400.0))
        ->capture_default_str();
    std::string o_for_help;  // -o is rewritten into the long options above before parsing
    app.add_option("-o", o_for_help,
                   "mount options, as mount(8) and fstab give them: each long option as key=value or key "
                   "(dram=32GiB,nvme=/nvme/tc:800GiB,config=FILE,allow_other); mount's own (nofail, _netdev, "
                   "noauto, x-systemd.*, ...) are ignored")
        ->type_name("OPTS");
    // mount(8) runs its helper /sbin/mount.fuse.tiercache (a symlink to us) with its own flags.
    tiercache::fuse::MountHelperCall helper;
    std::vector<std::string> cli_args(argv + 1, argv + argc);
    try {
        if (fs::path(argv[0]).filename() == "mount.fuse.tiercache") {
            helper = tiercache::fuse::parse_mount_helper(cli_args, app);
            cli_args = helper.args;
        } else {
            cli_args = tiercache::fuse::expand_mount_options(cli_args, app);
        }
    } catch (const std::invalid_argument& e) {
        die(e.what());
    }
    for (const auto& o : helper.ignored) std::fprintf(stderr, "tiercache-fuse: ignoring unknown mount option '%s' (-s)\n", o.c_str());
    if (helper.verbose) {
        std::string line = "tiercache-fuse";
        for (const auto& a : cli_args) line += " " + a;
        std::fprintf(stderr, "mount.fuse.tiercache: %s%s\n", line.c_str(), helper.fake ? " (fake: checks only)" : "");
    }
    try {
        app.parse(std::vector<std::string>(cli_args.rbegin(), cli_args.rend()));  // CLI11 takes a vector last-first
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    auto given = [&](const char* name) { return app.count(name) > 0; };
    bool prefetch_threads_set = given("--prefetch-threads");  // or by the config file, below

    // The config file first, then the flags over it.
    tiercache::Config config;
    if (given("--config")) {
        try {
            const auto file = tiercache::ConfigFile::load(opt.config_file);
            config = file.apply(config);
            if (const toml::table* mount = file.mount_section()) {
                if (auto v = file.string_at(*mount, "mountpoint"); v && !given("MOUNTPOINT")) opt.mountpoint = *v;
                if (auto v = file.bool_at(*mount, "foreground"); v && !given("--foreground")) opt.foreground = *v;
                if (const toml::node* v = mount->get("kernel_cache"); v != nullptr && !given("--kernel-cache")) {
                    if (auto on = v->value_exact<bool>()) opt.kernel_cache = *on ? "on" : "off";
                    else if (v->value_exact<std::string>() == "auto") opt.kernel_cache = "auto";
                    else file.fail(*v, "kernel_cache must be true, false or \"auto\"");
                }
                if (auto v = file.string_at(*mount, "log"); v && !given("--log")) opt.log_file = *v;
                if (auto v = file.bool_at(*mount, "allow_other"); v && !given("--allow-other")) opt.allow_other = *v;
                if (auto v = file.string_at(*mount, "share"); v && !given("--share")) opt.share = *v;
                if (auto v = file.string_at(*mount, "group"); v && !given("--group")) opt.group = *v;
                if (auto v = file.integer_at(*mount, "threads"); v && !given("--threads")) {
                    if (*v < 1 || *v > 256) file.fail(*mount->get("threads"), "threads must be 1 to 256");
                    opt.threads = static_cast<unsigned>(*v);
                }
                if (auto v = file.integer_at(*mount, "prefetch_threads"); v && !given("--prefetch-threads")) {
                    if (*v < 0 || *v > 256) file.fail(*mount->get("prefetch_threads"), "prefetch_threads must be 0 to 256");
                    opt.prefetch_threads = static_cast<unsigned>(*v);
                    prefetch_threads_set = true;
                }
                if (auto v = file.integer_at(*mount, "prefetch_window"); v && !given("--prefetch-window")) {
                    if (*v < 1 || *v > (std::int64_t{1} << 32)) file.fail(*mount->get("prefetch_window"), "prefetch_window must be 1 to 2^32 samples");
                    opt.prefetch_window = static_cast<std::size_t>(*v);
                }
                if (auto v = file.integer_at(*mount, "revalidate"); v && !given("--revalidate")) {
                    if (*v < 0) file.fail(*mount->get("revalidate"), "revalidate must be 0 (never) or more seconds");
                    opt.revalidate_s = static_cast<double>(*v);
                }
                if (auto v = file.string_at(*mount, "metrics_textfile"); v && !given("--metrics-textfile")) opt.metrics_textfile = *v;
                if (auto v = file.integer_at(*mount, "metrics_interval"); v && !given("--metrics-interval")) {
                    if (*v < 1 || *v > 86400) file.fail(*mount->get("metrics_interval"), "metrics_interval must be 1 to 86400 seconds");
                    opt.metrics_interval_s = static_cast<double>(*v);
                }
                if (auto v = file.string_at(*mount, "prefetch_bytes"); v && !given("--prefetch-bytes")) {
                    try {
                        if (tiercache::parse_size(*v) == 0) throw std::invalid_argument("prefetch_bytes must be more than 0");
                    } catch (const std::invalid_argument& e) {
                        file.fail(*mount->get("prefetch_bytes"), e.what());
                    }
                    opt.prefetch_bytes = *v;
                }
            }
        } catch (const std::invalid_argument& e) {
            die(e.what());
        }
    }
    try {
        if (given("ORIGIN")) config.origin(opt.origin);
        if (given("--dram")) config.dram(opt.dram);
        if (given("--pmem")) config.tier(tiercache::parse_tier_arg(tiercache::TierKind::pmem, opt.pmem, "--pmem"));
        if (given("--cxl")) config.tier(tiercache::parse_tier_arg(tiercache::TierKind::cxl, opt.cxl, "--cxl"));
        if (given("--nvme")) config.tier(tiercache::parse_tier_arg(tiercache::TierKind::nvme, opt.nvme, "--nvme"));
        if (given("--policy")) config.policy(opt.policy);
        if (given("--extent")) config.extent(opt.extent);
        if (given("--readahead")) config.readahead(opt.readahead);
        if (given("--segment-dir")) config.segment_dir(opt.segment_dir);
        if (!opt.share.empty()) config.share(opt.share).serve_later(true);  // after fuse_daemonize
        if (!opt.group.empty()) config.share_group(opt.group);
    } catch (const std::invalid_argument& e) {
        die(e.what());
    }
    if (config.origin().empty()) die("no ORIGIN: give it, or origin in --config");
    if (opt.mountpoint.empty()) die("no MOUNTPOINT: give it, or [mount] mountpoint in --config");
    if (opt.debug) opt.foreground = true;

    if (!opt.log_file.empty()) {
        std::FILE* log = std::fopen(opt.log_file.c_str(), "a");
        if (log == nullptr) die("--log '" + opt.log_file + "': " + std::strerror(errno));
        tiercache::set_log_file(log);
    }

    // Everything that can fail on bad input fails here, before mounting, with a clear message.
    std::error_code ec;
    const std::string origin_arg = config.origin().string();
    if (!fs::exists(origin_arg, ec)) die("origin '" + origin_arg + "': no such directory");
    if (!fs::is_directory(origin_arg, ec)) die("origin '" + origin_arg + "': not a directory");
    check_mountpoint(opt.mountpoint);
    const std::string origin = fs::canonical(origin_arg).string();
    const std::string mountpoint = fs::canonical(opt.mountpoint).string();  // fuse_daemonize() moves to /
    if (origin == mountpoint || mountpoint.starts_with(origin + "/"))
        die("mountpoint '" + mountpoint + "' lies inside the origin '" + origin + "'");
    config.origin(origin).hide_at_root(std::string(tiercache::fuse::kControlDirName));
    if (helper.fake) {  // mount -f: everything checked that can be without building the cache
        try {
            config.validate();
        } catch (const std::exception& e) {
            die(e.what());
        }
        return 0;
    }

    std::unique_ptr<tiercache::OwnerCache> cache;
    bool caching_off = false;
    try {
        config.validate();
        // --dram 0 and no other tier: caching off. Nothing is admitted, every READ reads the
        // origin; prefetching would have nowhere to put what it reads.
        std::uint64_t capacity = 0;
        for (const auto& tier : config.tiers()) capacity += tiercache::tier_bytes(tier);
        caching_off = capacity == 0;
        if (caching_off && prefetch_threads_set && opt.prefetch_threads > 0)
            die("--prefetch-threads " + std::to_string(opt.prefetch_threads) +
                ": nothing to prefetch into with caching off (--dram 0 and no other tier); give 0 or leave it out");
        if (caching_off) opt.prefetch_threads = 0;
        cache = std::make_unique<tiercache::OwnerCache>(config);
    } catch (const std::exception& e) {
        die(e.what());
    }
    if (opt.kernel_cache == "auto") {  // needs the dataset's size: the catalog has it now
        const auto choice = tiercache::fuse::choose_kernel_cache(cache->catalog().total_bytes(), config.dram_bytes(),
                                                                 tiercache::fuse::page_cache_room(config.dram_bytes()));
        opt.kernel_cache = choice.on ? "on" : "off";
        tiercache::log(tiercache::LogLevel::info, "kernel cache auto: ", opt.kernel_cache, ", ", choice.why);
    }
    const bool kernel_cache = opt.kernel_cache == "on";
    if (caching_off)
        tiercache::log(tiercache::LogLevel::info, "caching off (--dram 0, no other tier): every read the kernel passes on reads the origin",
                       kernel_cache ? "; the kernel's page cache still keeps what was read (--kernel-cache off: none)" : "");

    tiercache::PrefetchOptions prefetch;
    try {
        // Prefetched bytes wait in the fastest tier: by default a quarter of it, at most 1 GiB.
        std::uint64_t bytes = std::max<std::uint64_t>(std::min<std::uint64_t>(config.dram_bytes() / 4, 1ull << 30), 1);
        if (!opt.prefetch_bytes.empty() && (bytes = tiercache::parse_size(opt.prefetch_bytes)) == 0)
            throw std::invalid_argument("'" + opt.prefetch_bytes + "' is no room at all");
        prefetch.threads(opt.prefetch_threads).window_samples(opt.prefetch_window).window_bytes(bytes).page_cache_reads(kernel_cache);
        prefetch.validate();
    } catch (const std::invalid_argument& e) {
        die(std::string("--prefetch-bytes: ") + e.what());
    }

    tiercache::fuse::Filesystem filesystem(*cache, {.kernel_cache = kernel_cache, .prefetch = prefetch,
                                                    .revalidate_s = opt.revalidate_s, .mountpoint = mountpoint});

    // Checked before mounting: a missing or unwritable directory is an error now, not later.
    std::unique_ptr<tiercache::fuse::MetricsTextfile> textfile;
    if (!opt.metrics_textfile.empty()) {
        try {
            textfile = std::make_unique<tiercache::fuse::MetricsTextfile>(opt.metrics_textfile, mountpoint, opt.metrics_interval_s,
                                                                           [&filesystem] { return filesystem.metrics_text(); });
        } catch (const std::exception& e) {
            die(e.what());
        }
    }

    // Not "ro" at the VFS: the plan file takes writes. The filesystem refuses every other
    // change itself (EROFS), and the kernel checks permissions (default_permissions).
    // Only the mounting user may enter the mount unless --allow-other says otherwise (then
    // every user, each checked against the modes shown, by default_permissions).
    std::vector<std::string> fuse_argv = {"tiercache-fuse", "-o", "default_permissions,fsname=tiercache,subtype=tiercache"};
    if (opt.allow_other) fuse_argv.back() += ",allow_other";
    if (opt.debug) fuse_argv.push_back("-d");
    std::vector<char*> fuse_argp;
    for (auto& a : fuse_argv) fuse_argp.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fuse_argp.size()), fuse_argp.data());

    Session session;
    const auto& ops = tiercache::fuse::Filesystem::operations();
    session.se = fuse_session_new(&args, &ops, sizeof ops, &filesystem);
    fuse_opt_free_args(&args);  // libfuse may have grown the list: it owns a copy now
    if (session.se == nullptr) die("cannot create the FUSE session");
    if (fuse_set_signal_handlers(session.se) != 0) die("cannot install signal handlers");
    session.handlers = true;  // SIGINT, SIGTERM and SIGHUP end the loop; we then unmount
    if (fuse_session_mount(session.se, mountpoint.c_str()) != 0) die("cannot mount on '" + mountpoint + "'");
    session.mounted = true;
    tiercache::log(tiercache::LogLevel::info, "mounted ", origin, " at ", mountpoint);
    // Direct I/O (kernel cache off) refuses shared maps unless INIT allows them; the kernel's
    // INIT waits on /dev/fuse until the loop reads it, after this.
    if (!kernel_cache) tiercache::fuse::ask_direct_io_mmap(session.se);

    if (fuse_daemonize(opt.foreground ? 1 : 0) != 0) die("cannot go to the background");
    filesystem.set_session(session.se);
    filesystem.start();  // threads now: the daemon's fork above keeps none
    if (textfile) textfile->start();
    cache->serve();

    fuse_loop_config* loop = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(loop, 1);  // one /dev/fuse queue per worker
    fuse_loop_cfg_set_max_threads(loop, opt.threads);
    fuse_loop_cfg_set_idle_threads(loop, opt.threads);
    const int rc = fuse_session_loop_mt(session.se, loop);
    fuse_loop_cfg_destroy(loop);
    filesystem.stop();  // no more notifications: the session goes below
    if (textfile) textfile->stop();  // the file goes with the mount
    // libfuse reports the signal that ended the loop as its result: that is a clean stop.
    const bool clean = rc == 0 || rc == SIGINT || rc == SIGTERM || rc == SIGHUP;
    tiercache::log(clean ? tiercache::LogLevel::info : tiercache::LogLevel::error, "unmounting ", mountpoint,
                   clean ? "" : " after an error in the FUSE loop (" + std::to_string(rc) + ")");
    return clean ? 0 : 1;
}
