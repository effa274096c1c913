// Every benchmark program in one executable, so that the header-only library is compiled once
// for all of them rather than once each (it is most of each one's compile time). The build makes
// a link tiercache-bench-NAME to it for each program, which is how the scripts and the README
// call them; `tiercache-bench NAME [ARGS...]` runs the same.
#include <cstdio>
#include <cstring>
#include <string_view>

namespace tiercache::bench {
namespace catalog { int run(int argc, char** argv); }
namespace hits { int run(int argc, char** argv); }
namespace large_file { int run(int argc, char** argv); }
namespace loader_stall { int run(int argc, char** argv); }
namespace nvme { int run(int argc, char** argv); }
namespace slow_origin { int run(int argc, char** argv); }
#if TIERCACHE_HAVE_CUDA
namespace loader_h2d { int run(int argc, char** argv); }
#endif
}  // namespace tiercache::bench

namespace {

struct Program {
    std::string_view name;
    int (*run)(int, char**);
    std::string_view what;
};

namespace b = tiercache::bench;
constexpr Program kPrograms[] = {
    {"catalog", b::catalog::run, "catalog memory per sample, ImageNet-1K-shaped"},
    {"hits", b::hits::run, "API hits (read, read_chunk, an attached client) against memcpy"},
    {"large-file", b::large_file::run, "one large file by byte range: cold, warm, nvme, against native reads"},
    {"loader-stall", b::loader_stall::run, "EpochLoader stalls against origin latency, threads and depth"},
    {"nvme", b::nvme::run, "the nvme tier's reads, O_DIRECT against the page cache"},
    {"slow-origin", b::slow_origin::run, "EpochLoader epochs over an origin with a fixed latency"},
#if TIERCACHE_HAVE_CUDA
    {"loader-h2d", b::loader_h2d::run, "loader batches copied to the GPU against cudaMemcpyAsync"},
#endif
};

int usage(std::FILE* out) {
    std::fprintf(out, "usage: tiercache-bench-NAME [ARGS...], or tiercache-bench NAME [ARGS...]; NAME --help for its options\n");
    for (const Program& p : kPrograms) std::fprintf(out, "  %-13.*s %.*s\n", static_cast<int>(p.name.size()), p.name.data(), static_cast<int>(p.what.size()), p.what.data());
    return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string_view self = argv[0];
    if (const auto slash = self.rfind('/'); slash != std::string_view::npos) self.remove_prefix(slash + 1);
    constexpr std::string_view kPrefix = "tiercache-bench-";
    std::string_view name;
    if (self.starts_with(kPrefix)) {
        name = self.substr(kPrefix.size());
    } else {
        if (argc < 2) return usage(stderr);
        if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) return usage(stdout);
        name = argv[1];
        --argc;
        ++argv;  // NAME stands where the program's name was: its parser skips argv[0]
    }
    for (const Program& p : kPrograms)
        if (p.name == name) return p.run(argc, argv);
    std::fprintf(stderr, "tiercache-bench: no benchmark '%.*s'\n", static_cast<int>(name.size()), name.data());
    return usage(stderr);
}
