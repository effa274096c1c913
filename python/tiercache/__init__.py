"""tiercache: a tiered dataset cache for training loaders, from Python.

The C++ library's Cache (include/tiercache/), through its native module _tiercache:

    import tiercache
    cache = tiercache.open("/data/imagenet/train", dram="32GiB", nvme="/nvme/tc:800GiB")
    data = cache.read("n01440764/x.jpg")          # bytes, from a tier or the origin
    n = cache.read_into(0, bytearray(4096))        # into any writable buffer
    order = cache.set_plan(seed, epoch=0)          # this epoch's order: the cache reads ahead

    shared = tiercache.attach("imagenet")          # a mount's (or an owner's) --share NAME

help(tiercache.Cache) explains each call. tiercache.torch has a PyTorch Dataset over a cache
and TiercacheSampler, which writes each epoch's order to a mount's plan file.

Errors: FileNotFoundError for a path the cache does not hold, IndexError for an id outside
it, ValueError for a bad option or record, OSError (with errno) when the origin fails,
tiercache.OwnerGone when a shared cache's owner is gone.
"""
from ._tiercache import Cache, OwnerGone, attach, open, set_log_level  # noqa: A004 (open: as the C++ Cache::open)
from ._tiercache import __version__ as _native_version
from ._version import __version__

if _native_version != __version__:
    raise ImportError(f"tiercache: the native module _tiercache is version {_native_version}, the package {__version__}: "
                      "they come from different builds; reinstall (cmake --install) or fix PYTHONPATH")

__all__ = ["Cache", "OwnerGone", "attach", "from_spec", "open", "set_log_level", "__version__"]


def from_spec(spec):
    """A new Cache made as `spec` (a Cache's .spec) says: attach() again to a shared cache, or
    open() again with the same arguments. For a process other than the one that made the
    original (a forked or spawned worker), where that Cache cannot be used."""
    kind, args = spec["kind"], spec["args"]
    if kind == "attach":
        return attach(**args)
    if kind == "open":
        return open(**args)
    raise ValueError(f"tiercache: a spec of kind {kind!r}: 'open' or 'attach'")
