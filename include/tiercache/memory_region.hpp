// Where a memory tier's bytes live: the dram segment, a pmem file or kind, or memory bound to
// a (CXL) NUMA node. A tier only allocates and frees whole-sample blocks in it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tiercache {

class MemoryRegion {
public:
    virtual ~MemoryRegion() = default;
    // A block of `bytes`, or nullptr when the region has no block that large left.
    // Thread-safe.
    virtual std::byte* allocate(std::size_t bytes) noexcept = 0;
    virtual void deallocate(std::byte* block) noexcept = 0;
    // What backs it, for logs and `tiercache tiers`: "NUMA node 1 (mbind)", "memkind pmem kind on /pmem/tc".
    virtual std::string describe() const = 0;
};

}  // namespace tiercache
