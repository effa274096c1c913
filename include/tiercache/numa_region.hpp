// The cxl tier's memory (`--cxl NODE:SIZE`). A CXL Type-3 memory expander shows up as a
// CPU-less NUMA node, so reaching it takes nothing CXL-specific: anonymous memory bound to
// that node with mbind(MPOL_BIND) (libnuma, which is maintained; memkind is not needed), and
// a Boost.Interprocess allocator over it. The allocator writes its bookkeeping into the
// region, which is fine: the pages are bound before anything touches them, so they too come
// from the node.
#pragma once
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/mman.h>

#include <numa.h>
#include <numaif.h>

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>

#include "memory_region.hpp"
#include "size.hpp"

namespace tiercache {

namespace detail {

// An allocator over memory we mapped, with its bookkeeping inside that memory. Boost's own
// managed_external_buffer takes no lock (null_mutex_family); tiers allocate from many threads.
using LockedExternalHeap = boost::interprocess::basic_managed_external_buffer<
    char, boost::interprocess::rbtree_best_fit<boost::interprocess::mutex_family>, boost::interprocess::iset_index>;

// "0, 2-3": the NUMA nodes this host has, for error messages.
inline std::string numa_node_list() {
    std::string list;
    const int max = ::numa_max_node();
    for (int n = 0; n <= max; ++n) {
        if (!::numa_bitmask_isbitset(::numa_nodes_ptr, static_cast<unsigned>(n))) continue;
        int last = n;
        while (last + 1 <= max && ::numa_bitmask_isbitset(::numa_nodes_ptr, static_cast<unsigned>(last + 1))) ++last;
        list += (list.empty() ? "" : ", ") + std::to_string(n) + (last > n ? "-" + std::to_string(last) : "");
        n = last;
    }
    return list;
}

// Throws std::runtime_error naming `node` unless this host has it (with memory).
inline void require_numa_node(int node, const std::string& what) {
    if (::numa_available() < 0)
        throw std::runtime_error(what + ": NUMA node " + std::to_string(node) +
                                 ": this kernel has no NUMA support (numa_available failed)");
    if (node < 0 || node > ::numa_max_node() || !::numa_bitmask_isbitset(::numa_nodes_ptr, static_cast<unsigned>(node)))
        throw std::runtime_error(what + ": NUMA node " + std::to_string(node) + " does not exist on this host (nodes: " +
                                 numa_node_list() + ")");
}

}  // namespace detail

class NumaRegion final : public MemoryRegion {
public:
    // `bytes` of memory on NUMA node `node`. Throws std::runtime_error naming the node when
    // the host has no such node, the node has less memory than `bytes`, or binding fails;
    // std::invalid_argument for 0 bytes.
    NumaRegion(int node, std::uint64_t bytes) : node_(node), capacity_(bytes) {
        const std::string what = "cxl region of " + format_size(bytes);
        if (bytes == 0) throw std::invalid_argument("cxl region on NUMA node " + std::to_string(node) + ": size is 0");
        detail::require_numa_node(node, what);
        const long long node_bytes = ::numa_node_size64(node, nullptr);
        if (node_bytes <= 0 || static_cast<std::uint64_t>(node_bytes) < bytes)
            throw std::runtime_error(what + " does not fit in NUMA node " + std::to_string(node) + " (" +
                                     format_size(node_bytes > 0 ? static_cast<std::uint64_t>(node_bytes) : 0) + " in all)");

        void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
            throw std::runtime_error(what + " on NUMA node " + std::to_string(node) + ": mmap: " + std::strerror(errno));
        try {
            bind(base);
            heap_.emplace(boost::interprocess::create_only, base, bytes);
        } catch (const boost::interprocess::interprocess_exception& e) {
            ::munmap(base, bytes);
            throw std::runtime_error(what + " on NUMA node " + std::to_string(node) +
                                     ": cannot place an allocator in it: " + e.what());
        } catch (...) {
            ::munmap(base, bytes);
            throw;
        }
        base_ = base;
    }
    NumaRegion(const NumaRegion&) = delete;
    NumaRegion& operator=(const NumaRegion&) = delete;
    ~NumaRegion() override {
        heap_.reset();  // only bookkeeping inside the mapping: nothing to run before unmapping
        ::munmap(base_, capacity_);
    }

    // nullptr for 0 bytes, or when no block that large is left. Thread-safe.
    std::byte* allocate(std::size_t bytes) noexcept override {
        if (bytes == 0) return nullptr;
        return static_cast<std::byte*>(heap_->allocate(bytes, std::nothrow));
    }
    void deallocate(std::byte* block) noexcept override {
        if (block != nullptr) heap_->deallocate(block);
    }

    std::string describe() const override {
        return "NUMA node " + std::to_string(node_) + " (mbind MPOL_BIND, " + format_size(capacity_) + ")";
    }

    int node() const noexcept { return node_; }
    std::uint64_t capacity() const noexcept { return capacity_; }

private:
    // MPOL_BIND, not a preference: a page the node cannot supply must fail, never come
    // silently from DRAM, or the tier would only pretend to be on the expander.
    void bind(void* base) const {
        std::unique_ptr<bitmask, decltype(&::numa_bitmask_free)> mask(::numa_allocate_nodemask(), &::numa_bitmask_free);
        ::numa_bitmask_setbit(mask.get(), static_cast<unsigned>(node_));
        if (::mbind(base, capacity_, MPOL_BIND, mask->maskp, mask->size + 1, 0) != 0)
            throw std::runtime_error("cxl region of " + format_size(capacity_) + ": mbind to NUMA node " +
                                     std::to_string(node_) + ": " + std::strerror(errno));
    }

    int node_;
    std::uint64_t capacity_;
    void* base_ = nullptr;
    std::optional<detail::LockedExternalHeap> heap_;
};

}  // namespace tiercache
