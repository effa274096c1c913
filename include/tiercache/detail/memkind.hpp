// Everything tiercache takes from memkind, behind one header. memkind's upstream is
// discontinued, so it stays optional: only code under TIERCACHE_HAVE_MEMKIND includes this,
// and a build without it keeps every tier (the pmem tier then maps a file itself).
#pragma once
#ifndef TIERCACHE_HAVE_MEMKIND
#error "tiercache/detail/memkind.hpp needs memkind: include it only #if TIERCACHE_HAVE_MEMKIND"
#endif
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <memkind.h>

namespace tiercache::detail {

// memkind's text for one of its error codes.
inline std::string memkind_error(int err) {
    char message[MEMKIND_ERROR_MESSAGE_SIZE] = {};
    memkind_error_message(err, message, sizeof message);
    return message;
}

// The smallest pmem kind memkind creates.
inline constexpr std::uint64_t kMemkindPmemMinBytes = MEMKIND_PMEM_MIN_SIZE;

// A memkind pmem kind: a temporary file in `dir` that memkind grows up to `max_bytes` and
// hands out with its own jemalloc arenas. memkind unlinks the file itself, so it never
// outlives the kind.
class MemkindPmemKind {
public:
    // Throws std::runtime_error with memkind's reason when the kind cannot be made.
    MemkindPmemKind(const std::filesystem::path& dir, std::uint64_t max_bytes) {
        if (max_bytes < kMemkindPmemMinBytes)  // memkind says only "invalid input arguments"
            throw std::runtime_error("memkind's pmem kind needs at least " + std::to_string(kMemkindPmemMinBytes >> 20) +
                                     " MiB, not " + std::to_string(max_bytes) + " bytes");
        const int err = memkind_create_pmem(dir.c_str(), static_cast<std::size_t>(max_bytes), &kind_);
        if (err != 0)
            throw std::runtime_error("memkind_create_pmem('" + dir.string() + "', " + std::to_string(max_bytes) +
                                     " bytes): " + memkind_error(err));
    }
    MemkindPmemKind(const MemkindPmemKind&) = delete;
    MemkindPmemKind& operator=(const MemkindPmemKind&) = delete;
    ~MemkindPmemKind() { memkind_destroy_kind(kind_); }

    // nullptr once the kind has handed out max_bytes (memkind's own accounting). Thread-safe.
    void* allocate(std::size_t bytes) noexcept { return memkind_malloc(kind_, bytes); }
    void deallocate(void* p) noexcept { memkind_free(kind_, p); }

private:
    memkind_t kind_ = nullptr;
};

// Which of memkind's static kinds this host can serve (memkind_check_available).
struct MemkindKinds {
    bool dax_kmem = false;          // a KMEM-DAX NUMA node (PMEM or CXL onlined as system RAM)
    bool highest_capacity = false;  // the NUMA node(s) with the most memory
};

inline MemkindKinds memkind_kinds() noexcept {
    MemkindKinds k;
    k.dax_kmem = memkind_check_available(MEMKIND_DAX_KMEM) == 0;
    k.highest_capacity = memkind_check_available(MEMKIND_HIGHEST_CAPACITY) == 0;
    return k;
}

}  // namespace tiercache::detail
