// Packed datasets (a few large files read by byte range) through a real mount, read by the
// readers users have: python3-lmdb, python3-h5py, numpy memmaps and Python's tarfile
// (tests/readers.py), each file larger than the dram tier, with the kernel cache on and off, and
// the same files by byte range through the API;
// shared maps with the kernel cache off; and a sparse file larger than the machine's memory.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "support.hpp"

namespace readers_test {

using test::fs::path;
const path kSourceDir = TIERCACHE_SOURCE_DIR;

std::uint64_t bytes_under(const path& root) {
    std::uint64_t total = 0;
    for (const auto& name : test::list_files(root)) total += test::fs::file_size(root / name);
    return total;
}

// The daemon's peak resident memory (VmHWM), in bytes.
std::uint64_t peak_rss(pid_t pid) {
    std::istringstream status(test::read_text("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    return 0;
}

// Every tier within its size, and what the origin gave.
void check_tiers(const nlohmann::json& stats) {
    for (const auto& [name, tier] : stats["tiers"].items()) {
        INFO("tier " << name);
        CHECK(tier["used_bytes"].get<std::uint64_t>() <= tier["capacity_bytes"].get<std::uint64_t>());
    }
}

// A file open on the mount and, where it maps, its shared map: both gone before the Mount,
// on every way out of a test, so that the unmount never finds the file busy.
struct MappedFile {
    int fd = -1;
    void* map = MAP_FAILED;
    std::size_t size = 0;
    int map_errno = 0;
    MappedFile(const path& p, std::size_t n) : fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC)), size(n) {
        if (fd < 0) return;
        map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);  // as LMDB and numpy map
        map_errno = map == MAP_FAILED ? errno : 0;
    }
    ~MappedFile() {
        if (map != MAP_FAILED) ::munmap(map, size);
        if (fd >= 0) ::close(fd);
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
};

std::uint64_t fuse_requests(const nlohmann::json& stats, const char* op) { return stats["fuse"]["requests"][op].get<std::uint64_t>(); }

// Linux 6.6 and later offer FUSE_DIRECT_IO_ALLOW_MMAP: shared maps of direct-I/O files.
bool kernel_offers_direct_io_mmap() {
    utsname u{};
    if (::uname(&u) != 0) return false;
    int major = 0, minor = 0;
    if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 6 || (major == 6 && minor >= 6);
}

// What the daemon's log says of mmap with the kernel cache off, checked against the kernel.
void check_mmap_line(const std::string& log) {
    if (kernel_offers_direct_io_mmap())
        CHECK_THAT(log, Catch::Contains("mmap with --kernel-cache off: allowed (FUSE_DIRECT_IO_ALLOW_MMAP)"));
    else
        CHECK_THAT(log, Catch::Contains("mmap with --kernel-cache off: shared maps fail with ENODEV"));
}

}  // namespace readers_test

using namespace readers_test;

TEST_CASE("LMDB, HDF5, a numpy memmap and a tar shard, each larger than dram, read right through the mount", "[mount][extents]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const auto made = test::run({"/usr/bin/python3", (kSourceDir / "tests/readers.py").string(), "make", origin.string(), "16"}, 300);
    if (made.status == 2) FAIL("python3-lmdb, python3-h5py or python3-numpy is missing (scripts/install-deps installs them): " << made.output);
    REQUIRE(made.status == 0);
    const std::uint64_t total = bytes_under(origin);

    // As users mount (kernel cache on), then with every read reaching the cache (direct I/O,
    // whose shared maps LMDB and numpy need: left out where the kernel cannot allow them).
    for (const bool kernel_cache : {true, false}) {
        INFO("kernel cache " << (kernel_cache ? "on" : "off"));
        const path nvme = dir / (kernel_cache ? "nvme-on" : "nvme-off");
        test::fs::create_directories(nvme);
        test::Mount mnt(origin, dir / "mnt", {"--dram", "8MiB", "--nvme", nvme.string() + ":256MiB", "--kernel-cache", kernel_cache ? "on" : "off"});
        std::vector<std::string> check = {"/usr/bin/python3", (kSourceDir / "tests/readers.py").string(), "check", origin.string(),
                                          mnt.path().string(), "--passes", "2"};
        if (!kernel_cache && !kernel_offers_direct_io_mmap()) check.push_back("--no-mmap");
        const auto r = test::run(check, 600);
        INFO(r.output);
        CHECK(r.status == 0);
        if (!kernel_cache) check_mmap_line(mnt.log());
        if (!kernel_cache && kernel_offers_direct_io_mmap())
            CHECK_THAT(r.output, Catch::Contains("\"lmdb\"") && Catch::Contains("\"numpy\""));  // both mapped and read
        const auto stats = mnt.stats();
        check_tiers(stats);
        // Two passes over every file: the origin read about once (nvme holds what dram cannot).
        const auto origin_bytes = stats["origin"]["bytes_read"].get<std::uint64_t>();
        INFO("origin bytes " << origin_bytes << " for " << total << " bytes of files");
        CHECK(origin_bytes <= total * 11 / 10);
        CHECK(stats["tiers"]["nvme"]["hits"].get<std::uint64_t>() + stats["tiers"]["dram"]["hits"].get<std::uint64_t>() > 0);
    }

    // The same files through the API: random byte ranges of each (as its reader's pages and
    // records lie), two passes with dram + nvme, every byte the origin's.
    const path nvme = dir / "nvme-api";
    test::fs::create_directories(nvme);
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(origin).dram("8MiB").nvme(nvme, "256MiB"));
    std::mt19937_64 rng(3);
    for (int pass = 0; pass < 2; ++pass)
        for (const auto& name : test::list_files(origin)) {
            const tiercache::SampleId id = cache.id_of(name);
            const test::Bytes all = test::slurp(origin / name);
            for (std::uint64_t at = 0; at < all.size(); at += 64 * 1024) {  // as many random 64 KiB reads as it has pieces
                const std::uint64_t offset = (at + rng() % all.size()) % all.size() / 4096 * 4096;
                test::Bytes got(std::min<std::size_t>(64 * 1024, all.size() - offset));
                REQUIRE(cache.read(id, offset, got) == got.size());
                REQUIRE(std::equal(got.begin(), got.end(), all.begin() + static_cast<std::ptrdiff_t>(offset)));
            }
        }
    const tiercache::Stats s = cache.stats();
    for (const auto& tier : s.tiers) CHECK(tier.used_bytes <= tier.capacity_bytes);
    INFO("API origin bytes " << s.origin_bytes_read << " for " << total);
    CHECK(s.origin_bytes_read <= total * 11 / 10);
}

TEST_CASE("with the kernel cache off a file maps shared, and every read() still reaches the daemon", "[mount][extents][mmap]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const std::size_t size = 300 * 1024 + 77;
    const auto bytes = test::make_bytes(5, size);
    test::write_file(origin / "feats.bin", bytes);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB", "--kernel-cache", "off"});
    MappedFile file(mnt / "feats.bin", size);  // the map's pages are the kernel's to keep
    REQUIRE(file.fd >= 0);
    check_mmap_line(mnt.log());
    if (kernel_offers_direct_io_mmap()) {
        INFO("mmap: " << std::strerror(file.map_errno));
        REQUIRE(file.map != MAP_FAILED);
        CHECK(std::memcmp(file.map, bytes.data(), size) == 0);
    } else {
        CHECK(file.map == MAP_FAILED);
        CHECK(file.map_errno == ENODEV);  // what README.md says users see there
    }
    // With the file mapped (its pages in the page cache), each pass of read()s still comes to
    // the daemon and is served from the dram tier.
    std::vector<std::uint64_t> reads, hits;
    for (int pass = 0; pass < 3; ++pass) {
        const auto stats = mnt.stats();
        reads.push_back(fuse_requests(stats, "read"));
        hits.push_back(stats["tiers"]["dram"]["hits"].get<std::uint64_t>());
        if (pass == 2) break;
        test::Bytes got(size);
        std::size_t done = 0;
        while (done < size) {
            const ssize_t n = ::pread(file.fd, got.data() + done, size - done, static_cast<off_t>(done));
            REQUIRE(n > 0);
            done += static_cast<std::size_t>(n);
        }
        CHECK(got == bytes);
    }
    INFO("READ requests " << reads[0] << ", " << reads[1] << ", " << reads[2]);
    CHECK(reads[1] > reads[0]);
    CHECK(reads[2] - reads[1] == reads[1] - reads[0]);  // the second pass as many as the first
    CHECK(hits[2] > hits[1]);
    CHECK(mnt.stats()["origin"]["bytes_read"].get<std::uint64_t>() <= size);  // read from the origin once
}

TEST_CASE("a sparse file larger than memory reads at random offsets, with the daemon's memory bounded", "[mount][extents]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    test::fs::create_directories(origin);
    const std::uint64_t size = std::uint64_t{64} << 30;
    const path file = origin / "huge.bin";
    {
        const int fd = ::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        const auto marks = test::make_bytes(11, 1 << 20);
        for (const std::uint64_t at : {std::uint64_t{0}, size / 2 + 12345, size - marks.size()})
            REQUIRE(::pwrite(fd, marks.data(), marks.size(), static_cast<off_t>(at)) == static_cast<ssize_t>(marks.size()));
        ::close(fd);
    }
    const path nvme = dir / "nvme";
    test::fs::create_directories(nvme);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--nvme", nvme.string() + ":256MiB", "--kernel-cache", "off"});
    const std::uint64_t before = peak_rss(mnt.pid());
    const int cached = ::open((mnt / "huge.bin").c_str(), O_RDONLY | O_CLOEXEC);
    const int direct = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(cached >= 0);
    REQUIRE(direct >= 0);
    std::mt19937_64 rng(3);
    std::vector<std::uint64_t> offsets = {0, size / 2 + 12345 - 100, size - 4096, size - 1};
    for (int i = 0; i < 300; ++i) offsets.push_back(rng() % size);
    std::size_t bad = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (const std::uint64_t at : offsets) {
            const std::size_t n = at % 2 ? 4096 : 128 * 1024;
            test::Bytes a(n), b(n);
            const ssize_t got = ::pread(cached, a.data(), n, static_cast<off_t>(at));
            const ssize_t want = ::pread(direct, b.data(), n, static_cast<off_t>(at));
            if (got != want || a != b) ++bad;
        }
    }
    ::close(cached);
    ::close(direct);
    CHECK(bad == 0);
    const auto stats = mnt.stats();
    check_tiers(stats);
    const std::uint64_t peak = peak_rss(mnt.pid());
    INFO("daemon peak RSS " << (peak >> 20) << " MiB (" << (before >> 20) << " MiB at mount) for a 64 GiB file, dram 64 MiB");
    // The dram tier, the catalog and slots (64 Ki extents), threads' one-extent buffers: far
    // below the file, bounded by the tiers. A sanitizer's shadow memory multiplies it (TSan:
    // 455 MiB seen), so there the figure is only said.
    if (test::kSanitizerBuild)
        WARN("under a sanitizer, daemon peak RSS " << (peak >> 20) << " MiB: not checked");
    else
        CHECK(peak < (64u << 20) + (160u << 20));
}

TEST_CASE("WebDataset shards: their members, indexed and shuffled across shards in a record plan, read right through the mount", "[mount][extents][records]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const auto made = test::run({"/usr/bin/python3", (kSourceDir / "bench/make_shards.py").string(), origin.string(), "--total-bytes",
                                 std::to_string(12 << 20), "--shard-bytes", std::to_string(3 << 20)}, 120);
    REQUIRE(made.status == 0);
    const path index = dir / "index.jsonl";
    const auto indexed = test::run({TIERCACHE_CLI_BIN, "index", origin.string(), "-o", index.string()}, 120);
    INFO(indexed.output);
    REQUIRE(indexed.status == 0);
    const std::uint64_t total = bytes_under(origin);

    // The origin's digest of every record, then two epochs through the mount, each planned.
    auto digest_of = [](const test::CommandResult& r) {
        std::vector<std::string> digests;
        std::istringstream lines(r.output);
        for (std::string line; std::getline(lines, line);)
            if (line.starts_with("{")) digests.push_back(nlohmann::json::parse(line)["digest"].get<std::string>());
        return digests;
    };
    const auto native = test::run({TIERCACHE_CLI_BIN, "bench", "read", origin.string(), "--records", index.string(), "--verify", "--json"}, 300);
    REQUIRE(native.status == 0);
    const auto want = digest_of(native);
    REQUIRE(want.size() == 1);

    const path nvme = dir / "nvme";
    test::fs::create_directories(nvme);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "4MiB", "--nvme", nvme.string() + ":64MiB", "--kernel-cache", "off"});
    const auto through = test::run({TIERCACHE_CLI_BIN, "bench", "read", mnt.path().string(), "--records", index.string(), "--plan",
                                    "--verify", "--json", "--epochs", "2", "--readers", "4"}, 300);
    INFO(through.output);
    REQUIRE(through.status == 0);
    CHECK(digest_of(through) == std::vector<std::string>{want[0], want[0]});
    const auto stats = mnt.stats();
    check_tiers(stats);
    const auto origin_bytes = stats["origin"]["bytes_read"].get<std::uint64_t>();
    INFO("origin bytes " << origin_bytes << " for " << total << " bytes of shards");
    // nvme holds what 4 MiB of dram cannot (an extent demoted while its write-through is still
    // queued is read from that write: cache.hpp, await_write_through).
    CHECK(origin_bytes <= total * 11 / 10);
    CHECK(stats["tiers"]["nvme"]["hits"].get<std::uint64_t>() > 0);
}
