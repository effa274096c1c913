// Shared maps of direct-I/O files (--kernel-cache off): the kernel refuses them (ENODEV) unless
// the INIT reply sets FUSE_DIRECT_IO_ALLOW_MMAP (protocol 7.39, Linux 6.6), and then serves
// the map's pages through its page cache while read() stays direct. libfuse 3.14 cannot ask
// for it (fuse_conn_info.want is 32 bits, the flag is bit 36 of the INIT flags), so the
// session's I/O sets it in the INIT reply itself. (Later libfuse releases have
// FUSE_CAP_DIRECT_IO_ALLOW_MMAP: with one, conn->want in Filesystem::do_init replaces this.)
#pragma once

struct fuse_session;

namespace tiercache::fuse {

// Gives the mounted session plain read/writev on its /dev/fuse descriptors
// (fuse_session_custom_io) that set FUSE_DIRECT_IO_ALLOW_MMAP in the INIT reply when the
// kernel's INIT request offers it; the INIT reply logs which way mmap is served. Call after
// fuse_session_mount(), before the loop. Returns false (logged) when libfuse refuses.
bool ask_direct_io_mmap(fuse_session* se);

}  // namespace tiercache::fuse
