// mount -o options mapped onto tiercache-fuse's long options (fuse/mount_options.hpp).
#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "../fuse/mount_options.hpp"

using tiercache::fuse::expand_mount_options;
using tiercache::fuse::parse_mount_helper;
using tiercache::fuse::split_mount_options;
using tiercache::fuse::to_long_options;
using Args = std::vector<std::string>;

namespace {

// A stand-in for tiercache-fuse's app with options of each kind: valued, flag, hyphenated.
struct DaemonApp {
    CLI::App app{"test", "tiercache-fuse"};
    std::string origin, mountpoint, dram, nvme, config, kernel_cache;
    bool allow_other = false;
    DaemonApp() {
        app.add_option("ORIGIN", origin);
        app.add_option("MOUNTPOINT", mountpoint);
        app.add_option("--dram", dram);
        app.add_option("--nvme", nvme);
        app.add_option("--config", config);
        app.add_option("--kernel-cache", kernel_cache)->check(CLI::IsMember({"on", "off", "auto"}));
        app.add_flag("--allow-other", allow_other);
    }
    void parse(const Args& args) { app.parse(Args(args.rbegin(), args.rend())); }
};

Args long_options(const std::string& text, const CLI::App& app) {
    Args ignored;
    return to_long_options(text, app, false, ignored);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("mount options split on commas, not inside quotes", "[mount-options]") {
    CHECK(split_mount_options("dram=32GiB,nvme=/nvme/tc:800GiB") == Args{"dram=32GiB", "nvme=/nvme/tc:800GiB"});
    CHECK(split_mount_options(",a,,b,") == Args{"a", "b"});
    CHECK(split_mount_options(R"(log="/var/log/a,b.log",allow_other)") == Args{"log=/var/log/a,b.log", "allow_other"});
    CHECK(split_mount_options("").empty());
    CHECK(error_of([] { split_mount_options(R"(log="/x)"); }).find("not closed") != std::string::npos);
}

TEST_CASE("each key=value becomes the long option of that name", "[mount-options]") {
    DaemonApp d;
    CHECK(long_options("dram=32GiB,nvme=/nvme/tc:800GiB", d.app) == Args{"--dram=32GiB", "--nvme=/nvme/tc:800GiB"});
    CHECK(long_options("config=/etc/tiercache/imagenet.toml", d.app) == Args{"--config=/etc/tiercache/imagenet.toml"});
    // fstab's underscores stand for the flags' hyphens; a flag takes no value.
    CHECK(long_options("allow_other,kernel_cache=off", d.app) == Args{"--allow-other", "--kernel-cache=off"});
    CHECK(long_options("kernel-cache=on", d.app) == Args{"--kernel-cache=on"});
}

TEST_CASE("mount(8)'s and systemd's own options are dropped", "[mount-options]") {
    DaemonApp d;
    CHECK(long_options("rw,nofail,_netdev,noauto,defaults,user,nosuid,nodev,noexec,noatime,relatime", d.app).empty());
    CHECK(long_options("x-systemd.automount,x-systemd.requires-mounts-for=/data,X-mount.mkdir,comment=x", d.app).empty());
    CHECK(long_options("dram=1GiB,allow_other,nofail", d.app) == Args{"--dram=1GiB", "--allow-other"});
}

TEST_CASE("an unknown mount option is refused by name, or ignored with -s", "[mount-options]") {
    DaemonApp d;
    const auto message = error_of([&] { long_options("dram=1GiB,bogus=3", d.app); });
    CHECK(message.find("unknown mount option 'bogus'") != std::string::npos);
    CHECK(error_of([&] { long_options("origin=/data", d.app); }).find("'origin'") != std::string::npos);  // a positional
    CHECK(error_of([&] { long_options("--dram=1GiB", d.app); }).find("unknown mount option") != std::string::npos);
    CHECK(error_of([&] { long_options("dram", d.app); }).find("'dram' needs a value") != std::string::npos);
    Args ignored;
    CHECK(to_long_options("bogus=3,dram=1GiB,fsname=x", d.app, true, ignored) == Args{"--dram=1GiB"});
    CHECK(ignored == Args{"bogus=3", "fsname=x"});
}

TEST_CASE("help, version, foreground and debug are refused as mount options, even with -s", "[mount-options]") {
    DaemonApp d;  // CLI11 gives every app --help: -o help would print it and "mount" nothing
    for (const char* key : {"help", "version", "foreground", "debug"}) {
        INFO(key);
        CHECK(error_of([&] { long_options(std::string("dram=1GiB,") + key, d.app); }).find("is not a mount option") != std::string::npos);
        Args ignored;
        CHECK(error_of([&] { to_long_options(key, d.app, true, ignored); }).find("is not a mount option") != std::string::npos);
    }
}

TEST_CASE("tiercache-fuse -o OPTS parses like the flags themselves", "[mount-options]") {
    DaemonApp d;
    d.parse(expand_mount_options({"/data", "/mnt/ds", "-o", "dram=2GiB,allow_other,nofail", "-okernel_cache=off"}, d.app));
    CHECK(d.origin == "/data");
    CHECK(d.mountpoint == "/mnt/ds");
    CHECK(d.dram == "2GiB");
    CHECK(d.allow_other);
    CHECK(d.kernel_cache == "off");
    CHECK(expand_mount_options({"--", "-o", "x"}, d.app) == Args{"--", "-o", "x"});
    CHECK(error_of([&] { expand_mount_options({"/data", "-o"}, d.app); }).find("-o needs") != std::string::npos);
    // CLI11 checks the values: a bad one fails as the flag would.
    DaemonApp bad;
    CHECK_THROWS_AS(bad.parse(expand_mount_options({"-o", "kernel_cache=maybe"}, bad.app)), CLI::ValidationError);
}

TEST_CASE("mount(8)'s helper call: SOURCE MOUNTPOINT -o OPTS and its own flags", "[mount-options]") {
    DaemonApp d;
    auto call = parse_mount_helper({"/data", "/mnt/ds", "-o", "rw,dram=1GiB,allow_other,nofail"}, d.app);
    CHECK(call.args == Args{"/data", "/mnt/ds", "--dram=1GiB", "--allow-other"});
    CHECK_FALSE(call.fake);
    CHECK_FALSE(call.verbose);
    // mount's -f is "fake", not foreground; -s sloppy; -n and -t are accepted.
    call = parse_mount_helper({"/data", "/mnt/ds", "-s", "-f", "-n", "-v", "-o", "bogus,dram=1GiB", "-t", "fuse.tiercache"}, d.app);
    CHECK(call.fake);
    CHECK(call.verbose);
    CHECK(call.args == Args{"/data", "/mnt/ds", "--dram=1GiB"});
    CHECK(call.ignored == Args{"bogus"});
    CHECK(error_of([&] { parse_mount_helper({"/data", "/mnt/ds", "-o", "bogus"}, d.app); }).find("'bogus'") != std::string::npos);
    CHECK(error_of([&] { parse_mount_helper({"/data"}, d.app); }).find("usage: mount.fuse.tiercache") != std::string::npos);
    CHECK(error_of([&] { parse_mount_helper({"/data", "/mnt", "-x"}, d.app); }).find("-x") != std::string::npos);
}
