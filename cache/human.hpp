// Formatting numbers, sizes and paths for people.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace tiercache::cli {

// 1536 -> "1.5 KiB", 0 -> "0 B" (binary units, one decimal).
std::string human_bytes(double bytes);

// 1234567 -> "1,234,567".
std::string with_commas(std::uint64_t n);

// A count and its noun: (1, "file") -> "1 file", (10000, "file") -> "10,000 files".
std::string count_of(std::uint64_t n, const std::string& noun);

// A number with thousands separators and no decimals: 41234.7 -> "41,235".
std::string rounded(double x);

// A rate for tables and bars: one decimal below 10, else as rounded(): 3.25 -> "3.2", 1234.5 -> "1,235".
std::string rate_number(double x);

// 75.5 -> "1m16s", 3.2 -> "3.2s": for ETAs and durations.
std::string human_duration(double seconds);

// A path in single quotes for messages. File names may hold any byte but '/' and NUL, so
// newlines and control bytes, which would garble a terminal line, are written as \n or
// \xNN; other bytes (invalid UTF-8 included) pass through unchanged.
std::string quoted(const std::filesystem::path& path);

}  // namespace tiercache::cli
