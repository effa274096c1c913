// libFuzzer target: the nvme tier's index loader (include/tiercache/nvme_tier.hpp: load(), and
// detail/nvme_index.hpp: NvmeIndexFile::read()). The input is a flags byte, then the bytes
// written as index.tci into the tier's directory, next to the slab files of a real tier that
// stored every sample of a small catalog (made once at start). Then the tier is opened over it, every sample it claims is
// read back, the missing ones are put, and it is closed and opened again.
//   flags bit 0: fix the index's two XXH3 checksums (so the fuzzer reaches the checks behind them)
//         bit 1: write the slab files (else the directory holds only the index)
//         bit 2: give slab (flags >> 4) % kSlabs a wrong size
//         bit 3: flip a byte of slab (flags >> 4) % kSlabs's header
// Invariants: opening never throws (a bad index is discarded with a log line: a cold start);
// every get() that hits returns the origin's bytes; warm_samples() is what contains() says;
// the index the tier saves on close is taken back whole by the next open, every sample warm.
//
// TIERCACHE_FUZZ_SEEDS=DIR: write seed inputs (the real index, with each set of flags) to DIR
// and exit; scripts/fuzz makes the corpus so, as the index holds mtimes of this run's files.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <tiercache/catalog.hpp>
#include <tiercache/nvme_tier.hpp>
#include <tiercache/segment.hpp>

namespace fs = std::filesystem;
using namespace tiercache;

namespace {

constexpr std::uint64_t kSlabBytes = 16384;
constexpr std::uint32_t kSlabs = 6;
constexpr std::size_t kSizes[] = {1, 100, 4095, 4096, 4097, 5000, 9000, 12000};  // distinct: a misplaced entry cannot verify

struct World {
    fs::path base, origin, nvme;
    std::unique_ptr<Segment> segment;
    Catalog catalog;
    std::vector<std::vector<std::byte>> bytes;  // by SampleId
    std::vector<std::byte> index;               // the real tier's index.tci
    std::vector<std::vector<std::byte>> slabs;  // and its slab files
};
World* world = nullptr;

const NvmeOptions kOptions{.slab_bytes = kSlabBytes, .direct_io = false};

[[noreturn]] void broken(const std::string& what) {
    std::fprintf(stderr, "fuzz_nvme_index: %s\n", what.c_str());
    std::abort();
}

std::vector<std::byte> slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(in)), {});
    std::vector<std::byte> out(s.size());
    std::memcpy(out.data(), s.data(), s.size());
    return out;
}

void spill(const fs::path& p, const void* data, std::size_t n) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    if (!out) broken("cannot write " + p.string());
}

std::string slab_name(std::uint32_t s) {
    char name[32];
    std::snprintf(name, sizeof name, "slab-%05u.tcs", s);
    return name;
}

void make_world() {
    world = new World;
    char tmpl[] = "/dev/shm/tiercache-fuzz-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) broken("mkdtemp");
    world->base = tmpl;
    world->origin = world->base / "origin";
    world->nvme = world->base / "nvme";
    fs::create_directories(world->origin / "cls");
    for (std::size_t i = 0; i < std::size(kSizes); ++i) {
        std::vector<std::byte> b(kSizes[i]);
        for (std::size_t k = 0; k < b.size(); ++k) b[k] = static_cast<std::byte>((k * 131 + i * 17 + (k >> 8)) & 0xFF);
        const fs::path p = world->origin / (i % 2 ? "cls" : "") / ("f" + std::to_string(i));
        spill(p, b.data(), b.size());
        const timespec times[2] = {{1'700'000'000 + static_cast<time_t>(i), 0}, {1'700'000'000 + static_cast<time_t>(i), 0}};
        ::utimensat(AT_FDCWD, p.c_str(), times, 0);  // fixed mtimes: seeds from another run still match
    }
    const ScanResult scan = scan_origin(world->origin);
    // One extent a file: ExtentId and SampleId are the same here.
    world->segment = std::make_unique<Segment>("/dev/shm", scan.segment_bytes(kMaxExtentBytes) + (1 << 20));
    world->catalog = Catalog::place(*world->segment, scan, kMaxExtentBytes);
    for (SampleId id = 0; id < world->catalog.size(); ++id) world->bytes.push_back(slurp(world->origin / std::string(world->catalog.path(id))));
    const fs::path golden = world->base / "golden";
    {
        NvmeTier tier(world->catalog, golden, kSlabs * kSlabBytes, kOptions);
        for (SampleId id = 0; id < world->catalog.size(); ++id)
            if (!tier.put(id, world->bytes[id], detail::xxh3(world->bytes[id]))) broken("the golden tier refused a sample");
    }
    world->index = slurp(golden / "index.tci");
    for (std::uint32_t s = 0; s < kSlabs; ++s) world->slabs.push_back(slurp(golden / slab_name(s)));
    fs::remove_all(golden);
}

void clear_dir(const fs::path& dir) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove(e.path(), ec);
}

// Opens the tier over `dir`, reads back what it claims; returns how many samples it holds.
std::size_t open_and_check(bool put_missing, std::size_t expect_warm) {
    NvmeTier tier(world->catalog, world->nvme, kSlabs * kSlabBytes, kOptions);
    const Catalog& cat = world->catalog;
    std::size_t held = 0;
    for (SampleId id = 0; id < cat.size(); ++id) held += tier.contains(id);
    if (tier.warm_samples() != held) broken("warm_samples() " + std::to_string(tier.warm_samples()) + " but " + std::to_string(held) + " held");
    if (expect_warm != SIZE_MAX && held != expect_warm)
        broken("the saved index brought back " + std::to_string(held) + " samples of " + std::to_string(expect_warm));
    for (SampleId id = 0; id < cat.size(); ++id) {
        if (!tier.contains(id)) continue;
        std::vector<std::byte> out(world->bytes[id].size());
        const NvmeRead r = tier.get(id, out);
        if (r == NvmeRead::hit && out != world->bytes[id]) broken("a hit served wrong bytes for sample " + std::to_string(id));
        if (expect_warm != SIZE_MAX && r != NvmeRead::hit) broken(std::string("a sample of a saved index read ") + to_string(r));
    }
    if (put_missing) {
        for (SampleId id = 0; id < cat.size(); ++id) {
            if (tier.contains(id)) continue;
            if (!tier.put(id, world->bytes[id], detail::xxh3(world->bytes[id]))) {
                (void)tier.evict_oldest_slab();  // what the cache does when the tier is full
                (void)tier.put(id, world->bytes[id], detail::xxh3(world->bytes[id]));
            }
            std::vector<std::byte> out(world->bytes[id].size());
            if (tier.get(id, out) == NvmeRead::hit && out != world->bytes[id]) broken("a fresh put read back wrong");
        }
    }
    held = 0;
    for (SampleId id = 0; id < cat.size(); ++id) held += tier.contains(id);
    return held;  // the destructor saves the index
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    set_log_level(LogLevel::error);
    make_world();
    {  // Self-check: the real index over its own slabs loads every sample warm.
        fs::create_directories(world->nvme);
        for (std::uint32_t s = 0; s < kSlabs; ++s) spill(world->nvme / slab_name(s), world->slabs[s].data(), world->slabs[s].size());
        spill(world->nvme / "index.tci", world->index.data(), world->index.size());
        if (open_and_check(false, world->catalog.size()) != world->catalog.size()) broken("the real index does not load warm");
    }
    if (const char* seeds = std::getenv("TIERCACHE_FUZZ_SEEDS")) {
        fs::create_directories(seeds);
        const std::uint8_t flags[] = {0x03, 0x02, 0x01, 0x00, 0x07, 0x1B};
        for (std::uint8_t f : flags) {
            std::vector<std::byte> in{static_cast<std::byte>(f)};
            in.insert(in.end(), world->index.begin(), world->index.end());
            spill(fs::path(seeds) / ("index-flags" + std::to_string(f)), in.data(), in.size());
        }
        std::fprintf(stderr, "fuzz_nvme_index: %zu seeds written to %s\n", std::size(flags), seeds);
        fs::remove_all(world->base);
        std::exit(0);
    }
    std::atexit([] {
        std::error_code ec;
        fs::remove_all(world->base, ec);
    });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t flags = data[0];
    std::vector<std::byte> index(size - 1);
    if (size > 1) std::memcpy(index.data(), data + 1, size - 1);
    if ((flags & 1) && index.size() >= sizeof(detail::NvmeIndexHeader)) {
        detail::NvmeIndexHeader h;
        std::memcpy(&h, index.data(), sizeof h);
        h.payload_xxh3 = detail::xxh3(std::span<const std::byte>(index).subspan(sizeof h));
        h.header_xxh3 = detail::xxh3(std::as_bytes(std::span(&h, 1)).first(offsetof(detail::NvmeIndexHeader, header_xxh3)));
        std::memcpy(index.data(), &h, sizeof h);
    }
    fs::create_directories(world->nvme);
    clear_dir(world->nvme);
    if (flags & 2) {
        const std::uint32_t victim = (flags >> 4) % kSlabs;
        for (std::uint32_t s = 0; s < kSlabs; ++s) {
            std::vector<std::byte> slab = world->slabs[s];
            if (s == victim && (flags & 4)) slab.resize(kSlabBytes / 2);
            if (s == victim && (flags & 8)) slab[8] ^= std::byte{0x40};
            spill(world->nvme / slab_name(s), slab.data(), slab.size());
        }
    }
    spill(world->nvme / "index.tci", index.data(), index.size());

    const std::size_t held = open_and_check(true, SIZE_MAX);
    open_and_check(false, held);  // what it saved comes back whole
    return 0;
}
