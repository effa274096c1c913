// Reads every sample of a directory through the cache and checks it against a plain read.
#include <tiercache/tiercache.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer DATASET_DIR\n");
        return 2;
    }
    auto cache = tiercache::Cache::open(tiercache::Config{}.origin(argv[1]).dram("16MiB"));
    std::size_t bad = 0;
    for (tiercache::SampleId id = 0; id < cache.catalog().size(); ++id) {
        std::vector<std::byte> got(cache.size(id));
        cache.read(id, 0, got);
        std::ifstream in(std::string(argv[1]) + "/" + std::string(cache.catalog().path(id)), std::ios::binary);
        std::vector<char> want{std::istreambuf_iterator<char>(in), {}};
        if (got.size() != want.size() || std::memcmp(got.data(), want.data(), got.size()) != 0) ++bad;
    }
    std::printf("tiercache %s: %zu samples read, %zu mismatches\n", tiercache::version(), cache.catalog().size(), bad);
    return bad == 0 && cache.catalog().size() > 0 ? 0 : 1;
}
