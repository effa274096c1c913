// Who a FUSE request comes from, as the mount keys jobs (tiercache/job.hpp): the process of
// the requesting thread, its parent, and whether it still runs, read from /proc.
#pragma once
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <tiercache/job.hpp>

namespace tiercache::fuse {

// A process, as the plan file keys jobs: its thread group id, and when it started (clock
// ticks after boot, from /proc/PID/stat; 0 if unknown), so that a reused pid is another job.
struct Process {
    JobId job = 0;
    std::uint64_t started = 0;
};

namespace proc {

inline std::string read_small(const std::string& path) {
    std::ifstream in(path);
    if (!in) return {};
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text;
}

// /proc/PID/stat's fields after "(comm)": [0] state (field 3), [17] num_threads (20),
// [19] starttime (22). comm may hold spaces and parentheses: the last ')' ends it. The views
// point into `stat`: keep it alive while they are used.
inline std::vector<std::string_view> stat_fields(std::string_view stat) {
    std::vector<std::string_view> out;
    const auto close = stat.rfind(')');
    if (close == std::string_view::npos) return out;
    stat.remove_prefix(close + 1);
    while (!stat.empty()) {
        const auto start = stat.find_first_not_of(" \n");
        if (start == std::string_view::npos) break;
        stat.remove_prefix(start);
        const auto end = stat.find_first_of(" \n");
        out.push_back(stat.substr(0, end));
        stat.remove_prefix(end == std::string_view::npos ? stat.size() : end);
    }
    return out;
}

std::vector<std::string_view> stat_fields(std::string&& stat) = delete;  // the views would outlive it

inline std::uint64_t number(std::string_view s) {
    std::uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
}

// A numeric field of /proc/PID/status ("Tgid", "PPid"); 0 if missing.
inline std::uint64_t status_field(std::string_view status, std::string_view name) {
    for (std::size_t at = 0; at < status.size();) {
        const auto end = std::min(status.find('\n', at), status.size());
        const std::string_view line = status.substr(at, end - at);
        if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
            const auto digits = line.find_first_of("0123456789", name.size());
            return digits == std::string_view::npos ? 0 : number(line.substr(digits));
        }
        at = end + 1;
    }
    return 0;
}

}  // namespace proc

// The process of thread `tid` (what FUSE says a request came from). Falls back to the tid
// itself when /proc does not tell; pid 0 (a caller outside the mount's PID namespace) is job 0.
inline Process process_of(pid_t tid) {
    if (tid <= 0) return {};
    Process p{static_cast<JobId>(tid), 0};
    const std::string status = proc::read_small("/proc/" + std::to_string(tid) + "/status");
    if (const std::uint64_t tgid = proc::status_field(status, "Tgid")) p.job = tgid;
    const std::string stat = proc::read_small("/proc/" + std::to_string(p.job) + "/stat");  // the fields are views into it
    const auto fields = proc::stat_fields(stat);
    if (fields.size() > 19) p.started = proc::number(fields[19]);
    return p;
}

// Who a reading thread is, to tell which job's prefetcher its reads move: its process and
// that process's parent (a DataLoader worker's parent is the process that wrote the plan).
// Zeros when /proc does not tell.
struct ReaderIds {
    JobId process = 0, parent = 0;
};
inline ReaderIds reader_of(pid_t tid) {
    if (tid <= 0) return {};
    const std::string status = proc::read_small("/proc/" + std::to_string(tid) + "/status");
    return {proc::status_field(status, "Tgid"), proc::status_field(status, "PPid")};
}

// Whether `p` still runs: not if kill(pid, 0) says ESRCH, nor if /proc shows a zombie with
// no thread left, or another process under the same pid (a later start time). When /proc
// cannot tell (hidepid, another user's process), it counts as running. Job 0 always runs.
inline bool process_alive(const Process& p) {
    if (p.job == 0 || p.job > static_cast<JobId>(INT_MAX)) return true;
    const auto pid = static_cast<pid_t>(p.job);
    if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
    const std::string stat = proc::read_small("/proc/" + std::to_string(pid) + "/stat");  // the fields are views into it
    const auto fields = proc::stat_fields(stat);
    if (fields.size() <= 19) return true;
    if ((fields[0] == "Z" || fields[0] == "X") && proc::number(fields[17]) <= 1) return false;
    return p.started == 0 || proc::number(fields[19]) == p.started;
}

}  // namespace tiercache::fuse
