// Test support: temporary trees, deterministic bytes, running commands, and a real mount
// that is unmounted on every way out of a test (fusermount3 -u, then lazy, then kill).
#pragma once
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>
#include <tiercache/log.hpp>

namespace test {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;

// An ASan or TSan build: 10-20x slower, and it intercepts some calls (mlock). Tests that
// depend on timing or on those calls scale down or say what they cannot show.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif

// Deterministic bytes: different for every (seed, n).
inline Bytes make_bytes(std::uint64_t seed, std::size_t n) {
    Bytes out(n);
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + n);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, n - i));
    }
    return out;
}

inline void write_file(const fs::path& path, const Bytes& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

// Reads a whole file with open/read/close, the way a data loader does; errno on failure.
struct ReadResult {
    int error = 0;
    Bytes bytes;
};
inline ReadResult read_file(const fs::path& path) {
    ReadResult r;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) { r.error = errno; return r; }
    thread_local std::vector<std::byte> chunk(1 << 20);  // 1 MiB reads, as loaders do
    for (;;) {
        const ssize_t n = ::read(fd, chunk.data(), chunk.size());
        if (n < 0) { r.error = errno; break; }
        if (n == 0) break;
        r.bytes.insert(r.bytes.end(), chunk.begin(), chunk.begin() + n);
    }
    ::close(fd);
    return r;
}

inline Bytes slurp(const fs::path& path) {
    ReadResult r = read_file(path);
    if (r.error) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(r.error));
    return r.bytes;
}

inline constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

// A whole file as text ("" where it cannot be read).
inline std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// Polls `pred` every 10 ms until it holds or `timeout` passes; its last answer. For what the
// mount or the owner does in its own time (a plan applied, a dead client noticed).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

// This build tree's tag (tests/CMakeLists.txt): in the name of every test folder, so that
// tests/no-mounts-left.sh unmounts only what this build's tests left, never another build's.
#ifndef TIERCACHE_TEST_TAG
#error "TIERCACHE_TEST_TAG is not defined: tests/CMakeLists.txt defines it for the test programs"
#endif
inline constexpr const char* kTestTag = TIERCACHE_TEST_TAG;

// A directory under `parent` (/tmp by default), removed with everything in it at the end of the test.
class TempDir {
public:
    explicit TempDir(const fs::path& parent = fs::temp_directory_path()) {
        std::string tmpl = (parent / ("tiercache-test-" + std::string(kTestTag) + "-XXXXXX")).string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp in " + parent.string() + " failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        // Undo chmod 000 a test may have made, so removal works.
        for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
            if (!it->is_symlink()) fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

private:
    fs::path path_;
};

// Runs a command (no shell); returns its exit status and what it printed on stdout+stderr.
struct CommandResult {
    int status = -1;  // exit code, or 128 + signal
    std::string output;
};
inline CommandResult run(const std::vector<std::string>& argv, int timeout_s = 60) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipe_fds[1], 1);
        ::dup2(pipe_fds[1], 2);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    CommandResult result;
    std::thread reader([&] {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) result.output.append(buf, static_cast<std::size_t>(n));
    });
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    reader.join();
    ::close(pipe_fds[0]);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

// Waits up to `timeout_s` for child `pid` to end: its exit status (128 + signal when killed),
// and `pid` becomes -1; or -1 when it is still running.
inline int wait_exit(pid_t& pid, int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            pid = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
}

// Whether `path` is the root of a FUSE mount right now (from /proc/self/mountinfo).
inline bool is_mounted(const fs::path& path) {
    std::ifstream info("/proc/self/mountinfo");
    std::string line;
    const std::string want = " " + fs::weakly_canonical(path).string() + " ";
    while (std::getline(info, line))
        if (line.find(want) != std::string::npos && line.find(" - fuse") != std::string::npos) return true;
    return false;
}

inline std::string fuse_binary() { return TIERCACHE_FUSE_BIN; }

// A tiercache-fuse mount running in the foreground as a child process. Unmounted on every
// path out of the test: fusermount3 -u, then a lazy unmount, then SIGKILL of the daemon.
class Mount {
public:
    // `prefix` runs before the daemon (e.g. {"setpriv", "--bounding-set", "-dac_override"}).
    // `positional`: pass ORIGIN and MOUNTPOINT on the command line (false: a --config gives them).
    Mount(const fs::path& origin, const fs::path& mountpoint, std::vector<std::string> options = {},
          std::vector<std::string> prefix = {}, bool positional = true)
        : mountpoint_(mountpoint), log_(mountpoint.string() + ".log") {
        fs::create_directories(mountpoint_);
        std::vector<std::string> argv = std::move(prefix);
        argv.push_back(fuse_binary());
        if (positional) argv.insert(argv.end(), {origin.string(), mountpoint_.string()});
        argv.insert(argv.end(), {"-f", "--log", log_.string()});
        argv.insert(argv.end(), options.begin(), options.end());
        pid_ = ::fork();
        if (pid_ == 0) {
            const int null = ::open("/dev/null", O_RDWR);
            ::dup2(null, 0);
            std::vector<char*> args;
            for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
            args.push_back(nullptr);
            ::execvp(args[0], args.data());
            ::_exit(127);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (!is_mounted(mountpoint_)) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("tiercache-fuse exited before mounting: " + log());
            }
            if (std::chrono::steady_clock::now() > deadline) {
                stop();
                throw std::runtime_error("tiercache-fuse did not mount within 60 s: " + log());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    ~Mount() { stop(); }

    const fs::path& path() const { return mountpoint_; }
    fs::path operator/(const std::string& rel) const { return mountpoint_ / rel; }
    pid_t pid() const { return pid_; }

    nlohmann::json stats() const { return nlohmann::json::parse(read_text(mountpoint_ / ".tiercache/stats")); }

    std::string log() const { return read_text(log_); }

    // Sends `sig` and waits for the daemon; its exit status (or 128 + signal), -1 on timeout.
    int signal_and_wait(int sig, int timeout_s = 20) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, sig);
        return wait_exit(timeout_s);
    }

    // Unmounts and waits for the daemon; returns its exit status.
    int stop() {
        if (pid_ <= 0) return 0;
        if (is_mounted(mountpoint_)) run({"fusermount3", "-u", mountpoint_.string()}, 20);
        int status = wait_exit(20);
        if (status == -1) {  // still running: take the mount away lazily, then the daemon
            run({"fusermount3", "-u", "-z", mountpoint_.string()}, 20);
            ::kill(pid_, SIGKILL);
            status = wait_exit(20);
        }
        if (is_mounted(mountpoint_)) run({"fusermount3", "-u", "-z", mountpoint_.string()}, 20);
        return status;
    }

private:
    int wait_exit(int timeout_s) { return test::wait_exit(pid_, timeout_s); }

    fs::path mountpoint_;
    fs::path log_;
    pid_t pid_ = -1;
};

// The relative paths of every regular file under `root` (following nothing), sorted.
inline std::vector<std::string> list_files(const fs::path& root) {
    std::vector<std::string> out;
    for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
        if (it->is_regular_file() && !it->is_symlink()) out.push_back(fs::relative(it->path(), root).string());
    std::sort(out.begin(), out.end());
    return out;
}

// A tree with the names that break careless code, and sizes around the 128 KiB READ size.
inline std::vector<std::string> make_tricky_tree(const fs::path& root, std::uint64_t seed = 1) {
    const std::vector<std::pair<std::string, std::size_t>> files = {
        {"plain.bin", 1000},
        {"with space.jpg", 110 * 1024},
        {"new\nline.jpg", 5000},
        {std::string("bad-utf8-\xff\xfe.bin"), 4096},
        {"\xc3\xbcnic\xc3\xb8" "de.JPEG", 131072},
        {"-leading-dash", 131073},
        {"#hash;semi'quote\"", 17},
        {"empty", 0},
        {"one", 1},
        {std::string(255, 'L'), 3000},
        {"class a/img 1.jpg", 64 * 1024},
        {"class a/img 2.jpg", 300 * 1024},
        {"class\tb/x", 1024 * 1024 + 3},
        {"class\tb/big", 3 * 1024 * 1024 + 11},
        {"deep/er/and/deeper/still/file", 4097},
        {"emptydir-sibling/f", 10},
        {".hidden/.file", 777},
    };
    std::vector<std::string> names;
    std::uint64_t i = seed;
    for (const auto& [name, size] : files) {
        write_file(root / name, make_bytes(i++, size));
        names.push_back(name);
    }
    fs::create_directories(root / "empty dir");
    std::sort(names.begin(), names.end());
    return names;
}

// Every log line written while it lives goes to a temporary file the test can read.
class LogCapture {
public:
    LogCapture() : file_(std::tmpfile()) {
        if (file_ == nullptr) throw std::runtime_error("tmpfile failed");
        tiercache::set_log_file(file_);
    }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;
    ~LogCapture() {
        tiercache::set_log_file(stderr);
        std::fclose(file_);
    }
    std::string text() const {
        std::fflush(file_);
        std::rewind(file_);
        std::string out;
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) out.append(buf, n);
        return out;
    }

private:
    std::FILE* file_;
};

}  // namespace test
