// What a Cache is built from. Chained setters, then one validate() that throws
// std::invalid_argument naming the bad value:
//   Config{}.origin("/data/imagenet/train").dram("32GiB").policy("noevict")
#pragma once
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include "policy.hpp"
#include "size.hpp"

namespace tiercache {

class Config {
public:
    Config& origin(std::filesystem::path dir) { origin_ = std::move(dir); return *this; }
    // "512MiB", "2GiB", or "10%" of this host's RAM.
    Config& dram(std::string size) { dram_ = std::move(size); return *this; }
    // "noevict" (scan-resistant, the default) or "lru".
    Config& policy(std::string name) { policy_ = std::move(name); return *this; }
    // Where the segment's file is made (and at once unlinked): a tmpfs such as /dev/shm.
    Config& segment_dir(std::filesystem::path dir) { segment_dir_ = std::move(dir); return *this; }

    const std::filesystem::path& origin() const noexcept { return origin_; }
    const std::string& dram() const noexcept { return dram_; }
    const std::string& policy() const noexcept { return policy_; }
    const std::filesystem::path& segment_dir() const noexcept { return segment_dir_; }

    std::uint64_t dram_bytes() const { return parse_size(dram_, physical_memory_bytes()); }

    void validate() const {
        if (origin_.empty()) throw std::invalid_argument("origin: not set");
        std::error_code ec;
        if (!std::filesystem::is_directory(origin_, ec))
            throw std::invalid_argument("origin '" + origin_.string() + "': " +
                                        (std::filesystem::exists(origin_, ec) ? "not a directory" : "no such directory"));
        try {
            (void)dram_bytes();
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("dram: ") + e.what());
        }
        (void)make_policy(policy_, 0);
        if (!std::filesystem::is_directory(segment_dir_, ec))
            throw std::invalid_argument("segment_dir '" + segment_dir_.string() + "': no such directory");
    }

private:
    std::filesystem::path origin_;
    std::string dram_ = "10%";
    std::string policy_ = "noevict";
    std::filesystem::path segment_dir_ = "/dev/shm";
};

}  // namespace tiercache
