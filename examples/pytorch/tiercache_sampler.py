"""TiercacheSampler: a PyTorch sampler that tells a tiercache mount the epoch's order.

It draws each epoch's order exactly as torch.utils.data.DistributedSampler does (a
torch.Generator seeded with seed + epoch; padded or cut to a multiple of world, then every
world-th index from rank), and before yielding the first index it writes that order, as paths
relative to the mount, to MOUNT/.tiercache/plan in one write. The mount then prefetches in
that order and its cache keeps what will be read soonest. With world == 1 it is a plain shuffle
(RandomSampler's distribution); with shuffle=False, the dataset order.

    from tiercache_sampler import TiercacheSampler
    ds = torchvision.datasets.ImageFolder("/mnt/ds/train")
    sampler = TiercacheSampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=64, num_workers=4, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader: ...

When the dataset is not under a tiercache mount (no .tiercache/plan above its root), it warns
once and is an ordinary sampler.
"""
import errno as errno_names
import json
import math
import os
import warnings

import torch
from torch.utils.data import Sampler

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


class TiercacheSampler(Sampler):
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
        self.last_plan = None  # the paths of the latest plan written, in order
        self.plan_status = None  # the plan file's JSON read back after writing it

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
        it at once. Raises PlanError (an OSError: errno, message, plan file) when refused."""
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
