// Inode numbers of the mount. They are a pure function of the catalog (no table, no
// per-file state), so lookups cost nothing and forget has nothing to free for data.
#pragma once
#include <cstdint>
#include <fuse_lowlevel.h>
#include <tiercache/catalog.hpp>

namespace tiercache::fuse {

inline constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;  // catalog directory 0
inline constexpr fuse_ino_t kControlDirIno = 2;       // MOUNTPOINT/.tiercache
inline constexpr fuse_ino_t kDirBase = 16;            // directory d >= 1: kDirBase + d
inline constexpr fuse_ino_t kSampleBase = 1ull << 33; // sample id: kSampleBase + id
inline constexpr fuse_ino_t kSnapshotBase = 1ull << 40; // control-file snapshots (see control_folder.hpp)

inline fuse_ino_t dir_ino(DirId d) { return d == kRootDir ? kRootIno : kDirBase + d; }
inline fuse_ino_t sample_ino(SampleId id) { return kSampleBase + id; }

inline bool is_dir_ino(fuse_ino_t ino) { return ino == kRootIno || (ino >= kDirBase && ino < kSampleBase); }
inline bool is_sample_ino(fuse_ino_t ino) { return ino >= kSampleBase && ino < kSnapshotBase; }
inline bool is_snapshot_ino(fuse_ino_t ino) { return ino >= kSnapshotBase; }

inline DirId dir_of(fuse_ino_t ino) { return ino == kRootIno ? kRootDir : static_cast<DirId>(ino - kDirBase); }
inline SampleId sample_of(fuse_ino_t ino) { return static_cast<SampleId>(ino - kSampleBase); }

}  // namespace tiercache::fuse
