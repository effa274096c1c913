// libFuzzer target: parse_size (include/tiercache/size.hpp), and format_size of what it returns.
// Invariants: the only exception is std::invalid_argument, naming the text; a size that parses
// is written back in bytes and parses to the same number; a percentage never exceeds its whole;
// format_size never crashes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include <tiercache/size.hpp>

namespace {
[[noreturn]] void broken(const char* what, std::string_view text) {
    std::fprintf(stderr, "fuzz_size: %s: '%.*s'\n", what, static_cast<int>(text.size()), text.data());
    std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The first 8 bytes (when there are more than 8) are the whole a percentage is taken of.
    std::uint64_t whole = 0;
    if (size > 8) {
        std::memcpy(&whole, data, 8);
        data += 8;
        size -= 8;
    }
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const std::uint64_t w : {std::uint64_t{0}, whole}) {
        std::uint64_t bytes = 0;
        try {
            bytes = tiercache::parse_size(text, w);
        } catch (const std::invalid_argument& e) {
            if (std::string_view(e.what()).find("invalid size '") != 0) broken("an error that does not name the text", text);
            continue;
        } catch (...) {
            broken("an exception other than std::invalid_argument", text);
        }
        (void)tiercache::format_size(bytes);
        const bool percent = text.find('%') != std::string_view::npos;
        if (percent && w == 0) broken("a percentage accepted without a whole", text);
        if (percent && w < (std::uint64_t{1} << 52) && bytes > w) broken("a percentage larger than its whole", text);
        // Round trip: the exact byte count, written plainly, parses to itself.
        const std::string plain = std::to_string(bytes);
        std::uint64_t again = 0;
        try {
            again = tiercache::parse_size(plain, 0);
        } catch (...) {
            if (bytes < (std::uint64_t{1} << 53)) broken("a parsed size that does not parse back", text);  // doubles above 2^53 round
            continue;
        }
        if (bytes < (std::uint64_t{1} << 53) && again != bytes) broken("a parsed size that parses back to another", text);
    }
    return 0;
}
