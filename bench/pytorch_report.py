#!/usr/bin/python3
"""The report of bench/pytorch_epoch.sh: reads its results (one JSON object per epoch and run,
tagged with "config", "run", "origin_mbps", "compute_ms" and "decode"), prints one Markdown table
per origin and decode setting (medians over the runs) and, with --json FILE, writes bench/run's
summary rows: each configuration's images/s in the last epoch against native's (targets: the
mount 0.9x and tiercache.torch.Dataset 1.2x, warm with raw bytes), and over a slow origin with
compute, the EpochLoader's epoch time against the compute alone (target: within 5%, stall 5%).

    pytorch_report.py RESULTS.jsonl --dataset-bytes N --note TEXT --host TEXT --dram 1GiB --batch 32 \
        --workers 4 --prefetch-threads 4 --depth 4 --runs 3 --workload pytorch [--json FILE]
"""
import argparse
import json
import math
import statistics

NAMES = {"native": "(i) native: ImageFolder + DataLoader(shuffle=True) on the origin",
         "mount": "(ii) ImageFolder + DataLoader(shuffle=True) on the tiercache mount, no plan",
         "plan": "ImageFolder + DataLoader on the tiercache mount, TiercacheSampler (plan)",
         "dataset": "(iii) tiercache.torch.Dataset + DataLoader(shuffle=True), workers attached; raw bytes collated by tiercache.torch.collate",
         "epochloader": "(iv) tiercache.torch.EpochLoader"}
TITLES = {"pytorch": "PyTorch ImageFolder + DataLoader",
          "python_loaders": "PyTorch loaders on real JPEGs: ImageFolder, the mount, tiercache.torch"}
# (config, warm, decode) -> the least images/s against native's (the issues' targets)
TARGETS = {("mount", True, "off"): 0.9, ("dataset", True, "off"): 1.2}
FLOOR_TARGET = 1.05  # the EpochLoader's epoch time over a slow origin against the compute alone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for name in ("--note", "--host", "--dram", "--workload"):
        ap.add_argument(name, required=True)
    for name in ("--dataset-bytes", "--batch", "--workers", "--prefetch-threads", "--depth", "--runs"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--json")
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(a.results)]
    groups = list(dict.fromkeys((r["origin_mbps"], r["compute_ms"], r["decode"]) for r in rows))
    n = rows[0]["samples"]
    summary = []
    print(f"## {TITLES[a.workload]}: {n} files, {a.dataset_bytes / 2**20:.0f} MiB ({a.note})")
    print()
    print(f"{a.host}. DataLoader(batch_size={a.batch}, num_workers={a.workers}); tiercache: --dram {a.dram}, "
          f"{a.prefetch_threads} prefetch (mount) or I/O (EpochLoader) threads, EpochLoader depth {a.depth}. "
          f"Medians of {a.runs} runs; each configuration starts cold (a fresh mount or cache) and runs its epochs. "
          "Stall = time blocked in next(loader) / epoch time (for the EpochLoader with decoding on, its "
          "next() includes waiting for its decode threads). Origin bytes = bytes read from the disk "
          "during the epoch (the cgroup's blkio counter) / dataset bytes. Decode on: torchvision.io.decode_jpeg, "
          "Resize(256), CenterCrop(224), to float, in the DataLoader's workers, or the EpochLoader's decode "
          "threads (one a CPU, ahead of the loop); decode off: each file's raw bytes as a uint8 tensor.")
    for mbps, compute_ms, decode in groups:
        group = [r for r in rows if (r["origin_mbps"], r["compute_ms"], r["decode"]) == (mbps, compute_ms, decode)]
        summary += table(a, group, mbps, compute_ms, decode)

    if a.json:
        out = {"workload": a.workload, "title": TITLES[a.workload],
               "setup": f"{n} files, {a.dataset_bytes / 2**20:.0f} MiB ({a.note}), batch {a.batch}, {a.workers} "
                        f"workers, last epoch of {max(r['epoch'] for r in rows) + 1}; medians of {a.runs}",
               "rows": summary}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


def table(a, rows, mbps, compute_ms, decode):
    """Prints one origin and decode setting's table; returns its summary rows."""
    configs = [c for c in NAMES if any(r["config"] == c for r in rows)]
    epochs = sorted({r["epoch"] for r in rows})
    last = epochs[-1]
    n = rows[0]["samples"]
    warm = mbps == 0

    def med(config, epoch, field):
        return statistics.median(field(r) for r in rows if r["config"] == config and r["epoch"] == epoch)

    def images_per_s(config, epoch):
        return med(config, epoch, lambda r: r["samples"] / r["epoch_s"])

    origin = (f"the local disk throttled to {mbps} MB/s (blkio cgroup), its files evicted from the page cache "
              "before every epoch" if not warm else
              "the local disk, not throttled, its files left in the page cache (warm from epoch 2 on)")
    print()
    print(f"### {'A slow' if not warm else 'A local'} origin, {compute_ms:g} ms of compute a batch, decode {decode}")
    print()
    print(f"Origin: {origin}.")
    print()
    head = " | ".join(f"epoch {e + 1} s" for e in epochs)
    stall = " | ".join(f"stall {e + 1}" for e in epochs)
    print(f"| configuration | {head} | {stall} | origin bytes / dataset, per epoch | epoch {last + 1} images/s "
          "| µs a sample | vs native |")
    print("|---|" + "---:|" * (2 * len(epochs)) + "---|---:|---:|---:|")
    for c in configs:
        times = " | ".join(f"{med(c, e, lambda r: r['epoch_s']):.2f}" for e in epochs)
        stalls = " | ".join(f"{med(c, e, lambda r: r['stall']):.1%}" for e in epochs)
        bytes_read = ", ".join(f"{med(c, e, lambda r: r['disk_read_bytes']) / a.dataset_bytes:.2f}" for e in epochs)
        ips = images_per_s(c, last)
        print(f"| {NAMES[c]} | {times} | {stalls} | {bytes_read} | {ips:,.0f} | {1e6 / ips:,.0f} "
              f"| {ips / images_per_s('native', last):.2f}x |")
    print()
    batches = math.ceil(n / a.batch)
    floor = batches * compute_ms / 1000
    if compute_ms:
        print(f"Compute alone (the loader-stall floor): {floor:.2f} s per epoch ({batches} batches x {compute_ms:g} ms).")
    for c in ("mount", "plan", "dataset", "epochloader"):
        got = [r for r in rows if r["config"] == c and any((r.get("cache") or {}).get("prefetch", {}).values())]
        if not got:
            continue
        keys = ("issued", "fetched", "resident", "raced")
        per = "; ".join(f"epoch {e + 1}: " + ", ".join(
            f"{k} {statistics.median(r['cache']['prefetch'].get(k, 0) for r in got if r['epoch'] == e):g}"
            for k in keys) for e in epochs)
        print(f"Prefetch counters, {NAMES[c]} (medians): {per}.")
    got = [r for r in rows if r.get("loader_stats")]
    if got:
        keys = sorted({k for r in got for k, v in r["loader_stats"].items() if isinstance(v, (int, float))})
        per = "; ".join(f"epoch {e + 1}: " + ", ".join(
            f"{k} {statistics.median(r['loader_stats'].get(k, 0) for r in got if r['epoch'] == e):.3g}"
            for k in keys) for e in epochs)
        print(f"EpochLoader.stats() after each epoch (medians): {per}.")

    where = f"origin {mbps} MB/s" if not warm else "origin local and warm"
    setup = f"{where}, {compute_ms:g} ms compute a batch, decode {decode}"
    out = []
    for c in configs:
        if c == "native":
            continue
        ours, base = images_per_s(c, last), images_per_s("native", last)
        least = TARGETS.get((c, warm, decode))
        out.append({"measure": f"epoch {last + 1} images/s, {setup}: {NAMES[c]} vs (i)",
                    "ours": ours, "baseline": base, "unit": "images/s", "ratio": ours / base,
                    "target": f">= {least}x" if least else "", "met": ours / base >= least if least else None})
    if "epochloader" in configs and compute_ms and not warm:
        for e in sorted({epochs[0], last}):
            took, stalled = med("epochloader", e, lambda r: r["epoch_s"]), med("epochloader", e, lambda r: r["stall"])
            own = med("epochloader", e, lambda r: r["loader_stats"]["wait_s"] / r["epoch_s"])
            aimed = decode == "off"  # decoding in the loop adds its time to the epoch: no floor to meet
            out.append({"measure": f"epoch {e + 1} time, {setup}: (iv) EpochLoader vs compute alone "
                                   f"(stall {stalled:.1%}{', decoding included' if decode == 'on' else ''}; "
                                   f"the loader's own wait {own:.1%})",
                        "ours": took, "baseline": floor, "unit": "s", "ratio": took / floor,
                        "target": f"<= {FLOOR_TARGET}x" if aimed else "",
                        "met": took / floor <= FLOOR_TARGET and stalled <= FLOOR_TARGET - 1 if aimed else None})
    return out


if __name__ == "__main__":
    main()
