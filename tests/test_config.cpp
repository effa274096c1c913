#include <catch2/catch.hpp>
#include <tiercache/config_file.hpp>

#include "support.hpp"

using namespace tiercache;

namespace {

test::fs::path write_toml(const test::TempDir& dir, const std::string& text) {
    const auto path = dir / "tc.toml";
    std::ofstream(path) << text;
    return path;
}

}  // namespace

TEST_CASE("tier arguments parse as DIR:SIZE and NODE:SIZE", "[config]") {
    auto nvme = parse_tier_arg(TierKind::nvme, "/nvme/tc:800GiB", "--nvme");
    CHECK(nvme.dir == "/nvme/tc");
    CHECK(nvme.size == "800GiB");
    CHECK(parse_tier_arg(TierKind::pmem, "/mnt/a:b:1GiB", "--pmem").dir == "/mnt/a:b");  // the last ':' splits
    auto cxl = parse_tier_arg(TierKind::cxl, "0:64GiB", "--cxl");
    CHECK(cxl.node == 0);
    CHECK(cxl.size == "64GiB");
    CHECK_THROWS_WITH(parse_tier_arg(TierKind::nvme, "/nvme/tc", "--nvme"), Catch::Contains("expected DIR:SIZE"));
    CHECK_THROWS_WITH(parse_tier_arg(TierKind::nvme, "/nvme/tc:", "--nvme"), Catch::Contains("'/nvme/tc:'"));
    CHECK_THROWS_WITH(parse_tier_arg(TierKind::cxl, "one:64GiB", "--cxl"), Catch::Contains("'one' is not a NUMA node number"));
    CHECK_THROWS_WITH(parse_tier_arg(TierKind::cxl, "-1:64GiB", "--cxl"), Catch::Contains("not a NUMA node"));
}

TEST_CASE("setters keep the tiers fastest first and validate() names what is wrong", "[config]") {
    test::TempDir dir;
    test::fs::create_directories(dir / "nvme");
    test::fs::create_directories(dir / "pmem");
    Config c = Config{}.origin(dir.path()).nvme(dir / "nvme", "1GiB").pmem(dir / "pmem", "512MiB").cxl(0, "64MiB").dram("256MiB");
    REQUIRE(c.tiers().size() == 4);
    CHECK(c.tiers()[0].kind == TierKind::dram);
    CHECK(c.tiers()[1].kind == TierKind::pmem);
    CHECK(c.tiers()[2].kind == TierKind::cxl);
    CHECK(c.tiers()[3].kind == TierKind::nvme);
    CHECK(c.dram_bytes() == 256ull << 20);
    CHECK_NOTHROW(c.validate());
    CHECK(tier_bytes(*c.find_tier(TierKind::nvme)) == 1ull << 30);
    CHECK(tier_bytes(TierConfig{TierKind::nvme, "1%", dir / "nvme", -1, ""}) > 0);  // of the filesystem

    CHECK_THROWS_WITH(Config{}.origin(dir.path()).nvme(dir / "missing", "1GiB").validate(),
                      Catch::Contains("nvme tier") && Catch::Contains("missing") && Catch::Contains("no such directory"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).cxl(999, "1GiB").validate(), Catch::Contains("NUMA node 999 does not exist"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).pmem(dir / "pmem", "12XB").validate(),
                      Catch::Contains("pmem tier") && Catch::Contains("'12XB'"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).tiers({{TierKind::nvme, "1GiB", dir / "nvme", -1, ""}}).validate(),
                      Catch::Contains("first (fastest) tier must be dram"));
    CHECK_THROWS_WITH(Config{}.origin(dir.path()).tiers({{TierKind::dram, "1GiB", {}, -1, ""}, {TierKind::dram, "1GiB", {}, -1, "x.toml:9"}}).validate(),
                      Catch::Contains("x.toml:9") && Catch::Contains("given twice"));
}

TEST_CASE("a config file gives the tier list in its order and every option", "[config]") {
    test::TempDir dir;
    test::fs::create_directories(dir / "nvme");
    const auto path = write_toml(dir, R"(
origin = ")" + dir.path().string() + R"("
policy = "lru"

[[tier]]
kind = "dram"
size = "128MiB"

[[tier]]
kind = "cxl"
node = 0
size = "64MiB"

[[tier]]
kind = "nvme"
path = ")" + (dir / "nvme").string() + R"("
size = "1GiB"

[mount]
mountpoint = "/mnt/ds"
threads = 8
kernel_cache = false
)");
    const ConfigFile file = ConfigFile::load(path);
    Config c = file.apply(Config{});
    CHECK(c.origin() == dir.path());
    CHECK(c.policy() == "lru");
    REQUIRE(c.tiers().size() == 3);
    CHECK(c.tiers()[1].kind == TierKind::cxl);
    CHECK(c.tiers()[1].node == 0);
    CHECK(c.tiers()[2].dir == dir / "nvme");
    CHECK_NOTHROW(c.validate());
    const toml::table* mount = file.section("mount", {"mountpoint", "threads", "kernel_cache"});
    REQUIRE(mount);
    CHECK(file.string_at(*mount, "mountpoint") == "/mnt/ds");
    CHECK(file.integer_at(*mount, "threads") == 8);
    CHECK(file.bool_at(*mount, "kernel_cache") == false);

    // Flags override the file: they are applied after it.
    c.dram("64MiB").policy("noevict");
    CHECK(c.dram_bytes() == 64ull << 20);
    CHECK(c.tiers()[0].kind == TierKind::dram);
    CHECK(c.policy() == "noevict");
}

TEST_CASE("a malformed config file is an error naming the file, the line and the value", "[config]") {
    test::TempDir dir;
    auto error_of = [&](const std::string& text) {
        const auto path = write_toml(dir, text);
        try {
            ConfigFile::load(path).apply(Config{});
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string file = (dir / "tc.toml").string();
    CHECK_THAT(error_of("origin = \"/x\"\npolicy = \n"), Catch::StartsWith(file + ":2:"));
    CHECK_THAT(error_of("[[tier]]\nkind = \"dram\"\nsize = \"12XB\"\n"), Catch::StartsWith(file + ":3:") && Catch::Contains("'12XB'"));
    CHECK_THAT(error_of("[[tier]]\nkind = \"ram\"\nsize = \"1GiB\"\n"), Catch::Contains(":2:") && Catch::Contains("unknown tier kind 'ram'"));
    CHECK_THAT(error_of("[[tier]]\nkind = \"nvme\"\nsize = \"1GiB\"\n"), Catch::Contains("nvme tier needs path"));
    CHECK_THAT(error_of("[[tier]]\nkind = \"cxl\"\nsize = \"1GiB\"\n"), Catch::Contains("cxl tier needs node"));
    CHECK_THAT(error_of("\n\norgin = \"/x\"\n"), Catch::StartsWith(file + ":3:") && Catch::Contains("unknown key 'orgin'"));
    CHECK_THAT(error_of("policy = 5\n"), Catch::Contains(":1:") && Catch::Contains("'policy' must be a string"));
    CHECK_THAT(error_of("tier = 3\n"), Catch::Contains("[[tier]]"));
    CHECK_THAT(error_of("[[tier]]\nkind = \"dram\"\nsize = \"1GiB\"\nspeed = 9\n"), Catch::Contains(":4:") && Catch::Contains("'tier.speed'"));
    CHECK_THROWS_WITH(ConfigFile::load(dir / "absent.toml"), Catch::Contains("absent.toml") && Catch::Contains("no such file"));
}

// Found by fuzz/fuzz_config: toml++ 3.3 (Debian 12's) reaches __builtin_unreachable() when it
// tests some non-ASCII characters for whitespace (U+046D here, the fuzzer's two bytes), and
// fails an assertion on a table header that starts with no key; ConfigFile::parse refuses
// both first (detail::toml_hazard). Inside strings and comments non-ASCII stays fine.
TEST_CASE("texts toml++ 3.3 misreads are refused before it sees them", "[config]") {
    auto error_of = [](std::string_view text) {
        try {
            ConfigFile::parse(text, "mem.toml").apply(Config{});
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK_THAT(error_of("\xd1\xad[["), Catch::StartsWith("mem.toml:1:1: a non-ASCII character"));
    CHECK_THAT(error_of("origin = \"/x\"\nx = 1\xd1\xad\n"), Catch::StartsWith("mem.toml:2:6:"));
    CHECK_THAT(error_of("origin = \"\"\"\\\n  \xd1\xad\"\"\"\n"), Catch::StartsWith("mem.toml:2:3:"));  // after a line-ending backslash
    CHECK_THAT(error_of("[t\xc2\xa7]\n"), Catch::StartsWith("mem.toml:1:3:"));
    CHECK_THAT(error_of("[~]\n"), Catch::StartsWith("mem.toml:1:2: a table header must begin with a key"));
    CHECK_THAT(error_of("origin = \"/x\"\n  [[ ~]]\n"), Catch::StartsWith("mem.toml:2:6: a table header"));
    // Past a first error toml++ reads on where no string is: what it reads there is masked.
    CHECK_THAT(error_of("origin =0\"/data/tr\xd1\xad\"\n"), Catch::StartsWith("mem.toml:1:9:") && Catch::Contains("shown as '~'"));
    // Where TOML allows them, they parse.
    CHECK(ConfigFile::parse("# caf\xc3\xa9 \xd1\xad\norigin = \"/data/caf\xc3\xa9\"\nsegment_dir = '/d/\xd1\xad'\n"
                            "policy = \"\"\"pl\xd1\xad\"\"\"\n", "mem.toml")
              .apply(Config{})
              .origin() == "/data/caf\xc3\xa9");
    CHECK(ConfigFile::parse("origin = \"\\\"\xd1\xad\"\nsegment_dir = '''\xd1\xad'''''\n", "mem.toml").apply(Config{}).segment_dir() ==
          "\xd1\xad''");
}
