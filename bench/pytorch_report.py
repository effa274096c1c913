#!/usr/bin/python3
"""The report of bench/pytorch_epoch.sh: reads its results (one JSON object per epoch and run,
tagged with "config" and "run"), prints the Markdown table (medians over the runs) and, with
--json FILE, writes bench/run's summary rows (warm images/s through the mount against the origin
read directly; the target is 0.9x).

    pytorch_report.py RESULTS.jsonl --dataset-bytes N --note TEXT --host TEXT --origin-mbps 50 \
        --dram 1GiB --batch 32 --workers 4 --compute-ms 40 --prefetch-threads 4 --runs 3 [--json FILE]
"""
import argparse
import json
import statistics

NAMES = {"native": "native: DataLoader(shuffle=True) on the origin",
         "mount": "tiercache mount, shuffle=True, no plan",
         "plan": "tiercache mount, TiercacheSampler (plan)"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for name in ("--note", "--host", "--dram"):
        ap.add_argument(name, required=True)
    for name in ("--dataset-bytes", "--origin-mbps", "--batch", "--workers", "--prefetch-threads", "--runs"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--compute-ms", type=float, required=True)
    ap.add_argument("--json")
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(a.results)]
    configs = [c for c in NAMES if any(r["config"] == c for r in rows)]
    epochs = sorted({r["epoch"] for r in rows})
    last = epochs[-1]
    slow = a.origin_mbps > 0

    def med(config, epoch, field):
        return statistics.median(field(r) for r in rows if r["config"] == config and r["epoch"] == epoch)

    def images_per_s(config, epoch):
        return med(config, epoch, lambda r: r["samples"] / r["epoch_s"])

    n = rows[0]["samples"]
    origin_note = (f"the local disk throttled to {a.origin_mbps} MB/s (blkio cgroup), its files evicted from the page "
                   "cache before every epoch" if slow else
                   "the local disk, not throttled, its files left in the page cache (warm from epoch 2 on)")
    print(f"## PyTorch epochs, {'a slow' if slow else 'a local'} origin: {n} files, "
          f"{a.dataset_bytes / 2**20:.0f} MiB ({a.note})")
    print()
    print(f"{a.host}. Origin: {origin_note}. Loop: ImageFolder (raw bytes), DataLoader(batch_size={a.batch}, "
          f"num_workers={a.workers}), {a.compute_ms:g} ms of simulated compute per batch. Mount: --dram {a.dram}, "
          f"--prefetch-threads {a.prefetch_threads}. Medians of {a.runs} runs; each configuration starts cold. "
          "Stall = time blocked in next(loader) / epoch time. Origin bytes = bytes read from the disk during the "
          "epoch (the cgroup's blkio counter) / dataset bytes.")
    print()
    head = " | ".join(f"epoch {e + 1} s" for e in epochs)
    stall = " | ".join(f"stall {e + 1}" for e in epochs)
    print(f"| configuration | {head} | {stall} | origin bytes / dataset, per epoch | epoch {last + 1} images/s "
          "| vs native |")
    print("|---|" + "---:|" * (2 * len(epochs)) + "---|---:|---:|")
    for c in configs:
        times = " | ".join(f"{med(c, e, lambda r: r['epoch_s']):.2f}" for e in epochs)
        stalls = " | ".join(f"{med(c, e, lambda r: r['stall']):.0%}" for e in epochs)
        origin = ", ".join(f"{med(c, e, lambda r: r['disk_read_bytes']) / a.dataset_bytes:.2f}" for e in epochs)
        ratio = images_per_s(c, last) / images_per_s("native", last)
        print(f"| {NAMES[c]} | {times} | {stalls} | {origin} | {images_per_s(c, last):,.0f} | {ratio:.2f}x |")
    print()
    if a.compute_ms:
        print(f"Compute alone: {n / a.batch * a.compute_ms / 1000:.2f} s per epoch "
              f"({-(-n // a.batch)} batches x {a.compute_ms:g} ms).")
    for c in ("mount", "plan"):
        got = [r for r in rows if r["config"] == c and (r.get("cache") or {}).get("prefetch")]
        if not got:
            continue
        keys = ("issued", "fetched", "resident", "raced")
        per = "; ".join(f"epoch {e + 1}: " + ", ".join(
            f"{k} {statistics.median(r['cache']['prefetch'].get(k, 0) for r in got if r['epoch'] == e):g}"
            for k in keys) for e in epochs)
        print(f"Prefetch counters, {NAMES[c]} (medians): {per}.")

    if a.json:
        origin = f"origin throttled to {a.origin_mbps} MB/s" if slow else "origin local and warm"
        out = {"workload": "pytorch", "title": "PyTorch ImageFolder + DataLoader",
               "setup": f"{n} files, {a.dataset_bytes / 2**20:.0f} MiB, raw bytes, batch {a.batch}, {a.workers} "
                        f"workers, {a.compute_ms:g} ms compute a batch, {origin}; epoch {last + 1}; "
                        f"medians of {a.runs}",
               "rows": []}
        for c, target in (("mount", ">= 0.9x"), ("plan", "")):
            if c not in configs:
                continue
            ours, base = images_per_s(c, last), images_per_s("native", last)
            out["rows"].append({"measure": f"epoch {last + 1} images/s: {NAMES[c].removeprefix('tiercache ')} "
                                           "vs the origin directory",
                                "ours": ours, "baseline": base, "unit": "images/s", "ratio": ours / base,
                                "target": target, "met": ours / base >= 0.9 if target else None})
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
