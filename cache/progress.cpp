#include "progress.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace tiercache::cli {

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

ProgressLine::ProgressLine(bool enabled, std::function<std::string()> render)
    : enabled_(enabled), render_(std::move(render)) {
    if (enabled_) thread_ = std::thread([this] { run(); });
}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::finish() {
    if (!thread_.joinable()) return;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
    draw();
    std::fputc('\n', stderr);
    std::fflush(stderr);
}

void ProgressLine::run() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_; }))
        draw();
}

void ProgressLine::draw() {
    const std::string text = render_();
    // Pad with spaces to wipe the tail of a longer previous line.
    const std::size_t pad = last_width_ > text.size() ? last_width_ - text.size() : 0;
    std::fprintf(stderr, "\r%s%*s", text.c_str(), static_cast<int>(pad), "");
    std::fflush(stderr);
    last_width_ = text.size();
}

}  // namespace tiercache::cli
