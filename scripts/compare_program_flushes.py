#!/usr/bin/env python3
"""Hold the trace replay of a real program against the kernel's counts for the same calls.

Converts the strace log as ``perfsim workload convert-strace`` does, replays it as a
``kind = "trace"`` stream does (populate = --populate for every mapping and every growth;
a CSV given with --csv replaces the conversion, e.g. one with an explicit ``populate``
column), and compares call by call with the JSON lines scripts/record_program.py wrote:
flush calls and full flushes for the whole call and for every phase the trace could tell
(destination unmap, move_page_tables, source unmap), and IPI rounds with --ipis. With
the untraced kernel times in the records, also the latency kvm-epyc predicts for each
call (perfsim.cost.predict) over the kernel's median time: median ratio and its spread.

    .venv/bin/python scripts/compare_program_flushes.py tests/data/realprog/c_realloc_1t.strace \\
        tests/data/realprog/c_realloc_1t.kernel.jsonl --threads 1 --ipis

Exits 1 if a call disagrees, 2 on bad input. See docs/real-programs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from perfsim import resolve_target  # noqa: E402
from perfsim.errors import PerfsimError  # noqa: E402
from perfsim.host.program import (  # noqa: E402
    KERNEL_TIME_STATISTICS,
    MIN_KERNEL_US,
    compare_program,
    exec_layout,
    latency_ratios,
    placement_rows,
    recorded_thp_enabled,
    replay_inputs,
)


def untraced_agreement(rows: list[dict], records: list[dict]) -> tuple[int, int, int]:
    """(calls, runs-calls whose flush calls and full flushes match the plan, whose IPI
    rounds do) over the runs without strace (the records' ``untraced``)."""
    n = flush_ok = ipi_ok = 0
    for r in rows:
        u = r.get("untraced") or {}
        p = r["planned"]["whole"]
        for calls, full, ipis in zip(u.get("flush_calls", []), u.get("full_flushes", []),
                                     u.get("ipi_rounds", []), strict=True):
            n += 1
            flush_ok += p["flush_calls"] == calls and p["full_flushes"] == full
            ipi_ok += p["ipi_rounds"] == ipis
    return n, flush_ok, ipi_ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="strace log (scripts/record_program.py)")
    ap.add_argument("records", help="NAME.kernel.jsonl of the same run")
    ap.add_argument("--threads", type=int, default=1, help="threads of the program (mm CPUs)")
    ap.add_argument("--populate", type=float, default=1.0,
                    help="fraction written of every mapping and growth (the stream's populate)")
    ap.add_argument("--csv", help="replay this trace CSV instead of converting the log")
    ap.add_argument("--ipis", action="store_true", help="compare IPI rounds too")
    ap.add_argument("--kernel", default="6.18")
    ap.add_argument("--cost", default="kvm-epyc", help="cost profile for the latency ratio")
    ap.add_argument("--statistic", choices=sorted(KERNEL_TIME_STATISTICS), default="median",
                    help="a call's kernel time over its untraced runs: their median "
                         "(default) or the least (on a machine that is not quiet)")
    ap.add_argument("--exec-maps", metavar="MAPS", help="/proc/PID/maps of a program run the "
                    "same way (setarch -R, same interpreter): also plan every destination "
                    "the kernel chose without the address and compare (docs/kernel-rules.md "
                    "R26; tests/data/realprog/exec-maps.txt)")
    ap.add_argument("--stack-rlimit", type=int, default=8 << 20, metavar="BYTES",
                    help="the program's stack rlimit, for mmap_base (default 8 MiB)")
    ap.add_argument("--thp-enabled", choices=("always", "madvise", "never"), default=None,
                    help="/sys/kernel/mm/transparent_hugepage/enabled where the program ran "
                         "(default: what the records say, else madvise)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per call")
    args = ap.parse_args(argv)
    try:
        with open(args.log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        csv_text = None
        if args.csv:
            with open(args.csv, encoding="utf-8") as f:
                csv_text = f.read()
        with open(args.records, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        rows_in, entries = replay_inputs(text, args.log, args.populate, csv_text=csv_text)
        target = resolve_target(args.kernel)
        thp = args.thp_enabled or recorded_thp_enabled(records)
        rows = compare_program(rows_in, entries, records, target,
                               args.threads, ipis=args.ipis, cost=args.cost, thp_enabled=thp)
        placed = None
        if args.exec_maps:
            from perfsim.planner.unmapped_area import x86_mmap_base

            with open(args.exec_maps, encoding="utf-8") as f:
                exec_vmas = exec_layout(f.read(), target.arch)
            if not exec_vmas:
                raise PerfsimError(f"{args.exec_maps}: no [vdso]/[vvar] line: not a maps file "
                                   "of a dynamically linked program")
            placed = placement_rows(rows_in, entries, target, args.threads, exec_vmas,
                                    x86_mmap_base(target.arch.user_va_top, args.stack_rlimit),
                                    thp_enabled=thp)
    except (OSError, ValueError, PerfsimError) as e:
        print(f"compare_program_flushes: {e}", file=sys.stderr)
        return 2
    paired = [r for r in rows if r["kernel"] is not None]
    bad = [r for r in paired if not r["agree"]]
    for r in rows:
        if args.verbose or (r["kernel"] is not None and not r["agree"]):
            k = r["kernel"]
            print(f"{r['addr']} {r['old_len']:>10} -> {r['new_len']:>10} = {r['result']:<16}"
                  f" planned {r['planned']['whole']} kernel {k['whole'] if k else None}"
                  f" {'ok' if r['agree'] else 'DIFFER'}")
    phased = sum(1 for r in paired if r["phases_compared"])
    print(f"{args.log}: {len(paired) - len(bad)}/{len(paired)} calls agree "
          f"({phased} by phase; {len(rows) - len(paired)} logged calls not traced)")
    if placed is not None:
        for r in placed:
            if args.verbose or not r["agree"]:
                print(f"placed {r['addr']} {r['old_len']:>10} -> {r['new_len']:>10}: kernel "
                      f"{r['result']}, perfsim {r['placed']} {'ok' if r['agree'] else 'DIFFER'}")
        print(f"destinations the kernel chose: {sum(r['agree'] for r in placed)}/{len(placed)} "
              "where perfsim's get_unmapped_area puts them")
    n, f_ok, i_ok = untraced_agreement(rows, records)
    if n:
        print(f"runs without strace: {f_ok}/{n} call-runs agree on flush calls and full "
              f"flushes, {i_ok}/{n} on IPI rounds")
    for key, what in (("predicted_ns", "warm"),
                      ("predicted_cold_ns", "cold: the growth and new memory written")):
        ratios = latency_ratios(rows, key, args.statistic)
        if not ratios:
            continue
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"latency {args.cost} ({what}) / kernel (untraced {args.statistic}), "
              f"{len(ratios)} calls"
              f" of >= {MIN_KERNEL_US:g} us: median {statistics.median(ratios):.2f}, "
              f"quartiles {q[0]:.2f}-{q[2]:.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
