// Tests that really mount: every one runs tiercache-fuse on a temporary origin, and its Mount
// unmounts on every way out (see support.hpp); the ctest fixture checks none is left.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <sys/xattr.h>
#include <thread>

#include "support.hpp"

namespace {

using test::fs::path;

// Reads every file of `names` through `root_a` and `root_b` in a shuffled order with
// `threads` readers; returns how many differ or fail.
std::size_t compare_shuffled(const path& mounted, const path& origin, std::vector<std::string> names, int threads, std::uint64_t seed) {
    std::shuffle(names.begin(), names.end(), std::mt19937_64(seed));
    std::atomic<std::size_t> next{0}, bad{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < threads; ++t)
        readers.emplace_back([&] {
            for (std::size_t i; (i = next++) < names.size();) {
                const auto got = test::read_file(mounted / names[i]);
                if (got.error != 0 || got.bytes != test::slurp(origin / names[i])) {
                    ++bad;
                    UNSCOPED_INFO("mismatch or error (" << std::strerror(got.error) << ") on '" << names[i] << "'");
                }
            }
        });
    for (auto& r : readers) r.join();
    return bad;
}

std::vector<std::string> listing(const path& dir) {
    std::vector<std::string> names;
    for (const auto& e : test::fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

std::uint64_t counter(const nlohmann::json& stats, const char* op) { return stats["fuse"]["requests"][op].get<std::uint64_t>(); }

}  // namespace

TEST_CASE("tricky names through the mount: bytes, listings and sizes equal the origin", "[mount]") {
    for (const char* kernel_cache : {"on", "off"}) {
        test::TempDir dir;
        const path origin = dir / "origin";
        const auto names = test::make_tricky_tree(origin);
        test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", kernel_cache});
        INFO("kernel cache " << kernel_cache);

        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 1) == 0);
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 2) == 0);  // warm: from the tier or the page cache

        for (auto it = test::fs::recursive_directory_iterator(origin); it != test::fs::recursive_directory_iterator(); ++it) {
            const auto rel = test::fs::relative(it->path(), origin);
            const auto through = mnt.path() / rel;
            INFO("entry '" << rel.string() << "'");
            REQUIRE(test::fs::exists(through));
            CHECK(test::fs::is_directory(through) == it->is_directory());
            if (it->is_directory()) CHECK(listing(through) == listing(it->path()));
            else CHECK(test::fs::file_size(through) == it->file_size());
        }
        CHECK(listing(mnt.path()) == listing(origin));  // the control folder stays hidden
        CHECK_FALSE(test::fs::exists(mnt / "no such file"));
        CHECK_FALSE(test::fs::exists(mnt / "class a/no such file"));
        CHECK(mnt.stop() == 0);  // a clean exit (under ASan: no leak either)
    }
}

TEST_CASE("the stats control file is JSON of the documented shape, fresh on each read", "[mount]") {
    test::TempDir dir;
    test::write_file(dir / "origin/a/x.bin", test::make_bytes(1, 10000));
    test::Mount mnt(dir / "origin", dir / "mnt", {"--dram", "1MiB"});
    const auto before = mnt.stats();
    test::slurp(mnt / "a/x.bin");
    const auto after = mnt.stats();
    CHECK(after["samples"] == 1);
    CHECK(after["tiers"]["dram"]["capacity_bytes"] == 1 << 20);
    for (const char* key : {"used_bytes", "hits", "misses", "bytes_read", "evictions", "checksum_failures"})
        CHECK(after["tiers"]["dram"].contains(key));
    CHECK(after["origin"]["bytes_read"] == 10000);
    CHECK(after["origin"]["reads"] == 1);
    CHECK(after["uptime_s"].get<double>() > before["uptime_s"].get<double>());
    CHECK(listing(mnt / ".tiercache") == std::vector<std::string>{"metrics", "plan", "stats"});
}

TEST_CASE("a small dram tier stays in bound, and in the second epoch noevict hits about the capacity fraction, LRU less", "[mount][policy]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::mt19937_64 rng(5);
    std::vector<std::string> names;
    std::uint64_t total = 0;
    for (int i = 0; i < 400; ++i) {
        const std::size_t size = 20 * 1024 + rng() % (60 * 1024);
        names.push_back("c" + std::to_string(i % 10) + "/img" + std::to_string(i) + ".jpg");
        test::write_file(origin / names.back(), test::make_bytes(i, size));
        total += size;
    }
    const double f = 0.25;
    const std::uint64_t capacity = static_cast<std::uint64_t>(f * static_cast<double>(total));
    std::map<std::string, double> rate;
    for (const char* policy : {"noevict", "lru"}) {
        // Kernel cache off: every read reaches the tier, so its hit rate is what we measure.
        test::Mount mnt(origin, dir / ("mnt-" + std::string(policy)),
                        {"--dram", std::to_string(capacity), "--policy", policy, "--kernel-cache", "off"});
        std::atomic<bool> done{false};
        std::atomic<std::uint64_t> max_used{0};
        std::thread watcher([&] {
            while (!done) {
                const auto used = mnt.stats()["tiers"]["dram"]["used_bytes"].get<std::uint64_t>();
                if (used > max_used) max_used = used;
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        });
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 1) == 0);
        const auto first = mnt.stats()["tiers"]["dram"];
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 2) == 0);
        const auto second = mnt.stats()["tiers"]["dram"];
        done = true;
        watcher.join();
        INFO("policy " << policy);
        CHECK(max_used <= capacity);
        CHECK(second["used_bytes"].get<std::uint64_t>() <= capacity);
        // Files are under 128 KiB: one READ each, so hits per request are hits per file.
        const auto hits = second["hits"].get<double>() - first["hits"].get<double>();
        const auto misses = second["misses"].get<double>() - first["misses"].get<double>();
        REQUIRE(hits + misses == Approx(names.size()));
        rate[policy] = hits / (hits + misses);
    }
    WARN("through the mount, second-epoch hit rate at f = " << f << ": noevict " << rate["noevict"] << ", lru " << rate["lru"]);
    CHECK(rate["noevict"] == Approx(f).margin(0.05));
    CHECK(rate["lru"] < rate["noevict"] - 0.08);
}

TEST_CASE("25,000 files, more than the open-file limit, read correctly through the mount", "[mount][scale]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::vector<std::string> names;
    for (int i = 0; i < 25000; ++i) {
        names.push_back("d" + std::to_string(i % 50) + "/f" + std::to_string(i));
        test::write_file(origin / names.back(), test::make_bytes(i, 64 + static_cast<std::size_t>(i % 700)));
    }
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB"});
    CHECK(compare_shuffled(mnt.path(), origin, names, 4, 3) == 0);
    // No descriptor is held per file: the daemon's table stays small.
    const auto fds = std::distance(test::fs::directory_iterator("/proc/" + std::to_string(mnt.pid()) + "/fd"), {});
    CHECK(fds < 64);
    CHECK(mnt.stats()["samples"] == 25000);
}

TEST_CASE("writes through the mount fail with EROFS and change nothing", "[mount]") {
    // The mount is not "ro" at the VFS (the plan file takes writes): the filesystem itself
    // refuses every other change. Root passes the kernel's permission checks, so each of these
    // reaches the daemon and gets its EROFS.
    test::TempDir dir;
    const path origin = dir / "origin";
    test::write_file(origin / "a/file.bin", test::make_bytes(1, 5000));
    test::write_file(origin / "a/other.bin", test::make_bytes(2, 3000));
    const auto before = test::slurp(origin / "a/file.bin");
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB"});
    const std::string file = (mnt / "a/file.bin").string();
    const std::string stats = (mnt / ".tiercache/stats").string();

    auto fails_erofs = [](long rc) { return rc == -1 && errno == EROFS; };
    // Opening for writing: refused at the OPEN, or (once no-open support is on, when the kernel
    // no longer asks) at the first WRITE.
    for (const std::string& target : {file, stats}) {
        for (int flags : {O_WRONLY, O_RDWR}) {
            INFO("writing " << target << " opened with flags " << flags);
            const int fd = ::open(target.c_str(), flags);
            if (fd < 0) {
                CHECK(errno == EROFS);
                continue;
            }
            CHECK(fails_erofs(::write(fd, "x", 1)));
            CHECK(fails_erofs(::pwrite(fd, "xyz", 3, 100)));
            CHECK(fails_erofs(::ftruncate(fd, 0)));
            CHECK(fails_erofs(::fallocate(fd, 0, 0, 8192)));
            const int src = ::open((mnt / "a/other.bin").c_str(), O_RDONLY);
            REQUIRE(src >= 0);
            loff_t in = 0, out = 0;
            const ssize_t copied = ::copy_file_range(src, &in, fd, &out, 100, 0);
            CHECK((fails_erofs(copied) || (copied == -1 && errno == EXDEV)));  // EXDEV: the kernel copies itself, by write
            ::close(src);
            CHECK(::fsync(fd) == 0);  // nothing to sync, nothing changed
            ::close(fd);
        }
    }
    CHECK(fails_erofs(::open(file.c_str(), O_RDONLY | O_TRUNC)));
    CHECK(fails_erofs(::open(file.c_str(), O_WRONLY | O_TRUNC)));
    CHECK(fails_erofs(::open((mnt / "a/new.bin").c_str(), O_WRONLY | O_CREAT, 0644)));
    CHECK(fails_erofs(::open((mnt / ".tiercache/new").c_str(), O_WRONLY | O_CREAT, 0644)));
    CHECK(fails_erofs(::mknod((mnt / "a/fifo").c_str(), S_IFIFO | 0644, 0)));
    CHECK(fails_erofs(::truncate(file.c_str(), 0)));
    CHECK(fails_erofs(::truncate(file.c_str(), 10)));
    CHECK(fails_erofs(::chmod(file.c_str(), 0777)));
    CHECK(fails_erofs(::chown(file.c_str(), 1, 1)));
    CHECK(fails_erofs(::utimensat(AT_FDCWD, file.c_str(), nullptr, 0)));
    CHECK(fails_erofs(::unlink(file.c_str())));
    CHECK(fails_erofs(::unlink(stats.c_str())));
    CHECK(fails_erofs(::rename(file.c_str(), (mnt / "a/moved.bin").c_str())));
    CHECK(fails_erofs(::rename(file.c_str(), (mnt / "a/other.bin").c_str())));
    CHECK(fails_erofs(::mkdir((mnt / "newdir").c_str(), 0755)));
    CHECK(fails_erofs(::rmdir((mnt / "a").c_str())));
    CHECK(fails_erofs(::symlink("x", (mnt / "a/link").c_str())));
    CHECK(fails_erofs(::link(file.c_str(), (mnt / "a/hard").c_str())));
    CHECK(fails_erofs(::setxattr(file.c_str(), "user.x", "1", 1, 0)));
    CHECK(fails_erofs(::removexattr(file.c_str(), "user.x")));

    CHECK(test::slurp(origin / "a/file.bin") == before);
    CHECK(listing(origin / "a") == std::vector<std::string>{"file.bin", "other.bin"});
    CHECK(test::slurp(mnt / "a/file.bin") == before);
    CHECK(test::fs::file_size(mnt / "a/file.bin") == before.size());
    CHECK(listing(mnt / "a") == std::vector<std::string>{"file.bin", "other.bin"});
    CHECK(mnt.stats()["fuse"]["requests"]["write_denied"].get<std::uint64_t>() > 0);
    CHECK(test::is_mounted(mnt.path()));
}

TEST_CASE("bad input: a clear message and a non-zero exit, no mount", "[mount][errors]") {
    test::TempDir dir;
    test::write_file(dir / "origin/x", test::make_bytes(1, 10));
    test::fs::create_directories(dir / "mnt");
    test::write_file(dir / "full/occupied", test::make_bytes(2, 10));
    const std::string bin = test::fuse_binary();
    struct Case {
        std::vector<std::string> args;
        std::vector<std::string> says;
    };
    const Case cases[] = {
        {{(dir / "no-origin").string(), (dir / "mnt").string()}, {"origin", "no-origin", "no such directory"}},
        {{(dir / "origin/x").string(), (dir / "mnt").string()}, {"origin", "not a directory"}},
        {{(dir / "origin").string(), (dir / "no-mnt").string()}, {"mountpoint", "no-mnt", "No such file"}},
        {{(dir / "origin").string(), (dir / "full").string()}, {"mountpoint", "not empty"}},
        {{(dir / "origin").string(), (dir / "mnt").string(), "--dram", "12XB"}, {"invalid size '12XB'", "unknown unit"}},
        {{(dir / "origin").string(), (dir / "mnt").string(), "--dram", "-5GiB"}, {"invalid size"}},
        {{(dir / "origin").string(), (dir / "mnt").string(), "--policy", "fifo"}, {"unknown policy 'fifo'"}},
        {{(dir / "origin").string(), (dir / "mnt").string(), "--dram", "20TiB"}, {"does not fit", "--dram"}},
        {{(dir / "origin").string()}, {"MOUNTPOINT"}},
    };
    for (const auto& c : cases) {
        std::vector<std::string> argv = {bin};
        argv.insert(argv.end(), c.args.begin(), c.args.end());
        const auto result = test::run(argv);
        INFO("args: " << Catch::Detail::stringify(c.args) << "\noutput: " << result.output);
        CHECK(result.status != 0);
        CHECK(result.status < 128);  // an exit, not a crash
        for (const auto& s : c.says) CHECK_THAT(result.output, Catch::Contains(s));
        CHECK_FALSE(test::is_mounted(dir / "mnt"));
    }
}

TEST_CASE("an unreadable origin file fails its read with EACCES and the mount stays up", "[mount][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    test::write_file(origin / "a/locked.bin", test::make_bytes(1, 5000));
    test::write_file(origin / "a/open.bin", test::make_bytes(2, 5000));
    test::fs::permissions(origin / "a/locked.bin", test::fs::perms::none);
    // We run as root, who reads anything: drop the capabilities that bypass file modes, so the
    // daemon meets the file as an unprivileged owner would.
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB"}, {"setpriv", "--bounding-set", "-dac_override,-dac_read_search"});
    const auto locked = test::read_file(mnt / "a/locked.bin");
    CHECK((locked.error == EACCES || locked.error == EIO));
    CHECK(test::slurp(mnt / "a/open.bin") == test::slurp(origin / "a/open.bin"));
    CHECK(mnt.stats()["origin"]["errors"].get<int>() >= 1);
    CHECK_THAT(mnt.log(), Catch::Contains("locked.bin") && Catch::Contains("Permission denied"));
}

TEST_CASE("an origin file deleted after mounting fails its read with EIO and the mount stays up", "[mount][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    test::write_file(origin / "a/gone.bin", test::make_bytes(1, 5000));
    test::write_file(origin / "a/kept.bin", test::make_bytes(2, 5000));
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB"});
    test::fs::remove(origin / "a/gone.bin");
    CHECK(test::read_file(mnt / "a/gone.bin").error == EIO);
    CHECK(test::slurp(mnt / "a/kept.bin") == test::slurp(origin / "a/kept.bin"));
    CHECK_THAT(mnt.log(), Catch::Contains("gone.bin"));
}

TEST_CASE("SIGINT and SIGTERM unmount cleanly", "[mount]") {
    for (int sig : {SIGINT, SIGTERM}) {
        test::TempDir dir;
        test::write_file(dir / "origin/x", test::make_bytes(1, 100));
        test::Mount mnt(dir / "origin", dir / "mnt", {"--dram", "16MiB"});
        test::slurp(mnt / "x");
        INFO("signal " << sig);
        CHECK(mnt.signal_and_wait(sig) == 0);
        CHECK_FALSE(test::is_mounted(dir / "mnt"));
        CHECK(test::fs::is_empty(dir / "mnt"));
    }
}

TEST_CASE("a warm read of a file costs no FUSE request, a cold one a READ per 128 KiB", "[mount][requests]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    test::write_file(origin / "c/small.jpg", test::make_bytes(1, 110 * 1024));
    test::write_file(origin / "c/large.jpg", test::make_bytes(2, 300 * 1024));
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB"});
    listing(mnt / "c");  // a loader lists first: readdirplus brings the entries and attributes

    const auto s0 = mnt.stats();
    test::slurp(mnt / "c/small.jpg");
    const auto s1 = mnt.stats();
    test::slurp(mnt / "c/small.jpg");
    test::slurp(mnt / "c/large.jpg");
    const auto s2 = mnt.stats();
    test::slurp(mnt / "c/large.jpg");
    const auto s3 = mnt.stats();
    for (const char* op : {"lookup", "getattr", "open", "release"}) {
        INFO("op " << op);  // after the listing, a read needs neither names nor attributes nor opens
        CHECK(counter(s3, op) == counter(s0, op));
    }
    CHECK(counter(s1, "read") - counter(s0, "read") == 1);  // cold small file: one READ
    CHECK(counter(s2, "read") - counter(s1, "read") == 3);  // warm small: none; cold 300 KiB: three
    CHECK(counter(s3, "read") == counter(s2, "read"));      // warm: no request at all
    CHECK(counter(s3, "open") <= 1);  // the first open ever, answered ENOSYS, tells the kernel to stop
}

TEST_CASE("caching off (--dram 0 and --kernel-cache off) serves the origin's bytes and reads the origin on every pass", "[mount][passthrough]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::vector<std::string> names;
    std::uint64_t total = 0;
    for (int i = 0; i < 60; ++i) {
        names.push_back("c" + std::to_string(i % 4) + "/s" + std::to_string(i));
        const std::size_t size = i == 0 ? 0 : 1000 + static_cast<std::size_t>(i) * 4099;  // an empty one, and some over 128 KiB
        test::write_file(origin / names.back(), test::make_bytes(700 + i, size));
        total += size;
    }
    test::Mount mnt(origin, dir / "mnt", {"--dram", "0", "--kernel-cache", "off"});
    CHECK_THAT(mnt.log(), Catch::Contains("caching off"));
    std::uint64_t reads_before = 0;
    for (std::uint64_t pass = 1; pass <= 3; ++pass) {
        INFO("pass " << pass);
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 40 + pass) == 0);
        const auto stats = mnt.stats();
        // Every byte of every pass came from the origin: nothing was kept, by us or the kernel.
        CHECK(stats["origin"]["bytes_read"].get<std::uint64_t>() == pass * total);
        CHECK(stats["tiers"]["dram"]["capacity_bytes"] == 0);
        CHECK(stats["tiers"]["dram"]["used_bytes"] == 0);
        CHECK(stats["tiers"]["dram"]["hits"] == 0);
        CHECK(stats["fuse"]["kernel_cache"] == false);
        const auto reads = counter(stats, "read");
        CHECK(reads - reads_before >= names.size());  // every file reached us, each pass
        reads_before = reads;
    }
    CHECK(mnt.stop() == 0);
}

TEST_CASE("with only --dram 0 the daemon keeps nothing but the kernel page cache still serves warm reads", "[mount][passthrough]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    test::write_file(origin / "c/a.bin", test::make_bytes(1, 110 * 1024));
    test::write_file(origin / "c/b.bin", test::make_bytes(2, 5000));
    test::Mount mnt(origin, dir / "mnt", {"--dram", "0"});
    CHECK_THAT(mnt.log(), Catch::Contains("caching off") && Catch::Contains("--kernel-cache off"));
    std::vector<nlohmann::json> after;
    for (int pass = 0; pass < 2; ++pass) {
        CHECK(test::slurp(mnt / "c/a.bin") == test::slurp(origin / "c/a.bin"));
        CHECK(test::slurp(mnt / "c/b.bin") == test::slurp(origin / "c/b.bin"));
        after.push_back(mnt.stats());
    }
    CHECK(after[0]["origin"]["bytes_read"] == 110 * 1024 + 5000);  // the first pass: all from the origin
    CHECK(after[1]["origin"]["bytes_read"] == after[0]["origin"]["bytes_read"]);  // the second: the kernel's
    CHECK(after[1]["origin"]["reads"] == after[0]["origin"]["reads"]);
    CHECK(after[1]["tiers"]["dram"]["used_bytes"] == 0);

    // Prefetching has nowhere to put anything with caching off: asking for it is an error.
    test::fs::create_directories(dir / "mnt2");
    const auto refused = test::run({test::fuse_binary(), origin.string(), (dir / "mnt2").string(), "--dram", "0",
                                    "--prefetch-threads", "2"});
    CHECK(refused.status == 1);
    CHECK_THAT(refused.output, Catch::Contains("--prefetch-threads 2") && Catch::Contains("caching off"));
    CHECK_FALSE(test::is_mounted(dir / "mnt2"));
}

TEST_CASE("without -f the daemon goes to the background once mounted, and fusermount3 -u ends it", "[mount]") {
    test::TempDir dir;
    test::write_file(dir / "origin/x", test::make_bytes(1, 100));
    test::fs::create_directories(dir / "mnt");
    const auto result = test::run({test::fuse_binary(), (dir / "origin").string(), (dir / "mnt").string(), "--dram", "16MiB"});
    REQUIRE(result.status == 0);
    const bool mounted = test::is_mounted(dir / "mnt");
    CHECK(mounted);
    if (mounted) {
        CHECK(test::slurp(dir / "mnt/x") == test::slurp(dir / "origin/x"));
        CHECK(test::run({"fusermount3", "-u", (dir / "mnt").string()}).status == 0);
    }
    if (test::is_mounted(dir / "mnt")) test::run({"fusermount3", "-u", "-z", (dir / "mnt").string()});
    CHECK_FALSE(test::is_mounted(dir / "mnt"));
}

TEST_CASE("through the mount over dram, pmem, cxl and nvme: 3 shuffled epochs of a dataset 4x dram, correct and in bound", "[mount][tiers]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::mt19937_64 rng(11);
    std::vector<std::string> names;
    std::uint64_t total = 0;
    for (int i = 0; i < 240; ++i) {
        const std::size_t size = 16 * 1024 + rng() % (48 * 1024);
        names.push_back("c" + std::to_string(i % 6) + "/s" + std::to_string(i));
        test::write_file(origin / names.back(), test::make_bytes(100 + i, size));
        total += size;
    }
    test::fs::create_directories(dir / "pmem");
    test::fs::create_directories(dir / "nvme");
    // Kernel cache off, so that every epoch's reads reach the tiers.
    test::Mount mnt(origin, dir / "mnt",
                    {"--dram", std::to_string(total / 4), "--pmem", (dir / "pmem").string() + ":" + std::to_string(total / 4),
                     "--cxl", "0:" + std::to_string(total / 4), "--nvme", (dir / "nvme").string() + ":64MiB", "--kernel-cache", "off"});
    for (std::uint64_t e = 0; e < 3; ++e) {
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 30 + e) == 0);
        const auto stats = mnt.stats();
        for (const char* tier : {"dram", "pmem", "cxl", "nvme"}) {
            INFO("epoch " << e << ", tier " << tier);
            CHECK(stats["tiers"][tier]["used_bytes"].get<std::uint64_t>() <= stats["tiers"][tier]["capacity_bytes"].get<std::uint64_t>());
            CHECK(stats["tiers"][tier]["resident_samples"].get<std::uint64_t>() > 0);
        }
    }
    const auto stats = mnt.stats();
    CHECK(stats["origin"]["bytes_read"] == total);
    CHECK(stats["tier_order"] == nlohmann::json::array({"dram", "pmem", "cxl", "nvme"}));
    CHECK(mnt.stop() == 0);
}

TEST_CASE("a config file mounts with its tiers and options, and flags override it", "[mount][config]") {
    test::TempDir dir;
    test::write_file(dir / "origin/a/x.bin", test::make_bytes(1, 70000));
    test::fs::create_directories(dir / "pmem");
    test::fs::create_directories(dir / "mnt");
    const auto config = dir / "tc.toml";
    std::ofstream(config) << "origin = \"" << (dir / "origin").string() << "\"\npolicy = \"lru\"\n\n"
                          << "[[tier]]\nkind = \"dram\"\nsize = \"1MiB\"\n\n"
                          << "[[tier]]\nkind = \"pmem\"\npath = \"" << (dir / "pmem").string() << "\"\nsize = \"4MiB\"\n\n"
                          << "[mount]\nmountpoint = \"" << (dir / "mnt").string() << "\"\nkernel_cache = false\n";
    // No ORIGIN or MOUNTPOINT on the command line: both come from the file. --dram wins over it.
    test::Mount mnt("", dir / "mnt", {"--config", config.string(), "--dram", "2MiB"}, {}, /*positional=*/false);
    CHECK(test::slurp(mnt / "a/x.bin") == test::slurp(dir / "origin/a/x.bin"));
    const auto stats = mnt.stats();
    CHECK(stats["policy"] == "lru");
    CHECK(stats["tiers"]["dram"]["capacity_bytes"] == 2 << 20);
    CHECK(stats["tiers"]["pmem"]["capacity_bytes"] == 4 << 20);
    CHECK(stats["fuse"]["kernel_cache"] == false);
}

TEST_CASE("kernel cache auto (the default): on for a dataset memory holds, off for one larger, as the log and stats say", "[mount][config]") {
    test::TempDir dir;
    const path small = dir / "small", large = dir / "large";
    test::write_file(small / "a.bin", test::make_bytes(1, 300 * 1024));
    // 1 TiB, sparse: more than any machine's memory, with 64 MiB extents a few thousand slots.
    const std::uint64_t size = std::uint64_t{1} << 40;
    test::fs::create_directories(large);
    const auto marks = test::make_bytes(2, 256 * 1024);
    {
        std::ofstream out(large / "huge.bin", std::ios::binary);
        out.seekp(static_cast<std::streamoff>(size - marks.size()));
        out.write(reinterpret_cast<const char*>(marks.data()), static_cast<std::streamsize>(marks.size()));
    }
    REQUIRE(test::fs::file_size(large / "huge.bin") == size);
    {
        test::Mount mnt(small, dir / "mnt", {"--dram", "16MiB"});
        CHECK(test::slurp(mnt / "a.bin") == test::slurp(small / "a.bin"));
        CHECK(mnt.stats()["fuse"]["kernel_cache"] == true);
        CHECK_THAT(mnt.log(), Catch::Contains("kernel cache auto: on, the dataset") && Catch::Contains("fits the dram tier"));
    }
    const auto config = dir / "auto.toml";
    std::ofstream(config) << "[mount]\nkernel_cache = \"auto\"\n";
    for (const bool from_config : {false, true}) {
        INFO((from_config ? "kernel_cache = \"auto\" in the config file" : "no option"));
        std::vector<std::string> options = {"--dram", "4MiB", "--extent", "64MiB"};
        if (from_config) options.insert(options.end(), {"--config", config.string()});
        test::Mount mnt(large, dir / (from_config ? "mnt-config" : "mnt-auto"), options);  // a log each
        CHECK(mnt.stats()["fuse"]["kernel_cache"] == false);
        CHECK_THAT(mnt.log(), Catch::Contains("kernel cache auto: off") && Catch::Contains("fits neither the dram tier"));
        // Off: direct I/O, and still the origin's bytes.
        std::ifstream in(mnt / "huge.bin", std::ios::binary);
        in.seekg(static_cast<std::streamoff>(size - marks.size()));
        test::Bytes got(marks.size());
        in.read(reinterpret_cast<char*>(got.data()), static_cast<std::streamsize>(got.size()));
        CHECK(got == marks);
    }
    // An explicit choice is kept whatever the sizes.
    test::Mount mnt(large, dir / "mnt-on", {"--dram", "4MiB", "--extent", "64MiB", "--kernel-cache", "on"});
    CHECK(mnt.stats()["fuse"]["kernel_cache"] == true);
    CHECK_THAT(mnt.log(), !Catch::Contains("kernel cache auto"));
}

TEST_CASE("a malformed config file or tier flag is an error naming the line or the value", "[mount][config][errors]") {
    test::TempDir dir;
    test::write_file(dir / "origin/x", test::make_bytes(1, 10));
    test::fs::create_directories(dir / "mnt");
    const auto config = dir / "tc.toml";
    std::ofstream(config) << "[[tier]]\nkind = \"dram\"\nsize = \"12XB\"\n";
    const auto kernel_cache_config = dir / "kc.toml";
    std::ofstream(kernel_cache_config) << "[mount]\nkernel_cache = \"maybe\"\n";
    const std::string bin = test::fuse_binary(), o = (dir / "origin").string(), m = (dir / "mnt").string();
    struct Case {
        std::vector<std::string> args;
        std::vector<std::string> says;
    };
    const Case cases[] = {
        {{o, m, "--config", config.string()}, {config.string() + ":3:", "'12XB'"}},
        {{o, m, "--config", (dir / "none.toml").string()}, {"none.toml", "no such file"}},
        {{o, m, "--pmem", (dir / "nope").string() + ":1GiB"}, {"pmem tier", "nope", "no such directory"}},
        {{o, m, "--pmem", "1GiB"}, {"--pmem '1GiB'", "DIR:SIZE"}},
        {{o, m, "--cxl", "7:1GiB"}, {"NUMA node 7 does not exist"}},
        {{o, m, "--cxl", "0:12XB"}, {"cxl tier", "'12XB'"}},
        {{o, m, "--config", kernel_cache_config.string()}, {kernel_cache_config.string() + ":2:", "kernel_cache must be true, false or \"auto\""}},
    };
    for (const auto& c : cases) {
        std::vector<std::string> argv = {bin};
        argv.insert(argv.end(), c.args.begin(), c.args.end());
        const auto result = test::run(argv);
        INFO("args: " << Catch::Detail::stringify(c.args) << "\noutput: " << result.output);
        CHECK(result.status == 1);
        for (const auto& s : c.says) CHECK_THAT(result.output, Catch::Contains(s));
        CHECK_FALSE(test::is_mounted(dir / "mnt"));
    }
}

TEST_CASE("remounting with the same nvme dir starts warm: the first epoch reads almost nothing from the origin", "[mount][nvme]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::vector<std::string> names;
    for (int i = 0; i < 150; ++i) {
        names.push_back("c" + std::to_string(i % 5) + "/s" + std::to_string(i));
        test::write_file(origin / names.back(), test::make_bytes(300 + i, 20000 + static_cast<std::size_t>(i) * 97));
    }
    test::fs::create_directories(dir / "nvme");
    const std::vector<std::string> options = {"--dram", "1MiB", "--nvme", (dir / "nvme").string() + ":64MiB"};
    {
        test::Mount mnt(origin, dir / "mnt", options);
        CHECK(compare_shuffled(mnt.path(), origin, names, 4, 1) == 0);
        CHECK(mnt.stop() == 0);  // a clean unmount saves the nvme index
    }
    test::Mount mnt(origin, dir / "mnt", options);
    CHECK(compare_shuffled(mnt.path(), origin, names, 4, 2) == 0);
    const auto stats = mnt.stats();
    CHECK(stats["origin"]["bytes_read"] == 0);
    CHECK(stats["tiers"]["nvme"]["hits"].get<std::uint64_t>() >= names.size() - 10);
}

TEST_CASE("tiercache tiers shows the host and checks a config; stats and warm take the mountpoint from it", "[mount][config][cli]") {
    test::TempDir dir;
    test::write_file(dir / "origin/a/x.bin", test::make_bytes(1, 50000));
    test::fs::create_directories(dir / "nvme");
    test::fs::create_directories(dir / "mnt");
    const auto config = dir / "tc.toml";
    std::ofstream(config) << "origin = \"" << (dir / "origin").string() << "\"\n"
                          << "[[tier]]\nkind = \"dram\"\nsize = \"8MiB\"\n"
                          << "[[tier]]\nkind = \"cxl\"\nnode = 0\nsize = \"4MiB\"\n"
                          << "[[tier]]\nkind = \"nvme\"\npath = \"" << (dir / "nvme").string() << "\"\nsize = \"32MiB\"\n"
                          << "[mount]\nmountpoint = \"" << (dir / "mnt").string() << "\"\n"
                          // The daemon's other options: the tool must take the same file.
                          << "kernel_cache = \"auto\"\nprefetch_threads = 2\nallow_other = false\nrevalidate = 0\n";
    const std::string cli = TIERCACHE_CLI_BIN;
    const auto tiers = test::run({cli, "tiers", "--json", "--config", config.string()});
    REQUIRE(tiers.status == 0);
    const auto j = nlohmann::json::parse(tiers.output);
    CHECK(j["numa_nodes"].size() >= 1);
    CHECK(j["numa_nodes"][0]["capacity_bytes"].get<std::uint64_t>() > 0);
    REQUIRE(j["configured"].size() == 3);
    CHECK(j["configured"][1]["tier"] == "cxl");
    CHECK(j["configured"][2]["bytes"] == 32 << 20);

    test::Mount mnt("", dir / "mnt", {"--config", config.string()}, {}, /*positional=*/false);
    const auto warm = test::run({cli, "warm", "--config", config.string()});
    CHECK(warm.status == 0);
    const auto stats = test::run({cli, "stats", "--json", "--config", config.string()});
    REQUIRE(stats.status == 0);
    const auto s = nlohmann::json::parse(stats.output);
    CHECK(s["origin"]["bytes_read"] == 50000);
    CHECK(s["tier_order"] == nlohmann::json::array({"dram", "cxl", "nvme"}));

    std::ofstream(dir / "bad.toml") << "[[tier]]\nkind = \"dram\"\nsize = \"12XB\"\n";
    const auto bad = test::run({cli, "tiers", "--config", (dir / "bad.toml").string()});
    CHECK(bad.status == 1);
    CHECK_THAT(bad.output, Catch::Contains("bad.toml:3") && Catch::Contains("'12XB'"));
}

TEST_CASE("other users enter the mount only with --allow-other, and then read the origin's bytes", "[mount][permissions]") {
    test::TempDir dir;
    const auto origin = dir.path() / "origin";
    test::write_file(origin / "c" / "a.bin", test::make_bytes(3, 5000));
    // Let the other user reach the mountpoint and the origin (mkdtemp makes the dir 0700).
    test::fs::permissions(dir.path(), test::fs::perms::others_exec | test::fs::perms::group_exec, test::fs::perm_options::add);
    const std::vector<std::string> nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat"};
    {
        test::Mount mnt(origin, dir.path() / "mnt", {"--dram", "16MiB"});
        auto argv = nobody;
        argv.push_back((mnt / "c" / "a.bin").string());
        const auto refused = test::run(argv);
        CHECK(refused.status != 0);
        CHECK_THAT(refused.output, Catch::Contains("Permission denied"));
        CHECK(mnt.stop() == 0);
    }
    {
        test::Mount mnt(origin, dir.path() / "mnt", {"--dram", "16MiB", "--allow-other"});
        auto argv = nobody;
        argv.push_back((mnt / "c" / "a.bin").string());
        const auto allowed = test::run(argv);
        CHECK(allowed.status == 0);
        CHECK(allowed.output == std::string(reinterpret_cast<const char*>(test::make_bytes(3, 5000).data()), 5000));
        CHECK(mnt.stop() == 0);
    }
}
