#include <catch2/catch.hpp>
#include <tiercache/config.hpp>
#include <tiercache/size.hpp>

using tiercache::parse_size;

TEST_CASE("sizes parse as users write them", "[size]") {
    CHECK(parse_size("4096") == 4096);
    CHECK(parse_size("512MiB") == 512ull << 20);
    CHECK(parse_size("2GiB") == 2ull << 30);
    CHECK(parse_size("2gib") == 2ull << 30);
    CHECK(parse_size("1.5GiB") == 3ull << 29);
    CHECK(parse_size("64K") == 64ull << 10);
    CHECK(parse_size("1GB") == 1'000'000'000ull);
    CHECK(parse_size(" 3 MiB ") == 3ull << 20);
    CHECK(parse_size("10%", 1000) == 100);
    CHECK(parse_size("100%", 1000) == 1000);
}

TEST_CASE("bad sizes are refused with a message naming them", "[size]") {
    CHECK_THROWS_WITH(parse_size("12XB"), Catch::Contains("'12XB'") && Catch::Contains("unknown unit 'XB'"));
    CHECK_THROWS_AS(parse_size(""), std::invalid_argument);
    CHECK_THROWS_AS(parse_size("GiB"), std::invalid_argument);
    CHECK_THROWS_AS(parse_size("-1GiB"), std::invalid_argument);
    CHECK_THROWS_AS(parse_size("."), std::invalid_argument);
    CHECK_THROWS_WITH(parse_size("10%"), Catch::Contains("percentage is not allowed"));
    CHECK_THROWS_WITH(parse_size("101%", 100), Catch::Contains("cannot exceed 100%"));
    CHECK_THROWS_WITH(parse_size("99999999999TiB"), Catch::Contains("too large"));
}

// Found by fuzz/fuzz_size: a number beyond a double made std::stod throw std::out_of_range,
// not the documented std::invalid_argument (a 400-digit size escaped the callers' checks).
TEST_CASE("numbers beyond a double are refused as too large, tiny ones are 0", "[size]") {
    CHECK_THROWS_AS(parse_size(std::string(400, '9')), std::invalid_argument);
    CHECK_THROWS_WITH(parse_size(std::string(400, '9') + "GiB"), Catch::Contains("too large"));
    CHECK_THROWS_WITH(parse_size(std::string(400, '9') + ".5%", 100), Catch::Contains("too large"));
    CHECK(parse_size("0." + std::string(400, '0') + "1") == 0);
    CHECK(parse_size("0." + std::string(400, '0') + "1GiB") == 0);
}

TEST_CASE("config validation names the bad value", "[config]") {
    using tiercache::Config;
    CHECK_THROWS_WITH(Config{}.validate(), Catch::Contains("origin"));
    CHECK_THROWS_WITH(Config{}.origin("/no/such/dir").validate(), Catch::Contains("'/no/such/dir'") && Catch::Contains("no such directory"));
    CHECK_THROWS_WITH(Config{}.origin("/etc/passwd").validate(), Catch::Contains("not a directory"));
    CHECK_THROWS_WITH(Config{}.origin("/tmp").dram("12XB").validate(), Catch::Contains("dram") && Catch::Contains("'12XB'"));
    CHECK_THROWS_WITH(Config{}.origin("/tmp").policy("fifo").validate(), Catch::Contains("unknown policy 'fifo'"));
    CHECK_NOTHROW(Config{}.origin("/tmp").dram("1%").policy("lru").validate());
}
