#include "progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "human.hpp"

namespace tiercache::cli {

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void SlidingRate::add(double seconds, double count) {
    samples_.emplace_back(seconds, count);
    // Keep one sample at or before the window's start, so the window is always covered.
    while (samples_.size() > 2 && samples_[1].first <= seconds - window_s_) samples_.pop_front();
}

std::optional<double> SlidingRate::per_second() const {
    if (samples_.size() < 2) return std::nullopt;
    const auto& [t0, c0] = samples_.front();
    const auto& [t1, c1] = samples_.back();
    if (t1 - t0 < min_span_s_) return std::nullopt;
    return (c1 - c0) / (t1 - t0);
}

std::string progress_bar(double fraction, std::size_t width) {
    if (!std::isfinite(fraction)) fraction = 0;
    fraction = std::clamp(fraction, 0.0, 1.0);
    const auto filled = static_cast<std::size_t>(fraction * static_cast<double>(width));
    std::string bar = "[" + std::string(filled, '=');
    if (filled < width) bar += filled > 0 || fraction > 0 ? ">" : " ";
    bar.resize(width + 1, ' ');
    return bar + "]";
}

std::string eta_text(double left, std::optional<double> per_second) {
    if (left <= 0) return "0:00";
    if (!per_second || !(*per_second > 0) || !std::isfinite(*per_second)) return "-";
    const double seconds = std::ceil(left / *per_second);
    if (seconds > 100.0 * 3600) return ">99h";
    const auto s = static_cast<long>(seconds);
    char text[32];
    if (s < 3600)
        std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
    else
        std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    return text;
}

std::string progress_text(const ProgressFigures& f) {
    const double done = static_cast<double>(f.bytes_done), total = static_cast<double>(f.bytes_total);
    // Nothing to read is done; floor, so that 100% means every byte.
    const double fraction = f.bytes_total == 0 ? 1.0 : std::min(done / total, 1.0);
    char percent[8];
    std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(std::floor(fraction * 100)));
    std::string rate = "-";
    if (f.bytes_per_s && std::isfinite(*f.bytes_per_s)) rate = rate_number(std::max(*f.bytes_per_s, 0.0) / 1e6);
    std::string line = progress_bar(fraction) + " " + percent + "  " + human_bytes(done) + " / " + human_bytes(total) +
                       "  " + rate + " MB/s  ETA " + eta_text(total - done, f.bytes_per_s);
    if (f.files_total > 0) line += "  files " + with_commas(f.files_done) + "/" + with_commas(f.files_total);
    if (f.failed > 0) line += "  " + with_commas(f.failed) + " failed";
    return line;
}

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
    std::string text = render_();
    // A line wider than the terminal wraps, and '\r' would then redraw only its last part.
    winsize size{};
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && text.size() >= size.ws_col)
        text.resize(size.ws_col - 1u);
    // Pad with spaces to wipe the tail of a longer previous line.
    const std::size_t pad = last_width_ > text.size() ? last_width_ - text.size() : 0;
    std::fprintf(stderr, "\r%s%*s", text.c_str(), static_cast<int>(pad), "");
    std::fflush(stderr);
    last_width_ = text.size();
}

}  // namespace tiercache::cli
