#!/usr/bin/env python3
"""Measure real mremap() calls on the spec's worked-example shapes (E1-E5) on this machine.

For every (shape, size, threads) it runs two passes of fresh, fully populated mappings:

* a *traced* pass (tlb:tlb_flush + raw_syscalls + maple_tree markers, see perfsim.host.trace)
  that gives the flush counts per reason and per phase of the call, and
* an *untraced* pass that gives the latency (tracing the syscalls adds tens of microseconds).

Writes one JSON object per repetition to --out and prints a summary table.  Needs root for the
traced pass; without it the traced pass is skipped and said so.  See docs/host-measurements.md.

    sudo .venv/bin/python scripts/measure_shapes.py --out reports/host/shapes.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from perfsim.host.layout import SHAPES, SPEC_EXAMPLE  # noqa: E402
from perfsim.host.measure import host_info, measure_shape, mem_available  # noqa: E402
from perfsim.host.trace import TlbTraceSession  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_SIZES = "4M,64M,1G,2G"
SMALL_SIZES = "4K,132K,136K,1M"  # 'small' (E5b) must stay below 1.5 MiB
REASON_ABBR = {
    "local MM shootdown": "local",
    "remote IPI send": "ipi_send",
    "remote shootdown": "remote",
    "remote wrong CPU": "wrong_cpu",
    "flush on task switch": "task_sw",
    "local shootdown": "local_sd",
}


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": GiB}.get(s[-1:], 1)
    return int(float(s.rstrip("KMG")) * mult)


def fmt_size(n: int) -> str:
    for unit, m in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def med(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="JSON-lines output path (required unless --summarise)")
    ap.add_argument("--summarise", metavar="JSONL",
                    help="measure nothing: print a Markdown table of an earlier --out file")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {SHAPES}")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="sizes for all shapes but 'small'")
    ap.add_argument("--small-sizes", default=SMALL_SIZES, help="sizes for the 'small' shape")
    ap.add_argument("--threads", default="1,2", help="1 and/or 2 (2 = spinner thread on CPU 1)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--backing", default="anon", choices=("anon", "shmem", "memfd"))
    ap.add_argument("--thp", action="store_true", help="MADV_HUGEPAGE the source")
    ap.add_argument("--dst-mode", default="hole", choices=("hole", "reserved"))
    ap.add_argument("--no-trace", action="store_true", help="skip the traced pass")
    ap.add_argument("--no-latency-pass", action="store_true", help="skip the untraced pass")
    ap.add_argument("--events", action="store_true", help="store every tlb_flush event")
    a = ap.parse_args(argv)
    if a.summarise:
        print_markdown(a.summarise)
        return 0
    if not a.out:
        ap.error("--out is required")

    shapes = [s for s in a.shapes.split(",") if s]
    threads = [int(t) for t in a.threads.split(",") if t]
    info = host_info()
    print(f"# kernel {info['kernel']} | {info['cpu_model']} | {info['ncpus']} CPUs | "
          f"THP {info['thp_enabled']} | shmem THP {info['thp_shmem_enabled']}")
    print("# command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)

    t_start = time.monotonic()
    rows = []
    with contextlib.ExitStack() as stack, open(a.out, "w") as out:
        session = None
        if not a.no_trace:
            session = stack.enter_context(TlbTraceSession(required=False))
            if not session.available:
                print(f"# tracing skipped: {session.skipped}")
        for shape in shapes:
            sizes = a.small_sizes if shape == "small" else a.sizes
            for size in [parse_size(x) for x in sizes.split(",") if x]:
                if size * 1.5 + GiB > mem_available():
                    print(f"# skip {shape} {fmt_size(size)}: not enough free memory")
                    continue
                for th in threads:
                    recs = []
                    passes = []
                    if session is not None and session.available:
                        passes.append(("traced", session))
                    if not a.no_latency_pass:
                        passes.append(("untraced", "off"))
                    for mode, tr in passes:
                        for r in measure_shape(shape, size, backing=a.backing, thp=a.thp,
                                               threads=th, reps=a.reps, warmup=a.warmup,
                                               trace=tr, dst_mode=a.dst_mode,
                                               with_events=a.events):
                            r["mode"] = mode
                            out.write(json.dumps(r) + "\n")
                            recs.append(r)
                    out.flush()
                    rows.append(summarise(shape, size, th, recs))
                    print_row(rows[-1], header=len(rows) == 1)
    print(f"# {len(rows)} configurations in {time.monotonic() - t_start:.0f} s -> {a.out}")
    return 0


def _clean(r: dict) -> bool:
    """No thread waited for its CPU around the call, and with a spinner every flush sent an
    IPI (traced runs)."""
    if r.get("main_disturbed") or r.get("spinner_disturbed"):
        return False
    return not (r["threads"] == 2 and r.get("ipi_coverage") is not None
                and r["ipi_coverage"] < 1)


def summarise(shape: str, size: int, threads: int, recs: list[dict]) -> dict:
    """Medians over the *clean* repetitions of each pass (all of them if none is clean)."""
    tr_all = [r for r in recs if r["mode"] == "traced" and r["traced"]]
    un_all = [r for r in recs if r["mode"] == "untraced"]
    tr = [r for r in tr_all if _clean(r)] or tr_all
    un = [r for r in un_all if _clean(r)] or un_all
    reasons = sorted({k for r in tr for k in (r["counts"] or {})})
    row = {
        "shape": shape, "ex": SPEC_EXAMPLE.get(shape, "-"), "size": size, "threads": threads,
        "lat_us": (med([r["latency_ns"] for r in un]) or 0) / 1000 if un else None,
        "traced_lat_us": (med([r["latency_ns"] for r in tr]) or 0) / 1000 if tr else None,
        "kernel_us": med([r["kernel_us"] for r in tr]),
        "counts": {k: med([(r["counts"] or {}).get(k, 0) for r in tr]) for k in reasons},
        "clean": f"{sum(map(_clean, tr_all))}/{len(tr_all)}+{sum(map(_clean, un_all))}/"
                 f"{len(un_all)}",
    }
    for ph in ("dst_unmap", "move", "src_unmap"):
        for key in ("flush_calls", "full_flushes", "ipi_rounds"):
            row[f"{ph}.{key}"] = med([((r["summary_by_phase"] or {}).get(ph) or {}).get(key, 0)
                                      for r in tr]) if tr else None
    return row


def print_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'shape':<12} {'ex':<4} {'size':>5} {'thr':>3} {'lat_us':>9} {'k_us':>8} "
              f"{'move:calls/full/ipi':>20} {'src_unmap:c/f/i':>16} {'dst:c':>5} {'clean':>9}  "
              "counts")

    def g(k: str) -> str:
        v = row.get(k)
        return "-" if v is None else f"{v:g}"

    counts = " ".join(f"{REASON_ABBR.get(k, k)}={v:g}" for k, v in row["counts"].items())
    lat = "-" if row["lat_us"] is None else f"{row['lat_us']:.1f}"
    kus = "-" if row["kernel_us"] is None else f"{row['kernel_us']:.0f}"
    mv = f"{g('move.flush_calls')}/{g('move.full_flushes')}/{g('move.ipi_rounds')}"
    su = f"{g('src_unmap.flush_calls')}/{g('src_unmap.full_flushes')}/{g('src_unmap.ipi_rounds')}"
    print(f"{row['shape']:<12} {row['ex']:<4} {fmt_size(row['size']):>5} {row['threads']:>3} "
          f"{lat:>9} {kus:>8} {mv:>20} {su:>16} {g('dst_unmap.flush_calls'):>5} "
          f"{row['clean']:>9}  {counts}",
          flush=True)


def print_markdown(path: str) -> None:
    """One Markdown row per (shape, size, threads) of a JSON-lines file written by --out."""
    groups: dict[tuple, list[dict]] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            groups.setdefault((r["shape"], r["size"], r["threads"]), []).append(r)
    order = {s: i for i, s in enumerate(SHAPES)}
    print("| shape | ex | size | thr | median latency µs (untraced) | median kernel µs (traced) "
          "| tlb_flush events per call (median) | move: calls / full / IPI rounds "
          "| src unmap: calls / full / IPI rounds | dst unmap calls "
          "| clean reps (traced+untraced) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(groups, key=lambda k: (order.get(k[0], 99), k[1], k[2])):
        row = summarise(*key, groups[key])

        def g(k: str, row: dict = row) -> str:
            v = row.get(k)
            return "-" if v is None else f"{v:g}"

        counts = ", ".join(f"{k}: {v:g}" for k, v in row["counts"].items() if v)
        lat = "-" if row["lat_us"] is None else f"{row['lat_us']:.1f}"
        kus = "-" if row["kernel_us"] is None else f"{row['kernel_us']:.0f}"
        print(f"| {row['shape']} | {row['ex']} | {fmt_size(row['size'])} | {row['threads']} "
              f"| {lat} | {kus} | {counts} "
              f"| {g('move.flush_calls')} / {g('move.full_flushes')} / {g('move.ipi_rounds')} "
              f"| {g('src_unmap.flush_calls')} / {g('src_unmap.full_flushes')} / "
              f"{g('src_unmap.ipi_rounds')} | {g('dst_unmap.flush_calls')} | {row['clean']} |")


if __name__ == "__main__":
    sys.exit(main())
