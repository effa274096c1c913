// A live one-line progress display on stderr, and the bar it draws.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

namespace tiercache::cli {

// True when stderr is a terminal: progress lines are for people, never for logs or pipes.
bool stderr_is_terminal();

// The rate of a growing count over the last `window_s` seconds: recent speed, not the
// average since the start (a warm that met cached files first would otherwise promise an
// ETA it cannot keep). Unknown (nullopt) until samples span `min_span_s`.
class SlidingRate {
public:
    explicit SlidingRate(double window_s = 5.0, double min_span_s = 0.5) : window_s_(window_s), min_span_s_(min_span_s) {}

    // `seconds` from any fixed start (steady clock), never decreasing; `count` the total so far.
    void add(double seconds, double count);
    std::optional<double> per_second() const;

private:
    double window_s_, min_span_s_;
    std::deque<std::pair<double, double>> samples_;  // (seconds, count), oldest first
};

// What a progress bar shows. A pure value, so the text is a pure function of it (tested).
struct ProgressFigures {
    std::uint64_t bytes_done = 0, bytes_total = 0;
    std::optional<double> bytes_per_s;  // unknown at first: "- MB/s", "ETA -"
    std::uint64_t files_done = 0, files_total = 0;  // files_total 0: no files part
    std::uint64_t failed = 0;
};

// "[=========>          ] 42%  1.2 GiB / 2.9 GiB  350 MB/s  ETA 0:05  files 4,200/10,000"
std::string progress_text(const ProgressFigures& figures);

// "[=====>    ]": `width` cells between the brackets, '>' at the head while not done.
std::string progress_bar(double fraction, std::size_t width = 20);

// The time left at `per_second` as "0:05", "12:34" or "1:02:03"; "-" when the rate is
// unknown or zero.
std::string eta_text(double left, std::optional<double> per_second);

// Redraws the text that render() returns, about 5 times a second, on one stderr line
// from a background thread. render() runs on that thread (and once more in finish(), after
// the thread has ended), so it must only read atomics or otherwise thread-safe state, or
// state only it touches. Disabled, it does nothing at all.
class ProgressLine {
public:
    ProgressLine(bool enabled, std::function<std::string()> render);
    ~ProgressLine();
    ProgressLine(const ProgressLine&) = delete;
    ProgressLine& operator=(const ProgressLine&) = delete;

    // Stops redrawing, draws the final state once more and ends the line.
    void finish();

private:
    void run();
    void draw();

    bool enabled_;
    std::function<std::string()> render_;
    std::mutex mutex_;                // protects stopping_
    std::condition_variable wake_;
    bool stopping_ = false;
    std::size_t last_width_ = 0;      // only touched by whoever draws: run(), then finish()
    std::thread thread_;              // last: starts after everything above is ready
};

}  // namespace tiercache::cli
