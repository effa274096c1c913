// What memory this host has, discovered rather than guessed: every NUMA node with its
// capacity, whether CPUs sit on it, and the bandwidth and latency hwloc knows for it (from
// the firmware's HMAT tables, where it has them); which memkind kinds can be served; and from
// that, the tiers tiercache would use by default. `tiercache tiers` prints it.
//
// A node without CPUs is memory only: a CXL Type-3 expander, or PMEM onlined as system RAM
// (KMEM DAX). Either is reached the same way, as the cxl tier (`--cxl NODE:SIZE`).
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <hwloc.h>
#include <numa.h>

#include "config.hpp"
#include "size.hpp"

#if TIERCACHE_HAVE_MEMKIND
#include "detail/memkind.hpp"
#endif

namespace tiercache {

struct NumaNode {
    unsigned os_index = 0;            // the kernel's node number, as --cxl NODE takes it
    std::uint64_t capacity_bytes = 0; // memory local to the node
    unsigned cpus = 0;                // CPUs on the node; 0 for a memory-only node
    std::string subtype;              // hwloc's kind of memory where it tells ("NVM", "CXL-DRAM", "MCDRAM"), else ""
    std::optional<std::uint64_t> bandwidth_mib_s;  // from the node's CPUs (or the machine); unknown without HMAT
    std::optional<std::uint64_t> latency_ns;

    bool has_cpus() const noexcept { return cpus > 0; }
    // Which tier this node's memory would serve: "dram" where CPUs sit, "cxl" for a memory-only
    // node, "cxl (KMEM-DAX pmem)" where hwloc says it is non-volatile memory.
    std::string candidate() const {
        if (has_cpus()) return "dram";
        return subtype == "NVM" ? "cxl (KMEM-DAX pmem)" : "cxl";
    }
};

// memkind's view, when built with it (TIERCACHE_HAVE_MEMKIND).
struct MemkindInfo {
    bool built_in = false;
    bool dax_kmem = false;          // MEMKIND_DAX_KMEM: a KMEM-DAX node is there
    bool highest_capacity = false;  // MEMKIND_HIGHEST_CAPACITY
    // The pmem kind needs no hardware: it works on any directory (PmemRegion::Backend::memkind).
    bool pmem = false;
};

// One tier as tiercache would set it up with no tier options.
struct DefaultTier {
    TierKind kind = TierKind::dram;
    std::optional<std::uint64_t> bytes;  // none when the tier is not used until configured
    int node = -1;                       // cxl: the NUMA node
    std::string how;                     // what backs it, or why it is not used
};

struct Topology {
    std::vector<NumaNode> nodes;          // by os_index
    std::uint64_t physical_memory_bytes = 0;
    std::string hwloc_version;            // the hwloc release built against
    MemkindInfo memkind;

    // Reads the host with hwloc (and libnuma for CPU counts). Throws std::runtime_error if
    // hwloc cannot load the topology.
    static Topology discover();

    std::uint64_t total_capacity_bytes() const noexcept {
        std::uint64_t total = 0;
        for (const auto& n : nodes) total += n.capacity_bytes;
        return total;
    }

    // RAM the kernel counts (sysconf) but no NUMA node does. Nodes usually add up to the RAM;
    // in some VMs they do not (seen here: node 0 holds 7-11 GB of 24.7 GB, and the figure moves
    // while the hypervisor hot-plugs or balloons memory). Percentages keep their meaning there:
    // --dram P% is of the RAM (its segment is not bound to a node), --cxl NODE:P% of that node's
    // own count (all that mbind may place there).
    std::uint64_t memory_outside_nodes_bytes() const noexcept {
        const std::uint64_t in_nodes = total_capacity_bytes();
        return physical_memory_bytes > in_nodes ? physical_memory_bytes - in_nodes : 0;
    }

    // What `tiercache tiers` says of it: empty where the nodes hold the RAM, to 1%.
    std::string memory_note() const;

    // dram: the default of --dram (10% of RAM) in a /dev/shm segment; cxl: each memory-only
    // node, whole; pmem and nvme: never unless configured, since no directory can be guessed.
    std::vector<DefaultTier> default_tiers() const;
};

namespace detail {

// A value of memory attribute `id` for `node` as seen from `initiator`, if hwloc has one.
inline std::optional<std::uint64_t> memattr(hwloc_topology_t topology, hwloc_memattr_id_t id, hwloc_obj_t node,
                                            hwloc_const_cpuset_t initiator) {
    hwloc_uint64_t value = 0;
    int rc = 0;
    if (initiator == nullptr) {
        rc = hwloc_memattr_get_value(topology, id, node, nullptr, 0, &value);
    } else {
        hwloc_location location{};
        location.type = HWLOC_LOCATION_TYPE_CPUSET;
        location.location.cpuset = const_cast<hwloc_cpuset_t>(initiator);  // only read
        rc = hwloc_memattr_get_value(topology, id, node, &location, 0, &value);
    }
    if (rc != 0) return std::nullopt;
    return static_cast<std::uint64_t>(value);
}

// Bandwidth or latency of `node`: from its own CPUs first, else from the whole machine.
inline std::optional<std::uint64_t> memattr_from_cpus(hwloc_topology_t topology, hwloc_memattr_id_t id, hwloc_obj_t node) {
    if (node->cpuset != nullptr && !hwloc_bitmap_iszero(node->cpuset))
        if (auto v = memattr(topology, id, node, node->cpuset)) return v;
    return memattr(topology, id, node, hwloc_get_root_obj(topology)->cpuset);
}

// CPUs on `node` from the kernel (sysfs, through libnuma). hwloc gives a memory-only node the
// cpuset of the package it hangs below, so its cpuset cannot tell whether CPUs sit on it.
inline unsigned cpus_on_node(unsigned node) {
    if (::numa_available() < 0) return 0;
    std::unique_ptr<bitmask, decltype(&::numa_bitmask_free)> cpus(::numa_allocate_cpumask(), &::numa_bitmask_free);
    if (::numa_node_to_cpus(static_cast<int>(node), cpus.get()) != 0) return 0;
    return ::numa_bitmask_weight(cpus.get());
}

}  // namespace detail

inline Topology Topology::discover() {
    Topology t;
    t.physical_memory_bytes = tiercache::physical_memory_bytes();
    t.hwloc_version = HWLOC_VERSION;  // the release (2.9.0); hwloc_get_api_version() gives the API's (2.8.0)

    hwloc_topology_t raw = nullptr;
    if (hwloc_topology_init(&raw) != 0) throw std::runtime_error("hwloc: cannot initialize a topology");
    std::unique_ptr<hwloc_topology, decltype(&hwloc_topology_destroy)> topology(raw, &hwloc_topology_destroy);
    if (hwloc_topology_load(raw) != 0) throw std::runtime_error("hwloc: cannot load this host's topology");

    const int count = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < count; ++i) {
        hwloc_obj_t obj = hwloc_get_obj_by_type(raw, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
        NumaNode node;
        node.os_index = obj->os_index;
        node.capacity_bytes = detail::memattr(raw, HWLOC_MEMATTR_ID_CAPACITY, obj, nullptr)
                                  .value_or(obj->attr->numanode.local_memory);
        node.cpus = detail::cpus_on_node(obj->os_index);
        if (obj->subtype != nullptr) node.subtype = obj->subtype;
        node.bandwidth_mib_s = detail::memattr_from_cpus(raw, HWLOC_MEMATTR_ID_BANDWIDTH, obj);
        node.latency_ns = detail::memattr_from_cpus(raw, HWLOC_MEMATTR_ID_LATENCY, obj);
        t.nodes.push_back(std::move(node));
    }

#if TIERCACHE_HAVE_MEMKIND
    const detail::MemkindKinds kinds = detail::memkind_kinds();
    t.memkind = {.built_in = true, .dax_kmem = kinds.dax_kmem, .highest_capacity = kinds.highest_capacity, .pmem = true};
#endif
    return t;
}

inline std::string Topology::memory_note() const {
    const std::uint64_t outside = memory_outside_nodes_bytes();
    if (outside <= physical_memory_bytes / 100) return "";
    auto gib = [](std::uint64_t bytes) {
        char text[32];
        std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / static_cast<double>(std::uint64_t{1} << 30));
        return std::string(text);
    };
    return "the NUMA nodes count " + gib(total_capacity_bytes()) + " of the " + gib(physical_memory_bytes) + " of RAM: " +
           gib(outside) + " is in no node's count (memory a VM's hypervisor hot-plugs or balloons shows this way). " +
           "--dram P% is taken of the RAM; --cxl NODE:P% of that node's own count, all that mbind may place there";
}

inline std::vector<DefaultTier> Topology::default_tiers() const {
    std::vector<DefaultTier> tiers;
    const Config defaults;  // the tier list with no options: dram only, at its default size
    const TierConfig& dram = *defaults.find_tier(TierKind::dram);
    tiers.push_back({TierKind::dram, tier_bytes(dram), -1,
                     dram.size + " of RAM (--dram), in a segment in " + defaults.segment_dir().string()});
    tiers.push_back({TierKind::pmem, std::nullopt, -1,
                     std::string("only when configured: --pmem DIR:SIZE (") +
                         (memkind.built_in ? "a mapped file; memkind's pmem kind on request" : "a mapped file; built without memkind") + ")"});
    bool memory_only_node = false;
    for (const auto& n : nodes)
        if (!n.has_cpus()) {
            memory_only_node = true;
            tiers.push_back({TierKind::cxl, n.capacity_bytes, static_cast<int>(n.os_index),
                             "NUMA node " + std::to_string(n.os_index) + ", memory only (mbind); --cxl " +
                                 std::to_string(n.os_index) + ":SIZE to change"});
        }
    if (!memory_only_node)
        tiers.push_back({TierKind::cxl, std::nullopt, -1, "none: no memory-only NUMA node (--cxl NODE:SIZE to use one)"});
    tiers.push_back({TierKind::nvme, std::nullopt, -1, "only when configured: --nvme DIR:SIZE"});
    return tiers;
}

}  // namespace tiercache
