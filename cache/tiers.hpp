// `tiercache tiers`: the memory this host has (NUMA nodes, memkind kinds) and the tiers
// tiercache would use by default.
#pragma once

#include <string>

namespace tiercache::cli {

struct TiersOptions {
    bool json = false;   // one JSON object instead of the tables
    std::string config;  // a config file to check and lay out too
};

// Throws std::runtime_error when the topology cannot be read.
void run_tiers(const TiersOptions& options);

}  // namespace tiercache::cli
