#include "revalidator.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <tiercache/log.hpp>

#include "inodes.hpp"

namespace tiercache::fuse {

Revalidator::Revalidator(OwnerCache& cache, double period_s) : cache_(cache), period_s_(period_s) {
    if (period_s_ < 0) throw std::invalid_argument("revalidate period must be 0 or more seconds");
    cache_.on_change([this](SampleId id) { changed(id); });
}

Revalidator::~Revalidator() {
    stop();
    cache_.on_change({});
}

void Revalidator::start() { revalidator_ = std::thread([this] { loop(); }); }

void Revalidator::stop() {
    {
        std::lock_guard lock(revalidate_mutex_);
        revalidate_stop_ = true;
    }
    revalidate_wake_.notify_all();
    if (revalidator_.joinable()) revalidator_.join();
}

nlohmann::ordered_json Revalidator::json() const {
    return {{"period_s", period_s_},
            {"files_checked", revalidated_.load(std::memory_order_relaxed)},
            {"passes", passes_.load(std::memory_order_relaxed)},
            {"changes", changes_.load(std::memory_order_relaxed)}};
}

void Revalidator::changed(SampleId id) {
    changes_.fetch_add(1, std::memory_order_relaxed);
    {
        std::lock_guard lock(revalidate_mutex_);
        if (changed_.size() < 65536) changed_.push_back(id);  // beyond: the pass finds them again
    }
    revalidate_wake_.notify_all();
}

void Revalidator::loop() {
    using namespace std::chrono_literals;
    constexpr auto kTick = 10ms;
    const std::size_t n = cache_.catalog().size();
    const double per_tick = period_s_ > 0 && n > 0
                                ? std::min(n / period_s_, kMaxRevalidationsPerSecond) * std::chrono::duration<double>(kTick).count()
                                : 0.0;
    double credit = 0;
    SampleId next = 0;
    auto due = std::chrono::steady_clock::now() + kTick;
    // The nvme index is what makes a restart warm; a daemon killed with kill -9 never saves it
    // at close, so it is saved every few seconds while it changes.
    auto save_due = std::chrono::steady_clock::now() + 5s;
    std::uint64_t saved_changes = 0;
    auto save_index = [&] {
        std::uint64_t changes = 0;
        for (const auto& t : cache_.stats().tiers)
            if (t.name == "nvme") changes = t.insertions + t.evictions + t.checksum_failures + 1;
        if (changes == saved_changes) return;
        try {
            cache_.flush();
            saved_changes = changes;
        } catch (const std::exception& e) {
            log(LogLevel::warn, "saving the nvme index: ", e.what());
        }
    };
    std::unique_lock lock(revalidate_mutex_);
    while (!revalidate_stop_) {
        revalidate_wake_.wait_until(lock, due, [&] { return revalidate_stop_ || !changed_.empty(); });
        if (revalidate_stop_) break;
        // Changes first: the kernel drops its pages and attributes of the sample (never from a
        // request of that inode: invalidating waits for the pages that request holds).
        while (!changed_.empty()) {
            const SampleId id = changed_.front();
            changed_.pop_front();
            lock.unlock();
            if (session_ != nullptr) {
                const int err = fuse_lowlevel_notify_inval_inode(session_, sample_ino(id), 0, 0);
                if (err != 0 && err != -ENOENT)  // ENOENT: the kernel holds nothing of it
                    log(LogLevel::warn, "revalidation: could not invalidate the kernel's copy of '", cache_.catalog().path(id),
                        "': ", std::strerror(-err));
            }
            lock.lock();
        }
        if (std::chrono::steady_clock::now() < due) continue;
        due += kTick;
        if (std::chrono::steady_clock::now() >= save_due) {
            lock.unlock();
            save_index();
            lock.lock();
            save_due = std::chrono::steady_clock::now() + 5s;
        }
        if (per_tick <= 0) {
            due = std::chrono::steady_clock::now() + 1s;  // only misses' changes to pass on
            continue;
        }
        credit = std::min(credit + per_tick, per_tick + 1);
        lock.unlock();
        for (; credit >= 1; credit -= 1) {
            try {
                cache_.revalidate(next);  // a change comes back through changed()
            } catch (const std::exception& e) {
                log(LogLevel::warn, "revalidation of '", cache_.catalog().path(next), "' failed: ", e.what());
            }
            revalidated_.fetch_add(1, std::memory_order_relaxed);
            if (++next == n) {
                next = 0;
                passes_.fetch_add(1, std::memory_order_relaxed);
            }
        }
        lock.lock();
        if (std::chrono::steady_clock::now() > due + 1s) due = std::chrono::steady_clock::now() + kTick;  // fell behind: no burst
    }
}

}  // namespace tiercache::fuse
