// One line per event, to stderr or a file chosen by the daemon. Cheap when unused.
#pragma once
#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <sstream>
#include <string>

namespace tiercache {

enum class LogLevel { debug, info, warn, error };

namespace detail {
struct LogSink {
    std::mutex mutex;                      // keeps lines from different threads whole
    std::FILE* file = stderr;              // protected by mutex
    std::atomic<LogLevel> min_level{LogLevel::info};
};
inline LogSink& log_sink() {
    static LogSink sink;
    return sink;
}
}  // namespace detail

inline void set_log_file(std::FILE* f) {
    std::lock_guard lock(detail::log_sink().mutex);
    detail::log_sink().file = f;
}
inline void set_log_level(LogLevel l) { detail::log_sink().min_level = l; }

template <class... Args>
void log(LogLevel level, const Args&... args) {
    auto& sink = detail::log_sink();
    if (level < sink.min_level) return;
    static constexpr const char* names[] = {"debug", "info", "warn", "error"};
    std::ostringstream line;
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    ::localtime_r(&now, &local);  // not std::localtime: its static buffer races between threads
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &local);
    line << stamp << " tiercache " << names[static_cast<int>(level)] << ": ";
    (line << ... << args);
    line << '\n';
    std::lock_guard lock(sink.mutex);
    std::fputs(line.str().c_str(), sink.file);
    std::fflush(sink.file);
}

}  // namespace tiercache
