// A record index: the records (record.hpp) a packed dataset holds, by path, as a file that
// `tiercache index` writes for a dataset of tar shards and a loader turns into the records of
// its plans (resolve()). Each entry names its member, for people and for loaders that group
// a WebDataset sample's members by name.
//
// The file is JSON Lines (UTF-8: a path or member name that is not cannot be written):
//   {"format":"tiercache-record-index","version":1}
//   {"path":"shards/train-000.tar","offset":1536,"length":700,"member":"000001.jpg"}
//   ...
// one line per record after the header; "path" is relative to the dataset's root as the
// catalog names it; bytes [offset, offset + length) of that file are the member's data.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <istream>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "catalog.hpp"
#include "record.hpp"
#include "detail/unique_fd.hpp"

namespace tiercache {

class RecordIndex {
public:
    static constexpr const char* kFormat = "tiercache-record-index";
    // Bump when a reader of this version would misread a newer file: a key removed, renamed or
    // given a new meaning. A new key that old readers may ignore (they do) needs no bump.
    static constexpr std::uint64_t kVersion = 1;

    struct Entry {
        std::string path;  // relative to the dataset's root, as Catalog::find takes it
        std::uint64_t offset = 0;
        std::uint64_t length = 0;
        std::string member;  // its name inside the shard

        friend bool operator==(const Entry&, const Entry&) = default;
    };

    RecordIndex() = default;
    explicit RecordIndex(std::vector<Entry> entries) : entries_(std::move(entries)) {}

    const std::vector<Entry>& entries() const noexcept { return entries_; }
    void add(Entry entry) { entries_.push_back(std::move(entry)); }

    // Reads an index file. Throws std::runtime_error "FILE:LINE: what is wrong" on the first
    // bad line, or naming FILE when it cannot be read.
    static RecordIndex load(const std::filesystem::path& file) {
        std::ifstream in(file, std::ios::binary);
        if (!in) throw std::runtime_error("cannot read record index '" + file.string() + "': " + std::strerror(errno));
        RecordIndex index = read(in, file.string());
        if (in.bad()) throw std::runtime_error("cannot read record index '" + file.string() + "': " + std::strerror(errno));
        return index;
    }

    // load() from a stream; `name` stands for the file in errors.
    static RecordIndex read(std::istream& in, const std::string& name) {
        RecordIndex index;
        std::string line;
        Line at{name, 0};
        while (std::getline(in, line)) {
            ++at.number;
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const nlohmann::json::parse_error& e) {
                at.fail(std::string("not JSON: ") + e.what());
            }
            if (!j.is_object()) at.fail("not a JSON object: " + excerpt(line));
            if (at.number == 1) {
                if (!j.contains("format") || j["format"] != kFormat)
                    at.fail(std::string("not a tiercache record index: the first line must be {\"format\":\"") + kFormat +
                         "\",\"version\":" + std::to_string(kVersion) + "}, not " + excerpt(line));
                const std::uint64_t version = number_at(j, "version", at);
                if (version != kVersion)
                    at.fail("version " + std::to_string(version) + ", but this tiercache reads version " +
                         std::to_string(kVersion) + " (written by a newer tiercache?)");
                continue;
            }
            Entry e;
            e.path = string_at(j, "path", at);
            e.offset = number_at(j, "offset", at);
            e.length = number_at(j, "length", at);
            e.member = string_at(j, "member", at);
            index.entries_.push_back(std::move(e));
        }
        if (at.number == 0) throw std::runtime_error(name + ": empty, not a tiercache record index (no header line)");
        return index;
    }

    // The header line, then one line per entry. Throws std::runtime_error naming the entry
    // whose path or member is not UTF-8 (JSON strings are Unicode).
    void write(std::ostream& out) const {
        out << nlohmann::ordered_json{{"format", kFormat}, {"version", kVersion}}.dump() << '\n';
        for (std::size_t i = 0; i < entries_.size(); ++i) {
            const Entry& e = entries_[i];
            const nlohmann::ordered_json j{{"path", e.path}, {"offset", e.offset}, {"length", e.length}, {"member", e.member}};
            try {
                out << j.dump() << '\n';
            } catch (const nlohmann::json::type_error& err) {
                throw std::runtime_error("record index entry " + std::to_string(i + 1) + " (a member of " + quoted_path(e.path) +
                                         "): its path or member name is not UTF-8: " + err.what());
            }
        }
    }

    // Writes the index to `file` so that a reader sees the old file or the whole new one, never
    // a part: a temporary file beside it, fsync'ed, renamed over it. Throws std::runtime_error
    // naming the file (nothing is left behind then).
    void save(const std::filesystem::path& file) const {
        std::ostringstream text;
        write(text);
        const std::string bytes = std::move(text).str();
        const std::string temp = file.string() + ".tmp." + std::to_string(::getpid());
        auto fail = [&](const std::string& what, int err) {
            ::unlink(temp.c_str());
            throw std::runtime_error("cannot write record index '" + file.string() + "': " + what + ": " + std::strerror(err));
        };
        detail::UniqueFd fd{::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)};
        if (!fd) fail("create " + temp, errno);
        for (std::size_t done = 0; done < bytes.size();) {
            const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail("write", errno);
            done += static_cast<std::size_t>(n);
        }
        if (::fsync(fd.get()) != 0) fail("fsync", errno);
        fd.reset();
        if (::rename(temp.c_str(), file.c_str()) != 0) fail("rename " + temp, errno);
    }

    // The entries as records of `catalog`, in order. Throws std::invalid_argument naming the
    // first entry whose path is not a file of the catalog or whose range is not inside it.
    std::vector<Record> resolve(const Catalog& catalog) const {
        std::vector<Record> records;
        records.reserve(entries_.size());
        for (std::size_t i = 0; i < entries_.size(); ++i) {
            const Entry& e = entries_[i];
            const std::string which = "tiercache: record index entry " + std::to_string(i + 1) + " (member " +
                                      quoted_path(e.member) + " of " + quoted_path(e.path) + "): ";
            const auto id = catalog.find(e.path);
            if (!id) throw std::invalid_argument(which + quoted_path(e.path) + " is not a file of the dataset");
            const Record r{*id, e.offset, e.length};
            if (std::string problem = record_problem(catalog, r); !problem.empty()) throw std::invalid_argument(which + problem);
            records.push_back(r);
        }
        return records;
    }

private:
    std::vector<Entry> entries_;

    static std::string quoted_path(const std::string& s) { return "'" + s + "'"; }

    // A line in an error, cut short: a malformed line may be a whole binary file.
    static std::string excerpt(const std::string& line) { return line.size() <= 80 ? line : line.substr(0, 80) + "..."; }

    // Where load() is, for its errors.
    struct Line {
        const std::string& file;
        std::uint64_t number;
        [[noreturn]] void fail(const std::string& what) const {
            throw std::runtime_error(file + ":" + std::to_string(number) + ": " + what);
        }
    };

    static std::string string_at(const nlohmann::json& j, const char* key, const Line& at) {
        const auto it = j.find(key);
        if (it == j.end()) at.fail(std::string("missing key \"") + key + "\"");
        if (!it->is_string()) at.fail(std::string("\"") + key + "\" is " + it->dump() + ", not a string");
        return it->get<std::string>();
    }

    // A JSON number that is a uint64: nlohmann keeps a negative integer signed and one above
    // 2^64 - 1 (or any with a fraction or an exponent) as a double.
    static std::uint64_t number_at(const nlohmann::json& j, const char* key, const Line& at) {
        const auto it = j.find(key);
        if (it == j.end()) at.fail(std::string("missing key \"") + key + "\"");
        const std::string is = std::string("\"") + key + "\" is " + it->dump();
        if (it->is_number_unsigned()) return it->get<std::uint64_t>();
        if (it->is_number_integer()) at.fail(is + ": negative");
        if (it->is_number_float() && it->get<double>() >= 18446744073709551616.0) at.fail(is + ": too large (above 2^64 - 1)");
        at.fail(is + ": not a non-negative integer");
    }
};

}  // namespace tiercache
