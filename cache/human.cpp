#include "human.hpp"

#include <array>
#include <cmath>
#include <cstdio>

namespace tiercache::cli {

std::string human_bytes(double bytes) {
    static constexpr std::array units{"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    std::size_t unit = 0;
    while (std::fabs(bytes) >= 1024.0 && unit + 1 < units.size()) {
        bytes /= 1024.0;
        ++unit;
    }
    char text[32];
    if (unit == 0)
        std::snprintf(text, sizeof text, "%.0f B", bytes);
    else
        std::snprintf(text, sizeof text, "%.1f %s", bytes, units[unit]);
    return text;
}

std::string with_commas(std::uint64_t n) {
    std::string digits = std::to_string(n);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

std::string count_of(std::uint64_t n, const std::string& noun) {
    if (n == 1) return "1 " + noun;
    return with_commas(n) + " " + noun + (noun.ends_with('s') ? "es" : "s");  // files, classes
}

std::string rounded(double x) {
    if (!std::isfinite(x)) return "-";
    const std::string digits = with_commas(static_cast<std::uint64_t>(std::llround(std::fabs(x))));
    return x <= -0.5 ? std::string("-").append(digits) : digits;
}

std::string rate_number(double x) {
    if (x >= 10) return rounded(x);
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", x);
    return text;
}

std::string human_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    char text[32];
    if (seconds < 60) {
        std::snprintf(text, sizeof text, "%.1fs", seconds);
    } else if (seconds < 3600) {
        const long s = std::lround(seconds);
        std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
    } else {
        const long m = std::lround(seconds / 60);
        std::snprintf(text, sizeof text, "%ldh%02ldm", m / 60, m % 60);
    }
    return text;
}

std::string quoted(const std::filesystem::path& path) {
    std::string out = "'";
    for (const unsigned char c : path.native()) {
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "'";
}

}  // namespace tiercache::cli
