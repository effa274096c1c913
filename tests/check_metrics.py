#!/usr/bin/python3
"""Checks a tiercache metrics text with a real Prometheus parser.

usage: check_metrics.py METRICS_FILE README.md

Parses METRICS_FILE with prometheus_client's text parser and checks that every family is one
README.md's Metrics table documents, with the type it documents there, and that every sample
carries the labels the table lists. Prints one line per family; exits 0 when all is well, 1
on a problem, 2 when python3-prometheus-client is missing.
"""
import re
import sys


def documented(readme_path):
    """{name: (type, {labels})} from the README's Metrics table rows: | `name` | type | labels | meaning |"""
    rows = {}
    in_section = False
    with open(readme_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                in_section = line.strip().lstrip("#").strip().lower() == "metrics"
                continue
            m = re.match(r"\|\s*`(tiercache_[a-z_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
            if in_section and m:
                labels = set(re.findall(r"`?([a-z_]+)`?", m.group(3))) - {"none"}
                rows[m.group(1)] = (m.group(2), labels)
    return rows


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 1
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        print("check_metrics.py: the Python module prometheus_client is missing: install the Debian package "
              "python3-prometheus-client (scripts/install-deps does)", file=sys.stderr)
        return 2
    docs = documented(sys.argv[2])
    if not docs:
        print(f"check_metrics.py: no Metrics table found in {sys.argv[2]}", file=sys.stderr)
        return 1
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    problems = []
    families = 0
    for family in text_string_to_metric_families(text):
        families += 1
        # The parser drops a counter family's _total; the samples keep it, as the docs do.
        name = family.name + "_total" if family.type == "counter" and family.name + "_total" in docs else family.name
        if name not in docs:
            problems.append(f"{name}: not in the README's Metrics table")
            continue
        doc_type, doc_labels = docs[name]
        if family.type != doc_type:
            problems.append(f"{name}: type {family.type}, documented as {doc_type}")
        for s in family.samples:
            if s.name != name:
                problems.append(f"{name}: a sample named {s.name}")
            if set(s.labels) != doc_labels:
                problems.append(f"{name}: labels {sorted(s.labels)}, documented {sorted(doc_labels)}")
        print(f"{name} {family.type} {len(family.samples)} samples")
    if families == 0:
        problems.append("no metric family at all")
    for p in problems:
        print("check_metrics.py: " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
