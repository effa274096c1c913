#include "file_list.hpp"

#include <algorithm>
#include <stdexcept>
#include <system_error>

#include "human.hpp"

namespace tiercache::cli {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& what, const fs::path& path, std::error_code ec) {
    throw std::runtime_error("cannot " + what + " " + quoted(path) + ": " + ec.message());
}

// True for a regular file or a link to one; a dangling link is not a file.
bool is_file(const fs::directory_entry& entry) {
    std::error_code ec;
    const bool file = entry.is_regular_file(ec);
    if (ec && ec != std::errc::no_such_file_or_directory) fail("stat", entry.path(), ec);
    return file;
}

}  // namespace

std::vector<ListedFile> list_files(const fs::path& root, const fs::path& skip, bool with_sizes) {
    const fs::path skip_normal = skip.lexically_normal();
    std::vector<ListedFile> files;
    std::error_code ec;

    const fs::file_status root_status = fs::status(root, ec);
    if (ec) fail("read", root, ec);
    if (root.lexically_normal() == skip_normal) return files;
    if (!fs::is_directory(root_status)) {
        if (fs::is_regular_file(root_status)) files.push_back({root, 0});
    } else {
        fs::recursive_directory_iterator it(root, ec), end;
        if (ec) fail("list", root, ec);
        while (it != end) {
            const fs::directory_entry& entry = *it;
            // Cheap name test first; normalising every path would cost ~1 s per million.
            if (entry.path().filename() == skip_normal.filename() &&
                entry.path().lexically_normal() == skip_normal) {
                it.disable_recursion_pending();
            } else if (is_file(entry)) {
                files.push_back({entry.path(), 0});
            }
            // An error here is almost always the directory we were about to enter.
            const fs::path current = entry.path();
            it.increment(ec);
            if (ec) fail("list", current, ec);
        }
    }

    std::sort(files.begin(), files.end(), [](const ListedFile& a, const ListedFile& b) {
        return a.path.native() < b.path.native();  // byte order, not locale order
    });
    if (with_sizes) {
        for (auto& file : files) {
            file.size = fs::file_size(file.path, ec);
            if (ec) fail("stat", file.path, ec);
        }
    }
    return files;
}

}  // namespace tiercache::cli
