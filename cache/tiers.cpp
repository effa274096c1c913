// Discovery lives in the library (topology.hpp); this file only lays it out, as tables for
// people or as JSON for scripts. Values hwloc does not know (bandwidth and latency without
// firmware HMAT tables) are printed as "unknown" and as null, never guessed.
#include "tiers.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tiercache/config_file.hpp>
#include <tiercache/topology.hpp>

#include "human.hpp"
#include "table.hpp"

namespace tiercache::cli {

namespace {

using Json = nlohmann::ordered_json;

std::string bandwidth_text(const std::optional<std::uint64_t>& mib_s) {
    return mib_s ? human_bytes(static_cast<double>(*mib_s) * 1048576.0) + "/s" : "unknown";
}

std::string latency_text(const std::optional<std::uint64_t>& ns) {
    return ns ? with_commas(*ns) + " ns" : "unknown";
}

template <class T>
Json or_null(const std::optional<T>& v) {
    return v ? Json(*v) : Json(nullptr);
}

std::string memkind_text(const MemkindInfo& m) {
    if (!m.built_in) return "not built in (TIERCACHE_WITH_MEMKIND=OFF): the pmem tier maps a file itself";
    return std::string("built in; pmem kind usable on any directory (--pmem DIR:SIZE); DAX_KMEM ") +
           (m.dax_kmem ? "available" : "not available") + "; HIGHEST_CAPACITY " +
           (m.highest_capacity ? "available" : "not available");
}

void print_report(const Topology& t) {
    std::printf("NUMA nodes (hwloc %s)\n", t.hwloc_version.c_str());
    Table nodes(Table::Values::left);
    nodes.add_row({"node", "CPUs", "capacity", "bandwidth", "latency", "candidate for"});
    for (const auto& n : t.nodes) {
        std::string candidate = n.candidate();
        if (!n.has_cpus()) candidate += " (--cxl " + std::to_string(n.os_index) + ":SIZE)";
        if (!n.subtype.empty()) candidate += ", hwloc: " + n.subtype;
        nodes.add_row({std::to_string(n.os_index), n.has_cpus() ? "yes (" + std::to_string(n.cpus) + ")" : "no",
                       human_bytes(static_cast<double>(n.capacity_bytes)), bandwidth_text(n.bandwidth_mib_s),
                       latency_text(n.latency_ns), candidate});
    }
    nodes.print(stdout, "  ");
    std::printf("  RAM %s in all; memkind: %s\n", human_bytes(static_cast<double>(t.physical_memory_bytes)).c_str(),
                memkind_text(t.memkind).c_str());
    if (const std::string note = t.memory_note(); !note.empty()) std::printf("  Note: %s\n", note.c_str());

    std::printf("\nWhat tiercache would use by default (tier options change it)\n");
    Table defaults(Table::Values::left);
    defaults.add_row({"tier", "size", "how"});
    for (const auto& tier : t.default_tiers())
        defaults.add_row({std::string(to_string(tier.kind)), tier.bytes ? human_bytes(static_cast<double>(*tier.bytes)) : "-",
                          tier.how});
    defaults.print(stdout, "  ");
}

Json to_json(const Topology& t) {
    Json out;
    out["hwloc_version"] = t.hwloc_version;
    out["physical_memory_bytes"] = t.physical_memory_bytes;
    out["memory_outside_nodes_bytes"] = t.memory_outside_nodes_bytes();
    Json nodes = Json::array();
    for (const auto& n : t.nodes)
        nodes.push_back({{"node", n.os_index},
                         {"cpus", n.cpus},
                         {"capacity_bytes", n.capacity_bytes},
                         {"bandwidth_mib_s", or_null(n.bandwidth_mib_s)},
                         {"latency_ns", or_null(n.latency_ns)},
                         {"subtype", n.subtype},
                         {"candidate", n.candidate()}});
    out["numa_nodes"] = std::move(nodes);
    Json memkind{{"built_in", t.memkind.built_in}};
    if (t.memkind.built_in)
        memkind["kinds"] = {{"pmem", t.memkind.pmem},
                            {"dax_kmem", t.memkind.dax_kmem},
                            {"highest_capacity", t.memkind.highest_capacity}};
    out["memkind"] = std::move(memkind);
    Json defaults = Json::array();
    for (const auto& tier : t.default_tiers()) {
        Json entry{{"tier", std::string(to_string(tier.kind))}, {"bytes", or_null(tier.bytes)}, {"how", tier.how}};
        if (tier.node >= 0) entry["node"] = tier.node;
        defaults.push_back(std::move(entry));
    }
    out["defaults"] = std::move(defaults);
    return out;
}

// The tiers a config file makes, checked as tiercache-fuse would check them.
Json configured_tiers(const std::string& path) {
    Config config = ConfigFile::load(path).apply(Config{});
    if (config.origin().empty()) config.origin("/");  // the origin is not ours to check here
    config.validate();
    Json out = Json::array();
    for (const TierConfig& t : config.tiers()) {
        Json entry{{"tier", t.name()}, {"size", t.size}, {"bytes", tier_bytes(t)}};
        if (!t.dir.empty()) entry["dir"] = t.dir.string();
        if (t.node >= 0) entry["node"] = t.node;
        out.push_back(std::move(entry));
    }
    return out;
}

}  // namespace

void run_tiers(const TiersOptions& options) {
    const Topology topology = Topology::discover();
    const Json configured = options.config.empty() ? Json() : configured_tiers(options.config);
    if (options.json) {
        Json out = to_json(topology);
        if (!options.config.empty()) out["configured"] = configured;
        std::printf("%s\n", out.dump(2).c_str());
        return;
    }
    print_report(topology);
    if (options.config.empty()) return;
    std::printf("\nWhat %s makes (fastest first)\n", options.config.c_str());
    Table table(Table::Values::left);
    table.add_row({"tier", "size", "where"});
    for (const auto& t : configured)
        table.add_row({t["tier"].get<std::string>(), human_bytes(t["bytes"].get<double>()) + " (" + t["size"].get<std::string>() + ")",
                       t.contains("dir") ? t["dir"].get<std::string>() : t.contains("node") ? "NUMA node " + std::to_string(t["node"].get<int>()) : "-"});
    table.print(stdout, "  ");
}

}  // namespace tiercache::cli
