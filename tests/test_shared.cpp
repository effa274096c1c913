// A shared cache within one process: an owner (Config::share) and clients (Cache::attach)
// that reach it through the segment and the channel as other processes do. The tests with
// several processes, kill -9 and the mount are in test_shared_mount.cpp.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>

#include <tiercache/tiercache.hpp>

#include "support.hpp"

using namespace tiercache;

namespace {

// `count` files of 20-80 KiB; their bytes by relative path.
std::map<std::string, test::Bytes> make_dataset_bytes(const test::fs::path& root, int count, std::uint64_t seed = 11) {
    std::mt19937_64 rng(seed);
    std::map<std::string, test::Bytes> files;
    for (int i = 0; i < count; ++i) {
        const std::string rel = "c" + std::to_string(i % 5) + "/s" + std::to_string(i) + ".jpg";
        files[rel] = test::make_bytes(seed + i, 20 * 1024 + rng() % (60 * 1024));
        test::write_file(root / rel, files[rel]);
    }
    return files;
}

std::uint64_t total_bytes(const std::map<std::string, test::Bytes>& files) {
    std::uint64_t n = 0;
    for (const auto& [rel, bytes] : files) n += bytes.size();
    return n;
}

// A name no other test (or run) uses at the same time.
std::string unique_name(const char* what) { return std::string("test-") + what + "-" + std::to_string(::getpid()); }

test::Bytes read_all(Cache& cache, SampleId id) {
    test::Bytes out(cache.size(id));
    out.resize(cache.read(id, 0, out));
    return out;
}

}  // namespace

TEST_CASE("an attached client reads the owner's bytes, from shared memory once they are there", "[shared]") {
    test::TempDir dir;
    const auto files = make_dataset_bytes(dir.path(), 60);
    const std::string name = unique_name("read");
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").share(name));
    AttachedCache client = Cache::attach(name);
    REQUIRE(client.attached());
    REQUIRE(client.catalog().size() == files.size());

    // Every sample, first by the client (misses: the owner reads the origin once), then again.
    for (int round = 0; round < 2; ++round)
        for (const auto& [rel, bytes] : files) REQUIRE(read_all(client, client.id_of(rel)) == bytes);
    const Stats s = client.stats();
    CHECK(s.origin_bytes_read == total_bytes(files));  // read once, for both rounds
    CHECK(s.tiers.at(0).used_bytes == total_bytes(files));
    CHECK(s.tiers.at(0).hits >= files.size());  // the second round came from shared memory
    CHECK(s.share_name == name);
    CHECK(s.share_connections >= 1);
    CHECK(s.share_jobs == 1);

    // The owner's own reads hit what the client brought in.
    for (const auto& [rel, bytes] : files) REQUIRE(read_all(owner, owner.id_of(rel)) == bytes);
    CHECK(owner.stats().origin_bytes_read == total_bytes(files));

    // Partial reads and reads past the end, as the mount makes them.
    const SampleId id = client.id_of(files.begin()->first);
    std::vector<std::byte> part(1000);
    REQUIRE(client.read(id, 500, part) == 1000);
    CHECK(std::equal(part.begin(), part.end(), files.begin()->second.begin() + 500));
    CHECK(client.read(id, client.size(id), part) == 0);
    CHECK_THROWS_AS(client.read(static_cast<SampleId>(files.size()), 0, part), UnknownSample);
    CHECK_THROWS_AS(client.id_of("c0/nope.jpg"), UnknownSample);
}

TEST_CASE("clients and the owner read correct bytes while the dram tier evicts under them", "[shared]") {
    test::TempDir dir;
    const auto files = make_dataset_bytes(dir.path(), 200);
    const std::string name = unique_name("evict");
    // Room for a quarter: every round evicts, and clients copy bytes the owner frees and reuses.
    OwnerCache owner(Config{}.origin(dir.path()).dram(std::to_string(total_bytes(files) / 4)).policy("lru").share(name));
    std::vector<std::string> rels;
    for (const auto& [rel, bytes] : files) rels.push_back(rel);

    std::atomic<int> wrong{0}, errors{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 6; ++t) {
        readers.emplace_back([&, t] {
            try {
                std::unique_ptr<AttachedCache> attached;
                if (t % 2 == 0) attached.reset(new AttachedCache(Cache::attach(name)));  // Cache is not movable
                Cache& cache = t % 2 == 0 ? static_cast<Cache&>(*attached) : owner;
                std::mt19937 rng(static_cast<unsigned>(t));
                for (int i = 0; i < 1500; ++i) {
                    const std::string& rel = rels[rng() % rels.size()];
                    if (read_all(cache, cache.id_of(rel)) != files.at(rel)) ++wrong;
                }
            } catch (const std::exception&) {
                ++errors;
            }
        });
    }
    for (auto& r : readers) r.join();
    CHECK(wrong == 0);
    CHECK(errors == 0);
    CHECK(owner.stats().tiers.at(0).evictions > 0);
}

TEST_CASE("each job registers its plan with the owner, and a job's plan goes with it", "[shared]") {
    test::TempDir dir;
    const auto files = make_dataset_bytes(dir.path(), 40);
    const std::string name = unique_name("plans");
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").share(name));
    owner.set_plan(EpochPlan(files.size(), 1, 0));
    {
        AttachedCache a = Cache::attach(name);
        AttachedCache b = Cache::attach(name);
        a.set_plan(EpochPlan(files.size(), 2, 0));
        b.set_plan(EpochPlan(files.size(), 3, 0));
        const Stats s = owner.stats();
        CHECK(s.plan_jobs == 3);
        CHECK(s.plan_samples == 3 * files.size());
        CHECK(s.share_jobs == 2);
        b.clear_plan();
        CHECK(owner.stats().plan_jobs == 2);
    }
    // Both clients went: their connections close and a's plan is dropped.
    CHECK(test::eventually([&] { return owner.stats().plan_jobs == 1 && owner.stats().share_connections == 0; }));
    CHECK(owner.stats().share_jobs == 0);
}

TEST_CASE("an EpochLoader works over an attached client", "[shared]") {
    test::TempDir dir;
    const auto files = make_dataset_bytes(dir.path(), 50);
    const std::string name = unique_name("loader");
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").share(name));
    AttachedCache client = Cache::attach(name);
    const EpochPlan plan(files.size(), 5, 0);
    EpochLoader loader(client, plan, {.batch = 7, .depth = 3, .threads = 3});
    std::size_t seen = 0;
    while (auto batch = loader.next()) {
        for (std::size_t i = 0; i < batch->size(); ++i) {
            const auto& want = files.at(std::string(client.catalog().path(batch->ids()[i])));
            const auto got = batch->sample(i);
            REQUIRE(std::equal(got.begin(), got.end(), want.begin(), want.end()));
            REQUIRE(batch->ids()[i] == plan.order()[seen]);
            ++seen;
        }
    }
    CHECK(seen == files.size());
    CHECK(owner.stats().origin_bytes_read == total_bytes(files));
    CHECK(client.stats().loader_batches > 0);
}

TEST_CASE("a client whose owner closed gets OwnerGone, not a hang", "[shared]") {
    test::TempDir dir;
    const auto files = make_dataset_bytes(dir.path(), 10);
    const std::string name = unique_name("closed");
    auto owner = std::make_unique<OwnerCache>(Config{}.origin(dir.path()).dram("64MiB").share(name));
    AttachedCache client = Cache::attach(name);
    const SampleId id = client.id_of(files.begin()->first);
    REQUIRE(read_all(client, id) == files.begin()->second);
    owner.reset();
    std::vector<std::byte> buf(100);
    try {
        client.read(id, 0, buf);
        FAIL("no error");
    } catch (const OwnerGone& e) {
        CHECK_THAT(e.what(), Catch::Contains("closed"));
    }
    CHECK_THROWS_AS(client.stats(), OwnerGone);
    // The name is free again: a new owner serves it, and a new client attaches.
    OwnerCache again(Config{}.origin(dir.path()).dram("64MiB").share(name));
    AttachedCache fresh = Cache::attach(name);
    CHECK(read_all(fresh, id) == files.begin()->second);
}

TEST_CASE("shared caches refuse what they cannot do, with a message naming it", "[shared]") {
    test::TempDir dir;
    make_dataset_bytes(dir.path(), 5);
    const std::string name = unique_name("refuse");
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").share(name));

    SECTION("a second owner of the name") {
        try {
            OwnerCache second(Config{}.origin(dir.path()).dram("64MiB").share(name));
            FAIL("two owners");
        } catch (const std::runtime_error& e) {
            CHECK_THAT(e.what(), Catch::Contains("already served by pid " + std::to_string(::getpid())));
        }
    }
    SECTION("a name that is no name") {
        CHECK_THROWS_WITH(Config{}.origin(dir.path()).share("../x").validate(), Catch::Contains("share name '../x'"));
        CHECK_THROWS_WITH(Cache::attach("a/b"), Catch::Contains("share name 'a/b'"));
        CHECK_THROWS_WITH(Config{}.origin(dir.path()).share("x").share_group("no-such-group-tc").validate(),
                          Catch::Contains("group 'no-such-group-tc'"));
    }
    SECTION("a name nobody serves") {
        CHECK_THROWS_AS(Cache::attach(name + "-none"), OwnerGone);
        CHECK_THROWS_WITH(Cache::attach(name + "-none"), Catch::Contains("no owner serves it"));
    }
    SECTION("the files are the owner's user's alone by default") {
        const auto paths = SharePaths::of("/dev/shm", name);
        for (const auto& p : {paths.segment, paths.socket}) {
            struct stat st {};
            REQUIRE(::stat(p.c_str(), &st) == 0);
            CHECK((st.st_mode & 07777) == 0600);
        }
    }
    SECTION("a client of another version") {
        const auto paths = SharePaths::of("/dev/shm", name);
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const sockaddr_un addr = detail::socket_address(paths.socket.string());
        REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(detail::send_frame(fd, {static_cast<std::uint32_t>(detail::Op::hello), 0, 999, kSegmentVersion, 0, 0}));
        detail::Frame out{};
        REQUIRE(detail::recv_exact(fd, &out, sizeof out));
        std::string text(out.length, '\0');
        REQUIRE(detail::recv_exact(fd, text.data(), text.size()));
        CHECK(out.status == EPROTO);
        CHECK_THAT(text, Catch::Contains("use the same tiercache version"));
        ::close(fd);
    }
    SECTION("a segment laid out by another version") {
        test::TempDir other;
        const auto file = other / "old.seg";
        SegmentHeader h;
        h.version = kSegmentVersion + 1;
        std::vector<std::byte> bytes(4096);
        std::memcpy(bytes.data() + 64, &h, sizeof h);
        test::write_file(file, bytes);
        CHECK_THROWS_WITH(SegmentMapping(file, 64), Catch::Contains("version " + std::to_string(kSegmentVersion + 1)));
    }
    SECTION("a hostile client is dropped, and the others go on") {
        AttachedCache good = Cache::attach(name);
        const auto paths = SharePaths::of("/dev/shm", name);
        for (int kind = 0; kind < 4; ++kind) {
            const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            const sockaddr_un addr = detail::socket_address(paths.socket.string());
            REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
            detail::Frame f{};
            if (kind == 0) f = {static_cast<std::uint32_t>(detail::Op::read), 0, 0, 0, 100, 0};           // before hello
            if (kind == 1) f = {static_cast<std::uint32_t>(detail::Op::hello), 0, detail::kChannelVersion, kSegmentVersion, 12345, 0};  // joins no job
            if (kind == 2) f = {77, 0, 0, 0, 0, 0};                                                         // no such op
            if (kind == 3) f = {static_cast<std::uint32_t>(detail::Op::set_plan), 0, 1, 0, 0, std::uint64_t{1} << 40};  // a huge payload
            detail::send_frame(fd, f);
            char byte;
            CHECK(::recv(fd, &byte, 1, 0) <= 0);  // closed on it
            ::close(fd);
        }
        CHECK(good.catalog().size() == 5);
        std::vector<std::byte> buf(10);
        CHECK(good.read(0, 0, buf) == 10);
    }
}

TEST_CASE("a group opens a shared cache's files to its members", "[shared]") {
    test::TempDir dir;
    make_dataset_bytes(dir.path(), 5);
    const std::string name = unique_name("group");
    OwnerCache owner(Config{}.origin(dir.path()).dram("64MiB").share(name).share_group("root"));
    const auto paths = SharePaths::of("/dev/shm", name);
    for (const auto& [p, mode] : {std::pair{paths.segment, 0640}, std::pair{paths.socket, 0660}}) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == static_cast<unsigned>(mode));  // clients only read the segment
        CHECK(st.st_gid == 0);
    }
}

TEST_CASE("an owner removes the files of shares whose owner died", "[shared]") {
    test::TempDir data, shm;
    make_dataset_bytes(data.path(), 5);
    // What kill -9 leaves: the segment, the socket's name and an unlocked lock file.
    const auto dead = SharePaths::of(shm.path(), "dead");
    for (const auto& p : {dead.segment, dead.socket, dead.lock}) test::write_file(p, test::make_bytes(1, 100));
    OwnerCache owner(Config{}.origin(data.path()).dram("64MiB").segment_dir(shm.path()).share("alive"));
    CHECK_FALSE(test::fs::exists(dead.segment));
    CHECK_FALSE(test::fs::exists(dead.socket));
    CHECK_FALSE(test::fs::exists(dead.lock));
    // A live owner's files stay when another owner starts.
    const auto alive = SharePaths::of(shm.path(), "alive");
    OwnerCache other(Config{}.origin(data.path()).dram("64MiB").segment_dir(shm.path()).share("other"));
    CHECK(test::fs::exists(alive.segment));
    CHECK(test::fs::exists(alive.lock));
    AttachedCache client = Cache::attach("alive", {.dir = shm.path()});
    CHECK(client.catalog().size() == 5);
}
