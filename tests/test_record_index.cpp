// RecordIndex (record_index.hpp): the record index file, read, written and resolved against a
// catalog. `tiercache index`, which writes it from tar shards, is tested by tests/tar_index.py.
#include <catch2/catch.hpp>
#include <tiercache/record_index.hpp>

#include <sstream>

#include "support.hpp"

using namespace tiercache;

namespace record_index_test {

const std::string kIndexHeader = R"({"format":"tiercache-record-index","version":1})";

RecordIndex index_from_text(const std::string& text) {
    std::istringstream in(text);
    return RecordIndex::read(in, "idx.jsonl");
}

RecordIndex example_index() {
    return RecordIndex({{"shards/a.tar", 512, 700, "000001.jpg"},
                        {"shards/a.tar", 1536, 0, "empty"},
                        {"b.tar", 18446744073709551000ull, 615, "caf\xc3\xa9 \"quoted\"\n\\.cls"},
                        {"b.tar", 0, 18446744073709551615ull, ""}});
}

}  // namespace record_index_test

using namespace record_index_test;

TEST_CASE("a record index survives write and load unchanged", "[record_index]") {
    const RecordIndex index = example_index();
    std::ostringstream out;
    index.write(out);
    const std::string text = out.str();
    CHECK(text.starts_with(kIndexHeader + "\n"));
    CHECK(text.find(R"({"path":"shards/a.tar","offset":512,"length":700,"member":"000001.jpg"})" "\n") != std::string::npos);
    CHECK(index_from_text(text).entries() == index.entries());

    test::TempDir dir;
    const auto file = dir / "index.jsonl";
    index.save(file);
    CHECK(RecordIndex::load(file).entries() == index.entries());
    CHECK(test::read_text(file) == text);
    // save() replaces a file whole and leaves no temporary file behind.
    RecordIndex({{"c.tar", 1, 2, "x"}}).save(file);
    CHECK(RecordIndex::load(file).entries() == std::vector<RecordIndex::Entry>{{"c.tar", 1, 2, "x"}});
    CHECK(test::list_files(dir.path()) == std::vector<std::string>{"index.jsonl"});
    // No records: the header alone.
    CHECK(index_from_text(kIndexHeader + "\n").entries().empty());
    CHECK(index_from_text(kIndexHeader).entries().empty());
}

TEST_CASE("every malformed record index line is an error naming the file and line", "[record_index]") {
    const std::string good = R"({"path":"a.tar","offset":512,"length":7,"member":"m"})";
    const std::string line3 = kIndexHeader + "\n" + good + "\n";
    struct Case {
        std::string text, error;
    };
    const std::vector<Case> cases = {
        {"", "idx.jsonl: empty"},
        {"not json\n", "idx.jsonl:1: not JSON"},
        {"[1,2]\n", "idx.jsonl:1: not a JSON object"},
        {good + "\n", "idx.jsonl:1: not a tiercache record index"},
        {R"({"format":"something-else","version":1})", "idx.jsonl:1: not a tiercache record index"},
        {R"({"format":"tiercache-record-index"})", "idx.jsonl:1: missing key \"version\""},
        {R"({"format":"tiercache-record-index","version":2})", "idx.jsonl:1: version 2, but this tiercache reads version 1"},
        {R"({"format":"tiercache-record-index","version":"1"})", "idx.jsonl:1: \"version\" is \"1\": not a non-negative integer"},
        {line3 + "{\"path\":\"a.tar\",\n", "idx.jsonl:3: not JSON"},
        {line3 + "\n", "idx.jsonl:3: not JSON"},
        {line3 + "7\n", "idx.jsonl:3: not a JSON object: 7"},
        {line3 + R"({"offset":1,"length":2,"member":"m"})", "idx.jsonl:3: missing key \"path\""},
        {line3 + R"({"path":"a.tar","length":2,"member":"m"})", "idx.jsonl:3: missing key \"offset\""},
        {line3 + R"({"path":"a.tar","offset":1,"member":"m"})", "idx.jsonl:3: missing key \"length\""},
        {line3 + R"({"path":"a.tar","offset":1,"length":2})", "idx.jsonl:3: missing key \"member\""},
        {line3 + R"({"path":5,"offset":1,"length":2,"member":"m"})", "idx.jsonl:3: \"path\" is 5, not a string"},
        {line3 + R"({"path":"a.tar","offset":1,"length":2,"member":null})", "idx.jsonl:3: \"member\" is null, not a string"},
        {line3 + R"({"path":"a.tar","offset":-512,"length":2,"member":"m"})", "idx.jsonl:3: \"offset\" is -512: negative"},
        {line3 + R"({"path":"a.tar","offset":1,"length":-1,"member":"m"})", "idx.jsonl:3: \"length\" is -1: negative"},
        {line3 + R"({"path":"a.tar","offset":1.5,"length":2,"member":"m"})", "idx.jsonl:3: \"offset\" is 1.5: not a non-negative integer"},
        {line3 + R"({"path":"a.tar","offset":"1","length":2,"member":"m"})", "idx.jsonl:3: \"offset\" is \"1\": not a non-negative integer"},
        {line3 + R"({"path":"a.tar","offset":1,"length":18446744073709551616,"member":"m"})", "idx.jsonl:3: \"length\" is 1.8446744073709552e+19: too large"},
        {line3 + R"({"path":"a.tar","offset":1e30,"length":2,"member":"m"})", "idx.jsonl:3: \"offset\" is 1e+30: too large"},
    };
    for (const Case& c : cases) {
        INFO("index: " << c.text);
        CHECK_THROWS_AS(index_from_text(c.text), std::runtime_error);
        CHECK_THROWS_WITH(index_from_text(c.text), Catch::StartsWith(c.error));
    }
    // The largest values are fine, and keys a later version adds are ignored.
    const auto index = index_from_text(line3 + R"({"path":"b.tar","offset":18446744073709551615,"length":0,"member":"","crc":7})");
    REQUIRE(index.entries().size() == 2);
    CHECK(index.entries()[1] == RecordIndex::Entry{"b.tar", 18446744073709551615ull, 0, ""});

    // load() names the file it was given.
    test::TempDir dir;
    const auto file = dir / "bad.jsonl";
    { std::ofstream(file) << kIndexHeader << "\n" << good << "\nnope\n"; }
    CHECK_THROWS_WITH(RecordIndex::load(file), Catch::StartsWith(file.string() + ":3: not JSON"));
    CHECK_THROWS_WITH(RecordIndex::load(dir / "missing.jsonl"),
                      Catch::Contains("'" + (dir / "missing.jsonl").string() + "'") && Catch::Contains("No such file"));
}

TEST_CASE("a record index whose names are not UTF-8 cannot be written", "[record_index]") {
    std::ostringstream out;
    CHECK_THROWS_WITH(RecordIndex({{"a.tar", 0, 1, "ok"}, {"a.tar", 512, 1, "caf\xe9"}}).write(out),
                      Catch::Contains("record index entry 2") && Catch::Contains("'a.tar'") && Catch::Contains("not UTF-8"));
    test::TempDir dir;
    CHECK_THROWS(RecordIndex({{"b\xff.tar", 0, 1, "m"}}).save(dir / "i.jsonl"));
    CHECK(test::list_files(dir.path()).empty());  // nothing written, no temporary file left
    CHECK_THROWS_WITH(RecordIndex().save(dir / "no/such/dir/i.jsonl"), Catch::Contains("no/such/dir/i.jsonl"));
}

TEST_CASE("a record index resolves to the catalog's records, or names the first bad entry", "[record_index]") {
    test::TempDir dir;
    test::fs::create_directories(dir / "shards");
    test::write_file(dir / "shards/a.tar", test::make_bytes(1, 4096));
    test::write_file(dir / "b.tar", test::make_bytes(2, 1024));
    const ScanResult scan = scan_origin(dir.path());
    Segment segment("/dev/shm", scan.segment_bytes() + (1 << 20));
    const Catalog catalog = Catalog::place(segment, scan);
    const SampleId a = *catalog.find("shards/a.tar"), b = *catalog.find("b.tar");

    const RecordIndex good({{"shards/a.tar", 512, 700, "x.jpg"}, {"b.tar", 1024, 0, "empty"}, {"shards/a.tar", 0, 4096, "all"}});
    CHECK(good.resolve(catalog) == std::vector<Record>{{a, 512, 700}, {b, 1024, 0}, {a, 0, 4096}});

    CHECK_THROWS_AS(RecordIndex({{"c.tar", 0, 1, "m"}}).resolve(catalog), std::invalid_argument);
    CHECK_THROWS_WITH(RecordIndex({{"b.tar", 0, 1, "ok"}, {"c.tar", 0, 1, "m"}}).resolve(catalog),
                      Catch::Contains("record index entry 2 (member 'm' of 'c.tar')") && Catch::Contains("'c.tar' is not a file of the dataset"));
    CHECK_THROWS_WITH(RecordIndex({{"shards", 0, 1, "m"}}).resolve(catalog), Catch::Contains("'shards' is not a file of the dataset"));
    CHECK_THROWS_WITH(RecordIndex({{"b.tar", 1000, 25, "m"}}).resolve(catalog),
                      Catch::Contains("record index entry 1 (member 'm' of 'b.tar')") && Catch::Contains("ends past the end of the file"));
    CHECK_THROWS_WITH(RecordIndex({{"b.tar", 2, 18446744073709551615ull, "m"}}).resolve(catalog), Catch::Contains("overflows"));
}
