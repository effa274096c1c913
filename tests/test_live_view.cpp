// `tiercache stats --watch` and warm's progress bar against a real mount: frames while files
// are read, the failures (no mount, the daemon gone), and escape codes only on a terminal
// (the terminal is `script`'s pseudo-terminal).
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>

#include "support.hpp"

namespace {

const std::string kCli = TIERCACHE_CLI_BIN;

// A small dataset from `tiercache gen`, and the relative paths of its files.
std::vector<std::string> make_gen_dataset(const test::fs::path& origin) {
    const auto gen = test::run({kCli, "gen", origin.string(), "--files", "120", "--classes", "3"});
    REQUIRE(gen.status == 0);
    return test::list_files(origin);
}

// Reads every file of the mount again and again on its own thread until destroyed.
class Readers {
public:
    Readers(const test::fs::path& mount, std::vector<std::string> files)
        : thread_([this, mount, files = std::move(files)] {
              while (!stop_)
                  for (const auto& file : files) (void)test::read_file(mount / file);
          }) {}
    ~Readers() {
        stop_ = true;
        thread_.join();
    }

private:
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

std::vector<std::string> split(const std::string& text, const std::string& separator) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t at; (at = text.find(separator, start)) != std::string::npos; start = at + separator.size())
        parts.push_back(text.substr(start, at - start));
    if (start < text.size()) parts.push_back(text.substr(start));
    return parts;
}

// Cells of a table line: separated by two or more spaces ("1.2 MiB" is one cell).
std::vector<std::string> cells(const std::string& line) {
    std::vector<std::string> out;
    for (auto& cell : split(line, "  "))
        if (auto start = cell.find_first_not_of(' '); start != std::string::npos) out.push_back(cell.substr(start));
    return out;
}

bool is_number(std::string text) {
    std::erase(text, ',');
    if (text.empty()) return false;
    char* end = nullptr;
    std::strtod(text.c_str(), &end);
    return *end == '\0';
}

// The lines of `frame` that start with `prefix`.
std::vector<std::string> lines_starting(const std::string& frame, const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& line : split(frame, "\n"))
        if (line.starts_with(prefix)) out.push_back(line);
    return out;
}

// Writes the plan file as a loader does: the order, then fsync (the plan applies).
void write_plan(const test::fs::path& mount, const std::vector<std::string>& files) {
    std::string plan;
    for (const auto& file : files) plan += file + "\n";
    const int fd = ::open((mount / ".tiercache" / "plan").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, plan.data(), plan.size()) == static_cast<ssize_t>(plan.size()));
    CHECK(::fsync(fd) == 0);
    ::close(fd);
}

}  // namespace

TEST_CASE("stats --watch draws a frame per interval with a row per tier and per job, rates after the first", "[mount][cli][watch]") {
    test::TempDir dir;
    const auto files = make_gen_dataset(dir / "origin");
    test::fs::create_directories(dir / "nvme");
    // Kernel cache off: every read reaches the cache, so the tiers' counters move.
    test::Mount mnt(dir / "origin", dir / "mnt",
                    {"--dram", "4MiB", "--nvme", (dir / "nvme").string() + ":64MiB", "--kernel-cache", "off"});
    write_plan(mnt.path(), files);
    REQUIRE(mnt.stats()["plan"]["jobs"].get<int>() >= 1);
    const bool per_job = mnt.stats().contains("jobs");  // the daemon's own per-job counters, where it has them

    test::CommandResult watch;
    {
        Readers readers(mnt.path(), files);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        watch = test::run({kCli, "stats", "--watch", "--count", "3", "--interval", "0.2", mnt.path().string()}, 60);
    }
    INFO(watch.output);
    REQUIRE(watch.status == 0);
    CHECK(watch.output.find('\x1b') == std::string::npos);  // a pipe: plain text
    const auto frames = split(watch.output, "\n\n");
    REQUIRE(frames.size() == 3);
    for (std::size_t f = 0; f < frames.size(); ++f) {
        const std::string& frame = frames[f];
        INFO("frame " << f);
        CHECK(frame.starts_with("tiercache stats '" + mnt.path().string() + "'   up "));
        const auto origin = lines_starting(frame, "origin  ");
        REQUIRE(origin.size() == 1);
        const auto dram = lines_starting(frame, "dram  "), nvme = lines_starting(frame, "nvme  ");
        REQUIRE(dram.size() == 1);
        REQUIRE(nvme.size() == 1);
        const auto job_table = split(frame, "\njob  ");
        REQUIRE(job_table.size() == 2);
        const auto job_rows = split(job_table[1], "\n");
        CHECK(job_rows.size() >= 2);  // the header's tail, then a row per job
        if (per_job)  // this process wrote the plan and reads: its own row
            CHECK_THAT(job_table[1], Catch::Contains("\npid " + std::to_string(::getpid()) + "  "));
        else
            CHECK_THAT(job_table[1], Catch::Contains("with a plan"));
        for (const auto& row : {dram[0], nvme[0]}) {
            const auto c = cells(row);
            REQUIRE(c.size() == 9);  // tier, used, capacity, used %, hit %, hits/s, MB/s, evictions/s, admitted/s
            for (std::size_t i = 5; i < 9; ++i) {
                INFO(row);
                if (f == 0)
                    CHECK(c[i] == "-");
                else
                    CHECK(is_number(c[i]));
            }
        }
        const auto o = cells(origin[0]);  // origin, "X MB/s", "Y reads/s", "(totals)"
        REQUIRE(o.size() >= 3);
        CHECK(is_number(split(o[1], " ")[0]) == (f > 0));
        CHECK(is_number(split(o[2], " ")[0]) == (f > 0));
    }
    // The readers hit the cache while it watched: some tier served reads in the last frames.
    const auto last_dram = cells(lines_starting(frames[2], "dram  ")[0]), last_nvme = cells(lines_starting(frames[2], "nvme  ")[0]);
    std::string dram_hits = last_dram[5], nvme_hits = last_nvme[5];
    std::erase(dram_hits, ',');
    std::erase(nvme_hits, ',');
    CHECK(std::stod(dram_hits) + std::stod(nvme_hits) > 0);
    CHECK(mnt.stop() == 0);
}

TEST_CASE("stats --watch exits 1 with a message where there is no mount, and when the daemon dies", "[mount][cli][watch]") {
    test::TempDir dir;
    const auto not_mount = test::run({kCli, "stats", "--watch", "--count", "2", "--interval", "0.1", dir.path().string()});
    CHECK(not_mount.status == 1);
    CHECK_THAT(not_mount.output, Catch::Contains("is not a tiercache mount"));
    const auto missing = test::run({kCli, "stats", "--watch", (dir / "nowhere").string()});
    CHECK(missing.status == 1);
    CHECK_THAT(missing.output, Catch::Contains("does not exist"));
    const auto json = test::run({kCli, "stats", "--watch", "--json", dir.path().string()});
    CHECK(json.status != 0);  // one or the other

    const auto files = make_gen_dataset(dir / "origin");
    test::Mount mnt(dir / "origin", dir / "mnt", {"--dram", "16MiB"});
    // The daemon is killed below: its dead mount is taken away on every way out.
    struct LazyUnmount {
        test::fs::path path;
        ~LazyUnmount() {
            if (test::is_mounted(path)) test::run({"fusermount3", "-u", "-z", path.string()}, 20);
        }
    } unmount{mnt.path()};
    // Its output goes to a file, so the daemon is killed once two frames are out, however slow
    // this machine (a sanitizer build on 2 loaded cores) is.
    const test::fs::path out = dir / "watch.out";
    test::CommandResult watch;
    std::thread watcher([&] {
        watch = test::run({"sh", "-c", "exec \"$0\" stats --watch --interval 0.1 \"$1\" >\"$2\" 2>&1", kCli,
                           mnt.path().string(), out.string()},
                          120);
    });
    auto text_of = [](const test::fs::path& path) {
        const test::Bytes bytes = test::read_file(path).bytes;  // none while it does not exist
        return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    };
    auto frames_out = [&] { return split(text_of(out), "\n\n").size() >= 2; };
    for (int i = 0; i < 600 && !frames_out(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const int killed = mnt.signal_and_wait(SIGKILL);
    watcher.join();
    CHECK(killed == 128 + SIGKILL);
    watch.output = text_of(out);
    INFO(watch.output);
    CHECK(watch.status == 1);
    CHECK_THAT(watch.output, Catch::Contains("tiercache stats: cannot read") && Catch::Contains("has tiercache-fuse exited"));
    CHECK(split(watch.output, "\n\n").size() >= 2);  // it drew frames before
}

TEST_CASE("on a terminal stats --watch redraws in place and restores it and warm draws its bar, on a pipe neither writes escape codes", "[mount][cli][watch][progress]") {
    test::TempDir dir;
    make_gen_dataset(dir / "origin");
    test::Mount mnt(dir / "origin", dir / "mnt", {"--dram", "64MiB"});
    // script(1) gives the command a pseudo-terminal and copies what it wrote to ours (a pipe).
    auto on_terminal = [&](const std::string& command) {
        return test::run({"script", "-qec", command, "/dev/null"}, 60);
    };
    const auto watch = on_terminal(kCli + " stats --watch --count 2 --interval 0.1 " + mnt.path().string());
    INFO(watch.output);
    CHECK(watch.status == 0);
    const auto enter = watch.output.find("\x1b[?1049h"), leave = watch.output.rfind("\x1b[?1049l");
    REQUIRE(enter != std::string::npos);
    REQUIRE(leave != std::string::npos);
    CHECK(enter < leave);
    CHECK(watch.output.find("\x1b[?25h", enter) != std::string::npos);  // the cursor is back
    CHECK(watch.output.find("\x1b[H", enter) < leave);                 // frames drawn in place
    CHECK(watch.output.find("tiercache stats", leave) != std::string::npos);  // the last frame stays on the screen

    // Ctrl-C (SIGINT, here from timeout) ends the view and gives the terminal back too.
    const auto interrupted = on_terminal("timeout --foreground -s INT 5 " + kCli + " stats --watch --interval 0.1 " + mnt.path().string());
    INFO(interrupted.output);
    CHECK(interrupted.status == 124);  // timeout's: it sent the signal
    const auto entered = interrupted.output.find("\x1b[?1049h");
    REQUIRE(entered != std::string::npos);
    CHECK(interrupted.output.find("\x1b[?25h\x1b[?1049l", entered) != std::string::npos);

    const auto warm_terminal = on_terminal(kCli + " warm " + mnt.path().string());
    INFO(warm_terminal.output);
    CHECK(warm_terminal.status == 0);
    CHECK_THAT(warm_terminal.output, Catch::Contains("\r[====================] 100%") && Catch::Contains("MB/s  ETA 0:00  files 120/120"));

    const auto warm_pipe = test::run({kCli, "warm", mnt.path().string()});
    INFO(warm_pipe.output);
    CHECK(warm_pipe.status == 0);
    CHECK(warm_pipe.output.find('\x1b') == std::string::npos);
    CHECK(warm_pipe.output.find('\r') == std::string::npos);
    CHECK(warm_pipe.output.find("[=") == std::string::npos);
    CHECK_THAT(warm_pipe.output, Catch::StartsWith("tiercache warm: read 120 files,"));
    CHECK(mnt.stop() == 0);
}
