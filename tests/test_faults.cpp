// Fault injection (label `faults`): the origin changing under readers, an origin that fails
// reads, a full nvme filesystem, corrupt slabs and index, kill -9 and SIGTERM of the daemon.
// Each test counts the faults it injected and the reads it verified, and prints them (WARN),
// so a run's log gives the figures.
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sys/mount.h>
#include <thread>

#include <tiercache/cache.hpp>

#include "support.hpp"

namespace {

using test::fs::path;
using test::Bytes;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kSize = 100 * 1024;  // one READ (128 KiB at most) per whole-file read

std::string name_of(int i) { return "f" + std::to_string(i) + ".bin"; }
Bytes version_bytes(int file, int version) { return test::make_bytes(1000ull * static_cast<std::uint64_t>(file) + version, kSize); }

// Rewrites `p` in place (no truncation: readers of the origin may see the write half done)
// with `bytes`, then gives it an mtime of its own, so that every version differs in mtime.
void rewrite_in_place(const path& p, const Bytes& bytes, int version) {
    const int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    const timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000 + version, 0}};
    REQUIRE(::futimens(fd, times) == 0);
    ::close(fd);
}

// What one whole-file read gave: the index of the version it equals, -1 for bytes of no
// version (mixed or wrong: the failure this file hunts), or -2 for an error.
int classify(const Bytes& got, const std::vector<Bytes>& versions) {
    for (std::size_t v = 0; v < versions.size(); ++v)
        if (got == versions[v]) return static_cast<int>(v);
    return -1;
}

// One open, one pread of the whole file, one close: a single READ through the mount.
test::ReadResult pread_whole(const path& p, std::size_t size) {
    test::ReadResult r;
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) { r.error = errno; return r; }
    r.bytes.resize(size);
    const ssize_t n = ::pread(fd, r.bytes.data(), size, 0);
    if (n < 0) r.error = errno;
    else r.bytes.resize(static_cast<std::size_t>(n));
    ::close(fd);
    return r;
}

// The versions each file went through, shared by the mutator and the readers.
struct History {
    std::mutex mutex;
    std::vector<std::vector<Bytes>> versions;
    std::vector<Bytes> of(int f) {
        std::lock_guard lock(mutex);
        return versions[static_cast<std::size_t>(f)];
    }
    void add(int f, Bytes b) {
        std::lock_guard lock(mutex);
        versions[static_cast<std::size_t>(f)].push_back(std::move(b));
    }
};

// The origin of the change tests: files 0-3 rewritten again and again, 4 truncated, 5
// deleted, 6 replaced by a directory, 7 left alone.
constexpr int kFiles = 8, kRewritten = 4, kTruncated = 4, kDeleted = 5, kMadeDir = 6;

void make_origin(const path& origin, History& history) {
    history.versions.assign(kFiles, {});
    for (int f = 0; f < kFiles; ++f) {
        history.versions[f].push_back(version_bytes(f, 0));
        test::write_file(origin / name_of(f), history.versions[f].back());
    }
}

// Changes the origin for `duration`: rewrites files 0-3 every 30 ms or so, and once each
// truncates, deletes, replaces by a directory. Returns the faults injected.
std::size_t mutate(const path& origin, History& history, std::chrono::milliseconds duration) {
    std::size_t faults = 0;
    const auto end = Clock::now() + duration;
    int version = 1;
    bool once = false;
    while (Clock::now() < end) {
        for (int f = 0; f < kRewritten; ++f) {
            Bytes b = version_bytes(f, version);
            history.add(f, b);  // before the write: a reader may see it as soon as it starts
            rewrite_in_place(origin / name_of(f), b, version);
            ++faults;
        }
        ++version;
        if (!once && Clock::now() > end - duration / 2) {
            once = true;
            test::fs::resize_file(origin / name_of(kTruncated), kSize / 2);
            test::fs::remove(origin / name_of(kDeleted));
            test::fs::remove(origin / name_of(kMadeDir));
            test::fs::create_directory(origin / name_of(kMadeDir));
            faults += 3;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    return faults;
}

struct ReadCounts {
    std::atomic<std::size_t> verified{0}, errors{0}, mixed{0};
};

}  // namespace

TEST_CASE("origin files changing under readers through the API: each read is one whole version, then the new one", "[faults]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    History history;
    make_origin(origin, history);
    test::fs::create_directories(dir / "nvme");
    tiercache::OwnerCache cache(tiercache::Config{}.origin(origin).dram("64MiB").nvme(dir / "nvme", "64MiB"), nullptr);
    std::vector<tiercache::SampleId> ids;
    for (int f = 0; f < kFiles; ++f) ids.push_back(cache.id_of(name_of(f)));

    std::atomic<bool> stop{false};
    ReadCounts counts;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t));
            Bytes buf(kSize);
            while (!stop) {
                const int f = static_cast<int>(rng() % kFiles);
                try {
                    const std::size_t n = cache.read(ids[static_cast<std::size_t>(f)], 0, buf);
                    if (n != kSize || classify(buf, history.of(f)) < 0) {
                        ++counts.mixed;
                        UNSCOPED_INFO("file " << f << ": bytes of no single version");
                    } else {
                        ++counts.verified;
                    }
                } catch (const tiercache::OriginError& e) {
                    if (e.errno_value() != EIO && e.errno_value() != ENOENT) ++counts.mixed;
                    ++counts.errors;
                }
            }
        });
    threads.emplace_back([&] {  // what the mount's revalidation pass does, fast
        while (!stop) {
            for (auto id : ids) cache.revalidate(id);
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    });
    const std::size_t faults = mutate(origin, history, std::chrono::milliseconds(2000));
    stop = true;
    for (auto& t : threads) t.join();

    for (auto id : ids) cache.revalidate(id);
    std::size_t after = 0;
    Bytes buf(kSize);
    for (int f = 0; f < kFiles; ++f) {
        INFO("file " << f);
        const auto id = ids[static_cast<std::size_t>(f)];
        if (f == kTruncated || f == kDeleted || f == kMadeDir) {
            CHECK_THROWS_AS(cache.read(id, 0, buf), tiercache::OriginError);
        } else {
            REQUIRE(cache.read(id, 0, buf) == kSize);
            CHECK(buf == history.of(f).back());
            REQUIRE(cache.read(id, 0, buf) == kSize);  // and again, from a tier now
            CHECK(buf == history.of(f).back());
        }
        ++after;
    }
    CHECK(counts.mixed == 0);
    CHECK(counts.verified > 0);
    WARN("API, origin changing: " << faults << " faults injected, " << counts.verified << " reads verified whole, "
                                  << counts.errors << " failed cleanly (EIO), " << counts.mixed << " mixed, " << after
                                  << " checked after revalidation");
}

TEST_CASE("origin files rewritten, truncated, deleted, made a directory while read through the mount", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    History history;
    make_origin(origin, history);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off", "--revalidate", "0.2"});

    std::atomic<bool> stop{false};
    ReadCounts counts;
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) + 10);
            while (!stop) {
                const int f = static_cast<int>(rng() % kFiles);
                const auto got = pread_whole(mnt / name_of(f), kSize);
                if (got.error != 0) {
                    if (got.error != EIO && got.error != ENOENT) {
                        ++counts.mixed;
                        UNSCOPED_INFO("file " << f << ": " << std::strerror(got.error));
                    }
                    ++counts.errors;
                } else if (got.bytes.size() != kSize || classify(got.bytes, history.of(f)) < 0) {
                    ++counts.mixed;
                    UNSCOPED_INFO("file " << f << ": " << got.bytes.size() << " bytes of no single version");
                } else {
                    ++counts.verified;
                }
            }
        });
    const std::size_t faults = mutate(origin, history, std::chrono::milliseconds(3000));
    stop = true;
    for (auto& r : readers) r.join();

    // Two whole passes after the last change: every change is seen.
    const auto passes = mnt.stats()["revalidation"]["passes"].get<std::uint64_t>();
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (mnt.stats()["revalidation"]["passes"].get<std::uint64_t>() < passes + 2 && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::size_t after = 0;
    for (int f = 0; f < kFiles; ++f) {
        INFO("file " << f);
        const auto got = pread_whole(mnt / name_of(f), kSize);
        if (f == kTruncated || f == kDeleted || f == kMadeDir) {
            CHECK(got.error == EIO);
        } else {
            CHECK(got.error == 0);
            CHECK(got.bytes == history.of(f).back());
        }
        ++after;
    }
    const auto stats = mnt.stats();
    CHECK(stats["revalidation"]["changes"].get<std::uint64_t>() >= 4);
    CHECK(counts.mixed == 0);
    CHECK(counts.verified > 0);
    CHECK(mnt.stop() == 0);
    WARN("mount, origin changing: " << faults << " faults injected, " << counts.verified << " reads verified whole, "
                                    << counts.errors << " failed cleanly (EIO), " << counts.mixed << " mixed, " << after
                                    << " checked after revalidation, " << stats["revalidation"]["changes"] << " changes seen");
}

TEST_CASE("a rewritten file's pages and mtime in the kernel's cache are replaced after revalidation", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    History history;
    make_origin(origin, history);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "on", "--revalidate", "0.2"});
    std::size_t faults = 0, verified = 0;
    for (int round = 1; round <= 3; ++round) {
        INFO("round " << round);
        CHECK(test::slurp(mnt / name_of(0)) == history.of(0).back());  // in the kernel's page cache now
        ++verified;
        Bytes b = version_bytes(0, round);
        history.add(0, b);
        rewrite_in_place(origin / name_of(0), b, round);
        ++faults;
        const auto deadline = Clock::now() + std::chrono::seconds(10);
        test::ReadResult got;
        while (((got = test::read_file(mnt / name_of(0))).error != 0 || got.bytes != b) && Clock::now() < deadline) {
            // The old whole until then, or EIO while the write was seen under way.
            if (got.error == 0) CHECK(got.bytes == history.of(0)[history.of(0).size() - 2]);
            else CHECK(got.error == EIO);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        CHECK(got.error == 0);
        CHECK(got.bytes == b);
        ++verified;
        struct stat st {};
        REQUIRE(::stat((mnt / name_of(0)).c_str(), &st) == 0);
        CHECK(st.st_mtim.tv_sec == 1'700'000'000 + round);
    }
    CHECK(mnt.stop() == 0);
    WARN("kernel cache on, rewrites: " << faults << " faults injected, " << verified << " reads verified");
}

namespace {

// An origin whose reads fail with EIO while `failing` is set: every third read.
class FailingOrigin : public tiercache::Origin {
public:
    using Origin::Origin;
    std::atomic<bool> failing{true};
    std::atomic<std::size_t> injected{0};

protected:
    std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest,
                          tiercache::AfterRead after) override {
        if (failing && calls_++ % 3 == 0) {
            ++injected;
            fail(EIO, relpath, "injected failure");
        }
        return Origin::read_impl(relpath, offset, dest, after);
    }

private:
    std::atomic<std::size_t> calls_{0};
};

}  // namespace

TEST_CASE("EIO from the origin through the API: the read fails, nothing wrong is kept, later reads are right", "[faults]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::vector<Bytes> files;
    for (int i = 0; i < 60; ++i) {
        files.push_back(test::make_bytes(static_cast<std::uint64_t>(i), 1000 + static_cast<std::size_t>(i) * 997));
        test::write_file(origin / name_of(i), files.back());
    }
    test::fs::create_directories(dir / "nvme");
    auto failing = std::make_unique<FailingOrigin>(origin);
    FailingOrigin& fo = *failing;
    // dram for half the files: the rest go to nvme or bypass, all three miss paths fail.
    tiercache::OwnerCache cache(tiercache::Config{}.origin(origin).dram("100KiB").policy("noevict").nvme(dir / "nvme", "64MiB"),
                           std::move(failing));
    std::atomic<std::size_t> verified{0}, errors{0}, wrong{0};
    auto pass = [&](int threads) {
        std::vector<std::thread> ts;
        std::atomic<int> next{0};
        for (int t = 0; t < threads; ++t)
            ts.emplace_back([&] {
                for (int i; (i = next++) < 60;) {
                    Bytes buf(files[static_cast<std::size_t>(i)].size());
                    try {
                        const std::size_t n = cache.read(cache.id_of(name_of(i)), 0, buf);
                        if (n != buf.size() || buf != files[static_cast<std::size_t>(i)]) ++wrong;
                        else ++verified;
                    } catch (const tiercache::OriginError& e) {
                        if (e.errno_value() != EIO) ++wrong;
                        ++errors;
                    }
                }
            });
        for (auto& t : ts) t.join();
    };
    for (int round = 0; round < 3; ++round) pass(4);
    CHECK(errors == fo.injected);
    CHECK(fo.injected > 0);
    CHECK(cache.stats().origin_errors == fo.injected);
    fo.failing = false;
    const std::size_t errors_before = errors;
    pass(4);
    pass(1);
    CHECK(errors == errors_before);
    CHECK(wrong == 0);
    WARN("API, origin EIO: " << fo.injected << " faults injected, " << errors << " reads failed with EIO, " << verified
                             << " reads verified, " << wrong << " wrong");
}

TEST_CASE("EIO from the origin through the mount (pread failing in the daemon): EIO, the mount stays up, nothing bad kept", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    std::vector<std::string> names;
    for (int i = 0; i < 40; ++i) {
        names.push_back((i % 4 == 0 ? "eio-" : "ok-") + name_of(i));
        test::write_file(origin / names.back(), test::make_bytes(static_cast<std::uint64_t>(i) + 500, 50 * 1024));
    }
    const path flag = dir / "failing";
    test::write_file(flag, {});
    // Under ASan the shim, preloaded, comes before ASan's runtime, which ASan refuses by default:
    // it still intercepts what the shim passes on, so the order check is turned off.
    const char* asan = std::getenv("ASAN_OPTIONS");
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off", "--prefetch-threads", "0"},
                    {"env", "LD_PRELOAD=" TIERCACHE_FAULT_PRELOAD, "TIERCACHE_FAULT_EIO=/eio-", "TIERCACHE_FAULT_WHILE=" + flag.string(),
                     "ASAN_OPTIONS=" + std::string(asan ? asan : "") + ":verify_asan_link_order=0"});
    std::size_t verified = 0, eio = 0, wrong = 0;
    auto pass = [&](bool failing) {
        for (const auto& n : names) {
            const auto got = test::read_file(mnt / n);
            const bool bad = n.starts_with("eio-") && failing;
            if (bad && got.error == EIO) ++eio;
            else if (!bad && got.error == 0 && got.bytes == test::slurp(origin / n)) ++verified;
            else ++wrong, UNSCOPED_INFO("'" << n << "': " << std::strerror(got.error));
        }
    };
    pass(true);
    pass(true);
    const auto injected_lines = [&] {
        std::ifstream in(flag);
        std::size_t lines = 0;
        for (std::string line; std::getline(in, line);) ++lines;
        return lines;
    };
    const std::size_t injected = injected_lines();
    CHECK(mnt.stats()["origin"]["errors"].get<std::uint64_t>() == injected);
    test::fs::remove(flag);  // the origin heals: every file reads right, nothing bad was kept
    pass(false);
    pass(false);
    CHECK(wrong == 0);
    CHECK(eio == 20);
    CHECK(injected >= eio);
    CHECK(mnt.stop() == 0);
    WARN("mount, origin EIO: " << injected << " faults injected (pread in the daemon), " << eio << " reads failed with EIO, "
                               << verified << " reads verified, " << wrong << " wrong");
}

namespace {

// A tmpfs of `size` mounted at `where` for the test's life (root only).
class Tmpfs {
public:
    Tmpfs(const path& where, const std::string& size) : where_(where) {
        test::fs::create_directories(where);
        if (::mount("tmpfs", where.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0)
            throw std::runtime_error("mount tmpfs at " + where.string() + ": " + std::strerror(errno));
    }
    ~Tmpfs() { ::umount2(where_.c_str(), MNT_DETACH); }
    Tmpfs(const Tmpfs&) = delete;
    Tmpfs& operator=(const Tmpfs&) = delete;

private:
    path where_;
};

std::vector<std::string> make_files(const path& origin, int count, std::size_t size, std::uint64_t seed = 7) {
    std::vector<std::string> names;
    for (int i = 0; i < count; ++i) {
        names.push_back("c" + std::to_string(i % 3) + "/" + name_of(i));
        test::write_file(origin / names.back(), test::make_bytes(seed + static_cast<std::uint64_t>(i), size));
    }
    return names;
}

// Reads every file through the mount (whole, 1 MiB reads) with `threads` readers; counts
// those equal to the origin's and the others.
struct Tally {
    std::size_t verified = 0, bad = 0;
};
Tally read_all(const path& mnt, const path& origin, const std::vector<std::string>& names, int threads = 4) {
    std::atomic<std::size_t> next{0}, ok{0}, bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
        ts.emplace_back([&] {
            for (std::size_t i; (i = next++) < names.size();) {
                const auto got = test::read_file(mnt / names[i]);
                if (got.error == 0 && got.bytes == test::slurp(origin / names[i])) ++ok;
                else ++bad;
            }
        });
    for (auto& t : ts) t.join();
    return {ok, bad};
}

std::uint64_t nvme_stat(const nlohmann::json& stats, const char* field) { return stats["tiers"]["nvme"][field].get<std::uint64_t>(); }

// Flips `count` bytes of `file` at random offsets in [from, its size).
std::size_t flip_bytes(const path& file, std::uint64_t from, int count, std::uint64_t seed) {
    const std::uint64_t size = test::fs::file_size(file);
    if (size <= from) return 0;
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < count; ++i) {
        const off_t at = static_cast<off_t>(from + rng() % (size - from));
        unsigned char c = 0;
        REQUIRE(::pread(fd, &c, 1, at) == 1);
        c ^= 0x5a;
        REQUIRE(::pwrite(fd, &c, 1, at) == 1);
    }
    ::fsync(fd);
    ::close(fd);
    return static_cast<std::size_t>(count);
}

}  // namespace

TEST_CASE("a full nvme filesystem (ENOSPC): reads stay right, the log says so once", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const auto names = make_files(origin, 80, 100 * 1024);  // 8 MiB
    Tmpfs small(dir / "nvme", "3m");                          // the tier is told 64 MiB
    test::Mount mnt(origin, dir / "mnt", {"--dram", "1MiB", "--kernel-cache", "off", "--nvme", (dir / "nvme").string() + ":64MiB"});
    Tally total;
    for (int pass = 0; pass < 3; ++pass) {
        const Tally t = read_all(mnt.path(), origin, names);
        total.verified += t.verified, total.bad += t.bad;
    }
    const auto stats = mnt.stats();
    CHECK(total.bad == 0);
    CHECK(nvme_stat(stats, "checksum_failures") == 0);
    CHECK(nvme_stat(stats, "resident_samples") < names.size());  // it filled up
    CHECK(mnt.stop() == 0);
    const std::string log = mnt.log();
    CHECK(log.find("is full (No space left on device)") != std::string::npos);
    INFO(log);
    CHECK(log.find("error") == std::string::npos);
    WARN("nvme ENOSPC: 1 fault injected (a 3 MiB filesystem under a 64 MiB tier), " << total.verified
                                                                                    << " reads verified, " << total.bad << " bad");
}

TEST_CASE("corrupt slabs, then a corrupt index, between two daemon runs: the origin's bytes, failures counted", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const path nvme = dir / "nvme";
    test::fs::create_directories(nvme);
    const auto names = make_files(origin, 40, 100 * 1024);
    const std::vector<std::string> options = {"--dram", "1MiB", "--kernel-cache", "off", "--nvme", nvme.string() + ":64MiB",
                                              "--revalidate", "0"};
    std::size_t faults = 0;
    Tally total;
    auto add = [&](Tally t) { total.verified += t.verified, total.bad += t.bad; };
    {
        test::Mount mnt(origin, dir / "mnt", options);
        add(read_all(mnt.path(), origin, names));
        // Written through in the background (nvme_writer.hpp): all of them once the queue drains.
        CHECK(test::eventually([&] { return nvme_stat(mnt.stats(), "resident_samples") == names.size(); }));
        CHECK(mnt.stop() == 0);  // the index is saved
    }
    std::uint64_t failures = 0;
    {
        for (const auto& e : test::fs::directory_iterator(nvme))
            if (e.path().filename() != "index.tci") faults += flip_bytes(e.path(), 4096, 20, faults + 1);
        test::Mount mnt(origin, dir / "mnt", options);
        CHECK(mnt.log().find("warm") != std::string::npos);
        for (int pass = 0; pass < 2; ++pass) add(read_all(mnt.path(), origin, names));
        failures = nvme_stat(mnt.stats(), "checksum_failures");
        CHECK(failures > 0);
        CHECK(mnt.stop() == 0);
    }
    {
        faults += flip_bytes(nvme / "index.tci", 0, 16, 99);
        test::Mount mnt(origin, dir / "mnt", options);
        for (int pass = 0; pass < 2; ++pass) add(read_all(mnt.path(), origin, names));
        CHECK(mnt.stop() == 0);
        CHECK(mnt.log().find("discarding") != std::string::npos);
    }
    CHECK(total.bad == 0);
    WARN("corrupt slabs and index: " << faults << " bytes flipped (slabs and index), " << failures
                                     << " checksum failures counted, " << total.verified << " reads verified, " << total.bad << " bad");
}

TEST_CASE("kill -9 of the daemon during reads, then a restart with the nvme tier: warm and right", "[faults][mount][kill]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const path nvme = dir / "nvme";
    test::fs::create_directories(nvme);
    const auto names = make_files(origin, 60, 100 * 1024);
    const std::vector<std::string> options = {"--dram", "64MiB", "--kernel-cache", "off", "--nvme", nvme.string() + ":64MiB"};
    Tally total;
    auto add = [&](Tally t) { total.verified += t.verified, total.bad += t.bad; };
    std::size_t errors_at_kill = 0;
    {
        test::Mount mnt(origin, dir / "mnt", options);
        add(read_all(mnt.path(), origin, names));
        std::this_thread::sleep_for(std::chrono::seconds(7));  // the index is saved every few seconds while it changes
        std::atomic<bool> stop{false};
        std::atomic<std::size_t> ok{0}, failed{0}, wrong{0};
        std::vector<std::thread> readers;
        for (int t = 0; t < 4; ++t)
            readers.emplace_back([&, t] {
                for (std::size_t i = static_cast<std::size_t>(t); !stop; i = (i + 7) % names.size()) {
                    const auto got = test::read_file(mnt / names[i]);
                    if (got.error != 0) ++failed;  // ENOTCONN once it is gone
                    else if (got.bytes == test::slurp(origin / names[i])) ++ok;
                    else ++wrong;
                }
            });
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        CHECK(mnt.signal_and_wait(SIGKILL) == 128 + SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        stop = true;
        for (auto& r : readers) r.join();
        test::run({"fusermount3", "-u", "-z", (dir / "mnt").string()}, 20);  // the dead mount
        CHECK_FALSE(test::is_mounted(dir / "mnt"));
        CHECK(wrong == 0);
        total.verified += ok, total.bad += wrong;
        errors_at_kill = failed;
    }
    {
        test::Mount mnt(origin, dir / "mnt", options);
        CHECK(mnt.log().find(std::to_string(names.size()) + " samples warm") != std::string::npos);
        add(read_all(mnt.path(), origin, names));
        const auto stats = mnt.stats();
        CHECK(stats["origin"]["reads"].get<std::uint64_t>() == 0);  // every sample from nvme
        CHECK(mnt.stop() == 0);
    }
    CHECK(total.bad == 0);
    WARN("kill -9: 1 fault injected, " << total.verified << " reads verified, " << errors_at_kill
                                       << " reads failed as the daemon died (ENOTCONN), " << total.bad << " bad");
}

TEST_CASE("SIGTERM during heavy reads: a clean exit and no mount left", "[faults][mount]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const auto names = make_files(origin, 200, 64 * 1024);
    std::size_t faults = 0, verified = 0, failed = 0, wrong = 0;
    for (const char* kernel_cache : {"on", "off"}) {
        test::Mount mnt(origin, dir / "mnt", {"--dram", "4MiB", "--kernel-cache", kernel_cache});
        std::atomic<bool> stop{false};
        std::atomic<std::size_t> ok{0}, bad{0}, err{0};
        std::vector<std::thread> readers;
        for (int t = 0; t < 6; ++t)
            readers.emplace_back([&, t] {
                for (std::size_t i = static_cast<std::size_t>(t) * 31; !stop; i = (i + 13) % names.size()) {
                    const auto got = test::read_file(mnt / names[i]);
                    if (got.error != 0) ++err;
                    else if (got.bytes == test::slurp(origin / names[i])) ++ok;
                    else if (test::is_mounted(mnt.path())) ++bad;  // (past the unmount: the empty mountpoint)
                    else ++err;
                }
            });
        std::this_thread::sleep_for(std::chrono::milliseconds(800));
        CHECK(mnt.signal_and_wait(SIGTERM) == 0);
        ++faults;
        stop = true;
        for (auto& r : readers) r.join();
        CHECK_FALSE(test::is_mounted(mnt.path()));
        CHECK(bad == 0);
        verified += ok, failed += err, wrong += bad;
    }
    WARN("SIGTERM: " << faults << " faults injected, " << verified << " reads verified, " << failed
                     << " failed once unmounted, " << wrong << " wrong");
}
