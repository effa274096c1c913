// The plan file's text (plan_file.hpp: how it is written, committed and read back), parsed
// and checked line by line as its bytes arrive.
//
// The text is one of two kinds, never both:
//   - keys for the built-in sampler: `seed=42 epoch=3`, optionally `rank=R world=W
//     drop_last=0|1` (DistributedSampler's meaning), separated by spaces, tabs or newlines.
//     seed and epoch are required; values are decimal digits only (seed and epoch up to
//     2^64-1, rank and world up to 2^32-1, world >= 1, rank < world). An unknown key, a key
//     given twice, a value that is not a number or does not fit is an error.
//   - paths, one per line, relative to the dataset root, '/' separated, as the catalog names
//     them (`n01440764/n01440764_10026.JPEG`). Each must name a file of the dataset: not an
//     absolute path, no empty, "." or ".." component, not a directory, no byte below 0x20 but
//     tab and no 0x7F (so no NUL; file names with other control bytes cannot be planned), at
//     most PATH_MAX (4096) bytes. A path may repeat (DistributedSampler pads that way).
//     A line may instead name a record, bytes of a file: `PATH OFFSET LENGTH`, the path then
//     one or more spaces or tabs and two decimal numbers so separated (a tar shard's member:
//     `tiercache index` lists them). A line naming a file whole is that file, even if it
//     looks like a record. The range must lie inside the file (offset + length <= its size).
// The first non-blank line decides the kind: it is keys when it looks like `name=value` words
// and does not name a file of the dataset. Blank lines (only spaces and tabs) are ignored but
// counted. A '\n' ends a line; the last line may lack it.
#pragma once
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <tiercache/catalog.hpp>
#include <tiercache/record.hpp>

namespace tiercache::fuse {

// What a plan line names in the dataset.
struct PlanTarget {
    std::optional<SampleId> file;  // a file of the catalog
    bool directory = false;        // a directory of it
    std::uint64_t size = 0;        // the file's bytes
};
using PlanResolver = std::function<PlanTarget(std::string_view relpath)>;

// What `relpath` names in `catalog`: the mount's PlanResolver.
inline PlanTarget plan_target(const Catalog& catalog, std::string_view relpath) {
    if (auto id = catalog.find(relpath)) return {id, false, catalog.size_of(*id)};
    // Not a file: say whether it is a directory (Catalog::find walks the same way).
    DirId dir = kRootDir;
    while (!relpath.empty()) {
        const auto slash = relpath.find('/');
        const auto child = catalog.find_child(dir, relpath.substr(0, slash));
        if (!child || !child->is_dir) return {};
        dir = child->index;
        relpath.remove_prefix(slash == std::string_view::npos ? relpath.size() : slash + 1);
    }
    return {std::nullopt, true, 0};
}

// A plan read whole and checked.
struct ParsedPlan {
    enum class Kind { empty, seed, paths };
    Kind kind = Kind::empty;
    std::uint64_t seed = 0, epoch = 0;
    std::uint32_t rank = 0, world = 1;
    bool drop_last = false;
    std::vector<Record> records;  // paths: the order, a whole file as {id, 0, its size}
    bool any_record = false;      // some line was `PATH OFFSET LENGTH`
};

// Bytes shown in a log line or an error: at most `max` of them, non-printables as \xNN.
inline std::string escape_for_log(std::string_view text, std::size_t max = 80) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < text.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (text.size() > max) out += "... (" + std::to_string(text.size()) + " bytes)";
    return out;
}

// Reads a plan's text as it arrives, line by line; see the protocol above.
class PlanParser {
public:
    static constexpr std::size_t kMaxLine = PATH_MAX;  // bytes in a line, '\n' left out

    // Lines allowed: 4 per file (repeats, blanks) and, for plans of records, 4 per 4 KiB of
    // the dataset's `dataset_bytes` (its records' average size is far above that): what a
    // runaway writer can make the daemon hold stays below a tenth of the dataset's size.
    PlanParser(std::size_t samples, PlanResolver resolve, std::uint64_t dataset_bytes = 0)
        : samples_(samples), max_lines_(4 * samples + 16 + 4 * (dataset_bytes / 4096)), resolve_(std::move(resolve)) {}

    // Takes the next bytes of the text. 0, or an errno (EINVAL, EFBIG) with error() saying why.
    int feed(std::string_view bytes) {
        if (error_) return error_;
        while (!bytes.empty()) {
            const auto nl = bytes.find('\n');
            const std::string_view part = bytes.substr(0, nl);
            if (partial_.size() + part.size() > kMaxLine)  // too long, with or without its end
                return fail(EINVAL, line_no_ + 1, "longer than PATH_MAX (" + std::to_string(kMaxLine) + " bytes)",
                            partial_ + std::string(part.substr(0, 80)));
            if (nl == std::string_view::npos) {
                partial_ += part;
                break;
            }
            if (partial_.empty()) {
                if (const int err = line(part)) return err;
            } else {
                partial_ += part;
                const std::string whole = std::move(partial_);
                partial_.clear();
                if (const int err = line(whole)) return err;
            }
            bytes.remove_prefix(nl + 1);
        }
        return 0;
    }

    // The text is complete: parses a last line without '\n' and checks the whole.
    int finish() {
        if (error_) return error_;
        if (!partial_.empty()) {
            const std::string last = std::move(partial_);
            partial_.clear();
            if (const int err = line(last)) return err;
        }
        if (plan_.kind == ParsedPlan::Kind::seed) {
            for (const char* key : {"seed", "epoch"})
                if (!has(key)) return fail(EINVAL, 0, std::string("'") + key + "' is required (write seed=N epoch=N)", {});
            // rank and world are checked together as they come; a rank given without a world is
            // checked here, against the world of 1 it then has.
            if (plan_.rank >= plan_.world)
                return fail(EINVAL, 0, "rank " + std::to_string(plan_.rank) + " is outside a world of " + std::to_string(plan_.world) +
                                           " (world is 1 unless given: write world=N)", {});
        }
        return 0;
    }

    int error() const noexcept { return error_; }
    // The text so far ends inside a line (its '\n' has not come).
    bool mid_line() const noexcept { return !partial_.empty(); }
    const std::string& error_message() const noexcept { return message_; }
    ParsedPlan take() { return std::move(plan_); }

private:
    static constexpr const char* kKeys[] = {"seed", "epoch", "rank", "world", "drop_last"};

    static bool blank(std::string_view s) { return s.find_first_not_of(" \t") == std::string_view::npos; }

    // `name=value` words, names made of [A-Za-z0-9_], no '/'.
    static bool looks_like_keys(std::string_view s) {
        const auto start = s.find_first_not_of(" \t");
        const auto eq = s.find('=', start);
        if (eq == std::string_view::npos || eq == start || s.find('/') != std::string_view::npos) return false;
        for (std::size_t i = start; i < eq; ++i) {
            const char c = s[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
        }
        return true;
    }

    int line(std::string_view text) {
        ++line_no_;
        if (line_no_ > max_lines_)
            return fail(EFBIG, line_no_, "more lines than " + std::to_string(max_lines_) + " (4 x " + std::to_string(samples_) +
                                             " files + 16, + 4 per 4 KiB of the dataset)", {});
        for (std::size_t i = 0; i < text.size(); ++i) {
            const auto c = static_cast<unsigned char>(text[i]);
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(EINVAL, line_no_, "binary junk (byte " + escape_for_log(text.substr(i, 1)) + " at column " +
                                                  std::to_string(i + 1) + ")", text);
        }
        if (blank(text)) return 0;
        if (plan_.kind == ParsedPlan::Kind::empty) {
            // The first line decides: keys, unless it names a file.
            if (looks_like_keys(text) && !resolve_(text).file) plan_.kind = ParsedPlan::Kind::seed;
            else plan_.kind = ParsedPlan::Kind::paths;
        }
        return plan_.kind == ParsedPlan::Kind::seed ? key_line(text) : path_line(text);
    }

    int path_line(std::string_view text) {
        const PlanTarget whole = resolve_(text);
        if (whole.file) {
            plan_.records.push_back({*whole.file, 0, whole.size});
            return 0;
        }
        if (const auto record = record_form(text)) return record_line(text, *record);
        if (const int err = check_path(text)) return err;
        if (whole.directory) return fail(EINVAL, line_no_, "a directory, not a file", text);
        if (looks_like_keys(text)) return fail(EINVAL, line_no_, "a key=value line in a plan of paths (not both kinds in one plan)", text);
        return fail(EINVAL, line_no_, "no such file in the dataset", text);
    }

    // The path's components: relative, none empty, "." or "..". 0 or the error.
    int check_path(std::string_view path) {
        if (path.front() == '/') return fail(EINVAL, line_no_, "an absolute path (paths are relative to the dataset root)", path);
        for (std::string_view rest = path;;) {
            const auto slash = rest.find('/');
            const std::string_view part = rest.substr(0, slash);
            if (part.empty()) return fail(EINVAL, line_no_, "an empty path component", path);
            if (part == "." || part == "..") return fail(EINVAL, line_no_, "a '" + std::string(part) + "' component", path);
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
        }
        return 0;
    }

    // `PATH OFFSET LENGTH`, split: the last two words, if both are digits, and what precedes them.
    struct RecordForm {
        std::string_view path, offset, length;
    };
    static std::optional<RecordForm> record_form(std::string_view text) {
        auto last_word = [](std::string_view& s) -> std::optional<std::string_view> {
            const auto end = s.find_last_not_of(" \t");
            if (end == std::string_view::npos) return std::nullopt;
            const auto gap = s.find_last_of(" \t", end);
            if (gap == std::string_view::npos) return std::nullopt;  // no word before it
            const std::string_view word = s.substr(gap + 1, end - gap);
            if (word.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
            s = s.substr(0, s.find_last_not_of(" \t", gap) + 1);
            return word;
        };
        std::string_view rest = text;
        const auto length = last_word(rest);
        const auto offset = length ? last_word(rest) : std::nullopt;
        if (!offset || rest.empty()) return std::nullopt;
        return RecordForm{rest, *offset, *length};
    }

    int record_line(std::string_view text, const RecordForm& form) {
        if (const int err = check_path(form.path)) return err;
        const PlanTarget target = resolve_(form.path);
        if (!target.file)
            return fail(EINVAL, line_no_, target.directory ? "a record of a directory, not a file" : "a record of no file of the dataset ('" +
                                                                                                       escape_for_log(form.path) + "')",
                        text);
        std::uint64_t offset = 0, length = 0;
        for (auto [word, value, what] : {std::tuple{form.offset, &offset, "offset"}, std::tuple{form.length, &length, "length"}}) {
            const auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), *value);
            if (ec != std::errc() || ptr != word.data() + word.size())
                return fail(EINVAL, line_no_, std::string("the record's ") + what + " '" + escape_for_log(word) + "' does not fit in 64 bits", text);
        }
        if (length > UINT64_MAX - offset || offset + length > target.size)
            return fail(EINVAL, line_no_, "a record past the end of its file (" + std::to_string(target.size) + " bytes)", text);
        plan_.records.push_back({*target.file, offset, length});
        plan_.any_record = true;
        return 0;
    }

    int key_line(std::string_view text) {
        if (!looks_like_keys(text)) return fail(EINVAL, line_no_, "a path in a plan of key=value lines (not both kinds in one plan)", text);
        for (std::string_view rest = text; !rest.empty();) {
            const auto start = rest.find_first_not_of(" \t");
            if (start == std::string_view::npos) break;
            rest.remove_prefix(start);
            const auto end = rest.find_first_of(" \t");
            const std::string_view word = rest.substr(0, end);
            rest.remove_prefix(word.size());
            const auto eq = word.find('=');
            if (eq == std::string_view::npos) return fail(EINVAL, line_no_, "'" + escape_for_log(word) + "' is not key=value", text);
            const std::string_view key = word.substr(0, eq), value = word.substr(eq + 1);
            std::size_t k = 0;
            while (k < std::size(kKeys) && key != kKeys[k]) ++k;
            if (k == std::size(kKeys))
                return fail(EINVAL, line_no_, "unknown key '" + escape_for_log(key) + "' (use seed, epoch, rank, world, drop_last)", text);
            if (seen_ & (1u << k)) return fail(EINVAL, line_no_, "'" + std::string(key) + "' given twice", text);
            seen_ |= 1u << k;
            std::uint64_t v = 0;
            const std::uint64_t limit = k < 2 ? UINT64_MAX : k < 4 ? UINT32_MAX : 1;
            const bool digits = !value.empty() && value.find_first_not_of("0123456789") == std::string_view::npos;
            const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
            if (!digits || ec == std::errc::invalid_argument || ptr != value.data() + value.size())
                return fail(EINVAL, line_no_, "'" + std::string(key) + "' must be a decimal number, not '" + escape_for_log(value) + "'", text);
            if (ec == std::errc::result_out_of_range || v > limit)
                return fail(EINVAL, line_no_, "'" + std::string(key) + "=" + escape_for_log(value) + "' is out of range (at most " +
                                                  std::to_string(limit) + ")", text);
            switch (k) {
                case 0: plan_.seed = v; break;
                case 1: plan_.epoch = v; break;
                case 2: plan_.rank = static_cast<std::uint32_t>(v); break;
                case 3: plan_.world = static_cast<std::uint32_t>(v); break;
                default: plan_.drop_last = v != 0; break;
            }
            if (k == 3 && v == 0) return fail(EINVAL, line_no_, "'world' must be at least 1", text);
            if (has("rank") && has("world") && plan_.rank >= plan_.world)
                return fail(EINVAL, line_no_, "rank " + std::to_string(plan_.rank) + " is outside a world of " + std::to_string(plan_.world),
                            text);
        }
        return 0;
    }

    bool has(std::string_view key) const {
        for (std::size_t k = 0; k < std::size(kKeys); ++k)
            if (key == kKeys[k]) return (seen_ & (1u << k)) != 0;
        return false;
    }

    int fail(int code, std::size_t line, const std::string& reason, std::string_view text) {
        error_ = code;
        message_ = (line ? "line " + std::to_string(line) + ": " : std::string("end of plan: ")) + reason;
        if (!text.empty()) message_ += ": '" + escape_for_log(text) + "'";
        plan_ = {};
        partial_.clear();
        return code;
    }

    const std::size_t samples_;
    const std::size_t max_lines_;
    PlanResolver resolve_;
    ParsedPlan plan_;
    std::string partial_;        // a line whose '\n' has not come yet
    std::size_t line_no_ = 0;    // lines seen, blank ones included
    unsigned seen_ = 0;          // keys given, a bit each (kKeys order)
    int error_ = 0;
    std::string message_;
};

}  // namespace tiercache::fuse
