// `tiercache serve ORIGIN --name NAME`: owns a shared cache without a mount, for jobs that
// only attach through the API (Cache::attach). Runs in the foreground until SIGINT/SIGTERM.
#pragma once
#include <string>

namespace tiercache::cli {

struct ServeOptions {
    std::string origin;
    std::string name;
    std::string group;        // members may attach too (0660)
    std::string dram = "10%";
    std::string pmem, cxl, nvme;
    std::string policy = "plan";
    std::string segment_dir = "/dev/shm";
    std::string config;       // a TOML file with the tiers (flags win)
    std::string log_file;
};

// Returns the exit status; throws std::exception for bad options or a cache that cannot be made.
int run_serve(const ServeOptions& options, bool dram_given, bool policy_given, bool segment_dir_given);

}  // namespace tiercache::cli
