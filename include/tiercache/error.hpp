// Exceptions the library throws. Each message names the sample, path or value at fault.
#pragma once
#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

namespace tiercache {

// An id outside the catalog, or a relative path the catalog does not hold.
class UnknownSample : public std::out_of_range {
public:
    using std::out_of_range::out_of_range;
};

// Reading the origin failed; code() carries the errno, so the mount can reply with it.
class OriginError : public std::system_error {
public:
    OriginError(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
    int errno_value() const noexcept { return code().value(); }
};

// A client of a shared cache lost its owner: it closed, died, or stopped answering. The
// message says which; attach again once an owner serves the name.
class OwnerGone : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace tiercache
