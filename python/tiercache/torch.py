"""tiercache for PyTorch: a map-style Dataset over a tiercache Cache, EpochLoader (batches in
pinned memory from native threads, no worker processes), and TiercacheSampler.

Dataset reads samples through the library (no mount needed), ImageFolder-style:

    import tiercache, tiercache.torch
    cache = tiercache.open("/data/imagenet/train", dram="32GiB", share="imagenet")
    ds = tiercache.torch.Dataset(cache, decode=my_decode)     # (decode(bytes), class index)
    loader = DataLoader(ds, batch_size=64, num_workers=4)      # workers attach to "imagenet"

Each DataLoader worker (forked or spawned) opens or attaches on its first read: no native
handle crosses a fork. Given a shared cache (open(share=...) or attach()), the workers attach
to it and all read one cache; given a private one, or a directory, each worker opens its own
(a private cache with an nvme or pmem tier cannot be opened twice: share it).

TiercacheSampler tells a tiercache mount the epoch's order. It draws each epoch's order exactly
as torch.utils.data.DistributedSampler does (a torch.Generator seeded with seed + epoch; padded
or cut to a multiple of world, then every world-th index from rank), and before yielding the
first index it writes that order, as paths relative to the mount, to MOUNT/.tiercache/plan in
one write. The mount then prefetches in that order and its cache keeps what will be read
soonest. With world == 1 it is a plain shuffle (RandomSampler's distribution); with
shuffle=False, the dataset order.

    from tiercache.torch import TiercacheSampler
    ds = torchvision.datasets.ImageFolder("/mnt/ds/train")
    sampler = TiercacheSampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=64, num_workers=4, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader: ...

Over a tiercache.torch.Dataset it gives the order to the dataset's cache (Cache.set_plan)
instead. When the dataset is neither that nor under a tiercache mount (no .tiercache/plan
above its root), it warns once and is an ordinary sampler.
"""
import collections
import concurrent.futures
import errno as errno_names
import json
import math
import os
import traceback
import warnings

import torch
import torch.utils.data

import tiercache

PLAN = os.path.join(".tiercache", "plan")


class PlanError(OSError):
    """The mount refused the plan (or it could not be written). An OSError with the errno."""


def find_mount_root(path):
    """The nearest directory at or above `path` holding .tiercache/plan, or None."""
    d = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(d, PLAN)):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _default_rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TiercacheSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, mount_root=None, seed=0, shuffle=True, rank=None, world=None, drop_last=False):
        default_rank, default_world = _default_rank_world()
        self.rank = default_rank if rank is None else rank
        self.world = default_world if world is None else world
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"TiercacheSampler: rank {self.rank} is not in [0, world={self.world})")
        self.dataset, self.seed, self.shuffle, self.drop_last = dataset, seed, shuffle, drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % self.world:
            self.num_samples = math.ceil((n - self.world) / self.world)
        else:
            self.num_samples = math.ceil(n / self.world)
        self.total_size = self.num_samples * self.world

        self.last_plan = None  # the paths of the latest plan written, in order
        self.plan_status = None  # the plan file's JSON read back after writing it
        if isinstance(dataset, Dataset):  # no mount: the plan goes to the dataset's cache
            self.mount_root, self.paths = None, [p for p, _ in dataset.samples]
            return
        root = getattr(dataset, "root", None)
        self.mount_root = os.path.abspath(mount_root) if mount_root else find_mount_root(root) if root else None
        if self.mount_root and not os.path.exists(os.path.join(self.mount_root, PLAN)):
            self.mount_root = None
        if self.mount_root is None:
            where = mount_root or root or "the dataset"
            warnings.warn(f"TiercacheSampler: {where} is not on a tiercache mount (no {PLAN} found): "
                          "no plan is written, sampling as DistributedSampler would", stacklevel=2)
            self.paths = None
        else:
            if not hasattr(dataset, "samples"):
                raise TypeError("TiercacheSampler: the dataset needs .samples, (path, target) pairs as ImageFolder has")
            self.plan_path = os.path.join(self.mount_root, PLAN)
            self.paths = [self._relative(p) for p, _ in dataset.samples]

    def _relative(self, path):
        rel = os.path.relpath(os.path.abspath(path), self.mount_root)
        if rel.startswith(".." + os.sep) or rel == "..":
            raise ValueError(f"TiercacheSampler: sample {path} is not under the mount {self.mount_root}")
        return rel

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def indices(self):
        """This rank's order for the current epoch (what __iter__ yields)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            order = order[:self.total_size]
        else:
            pad = self.total_size - len(order)
            order += (order * math.ceil(pad / len(order)))[:pad] if pad else []
        return order[self.rank:self.total_size:self.world]

    def __iter__(self):
        order = self.indices()
        if self.paths is not None:
            self.write_plan([self.paths[i] for i in order])
        return iter(order)

    def write_plan(self, paths):
        """Writes `paths` to the plan in one write, then reads the plan back so the mount applies
        it at once. Raises PlanError (an OSError: errno, message, plan file) when refused.
        Over a tiercache.torch.Dataset: Cache.set_plan(paths) on the dataset's cache."""
        if isinstance(self.dataset, Dataset):
            self.dataset.cache.set_plan(paths)
            self.last_plan = paths
            return
        text = ("\n".join(paths) + "\n").encode("utf-8", "surrogateescape")
        try:
            with open(self.plan_path, "wb", buffering=0) as f:
                done = 0
                while done < len(text):  # a short count only when the kernel split the write
                    done += f.write(text[done:])
            with open(self.plan_path, "rb") as f:  # reading it back commits the plan
                status = json.loads(f.read())
        except OSError as e:
            code = errno_names.errorcode.get(e.errno, "?")
            raise PlanError(e.errno, f"tiercache: writing the epoch plan failed ({code}: {e.strerror}): "
                                     f"{self._last_error()}", self.plan_path) from e
        if status.get("state") != "active" or status.get("samples") != len(paths) or status.get("last_error"):
            raise PlanError(errno_names.EINVAL, f"tiercache: the mount did not apply the epoch plan of {len(paths)} "
                                                f"samples: {json.dumps(status)}", self.plan_path)
        self.last_plan, self.plan_status = paths, status

    def _last_error(self):
        try:
            with open(self.plan_path, "rb") as f:
                return json.loads(f.read()).get("last_error") or "see the mount's log"
        except (OSError, ValueError):
            return "see the mount's log"


def _worker_spec(cache):
    """How another process gets at `cache`: attach to it when it is shared, else open it again."""
    spec = cache.spec
    share = spec["args"].get("share") if spec["kind"] == "open" else None
    if share:
        return {"kind": "attach", "args": {"name": share, "dir": spec["args"]["segment_dir"]}}
    return spec


class Dataset(torch.utils.data.Dataset):
    """A map-style Dataset over a tiercache cache, ImageFolder-style: a sample's class is the
    first directory of its path (as torchvision's ImageFolder has it), classes sorted by name
    and numbered from 0; dataset[i] is (decode(bytes) or bytes, class index).

    cache_or_root: a tiercache.Cache (open() or attach()), or an origin directory, opened with
        tiercache.open(root, **open_options).
    paths: the relative paths to serve (default: every file in a class folder, files at the
        top level left out, as ImageFolder does), in that order; sorted by class, then path.
    decode: a callable(bytes) -> sample (PIL decode, a transform...); None: the raw bytes.

    .samples: [(path, class index)], .targets, .classes, .class_to_idx, as ImageFolder has them.
    .cache: this process's Cache, opened or attached on first use in each process (a DataLoader
    worker, forked or spawned, never uses its parent's handle).
    """

    def __init__(self, cache_or_root, paths=None, decode=None, **open_options):
        if isinstance(cache_or_root, tiercache.Cache):
            if open_options:
                raise TypeError(f"tiercache.torch.Dataset: open options {sorted(open_options)} only go with a directory, not a Cache")
            cache = cache_or_root
        else:
            cache = tiercache.open(os.fspath(cache_or_root), **open_options)
        self._spec, self._cache, self._pid = _worker_spec(cache), cache, os.getpid()
        self.decode = decode
        chosen = cache.paths() if paths is None else [os.fsdecode(p) for p in paths]
        in_class = [p for p in chosen if "/" in p]
        if paths is not None and len(in_class) != len(chosen):
            top = next(p for p in chosen if "/" not in p)
            raise ValueError(f"tiercache.torch.Dataset: '{top}' is not in a class folder (its first directory is its class)")
        for p in in_class:
            if p not in cache:
                raise FileNotFoundError(errno_names.ENOENT, f"tiercache.torch.Dataset: the cache holds no '{p}'", p)
        self.classes = sorted({p.split("/", 1)[0] for p in in_class})
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = sorted(((p, self.class_to_idx[p.split("/", 1)[0]]) for p in in_class), key=lambda s: (s[1], s[0].split("/")))
        self.targets = [t for _, t in self.samples]

    @property
    def cache(self):
        """This process's Cache: the one given in the process that made the Dataset, else one
        opened or attached here (once per process)."""
        if self._cache is None or self._pid != os.getpid():
            kind, args = self._spec["kind"], self._spec["args"]
            if kind == "open" and (args.get("nvme") is not None or args.get("pmem") is not None):
                raise RuntimeError("tiercache.torch.Dataset: a private cache with an nvme or pmem tier cannot be opened again in "
                                   f"process {os.getpid()} (a DataLoader worker): two processes would share its directory; "
                                   "open it with share=NAME, and the workers attach to it")
            # A forked copy of the parent's handle is dropped here: the native side leaves it alone.
            self._cache, self._pid = tiercache.from_spec(self._spec), os.getpid()
        return self._cache

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        data = self.cache.read(path)
        return (self.decode(data) if self.decode is not None else data), target

    def __getstate__(self):  # pickled for a spawned worker: no native handle, it opens its own
        state = self.__dict__.copy()
        state["_cache"], state["_pid"] = None, None
        return state


class Batch:
    """One batch from EpochLoader, its bytes where the loader's threads put them (no copy).

    .data     1-D torch.uint8 tensor: every sample's bytes back to back, in the loader's pinned
              ring buffer (page-locked for the CUDA device where there is one)
    .offsets, .sizes   torch.int64 tensors: sample i is data[offsets[i]:offsets[i] + sizes[i]]
    .indices  the dataset indices (or, over a Cache, the sample ids) in plan order
    .targets  torch.int64 tensor of class indices (over a Dataset), else None
    .index    the batch's number in the epoch

    batch[i] and iteration give each sample as a uint8 view of .data. The ring buffer is reused
    only once this Batch, .data and every view of it are gone: hold at most depth - 1 batches,
    and clone() what you keep longer.

    From an EpochLoader with decode=: .samples holds decode(view) of each sample, and batch[i]
    and iteration give those; .data is None, its buffer given back once the batch was decoded.
    """

    __slots__ = ("data", "offsets", "sizes", "indices", "targets", "index", "samples")

    def __init__(self, data, offsets, sizes, indices, targets, index):
        self.data, self.offsets, self.sizes = data, offsets, sizes
        self.indices, self.targets, self.index = indices, targets, index
        self.samples = None

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"tiercache.torch.Batch: sample {i} of a batch of {len(self)}")
        if self.samples is not None:
            return self.samples[i]
        start = int(self.offsets[i])
        return self.data[start:start + int(self.sizes[i])]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, device, non_blocking=True):
        """This batch with .data (and .targets) on `device`. To a CUDA device the copy is
        asynchronous (non_blocking) and reads the pinned buffer: the EpochLoader keeps that
        buffer until the copy is done, so the CPU Batch may be dropped at once."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        if self.data is None:
            raise ValueError("tiercache.torch.Batch.to: a decoded batch's samples are yours to move; its bytes are gone")
        data = self.data.to(device, non_blocking=non_blocking)
        targets = None if self.targets is None else self.targets.to(device, non_blocking=non_blocking)
        moved = Batch(data, self.offsets, self.sizes, self.indices, targets, self.index)
        if device.type == "cuda" and non_blocking:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            _in_flight.append((event, self.data))  # the buffer stays alive until the copy is done
        return moved


def collate(samples):
    """A DataLoader collate_fn for a Dataset of raw samples ((bytes or uint8 tensor, class index)
    pairs, tiercache.torch.Dataset's default): the batch as one Batch whose .data holds every
    sample's bytes back to back in one tensor, with .offsets, .sizes and .targets, as the
    EpochLoader's batches are. A worker then hands the main process one tensor a batch, not one
    a sample (each costs a shared-memory segment and a descriptor passed: hundreds of
    microseconds, far more than a cache hit). batch[i] is sample i's uint8 view."""
    parts = [bytes(s.numpy()) if isinstance(s, torch.Tensor) else bytes(s) for s, _ in samples]
    sizes = [len(p) for p in parts]
    offsets = [0] * len(parts)
    for i in range(1, len(parts)):
        offsets[i] = offsets[i - 1] + sizes[i - 1]
    joined = bytearray().join(parts)
    data = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
    return Batch(data, torch.tensor(offsets, dtype=torch.int64), torch.tensor(sizes, dtype=torch.int64), None,
                 torch.tensor([t for _, t in samples], dtype=torch.int64), None)


_in_flight = []  # (CUDA event, CPU tensor) of copies not known to be done


def _reap_copies():
    """Lets go of the pinned buffers whose device copies are done."""
    _in_flight[:] = [(e, t) for e, t in _in_flight if not e.query()]


class EpochLoader:
    """An epoch's batches in plan order, read by native threads into pinned memory while the
    training loop works on earlier ones (the C++ EpochLoader under the package): no worker
    processes, no pickling, one copy from the cache into the batch buffer.

        ds = tiercache.torch.Dataset(cache)
        loader = tiercache.torch.EpochLoader(ds, batch_size=64, seed=0)
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for batch in loader:                      # tiercache.torch.Batch
                images = [decode(x) for x in batch]   # uint8 views, no copy
                labels = batch.targets

    source: a tiercache.torch.Dataset (its samples, ordered as TiercacheSampler orders them:
        DistributedSampler's shuffle of seed + epoch, `rank` of `world`), or a tiercache.Cache
        (every sample, the library's seeded shuffle, as Cache.set_plan(seed) gives it).
    batch_size, drop_last: as DataLoader's. threads: native I/O threads. depth: batch buffers in
        the ring (how far the threads may run ahead). prefetch: samples beyond the ring the cache
        brings in ahead (0: off). device: None (the ring is pinned for the current CUDA device,
        host memory without one), "cpu" (page-locked host memory) or a CUDA device index; the
        batches are CPU tensors either way: batch.to("cuda") copies them without blocking.
    decode: a callable(uint8 tensor) -> sample (torchvision.io.decode_jpeg and a transform...),
        run on decode_threads threads (default: this process's CPUs) over the next depth - 1
        batches while the loop works on this one (torch's ops let the GIL go); batch.samples
        then holds the results, and each raw buffer goes back to the ring once decoded.
    The ring is allocated once for the run and reused by every epoch. The loader installs each
    epoch's order in the cache, which then keeps what is read soonest. Errors: a sample that
    cannot be read raises its OSError from the iteration, for its batch.
    """

    def __init__(self, source, batch_size=32, seed=0, shuffle=True, rank=None, world=None, drop_last=False,
                 threads=4, depth=4, prefetch=0, device=None, decode=None, decode_threads=None):
        if isinstance(source, Dataset):
            self.dataset, self.sampler = source, TiercacheSampler(source, seed=seed, shuffle=shuffle, rank=rank,
                                                                  world=world, drop_last=drop_last)
        elif isinstance(source, tiercache.Cache):
            if not shuffle:
                raise ValueError("tiercache.torch.EpochLoader: over a Cache the order is the library's seeded shuffle; "
                                 "for another order, use a tiercache.torch.Dataset")
            self.dataset, self.sampler = None, None
            default_rank, default_world = _default_rank_world()
            self.rank = default_rank if rank is None else rank
            self.world = default_world if world is None else world
        else:
            raise TypeError(f"tiercache.torch.EpochLoader: a tiercache.torch.Dataset or a tiercache.Cache, "
                            f"not {type(source).__name__}")
        self.source, self.seed, self.batch_size, self.drop_last = source, seed, batch_size, drop_last
        self.threads, self.depth, self.prefetch, self.device = threads, depth, prefetch, device
        if decode is not None and not callable(decode):
            raise TypeError(f"tiercache.torch.EpochLoader: decode must be callable, not {type(decode).__name__}")
        self.decode = decode
        self.decode_threads = decode_threads or len(os.sched_getaffinity(0))
        self._pool = None  # the decode threads, made at the first decoded pass
        self._pass = None  # the last decoded pass
        self.epoch = 0
        self.ring = tiercache._tiercache.PinnedRing()
        self._loader = None  # the native loader of the epoch under way
        self._stats = None

    def set_epoch(self, epoch):
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    @property
    def cache(self):
        return self.dataset.cache if self.dataset is not None else self.source

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.source) // self.world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self._pass is not None:  # a pass left midway: its decodes let go of their buffers first
            self._pass.drain()
            self._pass = None
        if self._loader is not None:  # one loader on the ring at a time: the last epoch's ends here
            self._loader.close()
            self._loader = None
        options = dict(batch=self.batch_size, depth=self.depth, threads=self.threads, drop_last=self.drop_last,
                       prefetch=self.prefetch, device=self.device, ring=self.ring)
        if self.dataset is not None:
            order = self.sampler.indices()
            samples = self.dataset.samples
            loader = tiercache._tiercache.EpochLoader(self.cache, [samples[i][0] for i in order], **options)
            targets = torch.tensor([samples[i][1] for i in order], dtype=torch.int64)
        else:
            loader = tiercache._tiercache.EpochLoader(self.cache, self.seed, epoch=self.epoch, rank=self.rank,
                                                      world=self.world, **options)
            order, targets = None, None
        self._loader = loader
        epoch = _Epoch(loader, self.batch_size, self.depth, order, targets)
        if self.decode is None:
            return epoch
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="tiercache-decode")
        self._pass = _Decoded(epoch, self.decode, self._pool, max(1, min(self.depth, len(loader)) - 1))
        return self._pass

    def close(self):
        """Stops the native threads (batches still alive stay valid) and the decode threads."""
        if self._pass is not None:
            self._pass.drain()
            self._pass = None
        if self._loader is not None:
            self._loader.close()
            self._loader = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def stats(self):
        """The epoch under way's (or the last one's) loader counters: "batches", "samples",
        "bytes", "wait_s" (the loop's time waiting for batches), "held_s", "stall_fraction"."""
        return self._loader.stats() if self._loader is not None else {}

    @property
    def memory(self):
        """Where the ring is, in words (pinned for a device, page-locked, or pageable and why)."""
        return self._loader.memory if self._loader is not None else None


class _Epoch:
    """One pass of an EpochLoader: Batch objects from its native loader. A batch that fails to
    read raises from __next__, and the next call goes on after it (a generator would end)."""

    def __init__(self, loader, batch_size, depth, order, targets):
        self.loader, self.batch_size, self.depth, self.order, self.targets = loader, batch_size, depth, order, targets

    def __iter__(self):
        return self

    def __len__(self):
        return len(self.loader)

    def __next__(self):
        _reap_copies()
        while len(_in_flight) >= max(self.depth - 1, 1):  # device copies still reading buffers next() refills
            _in_flight.pop(0)[0].synchronize()
        native = next(self.loader)
        first, n = native.index * self.batch_size, len(native)
        data = torch.frombuffer(native, dtype=torch.uint8) if native.nbytes else torch.empty(0, dtype=torch.uint8)
        return Batch(data, torch.tensor(native.offsets, dtype=torch.int64), torch.tensor(native.sizes, dtype=torch.int64),
                     self.order[first:first + n] if self.order is not None else native.ids,
                     self.targets[first:first + n] if self.targets is not None else None, native.index)


class _Decoded:
    """A pass whose batches are decoded on a thread pool, `ahead` batches in advance: each
    sample's decode is submitted as its batch arrives, and a batch is handed out once all its
    samples are decoded, its raw bytes dropped (so its ring buffer can be refilled)."""

    def __init__(self, epoch, decode, pool, ahead):
        self.epoch, self.decode, self.pool, self.ahead = epoch, decode, pool, ahead
        self.pending = collections.deque()  # (Batch, [futures]) or (None, the exception its read raised)
        self.done = False

    def __iter__(self):
        return self

    def __len__(self):
        return len(self.epoch)

    def _decode_one(self, holder):
        # The view is taken out of the pool's work item before the result is set, so that once a
        # batch's futures are done no reference to its buffer is left in the pool's threads.
        view = holder.pop()
        try:
            return self.decode(view)
        finally:
            del view

    def drain(self):
        """Waits for the decodes under way and drops their batches (a pass left midway)."""
        for batch, futures in self.pending:
            if batch is not None:
                concurrent.futures.wait(futures)
        self.pending.clear()
        self.done = True

    def __next__(self):
        while len(self.pending) < self.ahead and not self.done:
            try:
                batch = next(self.epoch)
            except StopIteration:
                self.done = True
                break
            except Exception as e:  # this batch's read failed: raised in its turn, the pass goes on
                self.pending.append((None, e))
                break
            self.pending.append((batch, [self.pool.submit(self._decode_one, [view]) for view in batch]))
        if not self.pending:
            raise StopIteration
        batch, futures = self.pending.popleft()
        if batch is None:
            raise futures
        concurrent.futures.wait(futures)  # all of them, so that no view outlives the batch when one fails
        batch.data = None
        for f in futures:
            if (error := f.exception()) is not None:
                traceback.clear_frames(error.__traceback__)  # its frames' locals (the view) would keep the buffer
                raise error
        batch.samples = [f.result() for f in futures]
        return batch
