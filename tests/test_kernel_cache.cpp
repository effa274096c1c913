// --kernel-cache auto's choice and the memory it reads (fuse/kernel_cache.hpp), over a made-up
// /proc and /sys/fs/cgroup.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "../fuse/kernel_cache.hpp"
#include "support.hpp"

using tiercache::fuse::choose_kernel_cache;
using tiercache::fuse::page_cache_room;

namespace {

using test::MiB;

void put(const test::fs::path& file, const std::string& text) {
    test::fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
}

}  // namespace

TEST_CASE("kernel cache auto: on when the dataset fits the dram tier or the memory beside it, off otherwise", "[kernel_cache]") {
    CHECK(choose_kernel_cache(100 * MiB, 100 * MiB, 0).on);  // fits dram exactly
    CHECK_THAT(choose_kernel_cache(100 * MiB, 100 * MiB, 0).why, Catch::Contains("fits the dram tier (100.0 MiB)"));
    CHECK(choose_kernel_cache(300 * MiB, 100 * MiB, 300 * MiB).on);  // the page cache holds it beside dram
    CHECK_THAT(choose_kernel_cache(300 * MiB, 100 * MiB, 300 * MiB).why, Catch::Contains("fits the memory beside"));
    const auto off = choose_kernel_cache(300 * MiB + 1, 100 * MiB, 300 * MiB);
    CHECK_FALSE(off.on);
    CHECK_THAT(off.why, Catch::Contains("fits neither the dram tier (100.0 MiB) nor the memory beside it (300.0 MiB)"));
    CHECK(choose_kernel_cache(0, 0, 0).on);  // an empty dataset: nothing to over-read
}

TEST_CASE("page cache room: MemAvailable, the tightest memory cgroup up the tree (v1 and v2), less the dram tier", "[kernel_cache]") {
    test::TempDir dir;
    const auto proc = dir / "proc", sys = dir / "cgroup";
    put(proc / "meminfo", "MemTotal:       33554432 kB\nMemFree:         1000 kB\nMemAvailable:    2097152 kB\n");  // 2 GiB

    SECTION("no cgroup file: MemAvailable less dram") {
        CHECK(page_cache_room(512 * MiB, proc, sys) == 1536 * MiB);
        CHECK(page_cache_room(4096 * MiB, proc, sys) == 0);  // dram larger than what is available
    }
    SECTION("v1: a limit on the process's cgroup, its use less inactive file pages") {
        put(proc / "self/cgroup", "9:name=systemd:/\n4:memory,foo:/jobs/a\n0::/\n");
        put(sys / "memory/jobs/a/memory.limit_in_bytes", std::to_string(1024 * MiB) + "\n");
        put(sys / "memory/jobs/a/memory.usage_in_bytes", std::to_string(400 * MiB) + "\n");
        put(sys / "memory/jobs/a/memory.stat", "cache 300\ntotal_inactive_file " + std::to_string(100 * MiB) + "\n");
        put(sys / "memory/jobs/memory.limit_in_bytes", "9223372036854771712\n");  // none
        put(sys / "memory/memory.limit_in_bytes", "9223372036854771712\n");
        CHECK(page_cache_room(256 * MiB, proc, sys) == (1024 - 300 - 256) * MiB);
        SECTION("a tighter limit above it binds") {
            put(sys / "memory/jobs/memory.limit_in_bytes", std::to_string(600 * MiB) + "\n");
            put(sys / "memory/jobs/memory.usage_in_bytes", std::to_string(500 * MiB) + "\n");
            CHECK(page_cache_room(0, proc, sys) == 100 * MiB);
        }
    }
    SECTION("v2: memory.max, or max for none, and memory.current") {
        put(proc / "self/cgroup", "0::/system.slice/job.scope\n");
        put(sys / "cgroup.controllers", "cpu memory\n");
        put(sys / "system.slice/job.scope/memory.max", "max\n");
        put(sys / "system.slice/memory.max", std::to_string(768 * MiB) + "\n");
        put(sys / "system.slice/memory.current", std::to_string(256 * MiB) + "\n");
        put(sys / "system.slice/memory.stat", "anon 1\ninactive_file " + std::to_string(64 * MiB) + "\n");
        CHECK(page_cache_room(128 * MiB, proc, sys) == (768 - 192 - 128) * MiB);
        SECTION("over its limit (usage above it): no room") {
            put(sys / "system.slice/memory.current", std::to_string(900 * MiB) + "\n");
            put(sys / "system.slice/memory.stat", "inactive_file 0\n");
            CHECK(page_cache_room(0, proc, sys) == 0);
        }
    }
    SECTION("a v2 line on a v1-only host (no cgroup.controllers) is not read") {
        put(proc / "self/cgroup", "0::/\n");
        put(sys / "memory.max", std::to_string(MiB) + "\n");
        CHECK(page_cache_room(0, proc, sys) == 2048 * MiB);
    }
    SECTION("this machine: some room, never more than MemAvailable") {
        CHECK(page_cache_room(0) > 0);
    }
}
