#include <catch2/catch.hpp>
#include <tiercache/catalog.hpp>
#include <tiercache/config.hpp>

#include "support.hpp"

using namespace tiercache;

namespace {

struct Placed {
    std::unique_ptr<Segment> segment;
    Catalog catalog;
    ScanResult scan;
};

Placed place(const test::fs::path& origin, const std::vector<std::string>& hidden = {}) {
    Placed p;
    p.scan = scan_origin(origin, hidden);
    p.segment = std::make_unique<Segment>("/dev/shm", p.scan.segment_bytes() + (1 << 20));
    p.catalog = Catalog::place(*p.segment, p.scan);
    return p;
}

}  // namespace

TEST_CASE("the catalog holds every regular file, tricky names included", "[catalog]") {
    test::TempDir dir;
    const auto names = test::make_tricky_tree(dir.path());
    Placed p = place(dir.path());
    const Catalog& c = p.catalog;

    REQUIRE(c.size() == names.size());
    std::uint64_t total = 0;
    for (const auto& name : names) {
        INFO("path: " << name);
        const auto id = c.find(name);
        REQUIRE(id);
        CHECK(c.path(*id) == name);
        CHECK(c.size_of(*id) == test::fs::file_size(dir.path() / name));
        total += c.size_of(*id);
    }
    CHECK(c.total_bytes() == total);
    CHECK(c.find("empty"));
    CHECK(c.size_of(*c.find("empty")) == 0);
    // Paths that would leave the dataset never match.
    CHECK_FALSE(c.find("../etc/passwd"));
    CHECK_FALSE(c.find("class a/../plain.bin"));
    CHECK_FALSE(c.find("./plain.bin"));
    CHECK_FALSE(c.find("class a//img 1.jpg"));
    CHECK_FALSE(c.find("class a"));  // a directory is not a sample
    CHECK(c.find("/plain.bin"));
}

TEST_CASE("each directory lists its subdirectories and files in name order", "[catalog]") {
    test::TempDir dir;
    test::make_tricky_tree(dir.path());
    Placed p = place(dir.path());
    const Catalog& c = p.catalog;
    for (DirId d = 0; d < c.dir_count(); ++d) {
        const DirRecord& rec = c.dir(d);
        const std::string dir_path(c.dir_path(d));
        std::vector<std::string> want_dirs, want_files;
        for (const auto& e : test::fs::directory_iterator(dir.path() / dir_path)) {
            (e.is_directory() ? want_dirs : want_files).push_back(e.path().filename().string());
        }
        std::sort(want_dirs.begin(), want_dirs.end());
        std::sort(want_files.begin(), want_files.end());
        std::vector<std::string> got_dirs, got_files;
        for (DirId k = rec.first_dir; k < rec.first_dir + rec.dir_count; ++k) {
            got_dirs.emplace_back(c.dir_name(k));
            CHECK(c.dir(k).parent == d);
        }
        for (SampleId k = rec.first_sample; k < rec.first_sample + rec.sample_count; ++k) {
            got_files.emplace_back(c.name(k));
            CHECK(c.sample(k).dir == d);
        }
        INFO("directory: '" << dir_path << "'");
        CHECK(got_dirs == want_dirs);
        CHECK(got_files == want_files);
        for (const auto& name : got_files) CHECK(c.find_child(d, name));
        CHECK_FALSE(c.find_child(d, "no such name"));
    }
}

TEST_CASE("symlinks: inside the origin followed to files, outside refused", "[catalog]") {
    test::TempDir dir, outside;
    test::write_file(dir / "data/real.bin", test::make_bytes(1, 100));
    test::write_file(outside / "secret", test::make_bytes(2, 50));
    test::fs::create_symlink("real.bin", dir / "data/link-in.bin");
    test::fs::create_symlink(outside / "secret", dir / "data/link-out-absolute");
    test::fs::create_symlink("../../" + outside.path().filename().string() + "/secret", dir / "data/link-out-relative");
    test::fs::create_symlink("missing", dir / "data/dangling");
    test::fs::create_directory_symlink(dir / "data", dir / "loop");
    test::fs::create_directory(dir / ".tiercache");  // the mount reserves it for its control folder
    CHECK(place(dir.path()).catalog.find_child(kRootDir, ".tiercache"));  // the library itself knows no such name

    Placed p = place(dir.path(), {".tiercache"});
    CHECK(p.catalog.find("data/real.bin"));
    const auto in = p.catalog.find("data/link-in.bin");
    REQUIRE(in);
    CHECK(p.catalog.size_of(*in) == 100);
    CHECK_FALSE(p.catalog.find("data/link-out-absolute"));
    CHECK_FALSE(p.catalog.find("data/link-out-relative"));
    CHECK_FALSE(p.catalog.find("data/dangling"));
    CHECK_FALSE(p.catalog.find_child(kRootDir, "loop"));
    CHECK_FALSE(p.catalog.find_child(kRootDir, ".tiercache"));
    CHECK(p.catalog.size() == 2);
    CHECK(p.scan.skipped == 5);
}

TEST_CASE("a missing or unusable origin is a clear error", "[catalog]") {
    CHECK_THROWS_WITH(scan_origin("/no/such/origin"), Catch::Contains("'/no/such/origin'") && Catch::Contains("No such file"));
    CHECK_THROWS_WITH(scan_origin("/etc/passwd"), Catch::Contains("Not a directory"));
}

TEST_CASE("an empty origin makes an empty catalog", "[catalog]") {
    test::TempDir dir;
    Placed p = place(dir.path());
    CHECK(p.catalog.size() == 0);
    CHECK(p.catalog.dir_count() == 1);
    CHECK_FALSE(p.catalog.find("anything"));
}

TEST_CASE("a name hidden at the root must be a plain name", "[catalog][config]") {
    test::TempDir dir;
    for (const char* bad : {"", ".", "..", "a/b"})
        CHECK_THROWS_WITH(Config{}.origin(dir.path()).hide_at_root(bad).validate(), Catch::Contains("hide_at_root '" + std::string(bad) + "'"));
    CHECK_NOTHROW(Config{}.origin(dir.path()).hide_at_root(".tiercache").validate());
}
