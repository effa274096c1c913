// XXH3-64, compiled inline so the library stays header-only (nothing to link).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#endif
#include <xxhash.h>

namespace tiercache::detail {

inline std::uint64_t xxh3(std::span<const std::byte> bytes) noexcept {
    return XXH3_64bits(bytes.data(), bytes.size());
}

}  // namespace tiercache::detail
