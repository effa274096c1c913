// The stats file's shape is an add-only contract (DESIGN.md section 4), so the report
// prints what it knows in a fixed layout and tolerates missing fields ("-") and unknown
// ones (listed after, or left to --json).
#include "stats_cmd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <tiercache/cache.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "human.hpp"
#include "table.hpp"
#include "watch.hpp"

namespace tiercache::cli {

namespace fs = std::filesystem;
using Json = StatsJson;

namespace {

// The stats file is generated on each read and a FUSE daemon may report any st_size for
// it, so read to EOF rather than trusting the size.
std::string read_all(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int error = errno;
        std::string message = "cannot read " + quoted(path) + ": " + std::strerror(error);
        if (error == ENOTCONN) message += " (has tiercache-fuse exited? unmount with fusermount3 -u)";
        throw std::runtime_error(message);
    }
    std::string text;
    char buffer[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int error = errno;
            ::close(fd);
            throw std::runtime_error("cannot read " + quoted(path) + ": " + std::strerror(error));
        }
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return text;
}

std::optional<double> number(const Json& object, const char* key) { return stats_number(object, key); }

std::string count_or_dash(const std::optional<double>& n) { return n ? rounded(*n) : "-"; }
std::string bytes_or_dash(const std::optional<double>& n) { return n ? human_bytes(*n) : "-"; }

std::string percent(double part, double whole) { return percent_text(part, whole); }

// A scalar as a person reads it: integers with separators, strings unquoted.
std::string scalar_text(const Json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_number_unsigned()) return with_commas(value.get<std::uint64_t>());
    if (value.is_number_integer()) return rounded(value.get<double>());
    if (value.is_number_float()) {
        char text[32];
        std::snprintf(text, sizeof text, "%.4g", value.get<double>());
        return text;
    }
    return value.dump();
}

bool is_scalar(const Json& value) { return value.is_primitive(); }

void print_tiers(const Json& tiers) {
    static const std::set<std::string> in_table{"capacity_bytes", "used_bytes", "hits", "misses",
                                                "bytes_read", "evictions"};
    Table table;
    table.add_row({"tier", "capacity", "used", "used %", "hits", "misses", "hit rate", "bytes read",
                   "evictions"});
    std::vector<std::string> extras;  // tier counters the table has no column for
    for (const auto& [name, tier] : tiers.items()) {
        const auto capacity = number(tier, "capacity_bytes");
        const auto used = number(tier, "used_bytes");
        const auto hits = number(tier, "hits");
        const auto misses = number(tier, "misses");
        table.add_row({name, bytes_or_dash(capacity), bytes_or_dash(used),
                       capacity && used ? percent(*used, *capacity) : "-", count_or_dash(hits),
                       count_or_dash(misses), hits && misses ? percent(*hits, *hits + *misses) : "-",
                       bytes_or_dash(number(tier, "bytes_read")), count_or_dash(number(tier, "evictions"))});
        if (!tier.is_object()) continue;
        std::string line;
        for (const auto& [key, value] : tier.items()) {
            if (in_table.count(key) || !is_scalar(value)) continue;
            line += (line.empty() ? "" : ", ") + key + " " + scalar_text(value);
        }
        if (!line.empty()) extras.push_back(name + ": " + line);
    }
    table.print(stdout);
    for (const auto& line : extras) std::printf("  %s\n", line.c_str());
}

void print_fuse_requests(const Json& fuse) {
    const auto requests = fuse.find("requests");
    if (requests == fuse.end() || !requests->is_object() || requests->empty()) return;
    std::printf("\nFUSE requests\n");
    Table table;
    double total = 0;
    for (const auto& [opcode, count] : requests->items()) {
        table.add_row({opcode, is_scalar(count) ? scalar_text(count) : "-"});
        if (count.is_number()) total += count.get<double>();
    }
    table.add_row({"total", rounded(total)});
    table.print(stdout, "  ");
}

void print_report(const std::string& what, const Json& stats) {
    std::printf("tiercache stats for %s\n\n", what.c_str());

    if (const auto tiers = stats.find("tiers"); tiers != stats.end() && tiers->is_object())
        print_tiers(*tiers);
    else
        std::printf("(no tiers)\n");
    std::printf("\n");

    Table summary(Table::Values::left);
    if (const auto origin = stats.find("origin"); origin != stats.end() && origin->is_object()) {
        std::string text = bytes_or_dash(number(*origin, "bytes_read")) + " read";
        if (const auto reads = number(*origin, "reads")) text += " in " + rounded(*reads) + " reads";
        if (const auto errors = number(*origin, "errors")) text += ", " + rounded(*errors) + " errors";
        summary.add_row({"origin", text});
    }
    if (const auto samples = number(stats, "samples")) {
        std::string text = rounded(*samples);
        if (const auto bytes = number(stats, "dataset_bytes")) text += " (dataset " + human_bytes(*bytes) + ")";
        summary.add_row({"samples", text});
    } else if (const auto bytes = number(stats, "dataset_bytes")) {
        summary.add_row({"dataset", human_bytes(*bytes)});
    }
    if (const auto policy = stats.find("policy"); policy != stats.end() && is_scalar(*policy))
        summary.add_row({"policy", scalar_text(*policy)});

    if (const auto plan = stats.find("plan"); plan != stats.end() && plan->is_object()) {
        const auto samples = number(*plan, "samples");
        const auto jobs = number(*plan, "jobs").value_or(0);
        summary.add_row({"plan", samples && *samples > 0 ? rounded(*samples) + " samples this epoch" +
                                                               (jobs > 1 ? " (" + rounded(jobs) + " jobs)" : std::string())
                                                         : "none"});
    }
    if (const auto prefetch = stats.find("prefetch"); prefetch != stats.end() && prefetch->is_object()) {
        if (const auto issued = number(*prefetch, "issued"); issued && *issued > 0) {
            std::string text = rounded(*issued) + " issued";
            for (const char* key : {"fetched", "resident", "raced", "rejected", "errors"})
                if (const auto n = number(*prefetch, key); n && *n > 0) text += ", " + rounded(*n) + " " + key;
            if (const auto bytes = number(*prefetch, "bytes")) text += " (" + human_bytes(*bytes) + ")";
            summary.add_row({"prefetch", text});
        }
    }
    if (const auto loader = stats.find("loader"); loader != stats.end() && loader->is_object()) {
        if (const auto batches = number(*loader, "batches"); batches && *batches > 0) {
            std::string text = rounded(*batches) + " batches";
            if (const auto stall = number(*loader, "stall_fraction")) text += ", stalled " + percent(*stall, 1.0) + " of the time";
            summary.add_row({"loader", text});
        }
    }

    // Any other top-level field: scalars are shown, nested ones are left to --json.
    if (const auto share = stats.find("share"); share != stats.end() && share->is_object()) {
        if (const auto name = share->find("name"); name != share->end() && name->is_string() && !name->get<std::string>().empty())
            summary.add_row({"shared as", name->get<std::string>() + ": " + rounded(number(*share, "connections").value_or(0)) +
                                              " connections, " + rounded(number(*share, "jobs").value_or(0)) + " jobs attached"});
    }

    static const std::set<std::string> known{"tiers", "origin", "samples", "dataset_bytes", "extents", "extent_bytes", "policy", "fuse", "plan", "prefetch", "loader", "share"};
    std::string nested;
    for (const auto& [key, value] : stats.items()) {
        if (known.count(key)) continue;
        if (is_scalar(value))
            summary.add_row({key, scalar_text(value)});
        else
            nested += (nested.empty() ? "" : ", ") + key;
    }
    const auto fuse = stats.find("fuse");
    const bool has_fuse = fuse != stats.end() && fuse->is_object();
    if (has_fuse)
        for (const auto& [key, value] : fuse->items())
            if (is_scalar(value)) summary.add_row({"fuse " + key, scalar_text(value)});
    summary.print(stdout);

    if (has_fuse) print_fuse_requests(*fuse);
    if (!nested.empty()) std::printf("\n(more in --json: %s)\n", nested.c_str());
}

}  // namespace

std::optional<double> stats_number(const Json& object, const char* key) {
    if (!object.is_object()) return std::nullopt;
    const auto it = object.find(key);
    if (it == object.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::string percent_text(double part, double whole) {
    if (whole <= 0) return "-";
    char text[16];
    std::snprintf(text, sizeof text, "%.1f%%", 100.0 * part / whole);
    return text;
}

Json read_mount_stats(const fs::path& mount) {
    const fs::path stats_path = mount / ".tiercache" / "stats";
    std::error_code ec;
    if (!fs::exists(mount, ec) && !ec) throw std::runtime_error(quoted(mount) + " does not exist");
    if (!ec && !fs::exists(stats_path, ec) && !ec)
        throw std::runtime_error(mount.string() + " is not a tiercache mount (no " + stats_path.string() + ")");
    // Other failures (a dead daemon: ENOTCONN) are reported by the read itself.

    const std::string text = read_all(stats_path);
    Json stats;
    try {
        stats = Json::parse(text);
    } catch (const Json::parse_error& e) {
        throw std::runtime_error(quoted(stats_path) + " is not valid JSON: " + e.what());
    }
    if (!stats.is_object()) throw std::runtime_error(quoted(stats_path) + " is not a JSON object");
    return stats;
}

void run_stats(const StatsOptions& options) {
    if (!options.attach.empty()) {  // a shared cache: its owner's stats, through the channel
        tiercache::AttachOptions attach;
        attach.dir = options.segment_dir;
        auto cache = tiercache::Cache::attach(options.attach, attach);
        auto snapshot = [&] { return Json::parse(tiercache::to_json(cache.stats()).dump()); };
        const std::string what = "shared cache '" + options.attach + "'";
        if (options.watch) return run_watch(what, snapshot, {options.interval_s, options.count});
        const Json stats = snapshot();
        if (options.json)
            std::printf("%s\n", stats.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
        else
            print_report(what, stats);
        return;
    }
    const fs::path& mount = options.mountpoint;
    if (options.watch) return run_watch(quoted(mount), [&] { return read_mount_stats(mount); }, {options.interval_s, options.count});
    const Json stats = read_mount_stats(mount);
    if (options.json)
        std::printf("%s\n", stats.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    else
        print_report(quoted(mount), stats);
}

}  // namespace tiercache::cli
