// Byte sizes as users write them: "512MiB", "2GiB", "1.5GB", "4096", or "10%" of a whole.
#pragma once
#include <cctype>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unistd.h>

namespace tiercache {

// Parses `text` into bytes. A percentage is taken of `whole` (RAM, or a filesystem's size);
// `whole` = 0 means percentages are not allowed here. Throws std::invalid_argument naming the text.
inline std::uint64_t parse_size(std::string_view text, std::uint64_t whole = 0) {
    auto fail = [&](const std::string& why) -> std::uint64_t {
        throw std::invalid_argument("invalid size '" + std::string(text) + "': " + why);
    };
    std::string_view s = text;
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    std::size_t digits = 0;
    bool seen_point = false;
    while (digits < s.size() && (std::isdigit(static_cast<unsigned char>(s[digits])) || (s[digits] == '.' && !seen_point))) {
        seen_point |= s[digits] == '.';
        ++digits;
    }
    if (digits == 0 || (digits == 1 && seen_point)) return fail("expected a number, like 512MiB, 2GiB or 10%");
    const std::string figures(s.substr(0, digits));
    double number = 0;
    try {
        number = std::stod(figures);
    } catch (const std::out_of_range&) {  // beyond a double: too large, or so small it is 0
        if (figures.substr(0, figures.find('.')).find_first_not_of('0') != std::string::npos) return fail("too large");
    }
    std::string unit(s.substr(digits));
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));

    double multiplier = 0;
    if (unit == "%") {
        if (whole == 0) return fail("a percentage is not allowed here");
        if (number > 100) return fail("a percentage cannot exceed 100%");
        multiplier = static_cast<double>(whole) / 100.0;
    } else {
        struct Unit { const char* name; double factor; };
        static constexpr Unit units[] = {
            {"", 1}, {"b", 1},
            {"k", 1024.0}, {"kib", 1024.0}, {"kb", 1e3},
            {"m", 1048576.0}, {"mib", 1048576.0}, {"mb", 1e6},
            {"g", 1073741824.0}, {"gib", 1073741824.0}, {"gb", 1e9},
            {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12},
        };
        for (const auto& u : units)
            if (unit == u.name) multiplier = u.factor;
        if (multiplier == 0)
            return fail("unknown unit '" + std::string(s.substr(digits)) + "' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB or N%)");
    }
    const double bytes = number * multiplier;
    if (!std::isfinite(bytes) || bytes >= 18446744073709551615.0) return fail("too large");
    return static_cast<std::uint64_t>(bytes);
}

// "1.5 GiB": for logs, stats and errors.
inline std::string format_size(std::uint64_t bytes) {
    static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 5) { v /= 1024.0; ++u; }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return buf;
}

// Physical memory of this host, the whole that "--dram 10%" is taken of.
inline std::uint64_t physical_memory_bytes() {
    return static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace tiercache
