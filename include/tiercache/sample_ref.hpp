// A pinned view of a sample's bytes in a tier: while it lives the bytes cannot be freed, so
// a reader copies (or hands to FUSE, or to the GPU) straight from tier memory.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace tiercache {

class SampleRef {
public:
    SampleRef() = default;
    SampleRef(std::span<const std::byte> bytes, std::atomic<std::uint32_t>* pins) noexcept : bytes_(bytes), pins_(pins) {}
    SampleRef(const SampleRef&) = delete;
    SampleRef& operator=(const SampleRef&) = delete;
    SampleRef(SampleRef&& o) noexcept : bytes_(o.bytes_), pins_(std::exchange(o.pins_, nullptr)) {}
    SampleRef& operator=(SampleRef&& o) noexcept {
        if (this != &o) { release(); bytes_ = o.bytes_; pins_ = std::exchange(o.pins_, nullptr); }
        return *this;
    }
    ~SampleRef() { release(); }

    explicit operator bool() const noexcept { return pins_ != nullptr; }
    std::span<const std::byte> bytes() const noexcept { return bytes_; }

private:
    void release() noexcept {
        if (pins_ != nullptr) pins_->fetch_sub(1);
        pins_ = nullptr;
    }

    std::span<const std::byte> bytes_;
    std::atomic<std::uint32_t>* pins_ = nullptr;  // the sample's pin count, in the segment
};

}  // namespace tiercache
