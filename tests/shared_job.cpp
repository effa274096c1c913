// tiercache-test-job: a training job's reads, for the shared-cache tests. It reads every sample
// of the dataset once per epoch in its own shuffled order (EpochPlan(seed, epoch)), either
// attached to a shared cache (--attach NAME) or through a mount (--mount DIR), and compares
// each sample with the origin's file. Exit status: 0 when every byte matched, 1 on a wrong
// byte (named on stderr), 2 on any other error (its message on stderr).
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <cstring>
#include <grp.h>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <tiercache/tiercache.hpp>

namespace fs = std::filesystem;

namespace {

std::vector<std::byte> read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open '" + path.string() + "'");
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(bytes.size());
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
}

volatile std::sig_atomic_t stop = 0;

}  // namespace

int main(int argc, char** argv) {
    std::string attach, mount, origin, user, ready;
    std::uint64_t seed = 1, epochs = 1;
    bool loop = false, plan = false, loader = false;
    unsigned timeout_ms = 2000;
    CLI::App app{"A job reading a shared tiercache (for tests)", "tiercache-test-job"};
    auto* attach_opt = app.add_option("--attach", attach, "the shared cache to attach to");
    auto* mount_opt = app.add_option("--mount", mount, "or a mount to read through");
    attach_opt->excludes(mount_opt);
    app.add_option("--origin", origin, "the dataset, to compare with")->required();
    app.add_option("--seed", seed, "this job's shuffle seed");
    app.add_option("--epochs", epochs, "epochs to read");
    app.add_flag("--loop", loop, "read epochs until SIGTERM");
    app.add_flag("--plan", plan, "register each epoch's plan (attach) or write it to the plan file (mount)");
    app.add_flag("--loader", loader, "read through an EpochLoader (attach only)");
    app.add_option("--owner-timeout-ms", timeout_ms, "how long a silent owner is waited for");
    app.add_option("--as-user", user, "UID:GID to become before attaching");
    app.add_option("--ready", ready, "create this file once the first sample was read (the job is mid-read from then on)");
    CLI11_PARSE(app, argc, argv);
    if (attach.empty() && mount.empty()) {
        std::fprintf(stderr, "give --attach or --mount\n");
        return 2;
    }
    std::signal(SIGTERM, [](int) { stop = 1; });

    try {
        if (!user.empty()) {
            const auto colon = user.find(':');
            const gid_t gid = static_cast<gid_t>(std::stoul(user.substr(colon + 1)));
            const uid_t uid = static_cast<uid_t>(std::stoul(user.substr(0, colon)));
            if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)
                throw std::runtime_error("cannot become " + user + ": " + std::strerror(errno));
        }
        std::uint64_t samples = 0, bytes = 0;
        if (!attach.empty()) {
            tiercache::AttachOptions options;
            options.owner_timeout = std::chrono::milliseconds(timeout_ms);
            auto cache = tiercache::Cache::attach(attach, options);
            const auto& catalog = cache.catalog();
            std::vector<std::byte> buffer;
            for (std::uint64_t e = 0; (loop || e < epochs) && !stop; ++e) {
                const tiercache::EpochPlan order(catalog.size(), seed, e);
                auto check = [&](tiercache::SampleId id, std::span<const std::byte> got) {
                    const auto want = read_file(fs::path(origin) / std::string(catalog.path(id)));
                    if (got.size() != want.size() || !std::equal(got.begin(), got.end(), want.begin())) {
                        std::fprintf(stderr, "WRONG BYTES in '%s' (%zu bytes, want %zu)\n", std::string(catalog.path(id)).c_str(),
                                     got.size(), want.size());
                        std::exit(1);
                    }
                    ++samples, bytes += got.size();
                    if (samples == 1 && !ready.empty()) std::ofstream(ready) << "reading\n";
                };
                if (loader) {
                    tiercache::EpochLoader load(cache, order, {.batch = 8, .depth = 4, .threads = 4});
                    while (auto batch = load.next()) {
                        for (std::size_t i = 0; i < batch->size(); ++i) check(batch->ids()[i], batch->sample(i));
                        if (stop) break;
                    }
                } else {
                    if (plan) cache.set_plan(order);
                    for (tiercache::SampleId id : order.order()) {
                        if (stop) break;
                        buffer.resize(cache.size(id));
                        const std::size_t n = cache.read(id, 0, buffer);
                        check(id, std::span(buffer).first(n));
                    }
                }
            }
        } else {
            std::vector<std::string> files;  // relative paths, sorted as the catalog sorts them
            for (const auto& entry : fs::recursive_directory_iterator(mount)) {
                const std::string rel = fs::relative(entry.path(), mount).string();
                if (rel.starts_with(".tiercache")) continue;
                if (entry.is_regular_file()) files.push_back(rel);
            }
            std::sort(files.begin(), files.end());
            for (std::uint64_t e = 0; (loop || e < epochs) && !stop; ++e) {
                const tiercache::EpochPlan order(files.size(), seed, e);
                if (plan) {
                    std::string text;
                    for (auto id : order.order()) text += files[id] + "\n";
                    std::ofstream(fs::path(mount) / ".tiercache" / "plan") << text;
                }
                for (auto id : order.order()) {
                    if (stop) break;
                    const auto got = read_file(fs::path(mount) / files[id]);
                    const auto want = read_file(fs::path(origin) / files[id]);
                    if (got != want) {
                        std::fprintf(stderr, "WRONG BYTES in '%s' through the mount\n", files[id].c_str());
                        return 1;
                    }
                    ++samples, bytes += got.size();
                }
            }
        }
        std::printf("ok %llu samples %llu bytes\n", static_cast<unsigned long long>(samples), static_cast<unsigned long long>(bytes));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
