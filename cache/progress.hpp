// A live one-line progress display on stderr.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace tiercache::cli {

// True when stderr is a terminal: progress lines are for people, never for logs or pipes.
bool stderr_is_terminal();

// Redraws the text that render() returns, about 5 times a second, on one stderr line
// from a background thread. render() runs on that thread, so it must only read
// atomics or otherwise thread-safe state. Disabled, it does nothing at all.
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
