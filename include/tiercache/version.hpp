// The library's version: the one place it is written (CMakeLists.txt reads it from here).
#pragma once

#define TIERCACHE_VERSION_MAJOR 0
#define TIERCACHE_VERSION_MINOR 1
#define TIERCACHE_VERSION_PATCH 0
#define TIERCACHE_VERSION "0.1.0"
