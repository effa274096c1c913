#!/usr/bin/env python3
"""The report of bench/larger_than_memory.sh: reads its results (lines "run config epoch seconds
origin_bytes dram_hits dram_reads"; the last two are -1 for native), prints the Markdown table (medians
over the runs) and, with --json FILE, writes bench/run's summary rows. Targets (issue 6): the hit
rate at least the capacity fraction, and the warm epoch at most 0.5x the memory-limited page
cache's time.
"""
import argparse
import collections
import json
import statistics

DESCRIBES = {
    "native": "native page cache, memory-limited",
    "dram": "dram, noevict",
    "dram+nvme": "dram + nvme, noevict (no plan)",
    "lru+nvme": "dram + nvme, LRU",
    "plan": "dram, plan",
    "plan+nvme": "dram + nvme, plan",
}
MODES = {"default": "default mount options (kernel cache auto)", "on": "kernel cache on"}


class Describe(dict):
    """CONFIG (mounted with --kernel-cache off) or CONFIG:MODE (e.g. plan+nvme:default)."""

    def __missing__(self, config):
        base, _, mode = config.partition(":")
        name = DESCRIBES.get(base, base)
        return f"{name}, {MODES.get(mode, mode)}" if mode else name


DESCRIBE = Describe(DESCRIBES)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for name in ("--dataset-bytes", "--budget-mib", "--nvme-mib", "--readers", "--runs"):
        ap.add_argument(name, type=int, required=True)
    for name in ("--origin", "--note", "--host"):
        ap.add_argument(name, required=True)
    ap.add_argument("--json")
    ap.add_argument("--workload", default="larger_than_memory")
    ap.add_argument("--title", default="Larger than memory")
    ap.add_argument("--time-target", default="<= 0.5x", help="epoch time of dram + nvme against native")
    a = ap.parse_args()

    # (config, epoch) -> [(seconds, origin_bytes, hit_rate)] over the runs
    got = collections.defaultdict(list)
    by_run = collections.defaultdict(dict)  # (config, epoch) -> {run: seconds}
    configs = []
    for line in open(a.results):
        run, config, epoch, seconds, origin, dram_hits, dram_reads = line.split()
        by_run[(config, int(epoch))][run] = float(seconds)
        # The share of the readers' reads served without the origin. With dram alone: the dram
        # tier's hit rate (its counters see the readers' reads only, not the prefetcher's). With
        # nvme, whose counters also count the prefetcher's reads, and for the page cache: the
        # share of the epoch's bytes not read from the origin (a lower bound).
        origin = int(origin)
        if "nvme" in config or int(dram_reads) < 0:
            hit_rate = max(0.0, 1 - origin / a.dataset_bytes)
        else:
            hit_rate = int(dram_hits) / max(1, int(dram_reads))
        got[(config, int(epoch))].append((float(seconds), origin, hit_rate))
        if config not in configs:
            configs.append(config)
    epochs = sorted({e for _, e in got})
    last = epochs[-1]

    def med(config, epoch, i):
        return statistics.median(v[i] for v in got[(config, epoch)])

    budget = a.budget_mib * 2**20

    def capacity(config):  # the fraction of the dataset the configuration can hold
        held = budget + (a.nvme_mib * 2**20 if "nvme" in config else 0)
        return min(1.0, held / a.dataset_bytes)

    print(f"## {a.title}: {a.dataset_bytes / 2**30:.2f} GiB dataset, {a.budget_mib} MiB DRAM budget, "
          f"{len(epochs)} shuffled epochs, {a.readers} readers")
    print()
    print(f"{a.host}. Dataset: {a.note}. Origin: {a.origin}. Each configuration starts cold; medians of {a.runs} "
          "runs. Origin bytes: read from storage by the reader (native) or by the daemon (tiercache). Hit rate: the "
          "share of the readers' reads served without the origin (dram alone: the dram tier's hit rate; with nvme, "
          "and native: the share of the epoch's bytes not read from the origin). Capacity: "
          f"what the configuration can hold over the dataset (dram {a.budget_mib} MiB, nvme {a.nvme_mib} MiB).")
    print()
    times = " | ".join(f"epoch {e} s" for e in epochs)
    print(f"| configuration | {times} | origin bytes / dataset, per epoch | hit rate, per epoch | capacity "
          f"| epoch {last} time vs native |")
    print("|---|" + "---:|" * len(epochs) + "---|---|---:|---:|")
    for c in configs:
        t = " | ".join(f"{med(c, e, 0):.2f}" for e in epochs)
        origin = ", ".join(f"{med(c, e, 1) / a.dataset_bytes:.2f}" for e in epochs)
        hits = ", ".join(f"{med(c, e, 2):.0%}" for e in epochs)
        ratio = med(c, last, 0) / med("native", last, 0) if ("native", last) in got else float("nan")
        print(f"| {DESCRIBE[c]} | {t} | {origin} | {hits} | {capacity(c):.0%} | {ratio:.2f}x |")

    # Each run's ratios against the native run beside it (same run, same data).
    first = epochs[0]
    if ("native", last) in got:
        print()
        print(f"Per run, time vs native in the same run: epoch {first} and epoch {last}.")
        print()
        print(f"| configuration | epoch {first} vs native, per run | epoch {last} vs native, per run |")
        print("|---|---|---|")
        for c in configs:
            if c == "native":
                continue
            cells = []
            for e in (first, last):
                mine, native = by_run[(c, e)], by_run[("native", e)]
                cells.append(", ".join(f"{mine[r] / native[r]:.2f}x" for r in sorted(mine, key=int) if r in native))
            print(f"| {DESCRIBE[c]} | {cells[0]} | {cells[1]} |")

    if not a.json:
        return
    rows = []

    def time_row(config, versus, target=""):
        if (config, last) not in got or (versus, last) not in got:
            return
        ours, base = med(config, last, 0), med(versus, last, 0)
        met = None
        if target:
            met = ours / base <= float(target.split()[1].rstrip("x"))
        rows.append({"measure": f"epoch {last} time: {DESCRIBE[config]} vs {DESCRIBE[versus]}",
                     "ours": ours, "baseline": base, "unit": "s", "ratio": ours / base, "target": target, "met": met})

    time_row("plan+nvme", "native", a.time_target)
    time_row("dram+nvme", "native", a.time_target)
    time_row("plan+nvme:default", "native", a.time_target)
    time_row("dram+nvme:default", "native", a.time_target)
    time_row("plan+nvme:on", "native")  # what auto chose against: context, no target
    time_row("plan+nvme", "lru+nvme")
    # The targets are ours, dram + nvme with a plan and without; the other rows are context.
    for c in ("plan+nvme", "dram+nvme", "plan+nvme:default", "dram+nvme:default", "plan+nvme:on", "plan", "dram", "lru+nvme", "native"):
        if (c, last) not in got:
            continue
        ours, cap = med(c, last, 2), capacity(c)
        target = c.split(":")[0] in ("plan+nvme", "dram+nvme") and not c.endswith(":on")
        rows.append({"measure": f"epoch {last} hit rate: {DESCRIBE[c]}, against the capacity fraction",
                     "ours": ours, "baseline": cap, "unit": "fraction", "better": "higher", "ratio": ours / cap,
                     "target": ">= capacity" if target else "", "met": ours >= cap - 1e-9 if target else None})
    json.dump({"workload": a.workload, "title": a.title,
               "setup": f"{a.dataset_bytes / 2**30:.2f} GiB dataset, dram budget {a.budget_mib} MiB (nvme "
                        f"{a.nvme_mib} MiB), {len(epochs)} shuffled epochs, {a.readers} readers; origin: {a.origin}; "
                        f"medians of {a.runs}",
               "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
