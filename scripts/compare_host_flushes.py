#!/usr/bin/env python3
"""Hold the planner's whole-call TLB flush counts against real-kernel traces.

Reads the JSON lines written by ``scripts/measure_shapes.py --out FILE`` and, for every traced
call, compares per phase (destination unmap, move_page_tables, source unmap) the flush calls,
full flushes and IPI rounds that ``perfsim.host.model.predicted_flushes`` predicts with those
the tracepoints saw. IPI rounds are compared only where the spinner thread covered the whole
call (``ipi_coverage == 1``). Prints one line per (shape, size, threads) and exits 1 on any
disagreement.

    python3 scripts/measure_shapes.py --out /tmp/host-shapes.jsonl
    python3 scripts/compare_host_flushes.py /tmp/host-shapes.jsonl [--kernel 6.18]
    python3 scripts/compare_host_flushes.py /tmp/host-shapes.jsonl \
        --write-fixture tests/data/host_flushes_6.18.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from perfsim import resolve_target
from perfsim.host.model import PHASES, measured_flushes, predicted_flushes

KEEP = ("shape", "size", "backing", "thp", "threads", "src", "dst", "ipi_coverage",
        "summary_by_phase", "kernel", "cpu_model", "rep")


def traced(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("mode", "traced") == "traced" and r.get("phases_known", True) \
                    and r.get("summary_by_phase"):
                out.append(r)
    return out


def compare(records: list[dict], kernel: str = "6.18") -> list[dict]:
    """One row per record: predicted and measured counters per phase, and whether they agree."""
    t = resolve_target(kernel)
    rows = []
    for r in records:
        p, m = predicted_flushes(r, t), measured_flushes(r)
        clean_ipi = int(r.get("threads", 1)) == 1 or r.get("ipi_coverage") == 1.0
        keys = ["flush_calls", "full_flushes"] + (["ipi_rounds"] if clean_ipi else [])
        ok = all(p[ph][k] == m[ph][k] for ph in PHASES for k in keys)
        rows.append({"shape": r["shape"], "size": int(r["size"]), "threads": int(r["threads"]),
                     "predicted": {ph: p[ph] for ph in PHASES},
                     "measured": m, "ipi_compared": clean_ipi, "agree": ok})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", help="records from scripts/measure_shapes.py")
    ap.add_argument("--kernel", default="6.18", help="kernel profile to predict with")
    ap.add_argument("--write-fixture", metavar="PATH", help="also write the traced records, trimmed")
    args = ap.parse_args(argv)
    recs = traced(args.jsonl)
    if not recs:
        print("no traced records with phase markers in", args.jsonl, file=sys.stderr)
        return 2
    rows = compare(recs, args.kernel)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["shape"], r["size"], r["threads"])].append(r)
    print(f"{'shape':12} {'size':>11} {'thr':>3}  {'calls move/src':>15} {'full move/src':>14} "
          f"{'ipi':>5}  agree")
    for (shape, size, thr), rs in sorted(groups.items()):
        p = rs[0]["predicted"]
        calls = f"{p['move']['flush_calls']}/{p['src_unmap']['flush_calls']}"
        print(f"{shape:12} {size:>11} {thr:>3}  {calls:>15}"
              f" {p['move']['full_flushes']:>6}/{p['src_unmap']['full_flushes']:<7}"
              f" {sum(x['ipi_rounds'] for x in p.values()):>5}  {sum(r['agree'] for r in rs)}/{len(rs)}")
    bad = [r for r in rows if not r["agree"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} traced calls agree")
    if args.write_fixture:
        with open(args.write_fixture, "w") as f:
            for r in recs:
                keep = {k: r.get(k) for k in KEEP}
                keep["summary_by_phase"] = measured_flushes(r)
                f.write(json.dumps(keep, sort_keys=True) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
