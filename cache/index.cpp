#include "index.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <cstdio>
#include <iostream>
#include <locale.h>
#include <memory>
#include <stdexcept>
#include <string>

#include <tiercache/catalog.hpp>

#include "human.hpp"

namespace tiercache::cli {

namespace fs = std::filesystem;

namespace {

// libarchive gives a member's name as UTF-8 only when it can convert to it from the locale's
// charset; in the C locale a non-ASCII name has none. For as long as it lives, this thread
// runs in C.UTF-8: pax names (UTF-8) pass unchanged, and GNU/ustar names (raw bytes, which
// Python's tarfile and GNU tar write as UTF-8) are taken as UTF-8.
class Utf8Locale {
public:
    Utf8Locale() : locale_(::newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0))) {
        if (locale_ != static_cast<locale_t>(0)) previous_ = ::uselocale(locale_);
    }
    ~Utf8Locale() {
        if (locale_ == static_cast<locale_t>(0)) return;
        ::uselocale(previous_);
        ::freelocale(locale_);
    }
    Utf8Locale(const Utf8Locale&) = delete;
    Utf8Locale& operator=(const Utf8Locale&) = delete;

private:
    locale_t locale_;
    locale_t previous_ = static_cast<locale_t>(0);
};

struct ArchiveFree {
    void operator()(archive* a) const noexcept { archive_read_free(a); }
};

void index_shard(const fs::path& file, const std::string& relpath, std::uint64_t size, RecordIndex& index,
                 IndexCounts& counts) {
    const std::string shard = "shard " + cli::quoted(relpath);
    std::unique_ptr<archive, ArchiveFree> owner(archive_read_new());
    if (!owner) throw std::bad_alloc();
    archive* a = owner.get();
    archive_read_support_format_tar(a);  // ustar, pax, GNU and v7
    // Every filter, so that a compressed shard is recognised and refused as such rather than
    // called "not a tar".
    archive_read_support_filter_all(a);
    auto error = [&]() { return std::string(archive_error_string(a) ? archive_error_string(a) : "unknown libarchive error"); };

    if (archive_read_open_filename(a, file.c_str(), 64 * 1024) != ARCHIVE_OK)
        throw std::runtime_error(shard + ": cannot read it as a tar archive: " + error());
    if (archive_filter_code(a, 0) != ARCHIVE_FILTER_NONE)
        throw std::runtime_error(shard + ": compressed (" + archive_filter_name(a, 0) +
                                 "): a byte range of a compressed shard is not a member; store shards uncompressed");

    std::string last = "(none: at the first header)";
    for (;;) {
        archive_entry* entry = nullptr;
        const int r = archive_read_next_header(a, &entry);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) throw std::runtime_error(shard + ": corrupt or truncated after member " + last + ": " + error());
        const char* raw = archive_entry_pathname(entry);
        const std::string raw_name = raw ? raw : "";
        last = cli::quoted(raw_name);

        if (archive_entry_hardlink(entry) != nullptr) {  // before the type: a hard link's type is a regular file's
            ++counts.hard_links;
            continue;
        }
        switch (archive_entry_filetype(entry)) {
            case AE_IFREG: break;
            case AE_IFDIR: ++counts.directories; continue;
            case AE_IFLNK: ++counts.symlinks; continue;
            default: ++counts.others; continue;
        }
        const std::string member = shard + " member " + last;
        const char* name = archive_entry_pathname_utf8(entry);
        if (name == nullptr) throw std::runtime_error(member + ": the name is not UTF-8, which the index (JSON) cannot hold");
        if (r == ARCHIVE_WARN) std::fprintf(stderr, "tiercache index: %s: %s\n", member.c_str(), error().c_str());
        if (archive_entry_sparse_count(entry) > 0)
            throw std::runtime_error(member + " is sparse: its data is not stored as one byte range of the shard");

        // The data's offset is what the filter has consumed once the header is read: libarchive
        // reads a member's headers (a pax or GNU long-name header, then the ustar one) and stops
        // at its data. archive_read_header_position() would be the start of the first of those
        // headers. Tar data starts on a 512-byte block: anything else means this reasoning does
        // not hold for the shard, so it is refused rather than indexed wrong.
        const la_int64_t offset = archive_filter_bytes(a, 0);
        const la_int64_t length = archive_entry_size(entry);
        if (offset < 0 || offset % 512 != 0 || length < 0)
            throw std::runtime_error(member + ": libarchive puts its data at offset " + std::to_string(offset) +
                                     " (length " + std::to_string(length) + "), not on a 512-byte block");
        const auto end = static_cast<std::uint64_t>(offset) + static_cast<std::uint64_t>(length);
        if (end > size)
            throw std::runtime_error(shard + ": truncated: member " + last + " ends at byte " + std::to_string(end) +
                                     ", past the end of the file (" + std::to_string(size) + " bytes)");
        index.add({relpath, static_cast<std::uint64_t>(offset), static_cast<std::uint64_t>(length), name});
        ++counts.records;
        counts.bytes += static_cast<std::uint64_t>(length);
        // The next header's read skips the data (a seek, not a read).
    }
}

}  // namespace

RecordIndex index_shards(const fs::path& dir, IndexCounts& counts) {
    const ScanResult scan = scan_origin(dir);  // the catalog's relative paths, in its order
    const Utf8Locale utf8;
    RecordIndex index;
    for (const auto& sample : scan.samples) {
        if (!sample.path.ends_with(".tar")) continue;
        ++counts.shards;
        index_shard(dir / sample.path, sample.path, sample.size, index, counts);
    }
    return index;
}

void run_index(const IndexOptions& options) {
    IndexCounts counts;
    const RecordIndex index = index_shards(options.dir, counts);
    if (options.output.empty()) {
        index.write(std::cout);
        std::cout.flush();
        if (!std::cout) throw std::runtime_error("cannot write the index to stdout");
    } else {
        index.save(options.output);
    }
    auto count = [](std::uint64_t n, const char* one, const char* many) { return n == 1 ? std::string("1 ") + one : with_commas(n) + " " + many; };
    std::fprintf(stderr, "tiercache index: %s, %s, %s bytes (%s); skipped %s, %s, %s, %s\n",
                 count(counts.shards, "shard", "shards").c_str(), count(counts.records, "record", "records").c_str(),
                 with_commas(counts.bytes).c_str(), human_bytes(static_cast<double>(counts.bytes)).c_str(),
                 count(counts.directories, "directory", "directories").c_str(), count(counts.symlinks, "symlink", "symlinks").c_str(),
                 count(counts.hard_links, "hard link", "hard links").c_str(), count(counts.others, "other member", "other members").c_str());
    if (counts.shards == 0) std::fprintf(stderr, "tiercache index: no .tar file under %s\n", quoted(options.dir).c_str());
}

}  // namespace tiercache::cli
