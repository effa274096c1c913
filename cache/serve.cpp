#include "serve.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <tiercache/config_file.hpp>
#include <tiercache/tiercache.hpp>

namespace tiercache::cli {

int run_serve(const ServeOptions& o, bool dram_given, bool policy_given, bool segment_dir_given) {
    Config config;
    if (!o.config.empty()) config = ConfigFile::load(o.config).apply(config);
    if (!o.origin.empty()) config.origin(o.origin);
    if (dram_given) config.dram(o.dram);
    if (!o.pmem.empty()) config.tier(parse_tier_arg(TierKind::pmem, o.pmem, "--pmem"));
    if (!o.cxl.empty()) config.tier(parse_tier_arg(TierKind::cxl, o.cxl, "--cxl"));
    if (!o.nvme.empty()) config.tier(parse_tier_arg(TierKind::nvme, o.nvme, "--nvme"));
    if (policy_given) config.policy(o.policy);
    if (segment_dir_given) config.segment_dir(o.segment_dir);
    config.share(o.name).share_group(o.group);
    if (!o.log_file.empty()) {
        std::FILE* log = std::fopen(o.log_file.c_str(), "a");
        if (log == nullptr) throw std::runtime_error("--log '" + o.log_file + "': " + std::strerror(errno));
        set_log_file(log);
    }

    // Wait for SIGINT/SIGTERM in sigwait: blocked before the cache starts its threads, so
    // they inherit the mask and the signal comes here.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);

    OwnerCache cache(config);
    std::printf("serving cache '%s' of %s: attach with Cache::attach(\"%s\")\n", o.name.c_str(), config.origin().c_str(),
                o.name.c_str());
    std::fflush(stdout);
    int signal = 0;
    sigwait(&stop, &signal);
    log(LogLevel::info, "serve: ", ::strsignal(signal), ": closing cache '", o.name, "'");
    return 0;  // the cache closes: clients are told, the nvme index is saved
}

}  // namespace tiercache::cli
