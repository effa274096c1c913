// libFuzzer target: the plan file's parser (fuse/plan_parser.hpp), as the mount drives it.
// The input's first byte picks where its text is cut into WRITEs; the rest is the text.
// Each run parses it whole, then cut (PlanParser::feed, several chunks, then finish()), then
// through PlanFile::write at growing offsets and commit(), over a catalog of a few files.
// Invariants: cutting never changes the outcome (the same errno, the same plan); an error is
// EINVAL or EFBIG with a message naming a line or the end; a plan that parses is well formed
// (seeded: world >= 1, rank < world; paths: files of the catalog, records inside them, no more
// lines than allowed);
// PlanFile applies exactly what the parser gave, and a rejected plan is never applied.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include <plan_file.hpp>

namespace {

using tiercache::fuse::ParsedPlan;
using tiercache::fuse::PlanParser;
using tiercache::fuse::PlanTarget;

// The dataset: these files, and the directories above them.
const std::vector<std::string> kFiles = {"a.jpg", "cls/x.jpg", "cls/y.jpg", "seed=1", "d/e/f", "with space.png", "tab\tname"};
constexpr std::size_t kSamples = 7;
constexpr std::uint64_t kFileBytes = 1000;  // each

PlanTarget resolve(std::string_view path) {
    for (std::size_t i = 0; i < kFiles.size(); ++i)
        if (kFiles[i] == path) return {static_cast<tiercache::SampleId>(i), false, kFileBytes};
    for (std::string_view dir : {"cls", "d", "d/e"})
        if (dir == path) return {std::nullopt, true};
    return {};
}

[[noreturn]] void broken(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "fuzz_plan: %s %s\n", what, detail.c_str());
    std::abort();
}

struct Outcome {
    int err = 0;
    ParsedPlan plan;
};

bool same(const ParsedPlan& a, const ParsedPlan& b) {
    return a.kind == b.kind && a.seed == b.seed && a.epoch == b.epoch && a.rank == b.rank && a.world == b.world &&
           a.drop_last == b.drop_last && a.records == b.records && a.any_record == b.any_record;
}

// Chunk lengths from `cut`: 0 means whole; otherwise a small pseudo-random walk.
std::vector<std::string_view> chunks(std::string_view text, std::uint8_t cut) {
    std::vector<std::string_view> out;
    if (cut == 0) {
        out.push_back(text);
        return out;
    }
    std::uint32_t state = cut;
    while (!text.empty()) {
        state = state * 1103515245u + 12345u;
        const std::size_t n = std::min<std::size_t>(text.size(), 1 + (state >> 16) % (cut < 128 ? 8 : 4200));
        out.push_back(text.substr(0, n));
        text.remove_prefix(n);
    }
    return out;
}

Outcome parse(const std::vector<std::string_view>& parts) {
    PlanParser p(kSamples, resolve);
    Outcome o;
    for (auto part : parts)
        if ((o.err = p.feed(part))) break;
    if (!o.err) o.err = p.finish();
    if (o.err) {
        if (o.err != EINVAL && o.err != EFBIG) broken("an errno other than EINVAL and EFBIG:", std::to_string(o.err));
        const std::string& m = p.error_message();
        if (m.rfind("line ", 0) != 0 && m.rfind("end of plan: ", 0) != 0) broken("an error naming no line:", m);
        if (p.error() != o.err) broken("error() differs from the result");
    } else {
        o.plan = p.take();
    }
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    tiercache::set_log_level(tiercache::LogLevel::error);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t cut = data[0];
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

    const Outcome whole = parse({text});
    if (!whole.err) {
        const ParsedPlan& p = whole.plan;
        if (p.kind == ParsedPlan::Kind::seed && (p.world == 0 || p.rank >= p.world)) broken("a seeded plan with a bad rank or world");
        if (p.kind != ParsedPlan::Kind::paths && !p.records.empty()) broken("records in a plan that is not of paths");
        if (p.records.size() > 4 * kSamples + 16) broken("more paths than lines allowed");
        for (const auto& r : p.records) {
            if (r.file >= kSamples) broken("a file outside the catalog");
            if (r.offset > kFileBytes || r.length > kFileBytes - r.offset) broken("a record past the end of its file");
        }
    }
    const auto parts = chunks(text, cut);
    const Outcome cut_up = parse(parts);
    if (cut_up.err != whole.err) broken("cutting the text changed the errno");
    if (!whole.err && !same(whole.plan, cut_up.plan)) broken("cutting the text changed the plan");

    // Through PlanFile, as WRITEs at growing offsets to one open file, then an fsync.
    std::optional<ParsedPlan> applied;
    int applies = 0;
    tiercache::fuse::PlanFile file(
        kSamples, resolve,
        [&](tiercache::JobId, ParsedPlan p) {
            ++applies;
            const std::size_t n = p.kind == ParsedPlan::Kind::paths ? p.records.size() : kSamples;
            applied = std::move(p);
            return n;
        },
        [](tiercache::JobId) {});
    const tiercache::fuse::Process me{static_cast<tiercache::JobId>(::getpid()), 0};
    const pid_t tid = ::getpid();
    constexpr fuse_ino_t ino = 42;
    file.truncate(ino, tid, me);
    std::uint64_t offset = 0;
    int err = 0;
    for (auto part : parts) {
        if ((err = file.write(ino, offset, part, tid, me))) break;
        offset += part.size();
    }
    if (!err) err = file.commit(ino);
    else if (file.commit(ino) != 0) broken("a commit after a rejected write reported an error");
    if (err != whole.err) broken("PlanFile's result differs from the parser's:", std::to_string(err) + " vs " + std::to_string(whole.err));
    if (whole.err) {
        if (applies != 0) broken("a rejected plan was applied");
        if (file.json(me.job, 0, 0)["last_error"].is_null()) broken("a rejected plan left no last_error");
    } else {
        if (applies != 1 || !applied || !same(*applied, whole.plan)) broken("PlanFile applied another plan than the parser's");
        if (file.commit(ino) != 0 || applies != 1) broken("a second commit applied the plan again");
    }
    (void)file.json(me.job, 0, 1).dump();
    return 0;
}
