// One cache for several processes: jobs attached through the API and jobs reading through the
// mount, clients killed with kill -9 in a loop, the owner killed, permissions. Each job is a
// tiercache-test-job process (tests/shared_job.cpp) that checks every byte against the origin.
#include <catch2/catch.hpp>

#include <random>
#include <sys/wait.h>

#include <tiercache/tiercache.hpp>

#include "support.hpp"

using namespace tiercache;

namespace {

std::uint64_t make_dataset(const test::fs::path& root, int count, std::uint64_t seed = 21) {
    std::mt19937_64 rng(seed);
    std::uint64_t total = 0;
    for (int i = 0; i < count; ++i) {
        const std::size_t size = 16 * 1024 + rng() % (96 * 1024);
        test::write_file(root / ("n" + std::to_string(i % 6)) / ("img" + std::to_string(i) + ".JPEG"), test::make_bytes(seed + i, size));
        total += size;
    }
    return total;
}

std::string unique_name(const char* what) { return std::string("mt-") + what + "-" + std::to_string(::getpid()); }

// A child process, killed (SIGKILL) if still running when it goes out of scope.
class Child {
public:
    explicit Child(const std::vector<std::string>& argv, const test::fs::path& output = "/dev/null") {
        pid_ = ::fork();
        if (pid_ == 0) {
            const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            ::dup2(out, 1);
            ::dup2(out, 2);
            std::vector<char*> args;
            for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
            args.push_back(nullptr);
            ::execvp(args[0], args.data());
            ::_exit(127);
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    pid_t pid() const { return pid_; }
    void kill(int sig) const { ::kill(pid_, sig); }
    // The exit status (128 + signal when killed); -1 when it did not end within `timeout_s`.
    int wait(int timeout_s = 120) { return test::wait_exit(pid_, timeout_s); }

private:
    pid_t pid_ = -1;
};

std::string job_binary() { return TIERCACHE_JOB_BIN; }

std::vector<std::string> api_job(const std::string& name, const test::fs::path& origin, std::uint64_t seed,
                                 std::vector<std::string> more = {}) {
    std::vector<std::string> argv = {job_binary(), "--attach", name, "--origin", origin.string(), "--seed", std::to_string(seed)};
    argv.insert(argv.end(), more.begin(), more.end());
    return argv;
}

std::string text_of(const test::fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
}

// Stats of a shared cache, from a short-lived client of our own.
Stats shared_stats(const std::string& name) { return Cache::attach(name).stats(); }

}  // namespace

TEST_CASE("four jobs, two attached and two through the mount, read once and hold once", "[shared][mount]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_dataset(origin, 240);
    const std::string name = unique_name("four");
    test::Mount mount(origin, dir / "mnt", {"--dram", "256MiB", "--share", name, "--kernel-cache", "off"});

    std::vector<std::unique_ptr<Child>> jobs;
    jobs.push_back(std::make_unique<Child>(api_job(name, origin, 1, {"--plan", "--epochs", "2"}), dir / "job0.out"));
    jobs.push_back(std::make_unique<Child>(api_job(name, origin, 2, {"--loader", "--epochs", "2"}), dir / "job1.out"));
    for (int m = 0; m < 2; ++m)
        jobs.push_back(std::make_unique<Child>(std::vector<std::string>{job_binary(), "--mount", mount.path().string(), "--origin",
                                                                        origin.string(), "--seed", std::to_string(3 + m), "--plan",
                                                                        "--epochs", "2"},
                                               dir / ("job" + std::to_string(2 + m) + ".out")));
    for (std::size_t j = 0; j < jobs.size(); ++j) {
        INFO("job " << j << ": " << text_of(dir / ("job" + std::to_string(j) + ".out")));
        CHECK(jobs[j]->wait() == 0);
    }
    const auto stats = mount.stats();
    INFO(stats.dump());
    CHECK(stats["origin"]["bytes_read"].get<std::uint64_t>() == total);      // each sample fetched once for all four
    CHECK(stats["tiers"]["dram"]["used_bytes"].get<std::uint64_t>() == total);  // and held once
    CHECK(stats["tiers"]["dram"]["resident_samples"].get<std::uint64_t>() == 240);
    CHECK(stats["tiers"]["dram"]["hits"].get<std::uint64_t>() > 0);
    CHECK(test::eventually([&] { return mount.stats()["share"]["connections"] == 0; }));
}

TEST_CASE("clients killed with kill -9 fifty times never hurt the owner or the other clients", "[shared][mount][kill]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_dataset(origin, 300);
    const std::string name = unique_name("kill");
    // A dram tier of a third of the dataset: the owner evicts all along, under the clients' copies.
    Child owner({TIERCACHE_CLI_BIN, "serve", origin.string(), "--name", name, "--dram", std::to_string(total / 3)}, dir / "owner.log");
    REQUIRE(test::eventually([&] { return test::fs::exists(SharePaths::of("/dev/shm", name).socket); }));
    REQUIRE(test::eventually([&] {
        try {
            return shared_stats(name).samples == 300;
        } catch (const std::exception&) {
            return false;
        }
    }));

    Child steady_a(api_job(name, origin, 100, {"--loop", "--plan"}), dir / "a.out");
    Child steady_b(api_job(name, origin, 200, {"--loop", "--loader"}), dir / "b.out");
    std::mt19937 rng(7);
    for (int i = 0; i < 50; ++i) {
        // Killed mid-read: once it has read its first sample, at a random moment after.
        const auto ready = dir / ("victim" + std::to_string(i) + ".ready");
        Child victim(api_job(name, origin, 1000 + static_cast<std::uint64_t>(i),
                             {"--loop", i % 2 ? "--plan" : "--loader", "--ready", ready.string()}));
        REQUIRE(test::eventually([&] { return test::fs::exists(ready); }));
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
        victim.kill(SIGKILL);
        REQUIRE(victim.wait(10) == 128 + SIGKILL);
    }
    // The steady ones saw no wrong byte and no hang all along.
    steady_a.kill(SIGTERM);
    steady_b.kill(SIGTERM);
    INFO("a: " << text_of(dir / "a.out") << "\nb: " << text_of(dir / "b.out") << "\nowner: " << text_of(dir / "owner.log"));
    CHECK(steady_a.wait(30) == 0);
    CHECK(steady_b.wait(30) == 0);

    // The owner's accounting is back at its baseline: no client, no job, no plan.
    Stats s;
    CHECK(test::eventually([&] {
        s = shared_stats(name);
        return s.share_connections == 1 && s.share_jobs == 1 && s.plan_jobs == 0;  // 1: our stats client
    }));
    CHECK(s.tiers.at(0).used_bytes <= s.tiers.at(0).capacity_bytes);
    // And it still serves a new job, every byte right.
    Child fresh(api_job(name, origin, 9, {"--plan"}), dir / "fresh.out");
    INFO("fresh: " << text_of(dir / "fresh.out"));
    CHECK(fresh.wait(60) == 0);
    owner.kill(SIGTERM);
    CHECK(owner.wait(20) == 0);
}

TEST_CASE("when the owner is killed, clients fail within a bounded time, and a restart finds nvme warm", "[shared][mount][kill]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    const std::uint64_t total = make_dataset(origin, 120);
    const auto nvme = dir / "nvme";
    test::fs::create_directories(nvme);
    const std::string name = unique_name("owner");
    const std::vector<std::string> serve = {TIERCACHE_CLI_BIN, "serve", origin.string(), "--name", name, "--dram", "64MiB",
                                            "--nvme", nvme.string() + ":256MiB"};
    auto owner = std::make_unique<Child>(serve, dir / "owner.log");
    REQUIRE(test::eventually([&] {
        try {
            return shared_stats(name).samples == 120;
        } catch (const std::exception&) {
            return false;
        }
    }));
    // One epoch through the cache: everything on nvme too; then the index is saved within 5 s.
    Child first(api_job(name, origin, 1), dir / "first.out");
    REQUIRE(first.wait() == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5500));

    Child reader(api_job(name, origin, 2, {"--loop", "--owner-timeout-ms", "1000"}), dir / "reader.out");
    AttachedCache client = Cache::attach(name, {.dir = "/dev/shm", .owner_timeout = std::chrono::milliseconds(1000)});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    owner->kill(SIGKILL);
    REQUIRE(owner->wait(10) == 128 + SIGKILL);
    const auto killed = std::chrono::steady_clock::now();

    // A hit from shared memory: refused once the heartbeat is older than the timeout.
    std::vector<std::byte> buf(64);
    std::string message;
    for (;;) {
        try {
            client.read(0, 0, buf);
        } catch (const OwnerGone& e) {
            message = e.what();
            break;
        }
        REQUIRE(std::chrono::steady_clock::now() - killed < std::chrono::seconds(5));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK_THAT(message, Catch::Contains("owner"));
    CHECK(std::chrono::steady_clock::now() - killed < std::chrono::milliseconds(3000));
    CHECK_THROWS_AS(client.stats(), OwnerGone);  // needs the owner: fails at once
    // The looping reader process ends with a clear error, not a hang.
    const int status = reader.wait(10);
    CHECK(status == 2);
    CHECK_THAT(text_of(dir / "reader.out"), Catch::Contains("owner"));

    // A restarted owner takes the name over and finds its nvme tier warm: no origin reads.
    owner = std::make_unique<Child>(serve, dir / "owner2.log");
    REQUIRE(test::eventually([&] {
        try {
            return shared_stats(name).samples == 120;
        } catch (const std::exception&) {
            return false;
        }
    }));
    Child again(api_job(name, origin, 3), dir / "again.out");
    INFO(text_of(dir / "again.out") << text_of(dir / "owner2.log"));
    REQUIRE(again.wait() == 0);
    const Stats s = shared_stats(name);
    CHECK(s.origin_bytes_read == 0);
    CHECK(s.tiers.back().hits > 0);
    (void)total;
    owner->kill(SIGTERM);
    CHECK(owner->wait(20) == 0);
}

TEST_CASE("only the owner's user attaches, unless the owner names a group", "[shared][mount]") {
    test::TempDir dir;
    const auto origin = dir / "origin";
    make_dataset(origin, 20);
    ::chmod(dir.path().c_str(), 0755);  // the other user reads the origin to compare
    const std::string name = unique_name("perm");
    {
        Child owner({TIERCACHE_CLI_BIN, "serve", origin.string(), "--name", name, "--dram", "64MiB"}, dir / "owner.log");
        REQUIRE(test::eventually([&] { return test::fs::exists(SharePaths::of("/dev/shm", name).socket); }));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        Child other(api_job(name, origin, 1, {"--as-user", "65534:65534"}), dir / "other.out");
        CHECK(other.wait(30) == 2);
        const std::string said = text_of(dir / "other.out");
        CHECK_THAT(said, Catch::Contains("permission denied"));
        CHECK_THAT(said, Catch::Contains("--group"));
        owner.kill(SIGTERM);
        CHECK(owner.wait(20) == 0);
    }
    {
        Child owner({TIERCACHE_CLI_BIN, "serve", origin.string(), "--name", name, "--dram", "64MiB", "--group", "nogroup"},
                    dir / "owner2.log");
        REQUIRE(test::eventually([&] { return test::fs::exists(SharePaths::of("/dev/shm", name).socket); }));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        Child member(api_job(name, origin, 1, {"--as-user", "65534:65534"}), dir / "member.out");
        INFO(text_of(dir / "member.out"));
        CHECK(member.wait(30) == 0);
        owner.kill(SIGTERM);
        CHECK(owner.wait(20) == 0);
    }
}
