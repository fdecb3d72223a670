#!/usr/bin/env python3
"""Record an ordinary program's mremap calls: an strace log and the kernel's TLB flushes.

Runs PROGRAM (not perfsim's) with address-space randomisation off, under

    strace -f -tt -T -y -e trace=mremap,mmap,munmap,brk,ftruncate,mprotect,madvise -o OUT/NAME.strace

inside a tracefs session (perfsim.host.program.trace_program), and writes one JSON line
per mremap call of its threads to OUT/NAME.kernel.jsonl: the arguments, the result, the
``tlb:tlb_flush`` counts of the call (whole call, and by phase where the maple-tree
markers tell), and the kernel time between its ``raw_syscalls`` enter and exit. The log
and the counts are of the same calls; OUT/NAME.exec-maps is what exec leaves at the top of
the mmap area on this machine (``cat /proc/self/maps`` without randomisation), for
``compare_program_flushes.py --exec-maps``. ``--latency-runs K`` runs the program K more times
without strace (same addresses: no ASLR) and adds each call's whole-call counts in those
runs (``untraced``: kernel time, flush calls, full flushes, IPI rounds, each a list with
one entry per run), then K more with
only the syscall events on and adds each call's kernel time (``kernel_us_untraced``): for
a program whose calls repeat exactly (one thread).

    sudo .venv/bin/python scripts/record_program.py --name py_bytearray --out /tmp/rp \\
        --latency-runs 5 -- /usr/bin/python3 -S -c 'b = bytearray()
    for i in range(48): b += bytes(1 << 20)'

Needs root, tracefs and strace; says so in one line (exit 2) otherwise. Compare with
scripts/compare_program_flushes.py. See docs/real-programs.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from perfsim.host.load import load_verdict, sample_load  # noqa: E402
from perfsim.host.program import (  # noqa: E402
    call_key,
    exec_maps_text,
    thp_enabled_of,
    trace_program,
)
from perfsim.host.trace import TracingBusy, TracingUnavailable, tracing_status  # noqa: E402

KEEP = ("seq", "tid", "args", "ret", "kernel_us", "phases_known", "foreign_events")
COUNTS = ("flush_calls", "full_flushes", "ranged_flushes", "pages_invalidated", "ipi_rounds",
          "remote_flushes")

PHASE_COUNTS = ("flush_calls", "full_flushes", "ipi_rounds")


def _counts(summary: dict | None) -> dict:
    return {k: int((summary or {}).get(k, 0)) for k in COUNTS}


def _key(rec: dict) -> tuple:
    a = [int(x, 16) for x in rec["args"]]
    return call_key(a[0], a[1], a[2], rec["ret"])


def by_occurrence(runs, value) -> dict[tuple, list[list]]:
    """``{call key: [values of its 1st occurrence in each run, of its 2nd, ...]}`` over the
    calls of ``runs`` (the same arguments and result can recur within a run: the n-th
    occurrence pairs with the n-th of the recorded run). ``value(call)`` of None is left
    out (the occurrence still counts)."""
    out: dict[tuple, list[list]] = {}
    for r in runs:
        seen: dict[tuple, int] = {}
        for c in r.calls:
            k = _key(c)
            n = seen.get(k, 0)
            seen[k] = n + 1
            lists = out.setdefault(k, [])
            while len(lists) <= n:
                lists.append([])
            v = value(c)
            if v is not None:
                lists[n].append(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="a name for the program (file stem)")
    ap.add_argument("--out", required=True, help="directory for NAME.strace, NAME.kernel.jsonl")
    ap.add_argument("--latency-runs", type=int, default=0, metavar="K",
                    help="also run K times without strace for the calls' kernel times")
    ap.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    args = ap.parse_args(argv)
    prog = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not prog:
        ap.error("no program given (put it after --)")
    if not os.path.isdir(args.out):
        print(f"--out {args.out!r}: not a directory", file=sys.stderr)
        return 2
    if shutil.which("strace") is None:
        print("strace not found: install it (apt-get install strace)", file=sys.stderr)
        return 2
    ok, why = tracing_status()
    if not ok:
        print(f"cannot trace: {why}", file=sys.stderr)
        return 2
    log = os.path.join(args.out, f"{args.name}.strace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        run = trace_program(prog, strace_log=log, stdout=devnull)
        extra = [trace_program(prog, stdout=devnull) for _ in range(args.latency_runs)]
        # The kernel times are only as good as the machine is quiet: a call preempted at a
        # cond_resched() (or one whose CPU the hypervisor took) counts the wait as its own.
        load_before = sample_load() if args.latency_runs else None
        timed = [trace_program(prog, stdout=devnull, times_only=True)
                 for _ in range(args.latency_runs)]
        load_after = sample_load() if args.latency_runs else None
    except (TracingUnavailable, TracingBusy) as e:
        print(f"cannot trace: {e}", file=sys.stderr)
        return 2
    if run.status != 0:
        print(f"{prog[0]}: exited with status {run.status}", file=sys.stderr)
        return 1
    times = by_occurrence(timed, lambda c: c["kernel_us"] if c.get("kernel_us") is not None
                          else None)
    untraced = by_occurrence(extra, lambda c: {
        "kernel_us": c["kernel_us"],
        **{k: (c.get("summary") or {}).get(k, 0)
           for k in ("flush_calls", "full_flushes", "ipi_rounds")}})
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:  # what the program's anonymous faults mapped THPs for (the replay needs it)
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            thp = thp_enabled_of(f.read())
    except OSError:
        thp = None
    out = os.path.join(args.out, f"{args.name}.kernel.jsonl")
    tmp = out + ".tmp"
    seen: dict[tuple, int] = {}
    with open(tmp, "w") as f:
        for c in run.calls:
            rec = {k: c.get(k) for k in KEEP}
            rec["summary"] = _counts(c.get("summary"))
            rec["summary_by_phase"] = {
                p: {k: int(v.get(k, 0)) for k in PHASE_COUNTS}
                for p, v in (c.get("summary_by_phase") or {}).items()} \
                if c.get("phases_known") else {}
            k = _key(c)
            n = seen.get(k, 0)
            seen[k] = n + 1
            lat = untraced.get(k, [])
            runs = lat[n] if n < len(lat) else []
            rec["untraced"] = {k: [x[k] for x in runs] for k in
                               ("kernel_us", "flush_calls", "full_flushes", "ipi_rounds")}
            got = times.get(k, [])
            rec["kernel_us_untraced"] = got[n] if n < len(got) else []
            rec.update(program=args.name, kernel=os.uname().release, recorded=when,
                       thp_enabled=thp)
            if load_before is not None:
                rec["load_timed_runs"] = {"before": load_before.as_dict(),
                                          "after": load_after.as_dict()}
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    os.replace(tmp, out)
    maps = os.path.join(args.out, f"{args.name}.exec-maps")
    with open(maps + ".tmp", "w") as f:  # what exec left, for --exec-maps of the comparison
        f.write(exec_maps_text())
    os.replace(maps + ".tmp", maps)
    print(f"{args.name}: {len(run.calls)} mremap calls traced, {run.overrun} records lost; "
          f"{log}, {out}, {maps}")
    if load_before is not None:
        worst = max(load_verdict(load_before), load_verdict(load_after),
                    key=lambda v: ("quiet", "busy", "overloaded").index(v[0]))
        print(f"kernel times taken on a {worst[1]}"
              + ("" if worst[0] == "quiet" else
                 ": a call's time includes waits for its CPU, compare its least times"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
