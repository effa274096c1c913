// The plan through the mount: MOUNTPOINT/.tiercache/plan (the protocol is in fuse/plan_file.hpp).
// Every test really mounts; its Mount unmounts on every way out (support.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <functional>
#include <poll.h>
#include <random>
#include <set>
#include <sys/wait.h>
#include <tiercache/epoch_plan.hpp>

#include "support.hpp"

namespace {

using test::fs::path;

// The plan in force, read back (reading commits a pending plan first).
nlohmann::json read_plan(const test::Mount& mnt) { return nlohmann::json::parse(test::read_text(mnt / ".tiercache/plan")); }

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
Dataset make_numbered_dataset(const path& origin, int n) {
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

// Writes `text` in pieces of `piece` bytes (0: one go), then fsyncs: 0, or the errno of the
// first write or of the fsync (the commit's result).
int write_plan_fsync(const test::Mount& mnt, std::string_view text, std::size_t piece = 0) {
    const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    for (std::size_t done = 0; done < text.size() && err == 0;) {
        const std::size_t n = piece ? std::min(piece, text.size() - done) : text.size() - done;
        const ssize_t w = ::write(fd, text.data() + done, n);
        if (w < 0) err = errno;
        else done += static_cast<std::size_t>(w);
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    ::close(fd);
    return err;
}

// Another process, so another job to the mount (plans are per process), forked from the test
// (which runs no thread of its own then). On each command byte it runs body(command) and
// sends back what that returns; it holds on (and so keeps its plan) until end() or kill().
// The child never returns into the test: it leaves with _exit, whatever happens.
class JobProcess {
public:
    using Body = std::function<std::string(char)>;

    explicit JobProcess(Body body) {
        int to[2], from[2];
        if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::close(to[1]);
            ::close(from[0]);
            for (int fd : parent_ends()) ::close(fd);  // the others' pipes: they must see their own EOF
            char command;
            while (::read(to[0], &command, 1) == 1) {
                std::string report;
                try {
                    report = body(command);
                } catch (const std::exception& e) {
                    report = std::string("exception: ") + e.what();
                }
                report += '\0';
                for (std::size_t done = 0; done < report.size();) {
                    const ssize_t w = ::write(from[1], report.data() + done, report.size() - done);
                    if (w <= 0) ::_exit(2);
                    done += static_cast<std::size_t>(w);
                }
            }
            ::_exit(0);  // end(): the pipe closed
        }
        ::close(to[0]);
        ::close(from[1]);
        to_ = to[1];
        from_ = from[0];
        parent_ends().insert({to_, from_});
    }
    JobProcess(const JobProcess&) = delete;
    JobProcess& operator=(const JobProcess&) = delete;
    ~JobProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        close_end(to_);
        close_end(from_);
    }

    pid_t pid() const { return pid_; }

    // Starts body(command) in the child; report() waits for what it returns.
    void send(char command) {
        if (::write(to_, &command, 1) != 1) throw std::runtime_error("the job process is gone");
    }
    std::string report(int timeout_s = 60) {
        std::string out;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        for (char c;;) {
            pollfd pfd{from_, POLLIN, 0};
            if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("no report from the job process");
            if (::poll(&pfd, 1, 100) <= 0) continue;
            if (::read(from_, &c, 1) != 1) throw std::runtime_error("the job process ended without a report: " + out);
            if (c == '\0') return out;
            out += c;
        }
    }
    std::string run(char command) {
        send(command);
        return report();
    }

    // Lets the child leave (exit 0). `reap`: wait for it; otherwise it stays a zombie until wait().
    void end(bool reap = true) {
        close_end(to_);
        if (reap) wait();
    }
    void kill(int sig) { ::kill(pid_, sig); }
    int wait() {
        int status = 0;
        if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    // The test's ends of every job process's pipes (a child closes those of the others).
    static std::set<int>& parent_ends() {
        static std::set<int> fds;
        return fds;
    }
    static void close_end(int& fd) {
        if (fd < 0) return;
        parent_ends().erase(fd);
        ::close(fd);
        fd = -1;
    }

    pid_t pid_ = -1;
    int to_ = -1, from_ = -1;
};

std::uint64_t plan_jobs(const test::Mount& mnt) { return mnt.stats()["plan"]["jobs"].get<std::uint64_t>(); }

}  // namespace

TEST_CASE("a plan of paths is applied and the mount prefetches it: the reader then only hits", "[mount][plan]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 80);
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

TEST_CASE("a plan of records (PATH OFFSET LENGTH) is applied and prefetched by extent; the reader then only hits", "[mount][plan][records]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    constexpr std::uint64_t kShard = 6 * 1024 * 1024 + 300, kRecord = 40 * 1000;  // 158 records across 1 MiB extents
    test::write_file(origin / "shards/shard-000.tar", test::make_bytes(71, kShard));
    test::write_file(origin / "shards/shard 001.tar", test::make_bytes(72, kShard));  // a space in its name
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off"});

    struct Rec {
        std::string path;
        std::uint64_t offset, length;
    };
    std::vector<Rec> records;
    for (const char* shard : {"shards/shard-000.tar", "shards/shard 001.tar"})
        for (std::uint64_t at = 0; at + kRecord <= kShard; at += kRecord) records.push_back({shard, at, kRecord});
    std::shuffle(records.begin(), records.end(), std::mt19937_64(11));  // across both shards
    std::string text;
    for (const Rec& r : records) text += r.path + " " + std::to_string(r.offset) + "\t" + std::to_string(r.length) + "\n";
    REQUIRE(write_plan(mnt, text, 13) == 0);
    const auto plan = read_plan(mnt);
    CHECK(plan["state"] == "active");
    CHECK(plan["kind"] == "records");
    CHECK(plan["samples"] == records.size());
    CHECK(plan["last_error"].is_null());

    // Prefetched: every extent the records touch, each once (not each shard whole: its tail
    // past the last record stays out).
    const auto settled = wait_prefetched(mnt, records.size());
    CHECK(settled["prefetch"]["errors"] == 0);
    constexpr std::uint64_t kMiB = 1 << 20, kTouched = (kShard / kRecord * kRecord + kMiB - 1) / kMiB * kMiB;  // 6 extents a shard
    CHECK(settled["origin"]["bytes_read"] == 2 * kTouched);
    CHECK(dram(settled, "hits") == 0);

    std::map<std::string, int> fds;
    std::size_t bad = 0;
    for (const Rec& r : records) {
        auto& fd = fds[r.path];
        if (!fd) fd = ::open((mnt / r.path).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd > 0);
        test::Bytes got(r.length);
        const ssize_t n = ::pread(fd, got.data(), got.size(), static_cast<off_t>(r.offset));
        const test::Bytes all = test::slurp(origin / r.path);
        bad += n != static_cast<ssize_t>(r.length) ||
               !std::equal(got.begin(), got.end(), all.begin() + static_cast<std::ptrdiff_t>(r.offset));
    }
    for (const auto& [p, fd] : fds) ::close(fd);
    CHECK(bad == 0);
    const auto after = mnt.stats();
    CHECK(dram(after, "misses") == 0);
    CHECK(after["origin"]["bytes_read"] == settled["origin"]["bytes_read"]);
    CHECK(read_plan(mnt)["position"] == records.size());
    CHECK(mnt.stop() == 0);
}

TEST_CASE("a seed plan is the built-in sampler's order: applied, prefetched, hit in that order", "[mount][plan]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 60);
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
    const Dataset data = make_numbered_dataset(origin, 10);
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
    CHECK(test::read_text(mnt / "f002") == test::read_text(origin / "f002"));
}

TEST_CASE("hostile plans fail with the right errno, change nothing, and the mount serves on", "[mount][plan][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 40);  // at most 4 x 41 + 16 = 180 lines
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
        {"a million copies of a valid path", million_valid, EFBIG, "more lines than " + std::to_string(180 + 4 * (data.bytes / 4096))},
        {"a record past the end of its file", "f001 0 999999999\n", EINVAL, "past the end of its file"},
        {"a record whose offset + length overflows", "f001 18446744073709551615 2\n", EINVAL, "past the end of its file"},
        {"a record offset past 2^64", "f001 18446744073709551616 1\n", EINVAL, "does not fit in 64 bits"},
        {"a record of no file", "nope 0 10\n", EINVAL, "a record of no file"},
        {"a record of a directory", "sub 0 1\n", EINVAL, "a record of a directory"},
        {"a record outside the origin", "../outside 0 10\n", EINVAL, "'..' component"},
        {"a record with an absolute path", "/etc/passwd 0 10\n", EINVAL, "absolute"},
        {"a negative record length", "f001 0 -5\n", EINVAL, "no such file"},
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
        {"a rank without a world (at commit)", "seed=1 epoch=1 rank=1\n", 0, "world is 1 unless given"},  // found by fuzz/fuzz_plan
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
    make_numbered_dataset(origin, 5);
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
    // The shell is the job: it reads its plan back itself (a builtin read, no cat: another
    // process would see its own, none), and the plan goes with the shell.
    const auto ok = as_owner("echo seed=3 epoch=0 > '" + plan + "' && while IFS= read -r l; do echo \"$l\"; done < '" + plan + "'");
    CHECK(ok.status == 0);
    INFO(ok.output);
    CHECK_THAT(ok.output, Catch::Contains("\"state\": \"active\"") && Catch::Contains("\"seed\": 3"));
    // Root may write it too (and everything else answers EROFS: test_mount.cpp).
    CHECK(write_plan(mnt, "f004\n") == 0);
    CHECK(read_plan(mnt)["kind"] == "paths");
    CHECK(test::read_text(mnt / "f001") == test::read_text(origin / "f001"));
}

TEST_CASE("prefetch options come from flags and from the config file's [mount] table", "[mount][plan][config]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_numbered_dataset(origin, 5);
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

// What a job process answers: "ERRNO\n" then the plan file as it reads it back.
struct Answer {
    int err = -1;
    nlohmann::json plan;
};
Answer parse_answer(const std::string& report) {
    INFO("the job process said: " << report);
    const auto nl = report.find('\n');
    REQUIRE(nl != std::string::npos);
    return {std::stoi(report.substr(0, nl)), nlohmann::json::parse(report.substr(nl + 1))};
}

// A job process's body: 'w' writes `text` (in pieces of `piece` bytes; with `fsync`, whose
// result then counts), 'e' writes an empty plan, anything else only reads; then it reads the
// plan file back.
JobProcess::Body plan_writer(const test::Mount& mnt, std::string text, std::size_t piece = 0, bool fsync = false) {
    return [&mnt, text, piece, fsync](char command) {
        int err = 0;
        if (command == 'w') err = fsync ? write_plan_fsync(mnt, text, piece) : write_plan(mnt, text, piece);
        if (command == 'e') err = write_plan(mnt, "");
        return std::to_string(err) + "\n" + test::read_text(mnt / ".tiercache/plan");
    };
}

TEST_CASE("two processes writing plans at the same time each get theirs applied and read back their own", "[mount][plan][jobs]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 80);
    const std::size_t samples = data.names.size() + 1;
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--prefetch-threads", "2"});

    std::vector<std::string> a_order(data.names.begin(), data.names.begin() + 50);
    std::shuffle(a_order.begin(), a_order.end(), std::mt19937_64(11));
    const std::size_t b_samples = tiercache::EpochPlan(samples, 5, 1, 1, 2).size();
    // In small pieces (a WRITE each), so that the two streams interleave.
    JobProcess a(plan_writer(mnt, lines(a_order), 3));
    JobProcess b(plan_writer(mnt, "seed=5\nepoch=1\nrank=1\nworld=2\n", 1));
    a.send('w');
    b.send('w');
    const Answer a_said = parse_answer(a.report()), b_said = parse_answer(b.report());
    INFO("a: " << a_said.plan.dump() << "\nb: " << b_said.plan.dump() << "\nlog: " << mnt.log());
    CHECK(a_said.err == 0);
    CHECK(b_said.err == 0);
    CHECK(a_said.plan["state"] == "active");
    CHECK(a_said.plan["kind"] == "paths");
    CHECK(a_said.plan["samples"] == a_order.size());
    CHECK(a_said.plan["last_error"].is_null());
    CHECK(b_said.plan["state"] == "active");
    CHECK(b_said.plan["kind"] == "seed");
    CHECK(b_said.plan["seed"] == 5);
    CHECK(b_said.plan["rank"] == 1);
    CHECK(b_said.plan["world"] == 2);
    CHECK(b_said.plan["samples"] == b_samples);
    CHECK(b_said.plan["last_error"].is_null());

    // The cache holds both; this process holds none of its own.
    const auto s = mnt.stats();
    INFO(s["plan"].dump());
    CHECK(s["plan"]["jobs"] == 2);
    CHECK(s["plan"]["samples"] == a_order.size() + b_samples);
    CHECK(s["plan"]["active"] == true);
    CHECK(s["plan"]["state"] == "none");  // the reader's own
    const auto mine = read_plan(mnt);
    CHECK(mine["state"] == "none");
    CHECK(mine["kind"].is_null());
    CHECK(mine["samples"] == 0);
    CHECK(mine["jobs"] == 2);
    // Each reads its own again, and sees both jobs.
    const Answer a_again = parse_answer(a.run('r')), b_again = parse_answer(b.run('r'));
    CHECK(a_again.plan["kind"] == "paths");
    CHECK(a_again.plan["samples"] == a_order.size());
    CHECK(a_again.plan["jobs"] == 2);
    CHECK(b_again.plan["kind"] == "seed");
    CHECK(b_again.plan["jobs"] == 2);

    // Each job's prefetcher follows its plan: every sample of either comes in.
    std::set<std::string> wanted(a_order.begin(), a_order.end());
    const tiercache::EpochPlan b_plan(samples, 5, 1, 1, 2);  // named: order() is a view into it
    for (tiercache::SampleId id : b_plan.order())
        wanted.insert(id < data.names.size() ? data.names[id] : "sub/inner");
    nlohmann::json after;
    CHECK(test::eventually([&] {
        after = mnt.stats();
        return after["tiers"]["dram"]["resident_samples"] == wanted.size() && after["prefetch"]["fetched"] == wanted.size();
    }));
    INFO(after.dump());
    CHECK(after["origin"]["reads"] == wanted.size());  // once each, though both plans hold some
    a.end();
    b.end();
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 0; }));
}

TEST_CASE("a process that exits loses its plan within seconds and the others keep theirs", "[mount][plan][jobs]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 30);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "32MiB", "--prefetch-threads", "1"});

    REQUIRE(write_plan(mnt, "f000\nf001\nf002\n") == 0);  // this process: 3 samples
    REQUIRE(read_plan(mnt)["state"] == "active");
    JobProcess a(plan_writer(mnt, "f010\nf011\nf012\nf013\nf014\n"));
    JobProcess b(plan_writer(mnt, "seed=1 epoch=0\n"));
    REQUIRE(parse_answer(a.run('w')).plan["samples"] == 5);
    REQUIRE(parse_answer(b.run('w')).plan["samples"] == data.names.size() + 1);
    CHECK(plan_jobs(mnt) == 3);

    // a exits and is not waited for yet (a zombie): its plan goes all the same.
    const pid_t a_pid = a.pid();
    a.end(/*reap*/ false);
    const auto start = std::chrono::steady_clock::now();
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 2; }));
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(took < 5.0);
    a.wait();
    CHECK(mnt.stats()["plan"]["samples"] == 3 + data.names.size() + 1);
    // b is killed outright.
    b.kill(SIGKILL);
    b.wait();
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 1; }));
    const auto mine = read_plan(mnt);
    CHECK(mine["state"] == "active");
    CHECK(mine["samples"] == 3);
    CHECK(mine["jobs"] == 1);
    CHECK_THAT(mnt.log(), Catch::Contains("process " + std::to_string(a_pid) + " has exited"));

    // A plan whose writer is gone before it is applied (the idle commit) is dropped.
    const auto gone = test::run({"sh", "-c", "echo f005 > '" + (mnt / ".tiercache/plan").string() + "'"});
    CHECK(gone.status == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 1; }));
}

TEST_CASE("an empty plan removes only the writing process's own plan", "[mount][plan][jobs]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_numbered_dataset(origin, 20);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "32MiB"});

    JobProcess other(plan_writer(mnt, "f010\nf011\n"));
    REQUIRE(parse_answer(other.run('w')).plan["state"] == "active");
    REQUIRE(write_plan(mnt, "f000\nf001\nf002\nf003\n") == 0);
    REQUIRE(read_plan(mnt)["samples"] == 4);
    CHECK(plan_jobs(mnt) == 2);
    CHECK(mnt.stats()["plan"]["samples"] == 6);

    // Ours goes, theirs stays.
    REQUIRE(write_plan(mnt, "") == 0);
    const auto mine = read_plan(mnt);
    CHECK(mine["state"] == "none");
    CHECK(mine["jobs"] == 1);
    const Answer theirs = parse_answer(other.run('r'));
    CHECK(theirs.plan["state"] == "active");
    CHECK(theirs.plan["samples"] == 2);
    CHECK(mnt.stats()["plan"]["samples"] == 2);

    // And the other way round.
    REQUIRE(write_plan(mnt, "f005\n") == 0);
    REQUIRE(read_plan(mnt)["samples"] == 1);
    const Answer cleared = parse_answer(other.run('e'));
    CHECK(cleared.err == 0);
    CHECK(cleared.plan["state"] == "none");
    CHECK(cleared.plan["jobs"] == 1);
    CHECK(read_plan(mnt)["samples"] == 1);
    CHECK(plan_jobs(mnt) == 1);
}

TEST_CASE("two processes writing plans over and over never get each other's EINVAL", "[mount][plan][jobs][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 60);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--prefetch-threads", "1"});

    // Each: 25 plans, each in pieces of 2 to 5 bytes (lines cut anywhere), fsync'd: every
    // write and every commit must succeed. A failure names the round and the errno.
    auto rounds = [&mnt](std::vector<std::string> names, std::uint64_t seed) {
        return [&mnt, names, seed](char) mutable {
            std::mt19937_64 rng(seed);
            std::string failures;
            for (int round = 0; round < 25; ++round) {
                std::shuffle(names.begin(), names.end(), rng);
                const auto n = 1 + rng() % names.size();
                const std::string text = lines({names.begin(), names.begin() + static_cast<std::ptrdiff_t>(n)});
                if (const int err = write_plan_fsync(mnt, text, 2 + rng() % 4))
                    failures += "round " + std::to_string(round) + ": " + std::strerror(err) + "; ";
            }
            std::vector<std::string> last(names.begin(), names.begin() + 3);
            const int err = write_plan_fsync(mnt, lines(last), 2);
            if (err) failures += std::string("last: ") + std::strerror(err);
            return std::to_string(failures.empty() ? 0 : 1) + "\n" + test::read_text(mnt / ".tiercache/plan") + failures;
        };
    };
    JobProcess a(rounds({data.names.begin(), data.names.begin() + 30}, 1));
    JobProcess b(rounds({data.names.begin() + 30, data.names.end()}, 2));
    a.send('w');
    b.send('w');
    const std::string a_report = a.report(120), b_report = b.report(120);
    INFO("a: " << a_report << "\nb: " << b_report << "\nlog: " << mnt.log().substr(0, 4000));
    CHECK(a_report.starts_with("0\n"));
    CHECK(b_report.starts_with("0\n"));
    CHECK(a_report.find("\"samples\": 3") != std::string::npos);
    CHECK(b_report.find("\"samples\": 3") != std::string::npos);
    CHECK(a_report.find("\"last_error\": null") != std::string::npos);
    CHECK(b_report.find("\"last_error\": null") != std::string::npos);
    CHECK(plan_jobs(mnt) == 2);
    CHECK(mnt.stats()["plan"]["samples"] == 6);
    CHECK_THAT(mnt.log(), !Catch::Contains("rejected") && !Catch::Contains("replaces one not yet applied"));
}

TEST_CASE("at most 64 jobs hold plans: the 65th is refused with EINVAL until one ends", "[mount][plan][jobs][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_numbered_dataset(origin, 70);
    test::Mount mnt(origin, dir / "mnt", {"--dram", "32MiB", "--prefetch-threads", "1"});

    std::vector<std::unique_ptr<JobProcess>> jobs;
    for (int i = 0; i < 65; ++i) {
        char name[16];
        std::snprintf(name, sizeof name, "f%03d\n", i);
        jobs.push_back(std::make_unique<JobProcess>(plan_writer(mnt, name, 0, /*fsync*/ true)));
    }
    for (int i = 0; i < 64; ++i) {
        const Answer said = parse_answer(jobs[static_cast<std::size_t>(i)]->run('w'));
        INFO("job " << i << ": " << said.plan.dump());
        REQUIRE(said.err == 0);
        REQUIRE(said.plan["state"] == "active");
    }
    CHECK(plan_jobs(mnt) == 64);
    const Answer refused = parse_answer(jobs[64]->run('w'));
    INFO(refused.plan.dump());
    CHECK(refused.err == EINVAL);  // fsync says the commit failed
    CHECK(refused.plan["state"] == "none");
    REQUIRE(refused.plan["last_error"].is_string());
    CHECK_THAT(refused.plan["last_error"].get<std::string>(), Catch::Contains("too many jobs"));
    CHECK(plan_jobs(mnt) == 64);

    // One ends: its slot is free again once its exit is seen.
    jobs[0]->end();
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 63; }));
    const Answer taken = parse_answer(jobs[64]->run('w'));
    CHECK(taken.err == 0);
    CHECK(taken.plan["state"] == "active");
    CHECK(taken.plan["last_error"].is_null());
    CHECK(plan_jobs(mnt) == 64);
    jobs.clear();  // killed and reaped
    CHECK(test::eventually([&] { return plan_jobs(mnt) == 0; }));
}

TEST_CASE("more than 64 plans pending at once: the oldest is dropped, and says so", "[mount][plan][jobs][errors]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    make_numbered_dataset(origin, 60);  // plans of at most 4 x 61 + 16 = 260 lines
    test::Mount mnt(origin, dir / "mnt", {"--dram", "16MiB", "--prefetch-threads", "0"});

    // 70 threads, each with its own open file (a thread's own open never commits another's
    // plan), each writing a line every 5 ms (200 at most): none goes idle, so 70 are pending
    // at once.
    constexpr int kWriters = 70;
    std::atomic<int> opened{0};
    std::atomic<bool> done{false};
    std::vector<int> first_error(kWriters, 0);
    std::vector<std::thread> writers;
    for (int i = 0; i < kWriters; ++i) {
        writers.emplace_back([&, i] {
            const int fd = ::open((mnt / ".tiercache/plan").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
            if (fd < 0) {
                first_error[static_cast<std::size_t>(i)] = errno;
                ++opened;
                return;
            }
            ++opened;
            for (int line = 0; line < 200 && !done; ++line) {
                if (::write(fd, "f001\n", 5) < 0) {
                    first_error[static_cast<std::size_t>(i)] = errno;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            ::close(fd);
        });
    }
    while (opened < kWriters) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    done = true;
    for (auto& t : writers) t.join();
    int dropped = 0;
    for (int err : first_error) {
        INFO("errno " << err << ": " << std::strerror(err));
        CHECK((err == 0 || err == EINVAL));
        dropped += err == EINVAL;
    }
    CHECK(dropped < kWriters / 2);
    if (test::kSanitizerBuild) {
        // 70 threads on a loaded machine under a sanitizer can pause longer than the 50 ms idle
        // commit, so 65 plans need not be pending at once: the bound cannot be shown here.
        WARN("sanitizer build: " << dropped << " writers saw EINVAL, the 64-plan bound is not checked");
    } else {
        CHECK(dropped >= kWriters - 64);
        CHECK_THAT(mnt.log(), Catch::Contains("more than 64 plans pending at once"));
    }
    // The rest applied (one job: the latest wins), and the mount serves on.
    CHECK(test::eventually([&] { return read_plan(mnt)["state"] == "active"; }));
    CHECK(test::read_text(mnt / "f001") == test::read_text(origin / "f001"));
}

TEST_CASE("overlapping plans of two processes: each prefetcher follows its own readers, forked workers included", "[mount][plan][jobs]") {
    test::TempDir dir;
    const path origin = dir / "origin";
    const Dataset data = make_numbered_dataset(origin, 200);
    // Every read reaches the cache; a window of 4 samples: a window dragged along by the other
    // job's reads (the same samples in another order) would skip most of its own positions.
    test::Mount mnt(origin, dir / "mnt", {"--dram", "64MiB", "--kernel-cache", "off", "--prefetch-window", "4",
                                          "--prefetch-threads", "2"});
    const std::size_t n = data.names.size();

    // 'w' writes the plan (every file, in an order of its own); 'r' reads that order, from
    // `workers` forked children (a DataLoader's workers: sample i by worker i % workers), or
    // from the job itself; 2 ms a sample, as a training step would.
    auto job = [&mnt, &origin](std::vector<std::string> order, int workers) {
        return [&mnt, &origin, order, workers](char command) -> std::string {
            if (command == 'w') {
                const int err = write_plan(mnt, lines(order));  // before the read-back (a + b: either may go first)
                return std::to_string(err) + "\n" + test::read_text(mnt / ".tiercache/plan");
            }
            auto read_share = [&](int worker, int of) {
                std::size_t bad = 0;
                for (std::size_t i = static_cast<std::size_t>(worker); i < order.size(); i += static_cast<std::size_t>(of)) {
                    const auto got = test::read_file(mnt / order[i]);
                    bad += got.error != 0 || got.bytes != test::slurp(origin / order[i]);
                    std::this_thread::sleep_for(std::chrono::milliseconds(2 * of));
                }
                return bad;
            };
            if (workers == 0) return std::to_string(read_share(0, 1)) + "\n{}";
            std::vector<pid_t> pids;
            for (int w = 0; w < workers; ++w) {
                const pid_t pid = ::fork();
                if (pid == 0) ::_exit(read_share(w, workers) == 0 ? 0 : 1);
                pids.push_back(pid);
            }
            int bad = 0;
            for (pid_t pid : pids) {
                int status = 0;
                ::waitpid(pid, &status, 0);
                bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            }
            return std::to_string(bad) + "\n{}";
        };
    };
    std::vector<std::string> a_order = data.names, b_order = data.names;
    std::shuffle(a_order.begin(), a_order.end(), std::mt19937_64(21));
    std::shuffle(b_order.begin(), b_order.end(), std::mt19937_64(22));
    JobProcess a(job(a_order, 0));
    JobProcess b(job(b_order, 2));
    REQUIRE(parse_answer(a.run('w')).plan["samples"] == n);
    REQUIRE(parse_answer(b.run('w')).plan["samples"] == n);
    REQUIRE(plan_jobs(mnt) == 2);
    a.send('r');
    b.send('r');
    CHECK(parse_answer(a.report(120)).err == 0);  // wrong bytes or errors
    CHECK(parse_answer(b.report(120)).err == 0);
    const auto s = wait_prefetched(mnt, n);
    INFO(s["prefetch"].dump() << " " << s["tiers"]["dram"].dump());
    // Each prefetcher went through its whole order (dragged windows issue a fraction of it)...
    CHECK(s["prefetch"]["issued"].get<std::uint64_t>() >= 2 * n * 9 / 10);
    // ...so nearly every read hits: each sample is fetched once, ahead of the first to want it.
    CHECK(s["tiers"]["dram"]["misses"].get<std::uint64_t>() <= n / 10);
    CHECK(s["origin"]["reads"] == n);
}
