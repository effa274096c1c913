// --metrics-textfile DIR: the mount's metrics written to DIR/tiercache_<mount>.prom every few
// seconds, for node_exporter's textfile collector (--collector.textfile.directory=DIR).
//
// Each write goes to a hidden temporary file in DIR, is fsynced and renamed over the .prom
// file, so the collector never reads half a file (it reads only *.prom) and a crash never
// leaves an empty one. The file goes at unmount; after a kill -9 it stays, and node_exporter's
// node_textfile_mtime_seconds shows how stale it is. A failed write after the mount is logged
// (the first, then at most one a minute, then the recovery) and never ends the mount.
#pragma once
#include <cerrno>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>

#include <tiercache/log.hpp>

namespace tiercache::fuse {

class MetricsTextfile {
public:
    static constexpr double kDefaultIntervalSeconds = 15;
    static constexpr std::chrono::seconds kLogEvery{60};

    // The file's name for a mount at `mountpoint`: tiercache_mnt_ds.prom for /mnt/ds. Letters,
    // digits and '.' stay, '/' becomes '_', every other byte '-' and two hex digits, so two
    // mountpoints never share a file (/mnt/a_b, /mnt/a/b and /mnt/a-b would with '_' for all).
    static std::string file_name(std::string_view mountpoint) {
        static constexpr char kHex[] = "0123456789abcdef";
        std::string name;
        for (const char c : mountpoint) {
            const auto byte = static_cast<unsigned char>(c);
            if (name.empty() && c == '/') continue;
            if (std::isalnum(byte) != 0 || c == '.') name += c;
            else if (c == '/') name += '_';
            else name += {'-', kHex[byte >> 4], kHex[byte & 15]};
        }
        return "tiercache_" + (name.empty() ? std::string("root") : name) + ".prom";
    }

    // Checks `dir` now, by writing a file there: throws std::runtime_error naming the directory
    // and the reason when it is missing, not a directory or not writable. `render` gives the text.
    MetricsTextfile(const std::filesystem::path& dir, std::string_view mountpoint, double interval_s,
                    std::function<std::string()> render)
        : interval_(std::chrono::duration<double>(interval_s)), render_(std::move(render)) {
        if (!(interval_s > 0)) throw std::invalid_argument("metrics interval must be more than 0 seconds, not " + std::to_string(interval_s));
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec))
            throw std::runtime_error("--metrics-textfile '" + dir.string() + "': " +
                                     (std::filesystem::exists(dir, ec) ? "not a directory" : "no such directory"));
        const std::filesystem::path abs = std::filesystem::canonical(dir, ec);  // the daemon moves to / later
        if (ec) throw std::runtime_error("--metrics-textfile '" + dir.string() + "': " + ec.message());
        path_ = abs / file_name(mountpoint);
        temp_ = abs / ("." + file_name(mountpoint) + "." + std::to_string(::getpid()) + ".tmp");
        if (const std::string error = write_file(""); !error.empty()) {  // a probe: the real content comes with start()
            ::unlink(temp_.c_str());
            throw std::runtime_error("--metrics-textfile '" + dir.string() + "': " + error);
        }
        ::unlink(path_.c_str());
    }
    MetricsTextfile(const MetricsTextfile&) = delete;
    MetricsTextfile& operator=(const MetricsTextfile&) = delete;
    ~MetricsTextfile() { stop(); }

    const std::filesystem::path& path() const { return path_; }

    // Writes now, then every interval, on a thread of its own (after fuse_daemonize).
    void start() {
        std::lock_guard lock(mutex_);
        if (!thread_.joinable() && !stopping_) thread_ = std::thread([this] { run(); });
    }

    // Stops writing and removes the file.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            if (stopping_ && !thread_.joinable()) return;
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
        ::unlink(temp_.c_str());
        if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
            log(LogLevel::warn, "metrics textfile: cannot remove '", path_.string(), "': ", std::strerror(errno));
    }

    // One write; "" on success, else what failed (logged, rate-limited).
    std::string write_now() {
        const std::string error = write_file(render_());
        const auto now = std::chrono::steady_clock::now();
        if (error.empty()) {
            if (failures_ > 0) log(LogLevel::info, "metrics textfile: '", path_.string(), "' written again after ", failures_, " failed writes");
            failures_ = 0;
            return error;
        }
        if (failures_++ == 0 || now - last_log_ >= kLogEvery) {
            log(LogLevel::warn, "metrics textfile: ", error, failures_ > 1 ? " (" + std::to_string(failures_) + " failed writes so far)" : "");
            last_log_ = now;
        }
        return error;
    }

private:
    void run() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            lock.unlock();
            write_now();
            lock.lock();
            wake_.wait_for(lock, interval_, [this] { return stopping_; });
        }
    }

    // `text` to the temporary file, fsynced, renamed over the .prom file ("" for the probe:
    // no rename). What failed, or "".
    std::string write_file(const std::string& text) {
        auto fail = [&](const char* what) {
            std::string message = std::string(what) + " '" + temp_.string() + "': " + std::strerror(errno);
            ::unlink(temp_.c_str());
            return message;
        };
        // A fresh file, never through a link someone planted in a shared directory.
        ::unlink(temp_.c_str());
        const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) return fail("cannot create");
        for (std::size_t done = 0; done < text.size();) {
            const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                const int err = errno;
                ::close(fd);
                errno = err;
                return fail("cannot write");
            }
            done += static_cast<std::size_t>(n);
        }
        if (::fsync(fd) != 0) {
            const int err = errno;
            ::close(fd);
            errno = err;
            return fail("cannot fsync");
        }
        if (::close(fd) != 0) return fail("cannot close");
        if (text.empty()) return ::unlink(temp_.c_str()) == 0 ? "" : fail("cannot remove");
        if (::rename(temp_.c_str(), path_.c_str()) != 0) return fail("cannot rename");
        return "";
    }

    std::filesystem::path path_, temp_;
    const std::chrono::duration<double> interval_;
    const std::function<std::string()> render_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;  // protected by mutex_
    std::thread thread_;
    // The writer thread's alone (and the caller's of write_now before start()).
    std::uint64_t failures_ = 0;
    std::chrono::steady_clock::time_point last_log_{};
};

}  // namespace tiercache::fuse
