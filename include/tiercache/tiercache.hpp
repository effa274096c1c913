// tiercache: a tiered-memory dataset cache for deep-learning training. Include this.
#pragma once
#include "cache.hpp"
#include "client.hpp"
#include "owner.hpp"
#include "share.hpp"
#include "catalog.hpp"
#include "config.hpp"
#include "epoch_loader.hpp"
#include "epoch_plan.hpp"
#include "error.hpp"
#include "extent.hpp"
#include "job.hpp"
#include "log.hpp"
#include "origin.hpp"
#include "pinned_memory.hpp"
#include "policy.hpp"
#include "prefetcher.hpp"
#include "record.hpp"
#include "record_index.hpp"
#include "sample_ref.hpp"
#include "segment.hpp"
#include "size.hpp"
#include "stats.hpp"
#include "version.hpp"

namespace tiercache {
inline constexpr const char* version() { return TIERCACHE_VERSION; }
}  // namespace tiercache
