// A job: one training run's plan in a shared cache, by id. The id spaces do not meet:
//   kLocalJob (0)            the plan a process sets for itself (Cache::set_plan without a job)
//   1 .. 2^32 - 1            the mount's: the thread group id of the process writing its plan file
//   kFirstClientJob (2^32).. attached clients', one per connection's job, handed out by the owner
#pragma once
#include <cstdint>

namespace tiercache {

using JobId = std::uint64_t;
inline constexpr JobId kLocalJob = 0;
inline constexpr JobId kFirstClientJob = JobId{1} << 32;

}  // namespace tiercache
