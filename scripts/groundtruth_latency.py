#!/usr/bin/env python3
"""Untraced call times of ground-truth records against the cost model.

    sudo .venv/bin/perfsim groundtruth --native --untraced --grid random-files:1:80 --out r1.jsonl
    .venv/bin/python scripts/groundtruth_latency.py r1.jsonl [r2.jsonl ...] [--cost-profile kvm-xeon]

Each case (the same id across the files: several runs of one grid) is one row, the median
of its times; the prediction is perfsim.cost.predict of the planned call with the
profile's cold-cache charge for what the probe wrote just before it
(perfsim/groundtruth/latency.py). Prints the median signed and absolute relative error by
size class, by call kind and overall, and the ten worst cases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perfsim.errors import PerfsimError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="probe records made with --untraced")
    ap.add_argument("--cost-profile", default="kvm-xeon", help="cost profile (kvm-xeon)")
    args = ap.parse_args(argv)
    from perfsim.groundtruth.latency import latency_rows, size_class, summary
    from perfsim.groundtruth.records import read_jsonl

    try:
        recs = [r for f in args.records for r in read_jsonl(f)]
        rows = latency_rows(recs, args.cost_profile)
    except PerfsimError as exc:
        print(f"groundtruth_latency: error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("groundtruth_latency: error: no timed calls (record with --untraced)",
              file=sys.stderr)
        return 2
    print(f"{len(rows)} cases from {len(recs)} records, profile {args.cost_profile}; "
          "error = (predicted - measured) / measured")

    def kind(r):
        b = r.rec["backing"]
        return f"{r.rec['flags']} {'anon' if b == 'anon' else 'shared'}"

    for title, key in (("size", lambda r: size_class(r.rec)), ("kind", kind)):
        print(f"\nby {title}:   n   median error   median |error|")
        for g, n, med, mabs in summary(rows, key):
            print(f"  {g!s:<16} {n:4d}   {med:+11.0%}   {mabs:12.0%}")
    print("\nworst ten (measured, predicted µs):")
    for r in sorted(rows, key=lambda r: -abs(r.error))[:10]:
        print(f"  {r.id:<16} {r.measured_ns / 1e3:9.1f} {r.predicted_ns / 1e3:9.1f}  "
              f"{r.error:+.0%}  {r.rec['flags']} {r.rec['backing']} {r.rec['size']} B "
              f"{r.rec['populate']} thp={r.rec['thp']} threads={r.rec['threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
