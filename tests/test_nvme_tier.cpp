#include <catch2/catch.hpp>
#include <tiercache/catalog.hpp>
#include <tiercache/nvme_tier.hpp>

#include <atomic>
#include <sys/mount.h>
#include <thread>

#include "support.hpp"

using namespace tiercache;
namespace fs = std::filesystem;

namespace {

using test::KiB;
using test::MiB;

// An origin tree, its catalog in a segment, and each sample's bytes by id.
struct Dataset {
    test::TempDir origin;
    std::unique_ptr<Segment> segment;
    Catalog catalog;
    std::vector<test::Bytes> bytes;  // by SampleId

    explicit Dataset(const std::vector<std::size_t>& sizes) {
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            char name[64];
            std::snprintf(name, sizeof name, "class%zu/img%04zu.jpg", i % 3, i);
            test::write_file(origin / name, test::make_bytes(i + 1, sizes[i]));
        }
        rescan();
    }

    // Scans the origin again (after a test changed it) into a fresh segment.
    void rescan() {
        const ScanResult scan = scan_origin(origin.path());
        // One extent a file (the largest extent size): these tests are of the tier, which
        // stores whatever extents it is given; ExtentId and SampleId are then the same.
        segment = std::make_unique<Segment>("/dev/shm", scan.segment_bytes(kMaxExtentBytes) + (1 << 20));
        catalog = Catalog::place(*segment, scan, kMaxExtentBytes);
        bytes.clear();
        for (SampleId id = 0; id < catalog.size(); ++id) bytes.push_back(test::slurp(origin / std::string(catalog.path(id))));
    }

    std::size_t size() const { return catalog.size(); }
    std::uint64_t checksum(SampleId id) const { return detail::xxh3(bytes[id]); }
    bool put(NvmeTier& tier, SampleId id) const { return tier.put(id, bytes[id], checksum(id)); }
};

// Sizes from 1 byte to a few MiB: block multiples, one off either side, JPEG-like, odd.
std::vector<std::size_t> varied_sizes(std::size_t n, std::uint64_t seed = 7) {
    std::vector<std::size_t> sizes = {1, 100, 4095, 4096, 4097, 8192, 110 * KiB, 128 * KiB + 1, 1 * MiB, 3 * MiB + 11};
    std::mt19937_64 rng(seed);
    while (sizes.size() < n) sizes.push_back(1 + rng() % (300 * KiB));
    sizes.resize(n);
    return sizes;
}

// A small tmpfs, unmounted on every way out of the test (lazily as a last resort).
class TmpfsMount {
public:
    TmpfsMount(fs::path dir, const std::string& size) : dir_(std::move(dir)) {
        fs::create_directories(dir_);
        const std::string options = "size=" + size;
        if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) != 0)
            throw std::runtime_error("mount tmpfs on " + dir_.string() + ": " + std::strerror(errno));
    }
    TmpfsMount(const TmpfsMount&) = delete;
    TmpfsMount& operator=(const TmpfsMount&) = delete;
    ~TmpfsMount() {
        if (::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
    }
    const fs::path& path() const { return dir_; }

private:
    fs::path dir_;
};

std::uint64_t slab_files_bytes(const fs::path& dir) {
    std::uint64_t total = 0;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".tcs") total += e.file_size();
    return total;
}

void write_at(const fs::path& path, std::uint64_t offset, const test::Bytes& bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(bytes.size()));
    ::fsync(fd);
    ::close(fd);
}

test::Bytes read_all(const fs::path& path) { return test::slurp(path); }

void write_all(const fs::path& path, const test::Bytes& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

NvmeRead get(NvmeTier& tier, const Dataset& ds, SampleId id, test::Bytes& out) {
    out.assign(ds.bytes[id].size(), std::byte{0});
    return tier.get(id, out);
}

}  // namespace

TEST_CASE("nvme options: validate names the bad value; the default slab size scales", "[nvme]") {
    CHECK_THROWS_WITH(NvmeOptions{.slab_bytes = 1000}.validate(4 * MiB), Catch::Contains("1000") && Catch::Contains("4096"));
    CHECK_THROWS_WITH(NvmeOptions{.slab_bytes = 64 * MiB}.validate(4 * MiB),
                      Catch::Contains("67108864") && Catch::Contains("larger than the capacity"));
    CHECK_THROWS_WITH(NvmeOptions{.slab_bytes = 64 * MiB}.validate(800ull << 30), Catch::Contains("12800 slab files"));
    CHECK_THROWS_WITH(NvmeOptions{}.validate(100), Catch::Contains("capacity") && Catch::Contains("100 bytes"));
    CHECK_NOTHROW(NvmeOptions{.slab_bytes = 256 * KiB}.validate(4 * MiB));
    CHECK_NOTHROW(NvmeOptions{}.validate(800ull << 30));

    CHECK(NvmeOptions{}.slab_bytes_for(800ull << 30) == 800 * MiB);  // 1,024 descriptors, not 12,800
    CHECK(NvmeOptions{}.slab_bytes_for(10ull << 30) == 64 * MiB);
    CHECK(NvmeOptions{}.slab_bytes_for(4 * MiB) == 256 * KiB);       // 16 slabs for a small tier
    CHECK(NvmeOptions{.slab_bytes = 1 * MiB}.slab_bytes_for(800ull << 30) == 1 * MiB);
    for (std::uint64_t capacity : {std::uint64_t{8 * KiB}, 1 * MiB + 5, std::uint64_t{3} << 30, std::uint64_t{5} << 40}) {
        const std::uint64_t s = NvmeOptions{}.slab_bytes_for(capacity);
        INFO("capacity " << capacity);
        CHECK(s % 4096 == 0);
        CHECK(s <= capacity);
        CHECK(capacity / s <= 1024);
        CHECK_NOTHROW(NvmeOptions{.slab_bytes = s}.validate(capacity));
    }
}

TEST_CASE("nvme: a directory that cannot be made, or one in use, is an error naming it", "[nvme]") {
    Dataset ds({100});
    CHECK_THROWS_WITH(NvmeTier(ds.catalog, "/etc/passwd/tier", 4 * MiB),
                      Catch::Contains("'/etc/passwd/tier'") && Catch::Contains("cannot create"));
    test::TempDir dir;
    NvmeTier first(ds.catalog, dir.path(), 4 * MiB);
    CHECK_THROWS_WITH(NvmeTier(ds.catalog, dir.path(), 4 * MiB), Catch::Contains(dir.path().string()) && Catch::Contains("in use"));
}

TEST_CASE("nvme: put then get returns the same bytes, for samples of many sizes", "[nvme]") {
    const bool direct = GENERATE(true, false);
    INFO("direct_io " << direct);
    Dataset ds(varied_sizes(80));
    test::TempDir dir;
    NvmeTier tier(ds.catalog, dir.path(), 64 * MiB, {.slab_bytes = 4 * MiB, .direct_io = direct});
    CHECK(tier.capacity() == 64 * MiB);
    CHECK(tier.describe() == "nvme: " + dir.path().string() + ", 16 slabs of 4 MiB, " + (direct ? "O_DIRECT" : "buffered"));

    std::uint64_t stored_bytes = 0;
    for (SampleId id = 0; id < ds.size(); ++id) {
        REQUIRE(ds.put(tier, id));
        stored_bytes += ds.bytes[id].size();
    }
    CHECK(tier.counters().insertions == ds.size());
    CHECK(tier.counters().resident_samples == ds.size());
    test::Bytes got;
    for (SampleId id = 0; id < ds.size(); ++id) {
        INFO("sample " << ds.catalog.path(id) << ", " << ds.bytes[id].size() << " bytes");
        CHECK(tier.contains(id));
        CHECK(tier.checksum(id) == ds.checksum(id));
        REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[id]);
    }
    CHECK(tier.counters().hits == ds.size());
    CHECK(tier.counters().bytes_read == stored_bytes);
    CHECK(tier.counters().misses == 0);
    CHECK(tier.counters().checksum_failures == 0);
    // Every sample starts on a block boundary, packed into a few slabs.
    CHECK(tier.counters().used_bytes <= tier.capacity());
    CHECK(slab_files_bytes(dir.path()) == tier.counters().used_bytes);

    // Putting the same bytes again writes nothing; a wrong checksum stores nothing.
    CHECK(ds.put(tier, 0));
    CHECK(tier.counters().insertions == ds.size());
    CHECK_FALSE(tier.put(1, ds.bytes[1], ds.checksum(1) ^ 1));
    CHECK(tier.counters().checksum_failures == 1);
    REQUIRE(get(tier, ds, 1, got) == NvmeRead::hit);
    CHECK(got == ds.bytes[1]);
}

TEST_CASE("nvme: wrong sizes and unknown ids are errors, not silent misses", "[nvme]") {
    Dataset ds({5000, 7});
    test::TempDir dir;
    NvmeTier tier(ds.catalog, dir.path(), 4 * MiB);
    test::Bytes small(10);
    CHECK_THROWS_AS(tier.get(0, small), std::invalid_argument);
    CHECK_THROWS_WITH(tier.put(0, small, 0), Catch::Contains(std::string(ds.catalog.path(0))) && Catch::Contains("10 bytes"));
    CHECK_THROWS_AS(tier.get(99, small), UnknownSample);
    CHECK_THROWS_AS(tier.contains(99), UnknownSample);
    test::Bytes got;
    CHECK(get(tier, ds, 0, got) == NvmeRead::absent);
    CHECK(tier.counters().misses == 1);
}

TEST_CASE("nvme: the tier stays within its capacity, refuses when full, and evicts the oldest slab", "[nvme]") {
    Dataset ds(std::vector<std::size_t>(60, 100 * KiB));  // 25 blocks each: 2 fit in a 256 KiB slab
    test::TempDir dir;
    NvmeTier tier(ds.catalog, dir.path(), 2 * MiB + 100 * KiB, {.slab_bytes = 256 * KiB});
    CHECK(tier.capacity() == 2 * MiB);  // whole slabs only
    CHECK(tier.slab_count() == 8);

    SampleId next = 0;
    while (next < ds.size() && ds.put(tier, next)) {
        ++next;
        CHECK(tier.counters().used_bytes <= tier.capacity());
        CHECK(slab_files_bytes(dir.path()) <= tier.capacity());
    }
    REQUIRE(next == 16);  // 8 slabs of 2
    CHECK(tier.counters().used_bytes == tier.capacity());
    CHECK(tier.counters().rejections == 1);
    CHECK_FALSE(ds.put(tier, next));
    CHECK(tier.admitting());  // full is not the disk being full

    REQUIRE(tier.evict_oldest_slab());
    CHECK(tier.counters().evictions == 2);
    CHECK(tier.counters().used_bytes == tier.capacity() - 256 * KiB);
    CHECK_FALSE(tier.contains(0));
    CHECK_FALSE(tier.contains(1));
    CHECK(tier.contains(2));
    REQUIRE(ds.put(tier, next));
    REQUIRE(ds.put(tier, next + 1));
    CHECK_FALSE(ds.put(tier, next + 2));

    // Oldest first: the slab of samples 2 and 3 goes next, not the one just filled.
    REQUIRE(tier.evict_oldest_slab());
    CHECK_FALSE(tier.contains(2));
    CHECK(tier.contains(next));
    test::Bytes got;
    for (SampleId id = 4; id < next + 2; ++id) {
        REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[id]);
    }
    while (tier.evict_oldest_slab()) {}
    CHECK(tier.counters().used_bytes == 0);
    CHECK(tier.counters().resident_samples == 0);
    CHECK(tier.counters().evictions == next + 2);
    CHECK(get(tier, ds, 5, got) == NvmeRead::absent);

    // A sample larger than a slab can never fit.
    Dataset big({300 * KiB});
    test::TempDir dir2;
    NvmeTier small(big.catalog, dir2.path(), 1 * MiB, {.slab_bytes = 256 * KiB});
    CHECK_FALSE(big.put(small, 0));
}

TEST_CASE("nvme: erase drops one sample; an emptied slab is freed", "[nvme]") {
    Dataset ds(std::vector<std::size_t>(8, 100 * KiB));
    test::TempDir dir;
    NvmeTier tier(ds.catalog, dir.path(), 1 * MiB, {.slab_bytes = 256 * KiB});
    for (SampleId id = 0; id < 6; ++id) REQUIRE(ds.put(tier, id));  // slabs {0,1} {2,3} {4,5}
    CHECK(tier.counters().used_bytes == 3 * 256 * KiB);

    CHECK(tier.erase(0));
    CHECK_FALSE(tier.erase(0));
    test::Bytes got;
    CHECK(get(tier, ds, 0, got) == NvmeRead::absent);
    CHECK(tier.counters().used_bytes == 3 * 256 * KiB);  // sample 1 still holds the slab
    CHECK(tier.erase(1));
    CHECK(tier.counters().used_bytes == 2 * 256 * KiB);
    CHECK(tier.counters().evictions == 0);
    CHECK(tier.counters().resident_samples == 4);
    for (SampleId id = 2; id < 6; ++id) {
        REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[id]);
    }
    // The freed slab takes new samples.
    REQUIRE(ds.put(tier, 6));
    REQUIRE(ds.put(tier, 7));
    REQUIRE(ds.put(tier, 0));
    CHECK(tier.counters().used_bytes == 4 * 256 * KiB);
}

TEST_CASE("nvme: concurrent readers and writers never get wrong bytes", "[nvme]") {
    const bool direct = GENERATE(true, false);
    INFO("direct_io " << direct);
    Dataset ds(varied_sizes(60, 11));
    test::TempDir dir;
    // Small, so writers keep evicting slabs that readers are inside.
    NvmeTier tier(ds.catalog, dir.path(), 4 * MiB, {.slab_bytes = 512 * KiB, .direct_io = direct});

    std::atomic<std::uint64_t> hits{0}, wrong{0}, corrupt{0}, io_errors{0}, puts{0}, evictions{0};
    std::atomic<bool> stop{false};
    auto reader = [&](std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        test::Bytes got;
        while (!stop.load()) {
            const auto id = static_cast<SampleId>(rng() % ds.size());
            got.assign(ds.bytes[id].size(), std::byte{0});
            switch (tier.get(id, got)) {
                case NvmeRead::hit:
                    ++hits;
                    if (got != ds.bytes[id]) ++wrong;
                    break;
                case NvmeRead::corrupt: ++corrupt; break;
                case NvmeRead::io_error: ++io_errors; break;
                case NvmeRead::absent: break;
            }
        }
    };
    auto writer = [&](std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        for (int i = 0; i < 600; ++i) {
            const auto id = static_cast<SampleId>(rng() % ds.size());
            if (rng() % 8 == 0) {
                tier.erase(id);
            } else if (ds.put(tier, id)) {
                ++puts;
            } else if (tier.evict_oldest_slab()) {
                ++evictions;
            }
        }
    };
    std::vector<std::thread> threads;
    threads.emplace_back(reader, 1);
    threads.emplace_back(reader, 2);
    threads.emplace_back(writer, 3);
    threads.emplace_back(writer, 4);
    threads[2].join();
    threads[3].join();
    stop = true;
    threads[0].join();
    threads[1].join();

    CHECK(wrong == 0);
    CHECK(corrupt == 0);
    CHECK(io_errors == 0);
    CHECK(tier.counters().checksum_failures == 0);
    CHECK(puts > 0);
    CHECK(evictions > 0);
    CHECK(hits > 0);
    CHECK(tier.counters().used_bytes <= tier.capacity());
    // What is left is all there.
    test::Bytes got;
    for (SampleId id = 0; id < ds.size(); ++id) {
        if (!tier.contains(id)) continue;
        REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[id]);
    }
}

TEST_CASE("nvme: a restarted tier on the same directory starts warm", "[nvme]") {
    Dataset ds(varied_sizes(50, 3));
    test::TempDir dir;
    const NvmeOptions options{.slab_bytes = 4 * MiB};  // the largest sample is 3 MiB
    std::vector<SampleId> erased = {4, 17};
    {
        NvmeTier tier(ds.catalog, dir.path(), 64 * MiB, options);
        CHECK(tier.warm_samples() == 0);
        for (SampleId id = 0; id < ds.size(); ++id) REQUIRE(ds.put(tier, id));
        for (SampleId id : erased) tier.erase(id);
    }  // the destructor saves the index
    CHECK(fs::exists(dir / "index.tci"));
    {
        NvmeTier tier(ds.catalog, dir.path(), 64 * MiB, options);
        CHECK(tier.warm_samples() == ds.size() - erased.size());
        CHECK(tier.counters().resident_samples == ds.size() - erased.size());
        test::Bytes got;
        for (SampleId id = 0; id < ds.size(); ++id) {
            INFO("sample " << ds.catalog.path(id));
            const bool gone = std::find(erased.begin(), erased.end(), id) != erased.end();
            CHECK(tier.contains(id) == !gone);
            if (gone) continue;
            REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
            CHECK(got == ds.bytes[id]);
        }
        // Appending resumes where it stopped, and eviction order survived the restart.
        REQUIRE(ds.put(tier, 4));
        REQUIRE(tier.evict_oldest_slab());
        CHECK_FALSE(tier.contains(0));
        CHECK(tier.contains(4));
        tier.flush();
    }
    // flush() made an index too; a third start sees the eviction and the new put.
    NvmeTier tier(ds.catalog, dir.path(), 64 * MiB, options);
    CHECK_FALSE(tier.contains(0));
    test::Bytes got;
    REQUIRE(get(tier, ds, 4, got) == NvmeRead::hit);
    CHECK(got == ds.bytes[4]);
}

TEST_CASE("nvme: an older index naming a slab reused since (a crash before the next save) drops that slab only", "[nvme]") {
    Dataset ds(std::vector<std::size_t>(10, 100 * KiB));  // 2 per 256 KiB slab
    test::TempDir dir;
    const NvmeOptions options{.slab_bytes = 256 * KiB};
    const fs::path index = dir / "index.tci";
    test::Bytes old_index;
    {
        NvmeTier tier(ds.catalog, dir.path(), 1 * MiB, options);  // 4 slabs
        for (SampleId id = 0; id < 8; ++id) REQUIRE(ds.put(tier, id));
        tier.flush();
        old_index = read_all(index);
        // Slab 0 (samples 0 and 1) is evicted and refilled with samples 8 and 9.
        REQUIRE(tier.evict_oldest_slab());
        REQUIRE(ds.put(tier, 8));
        REQUIRE(ds.put(tier, 9));
    }
    write_all(index, old_index);  // as if the process died before saving again

    test::LogCapture log;
    NvmeTier tier(ds.catalog, dir.path(), 1 * MiB, options);
    CHECK(tier.warm_samples() == 6);
    CHECK_THAT(log.text(), Catch::Contains("slab-00000.tcs was reused"));
    test::Bytes got;
    for (SampleId id = 0; id < ds.size(); ++id) {
        INFO("sample " << id);
        const NvmeRead r = get(tier, ds, id, got);
        if (id < 2 || id >= 8) {
            CHECK(r == NvmeRead::absent);  // never the bytes now in slab 0
        } else {
            REQUIRE(r == NvmeRead::hit);
            CHECK(got == ds.bytes[id]);
        }
    }
    CHECK(tier.counters().checksum_failures == 0);
}

TEST_CASE("nvme: flipped bits in a slab are caught on read, counted, dropped, and repaired by put", "[nvme]") {
    const bool direct = GENERATE(true, false);
    const bool restart = GENERATE(false, true);
    INFO("direct_io " << direct << ", across a restart " << restart);
    Dataset ds({110 * KiB, 50 * KiB, 3000});
    test::TempDir dir;
    test::LogCapture log;
    const NvmeOptions options{.slab_bytes = 1 * MiB, .direct_io = direct};
    auto tier = std::make_unique<NvmeTier>(ds.catalog, dir.path(), 8 * MiB, options);
    for (SampleId id = 0; id < ds.size(); ++id) REQUIRE(ds.put(*tier, id));
    // The first sample put in a fresh tier sits right after slab 0's header block.
    const fs::path slab = dir / "slab-00000.tcs";
    CHECK(tier->slab_path(0) == slab);
    if (restart) tier.reset();
    test::Bytes flipped = {std::byte{0x5A}};
    write_at(slab, 4096 + 12345, flipped);
    if (restart) {
        tier = std::make_unique<NvmeTier>(ds.catalog, dir.path(), 8 * MiB, options);
        CHECK(tier->warm_samples() == ds.size());  // the index is fine: the damage shows on read
    }
    // Make sure the flip reaches a buffered reader too (it bypassed no cache: same page cache).
    test::Bytes got;
    CHECK(get(*tier, ds, 0, got) == NvmeRead::corrupt);
    CHECK(tier->counters().checksum_failures == 1);
    CHECK_FALSE(tier->contains(0));
    CHECK(get(*tier, ds, 0, got) == NvmeRead::absent);  // never served again
    const std::string text = log.text();
    CHECK_THAT(text, Catch::Contains("checksum mismatch") && Catch::Contains(slab.string()) &&
                         Catch::Contains(std::string(ds.catalog.path(0))));
    // The others are untouched.
    REQUIRE(get(*tier, ds, 1, got) == NvmeRead::hit);
    CHECK(got == ds.bytes[1]);
    // The repair: the caller refetched it and puts it again.
    REQUIRE(ds.put(*tier, 0));
    REQUIRE(get(*tier, ds, 0, got) == NvmeRead::hit);
    CHECK(got == ds.bytes[0]);
}

TEST_CASE("nvme: an index that does not verify is discarded whole; nothing wrong is served", "[nvme]") {
    const std::string damage = GENERATE("flipped payload byte", "flipped header byte", "truncated", "empty", "wrong version",
                                        "bad magic", "entry out of range", "overlapping entries", "missing slab file",
                                        "short slab file", "other slab size");
    INFO("damage: " << damage);
    Dataset ds(varied_sizes(30, 5));
    test::TempDir dir;
    const NvmeOptions options{.slab_bytes = 4 * MiB};  // the largest sample is 3 MiB
    {
        NvmeTier tier(ds.catalog, dir.path(), 32 * MiB, options);
        for (SampleId id = 0; id < ds.size(); ++id) REQUIRE(ds.put(tier, id));
    }
    const fs::path index = dir / "index.tci";
    test::Bytes file = read_all(index);
    REQUIRE(file.size() > sizeof(detail::NvmeIndexHeader));
    detail::NvmeIndexHeader h;
    std::memcpy(&h, file.data(), sizeof h);
    // Rewrites the header and payload checksums, so only the intended defect remains.
    auto reseal = [&] {
        h.payload_xxh3 = detail::xxh3(std::span<const std::byte>(file).subspan(sizeof h));
        h.header_xxh3 = detail::xxh3(std::as_bytes(std::span(&h, 1)).first(offsetof(detail::NvmeIndexHeader, header_xxh3)));
        std::memcpy(file.data(), &h, sizeof h);
    };
    auto entry_at = [&](std::size_t k) { return sizeof h + h.slab_count * sizeof(detail::NvmeIndexSlab) + k * sizeof(detail::NvmeIndexEntry); };
    std::string why;
    if (damage == "flipped payload byte") {
        file[file.size() - 30] ^= std::byte{0x10};
        why = "payload checksum";
    } else if (damage == "flipped header byte") {
        file[9] ^= std::byte{0x01};
        why = "header checksum";
    } else if (damage == "truncated") {
        file.resize(file.size() - 7);
        why = "truncated";
    } else if (damage == "empty") {
        file.clear();
        why = "truncated";
    } else if (damage == "wrong version") {
        h.version = detail::kNvmeIndexVersion + 1;
        reseal();
        why = "format version " + std::to_string(detail::kNvmeIndexVersion + 1);
    } else if (damage == "bad magic") {
        h.magic = 0x12345678;
        reseal();
        why = "magic";
    } else if (damage == "entry out of range") {
        detail::NvmeIndexEntry e;
        std::memcpy(&e, file.data() + entry_at(0), sizeof e);
        e.offset = options.slab_bytes;  // past the slab's end
        std::memcpy(file.data() + entry_at(0), &e, sizeof e);
        reseal();
        why = "outside the used part";
    } else if (damage == "overlapping entries") {
        detail::NvmeIndexEntry a, b;
        std::memcpy(&a, file.data() + entry_at(0), sizeof a);
        std::memcpy(&b, file.data() + entry_at(1), sizeof b);
        b.slab = a.slab;
        b.offset = a.offset;
        std::memcpy(file.data() + entry_at(1), &b, sizeof b);
        reseal();
        why = "overlap";
    } else if (damage == "missing slab file") {
        fs::remove(dir / "slab-00001.tcs");
        why = "missing";
    } else if (damage == "short slab file") {
        fs::resize_file(dir / "slab-00001.tcs", 5000);
        why = "5000 bytes";
    } else if (damage == "other slab size") {
        h.slab_bytes = 2 * MiB;
        reseal();
        why = "slabs of 2097152 bytes, this tier uses 4194304";
    }
    write_all(index, file);

    test::LogCapture log;
    NvmeTier tier(ds.catalog, dir.path(), 32 * MiB, options);
    CHECK(tier.warm_samples() == 0);
    CHECK(tier.counters().resident_samples == 0);
    CHECK(tier.counters().used_bytes == 0);
    const std::string text = log.text();
    CHECK_THAT(text, Catch::Contains("discarding") && Catch::Contains(index.string()) && Catch::Contains(why));
    CHECK_FALSE(fs::exists(index));
    test::Bytes got;
    for (SampleId id = 0; id < ds.size(); ++id) {
        CHECK_FALSE(tier.contains(id));
        CHECK(get(tier, ds, id, got) == NvmeRead::absent);
    }
    // Cold, and fully usable: the old slabs are reused.
    for (SampleId id = 0; id < ds.size(); ++id) REQUIRE(ds.put(tier, id));
    for (SampleId id = 0; id < ds.size(); ++id) {
        REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[id]);
    }
}

TEST_CASE("nvme: an index entry whose origin file changed, moved or went no longer matches", "[nvme]") {
    Dataset ds(std::vector<std::size_t>(12, 20 * KiB));
    test::TempDir dir;
    const NvmeOptions options{.slab_bytes = 256 * KiB};
    const std::string touched(ds.catalog.path(2)), resized(ds.catalog.path(5)), renamed(ds.catalog.path(7)),
        removed(ds.catalog.path(9)), kept(ds.catalog.path(11));
    {
        NvmeTier tier(ds.catalog, dir.path(), 4 * MiB, options);
        for (SampleId id = 0; id < ds.size(); ++id) REQUIRE(ds.put(tier, id));
    }
    // Same bytes, new mtime; new size; a new name; gone; and a new file that shifts the ids.
    const fs::path origin = ds.origin.path();
    struct timespec times[2] = {{0, UTIME_OMIT}, {1'000'000'000, 123}};
    REQUIRE(::utimensat(AT_FDCWD, (origin / touched).c_str(), times, 0) == 0);
    test::write_file(origin / resized, test::make_bytes(99, 21 * KiB));
    fs::rename(origin / renamed, origin / (renamed + ".moved"));
    fs::remove(origin / removed);
    test::write_file(origin / "class0/aaa-first.jpg", test::make_bytes(100, 1000));
    ds.rescan();

    NvmeTier tier(ds.catalog, dir.path(), 4 * MiB, options);
    CHECK(tier.warm_samples() == 12 - 4);
    for (const auto& path : {touched, resized, renamed + ".moved", std::string("class0/aaa-first.jpg")}) {
        INFO(path);
        const auto id = ds.catalog.find(path);
        REQUIRE(id);
        CHECK_FALSE(tier.contains(*id));
    }
    test::Bytes got;
    const auto id = ds.catalog.find(kept);
    REQUIRE(id);
    REQUIRE(get(tier, ds, *id, got) == NvmeRead::hit);
    CHECK(got == ds.bytes[*id]);
    for (SampleId k = 0; k < ds.size(); ++k) {
        if (!tier.contains(k)) continue;
        REQUIRE(get(tier, ds, k, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[k]);
    }
}

TEST_CASE("nvme: a full disk stops admission with one clear log line; reads keep working", "[nvme]") {
    if (::geteuid() != 0) {
        WARN("skipped: mounting a small tmpfs needs root");
        return;
    }
    Dataset ds(std::vector<std::size_t>(40, 100 * KiB));
    test::TempDir root;
    TmpfsMount mount(root / "small", "1m");
    test::LogCapture log;
    {
        NvmeTier tier(ds.catalog, mount.path() / "tier", 4 * MiB, {.slab_bytes = 256 * KiB});
        SampleId next = 0;
        while (next < ds.size() && ds.put(tier, next)) ++next;
        INFO("stored " << next << " samples");
        CHECK(next >= 2);
        CHECK(next < 16);  // far less than the 4 MiB capacity
        CHECK_FALSE(tier.admitting());
        for (int i = 0; i < 3; ++i) CHECK_FALSE(ds.put(tier, next));  // still refused, no new line each time
        test::Bytes got;
        for (SampleId id = 0; id < next; ++id) {
            REQUIRE(get(tier, ds, id, got) == NvmeRead::hit);
            CHECK(got == ds.bytes[id]);
        }
        const std::string text = log.text();
        CHECK_THAT(text, Catch::Contains((mount.path() / "tier").string() + " is full (No space left on device)") &&
                             Catch::Contains("no longer admitting"));
        std::size_t lines = 0;
        for (std::size_t at = text.find("is full"); at != std::string::npos; at = text.find("is full", at + 1)) ++lines;
        CHECK(lines == 1);

        // Eviction frees a slab: admission resumes inside the slabs the tier already holds.
        REQUIRE(tier.evict_oldest_slab());
        CHECK(tier.admitting());
        CHECK(ds.put(tier, next));
        REQUIRE(get(tier, ds, next, got) == NvmeRead::hit);
        CHECK(got == ds.bytes[next]);
    }
}

TEST_CASE("nvme: slabs and the index are the owner's alone (mode 0600): they hold the dataset's bytes", "[nvme]") {
    Dataset ds({5000, 7000});
    test::TempDir dir;
    {
        NvmeTier tier(ds.catalog, dir.path(), 4 * MiB);
        REQUIRE(ds.put(tier, 0));
        REQUIRE(ds.put(tier, 1));
        tier.flush();
    }
    int files = 0;
    for (const auto& entry : test::fs::directory_iterator(dir.path())) {
        if (!entry.is_regular_file()) continue;
        INFO(entry.path());
        CHECK((entry.status().permissions() & test::fs::perms::all) == (test::fs::perms::owner_read | test::fs::perms::owner_write));
        ++files;
    }
    CHECK(files >= 2);  // a slab and the index at least
}
