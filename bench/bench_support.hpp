// What the benchmark programs share: medians, a scratch folder removed at the end, and an
// origin with a fixed latency per read.
#pragma once
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <tiercache/origin.hpp>

namespace tiercache::bench {

// A workload's rows in the bench orchestrator's format (bench/summarize.py), written to `path`.
inline void write_result_json(const std::string& path, const std::string& workload, const std::string& title,
                              const std::string& setup, nlohmann::ordered_json rows) {
    nlohmann::ordered_json out;
    out["workload"] = workload;
    out["title"] = title;
    out["setup"] = setup;
    out["rows"] = std::move(rows);
    std::ofstream f(path);
    f << out.dump(2) << "\n";
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
}

// Figures are medians of several runs (these machines are noisy).
inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// A folder under the temp directory named PREFIX-XXXXXX, removed with what it holds.
struct TempFolder {
    std::filesystem::path path;
    explicit TempFolder(const std::string& prefix) {
        std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
        path = tmpl;
    }
    TempFolder(const TempFolder&) = delete;
    TempFolder& operator=(const TempFolder&) = delete;
    ~TempFolder() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

// An origin that sleeps `delay` before every read: a remote store's latency, without its CPU.
// The cache reads a sample whole in one read, so that is one delay per sample fetched.
class SlowOrigin : public tiercache::Origin {
public:
    SlowOrigin(std::filesystem::path root, std::chrono::microseconds delay) : Origin(std::move(root)), delay_(delay) {}

protected:
    std::size_t read_impl(const std::string& relpath, std::uint64_t offset, std::span<std::byte> dest,
                          tiercache::AfterRead after) override {
        if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
        return Origin::read_impl(relpath, offset, dest, after);
    }

private:
    std::chrono::microseconds delay_;
};

}  // namespace tiercache::bench
