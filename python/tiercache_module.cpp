// _tiercache: the library's Cache for Python (pybind11). python/tiercache/__init__.py
// re-exports what is here as `tiercache`; tiercache/torch.py builds a PyTorch Dataset and
// sampler on it.
//
// - Every call that copies bytes or waits (a read, an origin fetch, a scan, the owner's answer)
//   lets the GIL go, so other Python threads run meanwhile.
// - A Cache belongs to the process that opened or attached it: a forked child (a DataLoader
//   worker) that uses its copy gets a RuntimeError saying to open or attach again, and when the
//   child drops that copy the native cache is left alone (its threads, files and channel are the
//   parent's, not the child's to end). `Cache.spec` holds what opened it, so the child can.
// - The library's exceptions become Python's: UnknownSample -> FileNotFoundError (ENOENT),
//   OriginError (and every std::system_error) -> OSError with its errno, OwnerGone ->
//   tiercache.OwnerGone (a RuntimeError), std::invalid_argument -> ValueError, each with the
//   C++ message. An id outside the catalog is an IndexError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include <tiercache/tiercache.hpp>

namespace py = pybind11;
namespace tc = tiercache;
using namespace pybind11::literals;

namespace {

PyObject* owner_gone_type = nullptr;  // tiercache.OwnerGone: made once, at import, never freed

// A native cache and the process it belongs to. Calls hold a reference to it while they run
// without the GIL, so close() from another thread meanwhile ends it only once they are done.
class PyCache {
public:
    PyCache(std::unique_ptr<tc::Cache> cache, py::dict spec) : cache_(std::move(cache)), spec_(std::move(spec)) {}
    PyCache(const PyCache&) = delete;
    PyCache& operator=(const PyCache&) = delete;
    ~PyCache() {
        if (::getpid() != pid_ && cache_) new std::shared_ptr<tc::Cache>(std::move(cache_));  // a fork's copy: not ours to end
    }

    // The cache, for one call; throws unless it is open and this process's.
    std::shared_ptr<tc::Cache> get() const {
        if (!cache_) throw py::value_error("tiercache: the cache is closed");
        if (::getpid() != pid_)
            throw std::runtime_error("tiercache: this Cache was opened by process " + std::to_string(pid_) + " and cannot be used in process " +
                                     std::to_string(::getpid()) + " (a fork's copy): open or attach again here (tiercache.from_spec(cache.spec))");
        return cache_;
    }
    void close() {
        if (::getpid() != pid_) {
            if (cache_) new std::shared_ptr<tc::Cache>(std::move(cache_));
            return;
        }
        std::shared_ptr<tc::Cache> last = std::move(cache_);
        py::gil_scoped_release nogil;  // an owner's threads end here
        last.reset();
    }
    bool closed() const noexcept { return !cache_; }
    const py::dict& spec() const noexcept { return spec_; }

private:
    std::shared_ptr<tc::Cache> cache_;
    py::dict spec_;  // {"kind": "open" | "attach", "args": {...}}: what from_spec() needs to make it again
    pid_t pid_ = ::getpid();
};

// A path as the catalog holds it: str (encoded as os.fsencode does), bytes or os.PathLike.
std::string path_bytes(py::handle path) {
    PyObject* encoded = nullptr;
    if (!PyUnicode_FSConverter(path.ptr(), &encoded)) throw py::error_already_set();
    auto owned = py::reinterpret_steal<py::bytes>(encoded);
    return std::string(owned);
}

py::str path_str(std::string_view path) {
    PyObject* s = PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
    if (!s) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(s);
}

bool is_id(py::handle h) { return PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr()); }

bool is_record(py::handle h) { return PyTuple_Check(h.ptr()) || PyList_Check(h.ptr()); }

// The id an int names, if the catalog holds it.
std::optional<tc::SampleId> id_inside(const tc::Cache& cache, py::handle id) {
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(id.ptr(), &overflow);
    if (overflow || value < 0 || static_cast<unsigned long long>(value) >= cache.catalog().size()) return std::nullopt;
    return static_cast<tc::SampleId>(value);
}

// A sample named by a relative path or an id (int). IndexError for an id outside the catalog,
// FileNotFoundError (UnknownSample) for a path it does not hold.
tc::SampleId sample_of(const tc::Cache& cache, py::handle target) {
    if (is_id(target)) {
        if (auto id = id_inside(cache, target)) return *id;
        throw py::index_error("tiercache: sample id " + std::string(py::str(target)) + " is outside the catalog (" +
                              std::to_string(cache.catalog().size()) + " samples)");
    }
    return cache.id_of(path_bytes(target));
}

// A record: (path or id, offset, length), checked against the catalog (ValueError naming it).
tc::Record record_of(const tc::Cache& cache, py::handle target) {
    const auto items = py::reinterpret_borrow<py::sequence>(target);
    if (items.size() != 3) throw py::value_error("tiercache: a record is (path or id, offset, length), not " + std::string(py::repr(target)));
    const tc::Record r{sample_of(cache, items[0]), items[1].cast<std::uint64_t>(), items[2].cast<std::uint64_t>()};
    tc::check_record(cache.catalog(), r);
    return r;
}

// A plan's entries: each a path, an id (the whole file) or a record tuple.
std::vector<tc::Record> records_of(const tc::Cache& cache, py::handle entries) {
    std::vector<tc::Record> out;
    for (py::handle entry : py::reinterpret_borrow<py::iterable>(entries))
        out.push_back(is_record(entry) ? record_of(cache, entry) : tc::whole_file(cache.catalog(), sample_of(cache, entry)));
    return out;
}

// What a read of `target` from `offset` covers: the record, or the file's bytes from offset on.
tc::Record range_of(const tc::Cache& cache, py::handle target, std::uint64_t offset) {
    if (is_record(target)) {
        if (offset != 0) throw py::value_error("tiercache: a record is read from its start: offset must be 0");
        return record_of(cache, target);
    }
    const tc::SampleId id = sample_of(cache, target);
    const std::uint64_t size = cache.size(id);
    return {id, std::min(offset, size), size - std::min(offset, size)};
}

// A writable, contiguous buffer (bytearray, memoryview, numpy array...), released on scope exit.
class WritableBuffer {
public:
    explicit WritableBuffer(py::handle object) {
        if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS) != 0) {
            const py::error_already_set why;  // numpy says ValueError, bytes BufferError: BufferError either way
            throw py::buffer_error("tiercache: read_into needs a writable, contiguous buffer, not " +
                                   std::string(py::str(py::type::handle_of(object).attr("__name__"))) + ": " + why.what());
        }
    }
    WritableBuffer(const WritableBuffer&) = delete;
    WritableBuffer& operator=(const WritableBuffer&) = delete;
    ~WritableBuffer() { PyBuffer_Release(&view_); }
    std::span<std::byte> bytes() { return {static_cast<std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)}; }

private:
    Py_buffer view_{};
};

py::bytes read_bytes(const PyCache& self, py::handle target, std::uint64_t offset, std::optional<std::uint64_t> size) {
    const auto cache = self.get();
    const tc::Record r = range_of(*cache, target, offset);
    const std::uint64_t n = std::min(r.length, size.value_or(r.length));
    PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
    if (!raw) throw py::error_already_set();
    auto out = py::reinterpret_steal<py::bytes>(raw);
    const std::span<std::byte> dest{reinterpret_cast<std::byte*>(PyBytes_AS_STRING(raw)), static_cast<std::size_t>(n)};
    std::size_t got = 0;
    {
        py::gil_scoped_release nogil;
        got = cache->read(r, dest);
    }
    if (got != n) {
        raw = out.release().ptr();
        if (_PyBytes_Resize(&raw, static_cast<Py_ssize_t>(got)) != 0) throw py::error_already_set();
        out = py::reinterpret_steal<py::bytes>(raw);
    }
    return out;
}

std::size_t read_into_buffer(const PyCache& self, py::handle target, py::handle buffer, std::uint64_t offset) {
    const auto cache = self.get();
    const tc::Record r = range_of(*cache, target, offset);
    WritableBuffer dest(buffer);
    py::gil_scoped_release nogil;
    return cache->read(r, dest.bytes());
}

py::object set_plan(const PyCache& self, py::handle plan, py::handle next, std::uint64_t epoch, std::uint32_t rank, std::uint32_t world) {
    const auto cache = self.get();
    if (is_id(plan)) {
        const tc::EpochPlan seeded(cache->catalog().size(), plan.cast<std::uint64_t>(), epoch, rank, world);
        {
            py::gil_scoped_release nogil;
            cache->set_plan(seeded);
        }
        return py::cast(std::vector<tc::SampleId>(seeded.order().begin(), seeded.order().end()));
    }
    if (PyUnicode_Check(plan.ptr()) || PyBytes_Check(plan.ptr()))
        throw py::type_error("tiercache: set_plan takes a seed (int) or a sequence of paths, ids or records, not one path");
    const std::vector<tc::Record> current = records_of(*cache, plan);
    const std::vector<tc::Record> following = next.is_none() ? std::vector<tc::Record>{} : records_of(*cache, next);
    py::gil_scoped_release nogil;
    cache->set_plan(current, following);
    return py::none();
}

// A tier argument: "DIR:SIZE" ("NODE:SIZE" for cxl), as the command line writes it, or a
// (dir or node, size) pair; a size is a string ("64GiB", "10%") or a number of bytes.
std::string size_text(py::handle size) { return is_id(size) ? std::string(py::str(size)) : size.cast<std::string>(); }

tc::TierConfig tier_of(tc::TierKind kind, py::handle arg) {
    const std::string source(tc::to_string(kind));
    if (PyUnicode_Check(arg.ptr())) return tc::parse_tier_arg(kind, arg.cast<std::string>(), source);
    if (!is_record(arg) || py::len(arg) != 2)
        throw py::value_error("tiercache: " + source + " is \"" + (kind == tc::TierKind::cxl ? "NODE:SIZE" : "DIR:SIZE") + "\" or a pair, not " +
                              std::string(py::repr(arg)));
    const auto pair = py::reinterpret_borrow<py::sequence>(arg);
    tc::TierConfig t{kind, size_text(pair[1]), {}, -1, source};
    if (kind == tc::TierKind::cxl)
        t.node = pair[0].cast<int>();
    else
        t.dir = path_bytes(pair[0]);
    return t;
}

std::unique_ptr<PyCache> open_cache(py::object origin, py::object dram, py::object nvme, py::object pmem, py::object cxl, const std::string& policy,
                   const std::string& extent, std::uint32_t readahead, py::object share, py::object share_group, py::object segment_dir) {
    tc::Config config;
    config.origin(path_bytes(origin)).dram(size_text(dram)).policy(policy).extent(extent).readahead(readahead).segment_dir(path_bytes(segment_dir));
    if (!pmem.is_none()) config.tier(tier_of(tc::TierKind::pmem, pmem));
    if (!cxl.is_none()) config.tier(tier_of(tc::TierKind::cxl, cxl));
    if (!nvme.is_none()) config.tier(tier_of(tc::TierKind::nvme, nvme));
    if (!share.is_none()) config.share(share.cast<std::string>());
    if (!share_group.is_none()) config.share_group(share_group.cast<std::string>());
    py::dict args("origin"_a = origin, "dram"_a = dram, "nvme"_a = nvme, "pmem"_a = pmem, "cxl"_a = cxl, "policy"_a = policy,
                  "extent"_a = extent, "readahead"_a = readahead, "share"_a = share, "share_group"_a = share_group,
                  "segment_dir"_a = segment_dir);
    std::unique_ptr<tc::Cache> cache;
    {
        py::gil_scoped_release nogil;  // scans the origin
        cache = std::make_unique<tc::OwnerCache>(config);
    }
    return std::make_unique<PyCache>(std::move(cache), py::dict("kind"_a = "open", "args"_a = args));
}

std::unique_ptr<PyCache> attach_cache(const std::string& name, py::object dir, double timeout) {
    tc::AttachOptions options;
    options.dir = path_bytes(dir);
    options.owner_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout * 1000));
    std::unique_ptr<tc::Cache> cache;
    {
        py::gil_scoped_release nogil;
        cache = std::make_unique<tc::AttachedCache>(name, options);
    }
    return std::make_unique<PyCache>(std::move(cache), py::dict("kind"_a = "attach", "args"_a = py::dict("name"_a = name, "dir"_a = dir, "timeout"_a = timeout)));
}

// ---- EpochLoader: an epoch's batches in the loader's pinned ring --------------------------
//
// A Batch exports its ring buffer through the buffer protocol (torch.frombuffer, numpy,
// memoryview): no copy. Every view holds a reference to the Batch, and the buffer goes back to
// the ring only when the Batch object goes, so a buffer is never refilled while a view of it is
// alive; there is no release() to call early. next() fills a buffer no Batch holds: one still
// alive (of this epoch or the one before) would make it wait forever, so it raises instead,
// saying which batch is held.

// The ring buffers that Batches alive in Python hold, and which batch each is (a ring's
// buffer holds one batch at a time).
struct HeldBuffers {
    std::mutex mutex;
    std::map<std::size_t, std::size_t> batch_in;  // protected by mutex: buffer -> the batch index holding it
};

class PyBatch {
public:
    PyBatch(tc::Batch batch, std::shared_ptr<HeldBuffers> held) : batch_(std::move(batch)), buffer_(batch_.buffer()), held_(std::move(held)) {
        std::lock_guard lock(held_->mutex);
        held_->batch_in[buffer_] = batch_.index();
    }
    PyBatch(const PyBatch&) = delete;
    PyBatch& operator=(const PyBatch&) = delete;
    ~PyBatch() {
        if (::getpid() != pid_) {  // a fork's copy: the ring is the parent's (and its mutex maybe held at the fork)
            new tc::Batch(std::move(batch_));
            new std::shared_ptr<HeldBuffers>(std::move(held_));
            return;
        }
        std::lock_guard lock(held_->mutex);
        held_->batch_in.erase(buffer_);
    }  // batch_ goes back to the ring here
    const tc::Batch& batch() const noexcept { return batch_; }

private:
    tc::Batch batch_;
    std::size_t buffer_;
    std::shared_ptr<HeldBuffers> held_;
    pid_t pid_ = ::getpid();
};

// A plan for the loader: a seed (the library's shuffle for `epoch`, sharded as set_plan does) or
// a sequence of paths, ids or records in read order.
struct LoaderPlan {
    tc::EpochPlan plan;
    std::vector<tc::Record> records;  // set when some entry is a record: the plan orders these
};

LoaderPlan loader_plan(const tc::Cache& cache, py::handle plan, std::uint64_t epoch, std::uint32_t rank, std::uint32_t world) {
    if (is_id(plan)) return {tc::EpochPlan(cache.catalog().size(), plan.cast<std::uint64_t>(), epoch, rank, world), {}};
    if (PyUnicode_Check(plan.ptr()) || PyBytes_Check(plan.ptr()))
        throw py::type_error("tiercache: EpochLoader takes a seed (int) or a sequence of paths, ids or records, not one path");
    bool any_record = false;
    for (py::handle entry : py::reinterpret_borrow<py::iterable>(plan)) any_record = any_record || is_record(entry);
    std::vector<tc::Record> records = records_of(cache, plan);
    if (records.empty()) throw py::value_error("tiercache: EpochLoader: the plan is empty");
    if (any_record) {
        std::vector<tc::SampleId> positions(records.size());
        for (std::size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<tc::SampleId>(i);
        return {tc::EpochPlan::from_order(std::move(positions), records.size()), std::move(records)};
    }
    std::vector<tc::SampleId> ids;
    ids.reserve(records.size());
    for (const tc::Record& r : records) ids.push_back(r.file);
    return {tc::EpochPlan::from_order(std::move(ids), cache.catalog().size()), {}};
}

// A ring of pinned batch buffers kept for a run: every epoch's loader given it reuses its memory.
// A Python loop's variable holds the last batch of an epoch while the next epoch starts: when
// that epoch needs larger buffers, the ring cannot grow under it (EpochLoader::take_ring), so
// the run goes on with a new ring and the Batches alive keep the old one's memory until they go.
class PyRing {
public:
    tc::PinnedRing& ring() noexcept { return ring_; }
    const tc::PinnedRing& ring() const noexcept { return ring_; }
    const std::shared_ptr<HeldBuffers>& held() const noexcept { return held_; }
    std::size_t allocations() const { return earlier_allocations_ + ring_.allocations(); }

    bool any_held() const {
        std::lock_guard lock(held_->mutex);
        return !held_->batch_in.empty();
    }
    void renew() {
        earlier_allocations_ += ring_.allocations();
        ring_ = tc::PinnedRing();
        held_ = std::make_shared<HeldBuffers>();
    }

private:
    tc::PinnedRing ring_;
    std::shared_ptr<HeldBuffers> held_ = std::make_shared<HeldBuffers>();  // by every epoch's Batches
    std::size_t earlier_allocations_ = 0;  // of the rings renew() replaced
};

class PyLoader {
public:
    PyLoader(const PyCache& cache, py::handle plan, std::size_t batch, std::size_t depth, std::size_t threads, bool drop_last,
             std::size_t prefetch, py::handle device, std::shared_ptr<PyRing> ring, std::uint64_t epoch, std::uint32_t rank,
             std::uint32_t world)
        : cache_(cache.get()), ring_(std::move(ring)) {
        tc::LoaderOptions options{.batch = batch, .depth = depth, .threads = threads, .drop_last = drop_last, .prefetch_window = prefetch};
        if (device.is_none())
            options.device = tc::LoaderOptions::kCurrentDevice;
        else if (PyUnicode_Check(device.ptr()) && device.cast<std::string>() == "cpu")
            options.device = tc::LoaderOptions::kHostOnly;
        else if (is_id(device))
            options.device = device.cast<int>();
        else
            throw py::value_error("tiercache: EpochLoader device is None (the current CUDA device, else host memory), \"cpu\" or a CUDA "
                                  "device index, not " + std::string(py::repr(device)));
        const LoaderPlan made = loader_plan(*cache_, plan, epoch, rank, world);
        auto make = [&] {
            if (ring_) options.ring = &ring_->ring();
            py::gil_scoped_release nogil;  // installs the plan, allocates and pins the ring
            loader_ = made.records.empty() ? std::make_unique<tc::EpochLoader>(*cache_, made.plan, options)
                                           : std::make_unique<tc::EpochLoader>(*cache_, made.records, made.plan, options);
        };
        try {
            make();
        } catch (const std::logic_error& e) {  // the ring must grow, or is another loader's, while a Batch holds it
            const bool bad_input = dynamic_cast<const std::invalid_argument*>(&e) || dynamic_cast<const std::out_of_range*>(&e);
            if (bad_input || !ring_ || !ring_->any_held()) throw;
            ring_->renew();
            make();
        }
        held_ = ring_ ? ring_->held() : std::make_shared<HeldBuffers>();
    }
    PyLoader(const PyLoader&) = delete;
    PyLoader& operator=(const PyLoader&) = delete;
    ~PyLoader() {
        if (::getpid() != pid_) {  // a fork's copy: its threads are the parent's, not here to join
            new std::unique_ptr<tc::EpochLoader>(std::move(loader_));
            new std::shared_ptr<tc::Cache>(std::move(cache_));
            return;
        }
        close();
    }

    // The next batch; StopIteration after the last. RuntimeError instead of waiting forever for
    // a buffer a batch still alive holds.
    std::unique_ptr<PyBatch> next() {
        tc::EpochLoader& loader = get();
        if (handed_ >= loader.batches()) throw py::stop_iteration();
        const std::size_t buffer = loader.buffer_of(handed_);
        if (held_by(buffer)) py::module_::import("gc").attr("collect")();  // one kept only by a reference cycle
        if (const auto holder = held_by(buffer))
            throw std::runtime_error("tiercache: EpochLoader: batch " + std::to_string(*holder) + " (this epoch's or the last's) is still "
                                     "alive, a tensor or view of its bytes holding it, and its ring buffer is the one batch " +
                                     std::to_string(handed_) + " goes in: hold at most depth - 1 = " + std::to_string(loader.depth() - 1) +
                                     " batches, and copy what you keep (batch.data.clone())");
        ++handed_;  // a batch that fails to read is skipped: the next call goes on after it
        std::optional<tc::Batch> got;
        {
            py::gil_scoped_release nogil;
            got = loader.next();
        }
        if (!got) throw py::stop_iteration();
        return std::make_unique<PyBatch>(std::move(*got), held_);
    }

    tc::EpochLoader& get() const {
        if (::getpid() != pid_) throw std::runtime_error("tiercache: this EpochLoader was made by process " + std::to_string(pid_) + ", not this one (a fork's copy)");
        if (!loader_) throw py::value_error("tiercache: the EpochLoader is closed");
        return *loader_;
    }
    void close() {
        std::unique_ptr<tc::EpochLoader> last = std::move(loader_);
        py::gil_scoped_release nogil;  // joins the threads
        last.reset();
    }

private:
    std::optional<std::size_t> held_by(std::size_t buffer) const {
        std::lock_guard lock(held_->mutex);
        const auto it = held_->batch_in.find(buffer);
        return it == held_->batch_in.end() ? std::nullopt : std::optional(it->second);
    }

    std::shared_ptr<tc::Cache> cache_;  // kept open while the loader reads it
    std::shared_ptr<PyRing> ring_;      // the run's ring, if given: outlives this loader
    std::unique_ptr<tc::EpochLoader> loader_;
    std::shared_ptr<HeldBuffers> held_;  // the ring's
    std::size_t handed_ = 0;  // next() calls that took a batch
    pid_t pid_ = ::getpid();
};

template <typename T>
py::list list_of(std::span<const T> values) {
    py::list out(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = py::int_(values[i]);
    return out;
}

void translate(std::exception_ptr error) {
    try {
        if (error) std::rethrow_exception(error);
    } catch (const tc::UnknownSample& e) {
        PyErr_SetObject(PyExc_FileNotFoundError, py::make_tuple(ENOENT, e.what()).ptr());
    } catch (const tc::OwnerGone& e) {
        PyErr_SetString(owner_gone_type, e.what());
    } catch (const std::system_error& e) {  // OriginError, filesystem_error: OSError with the errno (its subclass by errno)
        const bool posix = e.code().category() == std::generic_category() || e.code().category() == std::system_category();
        PyErr_SetObject(PyExc_OSError, py::make_tuple(posix ? e.code().value() : EIO, e.what()).ptr());
    }
}

constexpr const char* kCacheDoc = R"(A tiered dataset cache: the samples of an origin directory, read through its tiers.

Made by tiercache.open() (a private cache this process owns: it scans the origin and
holds the tiers) or tiercache.attach() (another process's shared cache, such as a mount's
--share NAME). A sample is named by its path relative to the origin ("class/x.jpg", str,
bytes or os.PathLike) or by its id (int, 0 .. len(cache) - 1, in paths() order); a record
by a tuple (path or id, offset, length). Reads release the GIL.

A Cache belongs to the process that made it: a forked child must open or attach again
(tiercache.from_spec(cache.spec)); tiercache.torch.Dataset does it in every worker.
Usable as a context manager: close() on exit.)";

}  // namespace

PYBIND11_MODULE(_tiercache, m) {
    m.doc() = "The native half of `import tiercache`: the C++ library's Cache (pybind11). Use the tiercache package.";
    m.attr("__version__") = TIERCACHE_VERSION;
    py::options options;
    options.disable_function_signatures();  // each docstring starts with its own, in Python's words
    tc::set_log_level(tc::LogLevel::warn);  // a library in someone's program: no info lines on stderr unless asked

    owner_gone_type = PyErr_NewExceptionWithDoc("tiercache.OwnerGone",
                                                "The shared cache's owner closed, died or stopped answering; attach again once one serves the name.",
                                                PyExc_RuntimeError, nullptr);
    if (!owner_gone_type) throw py::error_already_set();
    m.add_object("OwnerGone", py::handle(owner_gone_type));
    py::register_exception_translator(translate);

    py::class_<PyCache>(m, "Cache", kCacheDoc)
        .def("read", &read_bytes, "target"_a, "offset"_a = 0, "size"_a = py::none(),
             R"(read(target, offset=0, size=None) -> bytes

The bytes of a sample from `offset` on, at most `size` of them (None: to the end), from
whichever tier holds it, or from the origin. Past the end: b"". `target` may be a record
(path or id, offset, length): then offset must be 0 and size caps its length.
FileNotFoundError for a path the cache does not hold, IndexError for an id outside it,
ValueError for a record outside its file, OSError (with errno) when the origin fails.)")
        .def("read_into", &read_into_buffer, "target"_a, "buffer"_a, "offset"_a = 0,
             R"(read_into(target, buffer, offset=0) -> int

Copies the sample's bytes from `offset` on (or a record's, offset 0) into `buffer`, any
writable contiguous buffer (bytearray, memoryview, numpy array, a CPU torch tensor's
.numpy()), as many as it holds; returns how many (fewer at the end of the sample). Raises as
read() does, BufferError for a read-only or non-contiguous buffer.)")
        .def(
            "size", [](const PyCache& self, py::handle target) { const auto c = self.get(); return c->size(sample_of(*c, target)); }, "target"_a,
            "size(target) -> int\n\nThe sample's size in bytes (a path or an id).")
        .def(
            "id_of", [](const PyCache& self, py::handle path) { const auto c = self.get(); return c->id_of(path_bytes(path)); }, "path"_a,
            "id_of(path) -> int\n\nThe id of a relative path; FileNotFoundError when the cache does not hold it.")
        .def(
            "path", [](const PyCache& self, py::handle id) { const auto c = self.get(); return path_str(c->catalog().path(sample_of(*c, id))); },
            "id"_a, "path(id) -> str\n\nThe relative path of sample `id` (non-UTF-8 bytes as os.fsdecode gives them).")
        .def(
            "paths",
            [](const PyCache& self) {
                const auto c = self.get();
                py::list out(c->catalog().size());
                for (tc::SampleId id = 0; id < c->catalog().size(); ++id) out[id] = path_str(c->catalog().path(id));
                return out;
            },
            "paths() -> list[str]\n\nEvery sample's relative path, by id: paths()[i] is sample i.")
        .def(
            "__len__", [](const PyCache& self) { return self.get()->catalog().size(); }, "__len__() -> int\n\nThe number of samples (files) in the catalog.")
        .def(
            "__contains__",
            [](const PyCache& self, py::handle target) {
                const auto c = self.get();
                return is_id(target) ? id_inside(*c, target).has_value() : c->catalog().find(path_bytes(target)).has_value();
            },
            "__contains__(target) -> bool\n\nWhether the catalog holds a path (or an id).")
        .def("set_plan", &set_plan, "plan"_a, "next"_a = py::none(), py::kw_only(), "epoch"_a = 0, "rank"_a = 0, "world"_a = 1,
             R"(set_plan(plan, next=None, *, epoch=0, rank=0, world=1) -> list[int] | None

Tells the cache this epoch's order, so it places by next use and the prefetcher reads ahead.
`plan` is either
- a seed (int): the library's seeded shuffle of every sample for `epoch`, sharded like
  DistributedSampler (`rank` of `world`); the next epoch's order is known too. Returns this
  rank's order, a list of ids, which the loader should follow;
- a sequence of paths, ids (whole files) or records (path or id, offset, length), in read
  order, with `next` the next epoch's if known. Returns None.
Replaces this process's plan before. Raises as read() does for an entry the cache does not
hold, ValueError for a record outside its file or a rank outside the world.)")
        .def(
            "clear_plan", [](const PyCache& self) { self.get()->clear_plan(); }, "clear_plan()\n\nDrops this process's plan.")
        .def(
            "prefetch",
            [](const PyCache& self, py::handle target) {
                const auto c = self.get();
                const tc::Record r = range_of(*c, target, 0);
                tc::Cache::Prefetched done;
                {
                    py::gil_scoped_release nogil;
                    done = c->prefetch(r);
                }
                constexpr const char* names[] = {"resident", "fetched", "raced", "rejected"};
                return std::string(names[static_cast<int>(done)]);
            },
            "target"_a,
            R"(prefetch(target) -> str

Brings a sample (or a record's bytes) into the fastest memory tier that takes it, without
counting a read: "fetched", "resident" (already there), "raced" (another fetch of it is under
way) or "rejected" (no tier would keep it).)")
        .def(
            "stats",
            [](const PyCache& self) {
                const auto c = self.get();
                std::string text;
                {
                    py::gil_scoped_release nogil;
                    text = tc::to_json(c->stats()).dump();
                }
                return py::module_::import("json").attr("loads")(text);
            },
            R"(stats() -> dict

The cache's counters, shaped like a mount's .tiercache/stats: {"tiers": {"dram": {"capacity_bytes",
"used_bytes", "hits", "misses", ...}, ...}, "origin": {"bytes_read", "reads", ...}, "samples", ...}.)")
        .def_property_readonly(
            "attached", [](const PyCache& self) { return self.get()->attached(); },
            "True when this is another process's shared cache (attach), False when this process owns it (open).")
        .def_property_readonly(
            "spec", [](const PyCache& self) { return self.spec(); },
            "What made this cache: {\"kind\": \"open\" or \"attach\", \"args\": the arguments}, for tiercache.from_spec() in another process.")
        .def_property_readonly(
            "closed", &PyCache::closed, "True once close() was called.")
        .def("close", &PyCache::close,
             "close()\n\nEnds this handle: an owner's tiers, threads and shared name go, an attached client leaves. Later calls raise ValueError.")
        .def(
            "__enter__", [](py::object self) { return self; }, "__enter__() -> Cache\n\nThe cache itself, for a with block.")
        .def(
            "__exit__", [](PyCache& self, py::args) { self.close(); }, "__exit__(*exc_info)\n\nCloses the cache.")
        .def("__repr__", [](const PyCache& self) {
            if (self.closed()) return std::string("<tiercache.Cache closed>");
            const py::dict args = self.spec()["args"];
            if (std::string(py::str(self.spec()["kind"])) == "attach") return "<tiercache.Cache attached to " + std::string(py::repr(args["name"])) + ">";
            return "<tiercache.Cache of " + std::string(py::repr(args["origin"])) + ">";
        });

    py::class_<PyBatch>(m, "Batch", py::buffer_protocol(), R"(One batch from an EpochLoader: its samples' bytes back to back in a pinned ring buffer.

Exports that buffer (bytes, uint8) with no copy: torch.frombuffer(batch, dtype=torch.uint8),
numpy.frombuffer(batch, numpy.uint8), memoryview(batch). Every such view keeps the Batch
alive, and its buffer goes back to the loader only when the Batch and all views of it are
gone, so the loader never refills bytes a view can still see. Hold at most depth - 1 batches.)")
        .def_buffer([](PyBatch& b) {
            const auto bytes = b.batch().bytes();
            // Writable, as torch.frombuffer wants: the bytes are this batch's alone, a copy from the cache.
            return py::buffer_info(const_cast<std::byte*>(bytes.data()), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(bytes.size())}, {1}, false);
        })
        .def_property_readonly("index", [](const PyBatch& b) { return b.batch().index(); }, "The batch's number in the epoch, from 0.")
        .def_property_readonly("ids", [](const PyBatch& b) { return list_of(b.batch().ids()); }, "Each sample's file id.")
        .def_property_readonly("offsets", [](const PyBatch& b) { return list_of(b.batch().offsets()); }, "Where each sample starts in the buffer.")
        .def_property_readonly("sizes", [](const PyBatch& b) { return list_of(b.batch().sizes()); }, "Each sample's bytes.")
        .def_property_readonly(
            "records",
            [](const PyBatch& b) {
                py::list out;
                for (const tc::Record& r : b.batch().records()) out.append(py::make_tuple(r.file, r.offset, r.length));
                return out;
            },
            "Each sample as (file id, offset, length) in its file.")
        .def_property_readonly("nbytes", [](const PyBatch& b) { return b.batch().bytes().size(); }, "The bytes of every sample together.")
        .def("__len__", [](const PyBatch& b) { return b.batch().size(); }, "__len__() -> int\n\nThe samples in the batch.")
        .def("__repr__", [](const PyBatch& b) {
            return "<tiercache.Batch " + std::to_string(b.batch().index()) + ": " + std::to_string(b.batch().size()) + " samples, " +
                   std::to_string(b.batch().bytes().size()) + " bytes>";
        });

    py::class_<PyRing, std::shared_ptr<PyRing>>(m, "PinnedRing", R"(PinnedRing() -> PinnedRing

The batch buffers of a run, given to every epoch's EpochLoader (ring=...): pinned once at
the first epoch, grown only for a larger batch, reused after.)")
        .def(py::init<>())
        .def_property_readonly("allocations", &PyRing::allocations,
                               "Times its memory was allocated (a new ring's when it had to grow while a Batch held it).")
        .def_property_readonly("depth", [](const PyRing& r) { return r.ring().depth(); }, "Its buffers.")
        .def_property_readonly("buffer_bytes", [](const PyRing& r) { return r.ring().buffer_bytes(); }, "Each buffer's capacity.")
        .def_property_readonly("device", [](const PyRing& r) { return r.ring().device(); },
                               "The CUDA device it is pinned for; -1: host memory, or not allocated yet.");

    py::class_<PyLoader>(m, "EpochLoader", R"(EpochLoader(cache, plan, *, batch=32, depth=4, threads=4, drop_last=False, prefetch=0,
            device=None, ring=None, epoch=0, rank=0, world=1) -> EpochLoader

One epoch of `cache` as whole batches in plan order, read by `threads` native threads into a
ring of `depth` pinned buffers while Python consumes earlier ones; iterate it for Batch
objects. `plan` is a seed (int: the library's shuffle for `epoch`, sharded as `rank` of
`world`, like Cache.set_plan) or a sequence of paths, ids or records (path or id, offset,
length) in read order; it is installed in the cache, which places by next use. prefetch: samples
beyond the ring the cache brings in ahead. device: None (the current CUDA device, else host
memory), "cpu" (mlock'ed host memory) or a CUDA device index. ring: a PinnedRing to reuse
across epochs. A batch whose sample cannot be read raises its error (OSError...) from next();
the next call goes on after it. RuntimeError, not a hang, when the buffer the next batch needs
is held by a Batch still alive.)")
        .def(py::init([](const PyCache& cache, py::handle plan, std::size_t batch, std::size_t depth, std::size_t threads, bool drop_last,
                         std::size_t prefetch, py::handle device, std::shared_ptr<PyRing> ring, std::uint64_t epoch, std::uint32_t rank,
                         std::uint32_t world) {
                 return std::make_unique<PyLoader>(cache, plan, batch, depth, threads, drop_last, prefetch, device, std::move(ring), epoch, rank, world);
             }),
             "cache"_a, "plan"_a, py::kw_only(), "batch"_a = 32, "depth"_a = 4, "threads"_a = 4, "drop_last"_a = false, "prefetch"_a = 0,
             "device"_a = py::none(), "ring"_a = nullptr, "epoch"_a = 0, "rank"_a = 0, "world"_a = 1)
        .def("__iter__", [](py::object self) { return self; }, "__iter__() -> EpochLoader\n\nThe loader itself: one pass over the epoch.")
        .def("__next__", &PyLoader::next, "__next__() -> Batch\n\nThe next batch, waiting (GIL released) until it is filled.")
        .def("__len__", [](const PyLoader& l) { return l.get().batches(); }, "__len__() -> int\n\nThe batches in this epoch.")
        .def_property_readonly("depth", [](const PyLoader& l) { return l.get().depth(); }, "The ring buffers this epoch uses.")
        .def_property_readonly("memory", [](const PyLoader& l) { return l.get().memory_description(); },
                               "The memory the ring is in, in words (pinned for a device, mlock'ed, or pageable and why).")
        .def(
            "stats",
            [](const PyLoader& l) {
                const tc::LoaderStats s = l.get().stats();
                return py::dict("batches"_a = s.batches, "samples"_a = s.samples, "bytes"_a = s.bytes, "wait_s"_a = s.wait_seconds,
                                "first_wait_s"_a = s.first_wait_seconds, "held_s"_a = s.held_seconds, "stall_fraction"_a = s.stall_fraction());
            },
            R"(stats() -> dict

{"batches", "samples", "bytes": handed out; "wait_s": the consumer's time inside next(), of which
"first_wait_s" for the first batch; "held_s": its time holding batches; "stall_fraction":
wait_s / (wait_s + held_s), the share of its time the data cost it}.)")
        .def("close", &PyLoader::close, "close()\n\nStops and joins the threads; batches still alive stay valid.")
        .def("__enter__", [](py::object self) { return self; }, "__enter__() -> EpochLoader")
        .def("__exit__", [](PyLoader& l, py::args) { l.close(); }, "__exit__(*exc_info)\n\nCloses the loader.");

    m.def("open", &open_cache, "origin"_a, "dram"_a = "1GiB", "nvme"_a = py::none(), py::kw_only(), "pmem"_a = py::none(),
          "cxl"_a = py::none(), "policy"_a = "plan", "extent"_a = "1MiB", "readahead"_a = 8, "share"_a = py::none(),
          "share_group"_a = py::none(), "segment_dir"_a = "/dev/shm",
          R"(open(origin, dram="1GiB", nvme=None, *, pmem=None, cxl=None, policy="plan", extent="1MiB",
     readahead=8, share=None, share_group=None, segment_dir="/dev/shm") -> Cache

Scans `origin` and makes a cache of it that this process owns, as tiercache-fuse does with the
same options. Sizes: "512MiB", "64GiB", "10%" (of RAM, or of the tier's filesystem), or a
number of bytes. nvme, pmem: "DIR:SIZE" or (dir, size); cxl: "NODE:SIZE" or (node, size).
policy: "plan", "noevict" or "lru". share: also serve it to processes that attach(share).
ValueError naming the bad value for a bad option (a size, a missing directory); OSError or
RuntimeError when the origin cannot be scanned or a tier made.)");
    m.def("attach", &attach_cache, "name"_a, py::kw_only(), "dir"_a = "/dev/shm", "timeout"_a = 2.0,
          R"(attach(name, *, dir="/dev/shm", timeout=2.0) -> Cache

Joins the shared cache `name` that another process owns (tiercache-fuse --share NAME, or
open(..., share=NAME)); `dir` is its segment directory, `timeout` the seconds after which a
silent owner counts as gone. tiercache.OwnerGone when no owner serves the name,
RuntimeError when this user may not join or the versions differ.)");
    m.def(
        "set_log_level",
        [](const std::string& level) {
            constexpr std::pair<const char*, tc::LogLevel> levels[] = {
                {"debug", tc::LogLevel::debug}, {"info", tc::LogLevel::info}, {"warn", tc::LogLevel::warn}, {"error", tc::LogLevel::error}};
            for (const auto& [name, value] : levels)
                if (level == name) return tc::set_log_level(value);
            throw py::value_error("tiercache: log level '" + level + "': debug, info, warn or error");
        },
        "level"_a, "set_log_level(level)\n\nThe library's log lines on stderr from `level` up: \"debug\", \"info\", \"warn\" (the default here) or \"error\".");
}
