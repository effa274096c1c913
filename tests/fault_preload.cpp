// LD_PRELOAD'ed into tiercache-fuse by the fault tests: pread() of a file whose path contains
// $TIERCACHE_FAULT_EIO fails with EIO while the file $TIERCACHE_FAULT_WHILE exists. Every
// failure injected appends a line to $TIERCACHE_FAULT_WHILE, so the test can count them.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

bool inject(int fd) {
    const char* needle = std::getenv("TIERCACHE_FAULT_EIO");
    const char* flag = std::getenv("TIERCACHE_FAULT_WHILE");
    if (needle == nullptr || flag == nullptr || ::access(flag, F_OK) != 0) return false;
    char target[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    if (std::strstr(target, needle) == nullptr) return false;
    if (FILE* f = std::fopen(flag, "a")) {
        std::fprintf(f, "%s\n", target);
        std::fclose(f);
    }
    return true;
}

using PreadFn = ssize_t (*)(int, void*, size_t, off_t);

}  // namespace

extern "C" ssize_t pread(int fd, void* buf, size_t count, off_t offset) {
    static const auto real = reinterpret_cast<PreadFn>(::dlsym(RTLD_NEXT, "pread"));
    if (inject(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count, offset);
}

extern "C" ssize_t pread64(int fd, void* buf, size_t count, off_t offset) {
    static const auto real = reinterpret_cast<PreadFn>(::dlsym(RTLD_NEXT, "pread64"));
    if (inject(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count, offset);
}
