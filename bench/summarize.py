#!/usr/bin/env python3
"""bench/run's summary: reads each workload's WORKLOAD.json in a run's folder and writes
summary.md (one table: every measure against its baseline, the target and whether it is met),
summary.json (the same, machine-readable) and summary.png (gnuplot: how many times better than
its baseline each measure is).

A workload's JSON, as every bench script writes it with RESULT_JSON:
  {"workload": "hits", "title": "...", "setup": "one line",
   "rows": [{"measure": "...", "ours": 1.0, "baseline": 2.0, "unit": "GB/s", "ratio": 0.5,
             "target": ">= 0.8x", "met": false}]}
"ratio" is ours / baseline; "target" is "" and "met" null where no target applies; "baseline"
is null where the baseline could not run (said in "setup"). An optional "better": "lower" or
"higher" says which way is good (by default: lower for times and bytes, higher otherwise).

    summarize.py RUN_DIR --workloads "hits warm_mount" [--failed "pytorch"] --host TEXT --commit ID [--quick]
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess

# Units where less is better (and stalls), unless a row says "better": "higher" or "lower".
LOWER_IS_BETTER = {"s", "bytes", "MiB", "dataset bytes"}
PLOT_RANGE = (0.01, 100)  # times better: a ratio outside is drawn at the edge (a stall of 0 is "infinitely" better)


def fmt(value, unit):
    if value is None:
        return "n/a"
    if unit == "fraction":
        return f"{value:.1%}"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def advantage(row):
    """How many times better than the baseline (above 1: ours is better), or None."""
    ratio = row.get("ratio")
    if not ratio or row.get("baseline") in (None, 0):
        return None
    default = "lower" if row.get("unit") in LOWER_IS_BETTER or "stall" in row["measure"] else "higher"
    lower = row.get("better", default) == "lower"
    return 1 / ratio if lower else ratio


def plot(rows, path, title):
    """A horizontal bar per measure: times better than its baseline, on a log axis, 1x marked."""
    points = []
    for r in rows:
        a = advantage(r)
        if a is None:
            continue
        label = f"{r['workload']}: {r['measure']}".replace('"', "'")
        if len(label) > 90:
            label = label[:87] + "..."
        shown = f"{a:.2f}x" if PLOT_RANGE[0] <= a <= PLOT_RANGE[1] else (f"> {PLOT_RANGE[1]:g}x" if a > 1 else f"< {PLOT_RANGE[0]:g}x")
        points.append((label, min(max(a, PLOT_RANGE[0]), PLOT_RANGE[1]), shown))
    if not points or not shutil.which("gnuplot"):
        return False
    data = path + ".dat"
    with open(data, "w") as f:
        for i, (label, a, shown) in enumerate(points):
            f.write(f'{len(points) - 1 - i} {a:.6g} "{label}" "{shown}"\n')  # the first row on top
    height = 140 + 26 * len(points)
    script = f"""
set terminal pngcairo size 1400,{height} font ",10" noenhanced
set output "{path}"
set title "{title}"
set style fill solid 0.7
set logscale x 10
set xrange [{PLOT_RANGE[0]}:{PLOT_RANGE[1] * 3}]
set xlabel "times better than the baseline (log scale; right of 1 = tiercache better)"
set yrange [-0.7:{len(points) - 0.3}]
set ytics nomirror
set grid xtics
set key off
set lmargin {max(len(label) for label, _, _ in points) * 0.95 + 2:.0f}
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb "black"
# boxxyerror: x y xlow xhigh ylow yhigh, so each bar runs from 1 to its value.
plot "{data}" using (sqrt($2)):1:($2 < 1 ? $2 : 1):($2 < 1 ? 1 : $2):($1-0.35):($1+0.35):ytic(3) \\
         with boxxyerror lc rgb "#3b75af", \\
     "{data}" using ($2 < 1 ? 1 : $2):1:4 with labels left offset 1,0
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    finally:
        os.remove(data)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--workloads", required=True)
    ap.add_argument("--failed", default="")
    ap.add_argument("--host", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    failed = set(a.failed.split())
    rows, setups = [], []
    for w in a.workloads.split():
        path = os.path.join(a.run_dir, f"{w}.json")
        if w in failed or not os.path.exists(path):
            why = "failed" if w in failed else "wrote no results"
            setups.append(f"- **{w}**: {why}; see {w}.log")
            continue
        result = json.load(open(path))
        setups.append(f"- **{result.get('title', w)}** ({w}): {result.get('setup', '')}")
        for r in result["rows"]:
            rows.append(dict(r, workload=w))

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"tiercache benchmarks, {date}"
    lines = [f"## {title}", ""]
    if a.quick:
        lines += ["**QUICK run: small sizes, one run each. It checks that the bench works; do not quote its figures.**", ""]
    lines += [f"Host: {a.host}. Commit {a.commit}. Every figure is a median over its workload's runs, "
              "and every baseline was measured in the same run on the same data.", "",
              "| workload | measure | tiercache | baseline | ratio | target | met |",
              "|---|---|---:|---:|---:|---|:-:|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "n/a"
        lines.append(f"| {r['workload']} | {r['measure']} | {fmt(r['ours'], r['unit'])} | "
                     f"{fmt(r.get('baseline'), r['unit'])} | {ratio} | {r.get('target', '')} | {met} |")
    targets = [r for r in rows if r.get("met") is not None]
    lines += ["", f"Targets met: {sum(r['met'] for r in targets)} of {len(targets)}."
              + (f" Failed workloads: {', '.join(sorted(failed))}." if failed else ""), "", "Setups:"] + setups
    png = os.path.join(a.run_dir, "summary.png")
    if plot(rows, png, title):
        lines += ["", "![times better than the baseline](summary.png)"]
    with open(os.path.join(a.run_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.run_dir, "summary.json"), "w") as f:
        json.dump({"date": date, "host": a.host, "commit": a.commit, "quick": a.quick,
                   "failed": sorted(failed), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
