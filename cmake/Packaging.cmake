# The Debian package: `cmake --build build --target package` or `cd build && cpack -G DEB` makes
# tiercache_VERSION_ARCH.deb from the install rules (headers, CMake package, pkg-config file,
# both commands, man pages, the mount helper and the systemd unit of packaging/, the Python
# package in /usr/lib/python3/dist-packages).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tiercache)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "tiercache")
set(CPACK_PACKAGE_CONTACT "tiercache maintainers <tiercache@example.org>")
set(CPACK_PACKAGE_HOMEPAGE_URL "https://example.org/tiercache")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
# Control-file lines of at most 80 columns: one line of the string per line of the description.
string(JOIN "\n" CPACK_PACKAGE_DESCRIPTION
  "tiercache keeps a training dataset in the fast memory tiers of the host"
  "(DRAM, CXL memory, persistent memory, a local NVMe SSD), so that every epoch"
  "after the first reads from memory instead of the origin. tiercache-fuse mounts"
  "the dataset read-only through the cache (also as mount -t fuse.tiercache, from"
  "/etc/fstab, or as the systemd unit tiercache@NAME); the tiercache command shows"
  "its counters, warms it and benchmarks it. The header-only C++ library, its"
  "CMake package and pkg-config file are included, for loaders that use the"
  "cache directly.")
# Debian packages live under /usr; /usr/local is the admin's (cmake --install's default).
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # no debug info: the commands are 2.4 MB, not 56 MB (RelWithDebInfo)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # tiercache_0.1.0_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# The libraries the commands link (libfuse3, libarchive13, hwloc, numa, memkind, libstdc++) come from
# dpkg-shlibdeps (dpkg-dev); fusermount3, which unmounts, from fuse3.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3")
# No CUDA package either way: a CUDA build links no CUDA library (the loader dlopens
# libcudart.so.MAJOR when it is there: include/tiercache/detail/cuda_runtime.hpp).
# What the headers include: only a C++ consumer needs it, a mount does not, so it is recommended
# (apt installs recommends by default) rather than forced on every host that mounts.
set(_dev "libboost-dev (>= 1.74), nlohmann-json3-dev (>= 3.10), libhwloc-dev (>= 2.3), libnuma-dev, libxxhash-dev, libtomlplusplus-dev, pkg-config")
if(TIERCACHE_WITH_MEMKIND)
  string(APPEND _dev ", libmemkind-dev")
endif()
# The Python package's module is built for one Python 3 minor version (its ABI).
if(TARGET tiercache-python)
  math(EXPR _next_minor "${Python3_VERSION_MINOR} + 1")
  string(APPEND _dev ", python3 (>= ${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}), python3 (<< ${Python3_VERSION_MAJOR}.${_next_minor})")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "${_dev}")
# No conffiles: nothing is installed in /etc (the example config goes to the doc directory).
# The maintainer scripts tell a running systemd that tiercache@.service came or went.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/cmake/deb/postinst ${PROJECT_SOURCE_DIR}/cmake/deb/postrm)

include(CPack)
