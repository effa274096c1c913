// mount(8)'s way of passing options, "-o key=value,flag,...", mapped onto tiercache-fuse's
// own command line, so that
//
//   mount -t fuse.tiercache /data/imagenet /mnt/ds -o dram=32GiB,nvme=/nvme/tc:800GiB
//   /data/imagenet /mnt/ds fuse.tiercache dram=32GiB,nvme=/nvme/tc:800GiB,allow_other,nofail 0 0
//
// both work. Design:
//  - One table: the CLI11 app itself. A key K maps to the long option --K (with '_' read as
//    '-', so fstab's allow_other is --allow-other), K=V to --K=V. CLI11 then parses and checks
//    the values exactly as it does the flags: no second parser, no list to keep in step.
//  - Options that belong to mount(8), systemd or the kernel and not to us (nofail, _netdev,
//    x-systemd.*, rw...) are accepted and dropped: an fstab line needs them.
//  - Anything else is refused naming it, unless mount's -s (sloppy) says to ignore it.
//  - The mount helper is tiercache-fuse itself, run as /sbin/mount.fuse.tiercache (a symlink):
//    mount(8) runs "mount.fuse.tiercache SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]",
//    whose -f means "fake" (do everything but mount), not our --foreground. One binary, so the
//    helper can never disagree with the daemon about an option.
#pragma once
#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

namespace tiercache::fuse {

// Options of mount(8), systemd and the kernel that fstab lines and mount(8) pass along but
// that are not ours. "ro"/"rw": the mount is always read-only (its one writable file is the
// plan); "default_permissions": always on; the exec/suid/dev/atime family means nothing for
// 0444 files served from a cache.
inline bool mount_owned_option(std::string_view key) {
    static constexpr std::string_view owned[] = {
        "defaults", "auto",   "noauto",  "nofail",  "_netdev", "user",     "users",     "nouser",      "owner",
        "rw",       "ro",     "dev",     "nodev",   "suid",    "nosuid",   "exec",      "noexec",      "atime",
        "noatime",  "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime",
        "lazytime", "nolazytime", "silent", "loud", "comment", "default_permissions"};
    if (key.starts_with("x-") || key.starts_with("X-")) return true;  // x-systemd.*, X-mount.*, ...
    return std::find(std::begin(owned), std::end(owned), key) != std::end(owned);
}

// Splits "a=1,b,c=\"x,y\"" into {"a=1", "b", "c=x,y"}: commas separate, as in mount(8), unless
// inside double quotes (a path with a comma); the quotes are removed. Empty items are skipped.
inline std::vector<std::string> split_mount_options(std::string_view text) {
    std::vector<std::string> items;
    std::string item;
    bool quoted = false;
    for (const char c : text) {
        if (c == '"') {
            quoted = !quoted;
        } else if (c == ',' && !quoted) {
            if (!item.empty()) items.push_back(std::move(item));
            item.clear();
        } else {
            item += c;
        }
    }
    if (quoted) throw std::invalid_argument("mount options '" + std::string(text) + "': a '\"' is not closed");
    if (!item.empty()) items.push_back(std::move(item));
    return items;
}

// "dram=32GiB,allow_other,nofail" -> {"--dram=32GiB", "--allow-other"} for the long options of
// `app`. Throws std::invalid_argument naming an unknown option, or an option that needs a value
// and has none; with `sloppy` (mount -s) an unknown option is added to `ignored` instead.
inline std::vector<std::string> to_long_options(std::string_view text, const CLI::App& app, bool sloppy,
                                                std::vector<std::string>& ignored) {
    std::vector<std::string> args;
    for (const std::string& item : split_mount_options(text)) {
        const auto eq = item.find('=');
        std::string key = item.substr(0, eq);
        if (mount_owned_option(key)) continue;
        std::string name = key;
        std::replace(name.begin(), name.end(), '_', '-');
        // Long options that are no mount option: help and version would print and exit 0, so
        // mount(8) would report a mount that is not there; foreground and debug would keep
        // mount(8) waiting on the daemon for ever.
        for (const char* flag_only : {"help", "version", "foreground", "debug"})
            if (name == flag_only)
                throw std::invalid_argument("'" + key + "' is not a mount option (it is tiercache-fuse's --" + name +
                                            ": give it on tiercache-fuse's command line)");
        const CLI::Option* option = key.empty() || key.starts_with("-") ? nullptr : app.get_option_no_throw("--" + name);
        if (option == nullptr || option->get_positional()) {
            if (sloppy) {
                ignored.push_back(item);
                continue;
            }
            throw std::invalid_argument("unknown mount option '" + key +
                                        "': -o takes tiercache-fuse's long options as key=value or flag "
                                        "(dram=32GiB,nvme=/nvme/tc:800GiB,config=FILE,allow_other, ...; see --help)");
        }
        if (eq == std::string::npos && option->get_items_expected_min() > 0)
            throw std::invalid_argument("mount option '" + key + "' needs a value: " + key + "=...");
        args.push_back("--" + name + (eq == std::string::npos ? "" : item.substr(eq)));
    }
    return args;
}

// tiercache-fuse's own arguments (argv[1..]) with every "-o OPTS" (or "-oOPTS") replaced by the
// long options it maps to; what follows "--" is left alone.
inline std::vector<std::string> expand_mount_options(const std::vector<std::string>& args, const CLI::App& app) {
    std::vector<std::string> out;
    std::vector<std::string> ignored;  // never filled: not sloppy
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--") {
            out.insert(out.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
            break;
        }
        if (a == "-o" && i + 1 == args.size()) throw std::invalid_argument("-o needs mount options: -o dram=32GiB,...");
        if (a == "-o" || (a.starts_with("-o") && a.size() > 2)) {
            const auto more = to_long_options(a == "-o" ? std::string_view(args[++i]) : std::string_view(a).substr(2), app,
                                              false, ignored);
            out.insert(out.end(), more.begin(), more.end());
        } else {
            out.push_back(a);
        }
    }
    return out;
}

// What mount(8) asked of its helper, and the tiercache-fuse arguments that do it.
struct MountHelperCall {
    std::vector<std::string> args;     // for tiercache-fuse's parser: ORIGIN MOUNTPOINT --key=value ...
    std::vector<std::string> ignored;  // unknown options dropped because of -s
    bool fake = false;                 // -f: check everything, mount nothing
    bool verbose = false;              // -v
};

// Parses "SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v] [-t TYPE]" as mount(8) passes it
// (util-linux libmount's exec_helper). Throws std::invalid_argument for a malformed call or a bad
// option.
inline MountHelperCall parse_mount_helper(const std::vector<std::string>& argv, const CLI::App& daemon) {
    CLI::App helper{"mount(8)'s helper for fuse.tiercache: mount -t fuse.tiercache ORIGIN MOUNTPOINT -o OPTIONS",
                    "mount.fuse.tiercache"};
    std::string source, target, type;
    std::vector<std::string> options;
    bool nomtab = false, sloppy = false;
    MountHelperCall call;
    helper.add_option("SOURCE", source, "the dataset directory (tiercache-fuse's ORIGIN)")->required();
    helper.add_option("MOUNTPOINT", target, "where to mount it")->required();
    helper.add_option("-o", options, "tiercache-fuse's long options as key=value,flag,... (see tiercache-fuse --help)")
        ->allow_extra_args(false);
    helper.add_flag("-n", nomtab, "do not write /etc/mtab (there is none to write: ignored)");
    helper.add_flag("-s", sloppy, "ignore unknown options (each is named on stderr)");
    helper.add_flag("-f", call.fake, "fake: check the origin, mountpoint and options, mount nothing");
    helper.add_flag("-v", call.verbose, "say what is done");
    helper.add_option("-t", type, "the filesystem type (fuse.tiercache)");
    helper.set_help_flag();  // mount(8) never asks for help: every parse error is a bad call
    try {
        helper.parse(std::vector<std::string>(argv.rbegin(), argv.rend()));  // CLI11 takes a vector last-first
    } catch (const CLI::ParseError& e) {
        throw std::invalid_argument(std::string("mount.fuse.tiercache: ") + e.what() +
                                    " (usage: mount.fuse.tiercache SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v])");
    }

    call.args = {source, target};
    for (const auto& o : options) {
        const auto more = to_long_options(o, daemon, sloppy, call.ignored);
        call.args.insert(call.args.end(), more.begin(), more.end());
    }
    return call;
}

}  // namespace tiercache::fuse
