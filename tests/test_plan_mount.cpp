// The plan through the mount: MOUNTPOINT/.tiercache/plan (the protocol is in fuse/plan_file.hpp).
// Every test really mounts; its Mount unmounts on every way out (support.hpp).
#include <catch2/catch.hpp>

#include <cstdio>
#include <random>
#include <sys/wait.h>
#include <tiercache/epoch_plan.hpp>

#include "support.hpp"

namespace {

using test::fs::path;

std::string read_text(const path& p) {
    const auto bytes = test::slurp(p);
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The plan in force, read back (reading commits a pending plan first).
nlohmann::json read_plan(const test::Mount& mnt) { return nlohmann::json::parse(read_text(mnt / ".tiercache/plan")); }

// Writes `text` to the plan as a loader does: open with O_TRUNC, write until done, close.
// `piece` > 0 writes it in pieces of that many bytes (lines cut anywhere). 0 or the errno of
// the first write that failed.
int write_plan(const test::Mount& mnt, std::string_view text, std::size_t piece = 0) {
    const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    for (std::size_t done = 0; done < text.size() && err == 0;) {
        const std::size_t n = piece ? std::min(piece, text.size() - done) : text.size() - done;
        const ssize_t w = ::write(fd, text.data() + done, n);
        if (w < 0) err = errno;
        else done += static_cast<std::size_t>(w);  // a short write: the rest goes on at the new end
    }
    ::close(fd);
    return err;
}

// Waits (at most 60 s) until the prefetcher has nothing left in flight and has fetched `n`.
nlohmann::json wait_prefetched(const test::Mount& mnt, std::uint64_t n) {
    nlohmann::json s;
    for (int i = 0; i < 3000; ++i) {
        s = mnt.stats();
        const auto& p = s["prefetch"];
        const auto settled = p["fetched"].get<std::uint64_t>() + p["resident"].get<std::uint64_t>() +
                             p["raced"].get<std::uint64_t>() + p["rejected"].get<std::uint64_t>() + p["errors"].get<std::uint64_t>();
        if (p["fetched"].get<std::uint64_t>() >= n && settled == p["issued"].get<std::uint64_t>()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return s;
}

struct Dataset {
    std::vector<std::string> names;  // in catalog order (one folder, names sorted)
    std::uint64_t bytes = 0;
};

// `n` files "f000", "f001", ... in the root (so their sample ids are their numbers), and
// `sub/inner` (a folder, id n), each under 128 KiB: one READ a file.
Dataset make_dataset(const path& origin, int n) {
    Dataset d;
    for (int i = 0; i < n; ++i) {
        char name[16];
        std::snprintf(name, sizeof name, "f%03d", i);
        const std::size_t size = 20 * 1024 + static_cast<std::size_t>(i) * 613 % (90 * 1024);
        test::write_file(origin / name, test::make_bytes(500 + static_cast<std::uint64_t>(i), size));
        d.names.push_back(name);
        d.bytes += size;
    }
    test::write_file(origin / "sub/inner", test::make_bytes(9, 1000));
    d.bytes += 1000;
    return d;
}

// Reads `order` through the mount, checking bytes against the origin; how many differ.
std::size_t read_in_order(const test::Mount& mnt, const path& origin, const std::vector<std::string>& order) {
    std::size_t bad = 0;
    for (const auto& name : order) {
        const auto got = test::read_file(mnt / name);
        if (got.error != 0 || got.bytes != test::slurp(origin / name)) {
            ++bad;
            UNSCOPED_INFO("mismatch or error (" << std::strerror(got.error) << ") on '" << name << "'");
        }
    }
    return bad;
}

std::string lines(const std::vector<std::string>& paths) {
    std::string text;
    for (const auto& p : paths) text += p + "\n";
    return text;
}

std::uint64_t dram(const nlohmann::json& s, const char* key) { return s["tiers"]["dram"][key].get<std::uint64_t>(); }

}  // namespace

TEST_CASE("a plan of paths is applied and the mount prefetches it: the reader then only hits", "[mount][plan]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_dataset(origin, 80);
    // Kernel cache off, so every read reaches the cache and its hits count every file.
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off"});

    auto before = read_plan(mnt);
    CHECK(before["state"] == "none");
    CHECK(before["last_error"].is_null());

    std::vector<std::string> order = data.names;
    order.push_back("sub/inner");
    std::shuffle(order.begin(), order.end(), std::mt19937_64(3));
    // In pieces of 7 bytes: lines cut across WRITEs are put together again.
    REQUIRE(write_plan(mnt, lines(order), 7) == 0);
    const auto plan = read_plan(mnt);
    CHECK(plan["state"] == "active");
    CHECK(plan["kind"] == "paths");
    CHECK(plan["samples"] == order.size());
    CHECK(plan["position"] == 0);
    CHECK(plan["last_error"].is_null());

    const auto settled = wait_prefetched(mnt, order.size());
    CHECK(settled["prefetch"]["fetched"] == order.size());
    CHECK(settled["origin"]["bytes_read"] == data.bytes);  // every sample once, ahead of the reader
    CHECK(dram(settled, "hits") == 0);

    CHECK(read_in_order(mnt, origin, order) == 0);
    const auto after = mnt.stats();
    CHECK(dram(after, "hits") == order.size());
    CHECK(dram(after, "misses") == 0);
    CHECK(dram(after, "bytes_read") == data.bytes);
    CHECK(after["origin"]["bytes_read"] == data.bytes);  // read once, never again
    CHECK(read_plan(mnt)["position"] == order.size());
    CHECK(mnt.stop() == 0);
}

TEST_CASE("a seed plan is the built-in sampler's order: applied, prefetched, hit in that order", "[mount][plan]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_dataset(origin, 60);
    const std::size_t samples = data.names.size() + 1;  // and sub/inner, the last id
    auto name_of = [&](tiercache::SampleId id) { return id < data.names.size() ? data.names[id] : std::string("sub/inner"); };
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off"});

    // Rank 1 of 2 first: half the samples.
    REQUIRE(write_plan(mnt, "seed=7 epoch=2 rank=1 world=2") == 0);  // no '\n' at the end: parsed at commit
    auto plan = read_plan(mnt);
    CHECK(plan["state"] == "active");
    CHECK(plan["kind"] == "seed");
    CHECK(plan["samples"] == tiercache::EpochPlan(samples, 7, 2, 1, 2).size());
    CHECK(plan["rank"] == 1);
    CHECK(plan["world"] == 2);

    // Then the whole epoch, keys one a line; fsync commits and says how it went.
    const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    const std::string text = "seed=7\nepoch=2\n\ndrop_last=0\n";
    CHECK(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    CHECK(::fsync(fd) == 0);
    ::close(fd);
    plan = read_plan(mnt);
    CHECK(plan["state"] == "active");
    CHECK(plan["kind"] == "seed");
    CHECK(plan["seed"] == 7);
    CHECK(plan["epoch"] == 2);
    CHECK(plan["rank"] == 0);
    CHECK(plan["world"] == 1);
    CHECK(plan["samples"] == samples);

    const auto settled = wait_prefetched(mnt, samples);
    CHECK(settled["origin"]["bytes_read"] == data.bytes);
    std::vector<std::string> order;
    const tiercache::EpochPlan expected(samples, 7, 2);
    for (tiercache::SampleId id : expected.order()) order.push_back(name_of(id));
    CHECK(read_in_order(mnt, origin, order) == 0);
    const auto after = mnt.stats();
    CHECK(dram(after, "hits") == samples);
    CHECK(dram(after, "misses") == 0);
    CHECK(after["origin"]["bytes_read"] == data.bytes);
    CHECK(read_plan(mnt)["position"] == samples);

    // An empty plan clears it.
    REQUIRE(write_plan(mnt, "") == 0);
    CHECK(read_plan(mnt)["state"] == "none");
    CHECK(mnt.stop() == 0);
}

TEST_CASE("a plan is committed 50 ms after its last write, and by fsync; with prefetch off it still applies", "[mount][plan]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_dataset(origin, 10);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB", "--prefetch-threads", "0"});
    REQUIRE(write_plan(mnt, "f003\nf001\n") == 0);
    // The stats file does not commit the plan: only the idle timer can have.
    nlohmann::json s;
    for (int i = 0; i < 200 && (s = mnt.stats())["plan"]["state"] != "active"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(s["plan"]["state"] == "active");
    CHECK(s["plan"]["samples"] == 2);
    CHECK(s["prefetch"]["issued"] == 0);  // prefetch is off

    // fsync returns the commit's result: a bad last line (no '\n') fails it.
    const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "f002\nnope", 9) == 9);
    CHECK((::fsync(fd) == -1 && errno == EINVAL));
    ::close(fd);
    const auto plan = read_plan(mnt);
    CHECK(plan["samples"] == 2);
    CHECK_THAT(plan["last_error"].get<std::string>(), Catch::Contains("line 2") && Catch::Contains("nope"));
    CHECK(read_text(mnt / "f002") == read_text(origin / "f002"));
}

TEST_CASE("hostile plans fail with the right errno, change nothing, and the mount serves on", "[mount][plan][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_dataset(origin, 40);  // at most 4 x 41 + 16 = 180 lines
    test::write_file(dir / "outside", test::make_bytes(1, 100));
    test::Mount mnt(origin, dir / "mnt", {"--dram", "32MiB"});

    REQUIRE(write_plan(mnt, "f005\nf007\nsub/inner\n") == 0);
    const auto good = read_plan(mnt);
    REQUIRE(good["state"] == "active");
    REQUIRE(good["samples"] == 3);

    std::string junk(4096, '\0');
    for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(test::make_bytes(2, 4096)[i]);
    std::string million_missing, million_valid;
    for (int i = 0; i < 1'000'000; ++i) million_missing += "d" + std::to_string(i % 1000) + "/no-such-image-" + std::to_string(i) + ".jpg\n";
    for (int i = 0; i < 1'000'000; ++i) million_valid += "f001\n";

    struct Case {
        std::string what;
        std::string text;
        int err;            // of write(); 0: write() takes it, the commit refuses it
        std::string says;   // in last_error
    };
    const std::vector<Case> cases = {
        {"a '..' component", "f001\n../outside\n", EINVAL, "line 2"},
        {"'..' inside", "sub/../f001\n", EINVAL, "'..' component"},
        {"'.' component", "./f001\n", EINVAL, "'.' component"},
        {"an absolute path", "/etc/passwd\n", EINVAL, "absolute"},
        {"the origin's own path", (origin / "f001").string() + "\n", EINVAL, "absolute"},
        {"a path outside the dataset", "outside\n", EINVAL, "no such file"},
        {"a directory", "f001\nsub\n", EINVAL, "directory"},
        {"a directory with a slash", "sub/\n", EINVAL, "empty path component"},
        {"an empty component", "sub//inner\n", EINVAL, "empty path component"},
        {"a NUL in a line", std::string("f001\nf0\0" "02\n", 11), EINVAL, "binary junk"},
        {"binary junk", junk, EINVAL, "line "},
        {"a 1 MiB line", std::string(1 << 20, 'a') + "\n", EINVAL, "PATH_MAX"},
        {"a 1 MiB line without its end", std::string(1 << 20, 'b'), EINVAL, "PATH_MAX"},
        {"a million lines naming nothing", million_missing, EINVAL, "line 1:"},
        {"a million copies of a valid path", million_valid, EFBIG, "more lines than 180"},
        {"keys, then a path", "seed=1 epoch=2\nf001\n", EINVAL, "not both kinds"},
        {"a path, then keys", "f001\nseed=1 epoch=2\n", EINVAL, "not both kinds"},
        {"a seed that is no number", "seed=abc epoch=1\n", EINVAL, "decimal number"},
        {"a negative epoch", "seed=1 epoch=-1\n", EINVAL, "decimal number"},
        {"an epoch past 2^64", "seed=1 epoch=18446744073709551616\n", EINVAL, "out of range"},
        {"a rank outside the world", "seed=1 epoch=1 rank=5 world=2\n", EINVAL, "rank 5 is outside a world of 2"},
        {"a world of 0", "seed=1 epoch=1 world=0\n", EINVAL, "at least 1"},
        {"a key twice", "seed=1 epoch=1\nseed=2\n", EINVAL, "twice"},
        {"an unknown key", "seed=1 epoch=1 colour=3\n", EINVAL, "unknown key 'colour'"},
        {"drop_last=2", "seed=1 epoch=1 drop_last=2\n", EINVAL, "out of range"},
        {"no epoch (at commit)", "seed=1\n", 0, "'epoch' is required"},
        {"a bad last line without '\\n' (at commit)", "f001\nnot-there", 0, "line 2"},
        {"more ranks than samples with drop_last (at commit)", "seed=1 epoch=1 rank=0 world=1000 drop_last=1", 0, "cannot be split"},
    };
    for (const auto& c : cases) {
        INFO("case: " << c.what);
        const int err = write_plan(mnt, c.text);
        if (c.err == EFBIG) CHECK((err == EFBIG || err == E2BIG));
        else CHECK(err == c.err);
        const auto now = read_plan(mnt);
        for (const char* key : {"state", "kind", "samples", "seed", "epoch"}) CHECK(now[key] == good[key]);
        REQUIRE(now["last_error"].is_string());
        CHECK_THAT(now["last_error"].get<std::string>(), Catch::Contains(c.says));
        CHECK(now["last_error"].get<std::string>().size() < 400);  // the echo is cut
    }

    {  // a write not at the end of the pending plan
        const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY);  // no O_TRUNC
        REQUIRE(fd >= 0);
        CHECK((::pwrite(fd, "f001\n", 5, 100) == -1 && errno == EINVAL));
        ::close(fd);
        CHECK(read_plan(mnt)["samples"] == 3);
    }
    {  // a gap in a plan being written, and writes after a rejection
        const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC);
        REQUIRE(fd >= 0);
        CHECK(::pwrite(fd, "f001\n", 5, 0) == 5);
        CHECK((::pwrite(fd, "f002\n", 5, 10) == -1 && errno == EINVAL));  // not at the end (5)
        CHECK((::pwrite(fd, "f002\n", 5, 5) == -1 && errno == EINVAL));   // the plan is gone: so are its continuations
        ::close(fd);
        CHECK(read_plan(mnt)["samples"] == 3);
        const int fd2 = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC);
        REQUIRE(fd2 >= 0);
        CHECK((::write(fd2, "../x\n", 5) == -1 && errno == EINVAL));
        CHECK((::pwrite(fd2, "f001\n", 5, 5) == -1 && errno == EINVAL));  // continues the rejected plan
        ::close(fd2);
        CHECK(read_plan(mnt)["samples"] == 3);
    }

    CHECK_THAT(mnt.log(), Catch::Contains("line 2") && Catch::Contains("plan rejected"));
    // The log echoes no raw control bytes and no megabyte lines.
    const std::string log = mnt.log();
    CHECK(log.find('\0') == std::string::npos);
    CHECK(log.size() < 64 * 1024);

    // Still up and right, and a good plan still applies.
    CHECK(test::is_mounted(mnt.path()));
    CHECK(read_in_order(mnt, origin, data.names) == 0);
    REQUIRE(write_plan(mnt, "f000\n") == 0);
    const auto last = read_plan(mnt);
    CHECK(last["samples"] == 1);
    CHECK(last["last_error"].is_null());
}

TEST_CASE("only the mounting user may write the plan; data files stay unwritable to them", "[mount][plan][permissions]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_dataset(origin, 5);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB"});
    const std::string plan = (mnt / ".tiercache/plan").string();
    struct stat st {};
    REQUIRE(::stat(plan.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);
    CHECK(st.st_uid == ::getuid());
    REQUIRE(::stat((mnt / ".tiercache/stats").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0444);
    REQUIRE(::stat((mnt / "f001").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0444);

    // Another user: refused by the kernel (EACCES), before the daemon sees anything.
    test::fs::permissions(dir.path(), test::fs::perms::others_exec | test::fs::perms::group_exec, test::fs::perm_options::add);
    const auto other = test::run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
                                  "echo seed=1 epoch=1 > '" + plan + "'"});
    CHECK(other.status != 0);
    CHECK_THAT(other.output, Catch::Contains("Permission denied"));
    // The owner without the capability that overrides file modes: the plan (0644) takes the
    // write, a data file (0444) is refused by the kernel's permission check.
    const std::vector<std::string> owner = {"setpriv", "--bounding-set", "-dac_override,-dac_read_search", "sh", "-c"};
    auto as_owner = [&](const std::string& cmd) {
        auto argv = owner;
        argv.push_back(cmd);
        return test::run(argv);
    };
    const auto data = as_owner("echo x > '" + (mnt / "f001").string() + "'");
    CHECK(data.status != 0);
    CHECK_THAT(data.output, Catch::Contains("Permission denied"));
    const auto ok = as_owner("echo seed=3 epoch=0 > '" + plan + "'");
    CHECK(ok.status == 0);
    INFO(ok.output);
    const auto p = read_plan(mnt);
    CHECK(p["state"] == "active");
    CHECK(p["seed"] == 3);
    // Root may write it too (and everything else answers EROFS: test_mount.cpp).
    CHECK(write_plan(mnt, "f004\n") == 0);
    CHECK(read_plan(mnt)["kind"] == "paths");
    CHECK(read_text(mnt / "f001") == read_text(origin / "f001"));
}

TEST_CASE("prefetch options come from flags and from the config file's [mount] table", "[mount][plan][config]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_dataset(origin, 5);
    test::fs::create_directories(dir / "mnt");
    const std::string bin = test::fuse_binary(), o = origin.string(), m = (dir / "mnt").string();
    const auto config = dir / "tc.toml";
    std::ofstream(config) << "[mount]\nprefetch_threads = 300\n";
    const auto bad_file = test::run({bin, o, m, "--config", config.string()});
    CHECK(bad_file.status == 1);
    CHECK_THAT(bad_file.output, Catch::Contains("tc.toml:2") && Catch::Contains("prefetch_threads"));
    std::ofstream(config) << "[mount]\nprefetch_bytes = \"12XB\"\n";
    const auto bad_size = test::run({bin, o, m, "--config", config.string()});
    CHECK(bad_size.status == 1);
    CHECK_THAT(bad_size.output, Catch::Contains("tc.toml:2") && Catch::Contains("12XB"));
    const auto bad_flag = test::run({bin, o, m, "--prefetch-bytes", "0"});
    CHECK(bad_flag.status == 1);
    CHECK_THAT(bad_flag.output, Catch::Contains("--prefetch-bytes"));
    CHECK_FALSE(test::is_mounted(dir / "mnt"));

    // A window of one sample: the prefetcher stays one sample ahead of the reader.
    std::ofstream(config) << "[mount]\nprefetch_threads = 2\nprefetch_window = 1\nprefetch_bytes = \"1MiB\"\n";
    test::Mount mnt(origin, dir / "mnt", {"--config", config.string(), "--dram", "16MiB", "--kernel-cache", "off"});
    REQUIRE(write_plan(mnt, "f000\nf001\nf002\nf003\n") == 0);
    REQUIRE(read_plan(mnt)["state"] == "active");
    const auto s = wait_prefetched(mnt, 1);
    CHECK(s["prefetch"]["issued"] == 1);  // one ahead, no more
    CHECK(test::slurp(mnt / "f000") == test::slurp(origin / "f000"));
    const auto s2 = wait_prefetched(mnt, 2);
    CHECK(s2["prefetch"]["issued"] == 2);
}
