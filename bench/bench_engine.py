#!/usr/bin/env python3
"""Engine benchmarks, measured side by side in one run and printed as ratios.

    sudo .venv/bin/python bench/bench_engine.py            # all three (about a minute)
    python3 bench/bench_engine.py --no-kernel     # skip the real-kernel timing (no root needed)
    python3 bench/bench_engine.py --no-kernel --no-hour --reps 50 --against TREE
                                                  # first: CPU of both trees side by side
    python3 bench/bench_engine.py --no-kernel --no-hour --reps 50 --against TREE --rounds 5
                                                  # ... alternated 5 times, least of each
    python3 bench/bench_engine.py --count --against TREE
                                                  # Python calls and bytecodes per simulate()

1. **Simulated vs real 1 GiB move.** One fully populated, mutually unaligned 1 GiB anonymous
   move (docs/kernel-rules.md E4: 262,144 PTEs, 1,025 move_ptes extents): wall time of
   plan + engine (which includes the cost model) in perfsim, against the real kernel doing
   the same mremap on this machine (median of 5, ``perfsim.host.measure``). Each side
   has one untimed warm-up repetition first (the kernel's ``warmup=1``; perfsim's first
   call in a process imports lazily loaded modules and fills per-target tables).
   Ratio = simulated / real (aim <= 0.1). A second ratio takes perfsim's median of the
   50 repetitions after those (steady state: by then CPython has specialised the code of
   every function on the path, as in a batch of many calls; the first repetitions run
   once-per-call functions for the 2nd to 6th time, before it does).
   Page-table state construction (populating the model) is reported separately.
2. **Events per second under contention.** A caller doing 64 MiB PMD-level moves whose
   anon_vma two walkers hammer, so every section is advanced with real lock events. Ratio =
   engine events/s / SimPy's own lock+timeout pairs/s measured in the same run
   (``bench/simpy_reference.py``; aim >= 0.5).
3. **Peak memory of a 1-hour simulated run with walkers** (a child process; VmHWM), with
   records bounded in memory and spilled to a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)

from perfsim.cost import load_cost_profile, row_costs  # noqa: E402
from perfsim.engine import CallerSpec, MmSpec, SimSpec, WalkerSpec, simulate  # noqa: E402
from perfsim.mm import AddressSpace, PageTables, Vma  # noqa: E402
from perfsim.planner import MoveRequest, plan_mremap  # noqa: E402
from perfsim.profiles import resolve_target  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from simpy_reference import lock_timeout_pairs_per_s  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
STEADY_REPS = 50  # section 1's second figure: repetitions after the first ones
BASE = 0x300000000000
SRC = BASE + 2 * MiB + 4 * KiB           # as perfsim.host.layout's "unaligned" shape
DST = BASE + 2 * GiB + 6 * MiB + 8 * KiB


class CollectorTime:
    """Wall time the garbage collector spends in collections that start while inside a
    ``with`` block (``gc.callbacks``), summed: what a loop's simulate() calls pay it."""

    def __init__(self) -> None:
        self.inside = False
        self.total_s = 0.0
        self.collections = 0
        self._start = None

    def _callback(self, phase, _info) -> None:
        if phase == "start":
            self._start = time.perf_counter() if self.inside else None
        elif self._start is not None:
            self.total_s += time.perf_counter() - self._start
            self.collections += 1
            self._start = None

    def __enter__(self):
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        self.inside = True
        return self

    def __exit__(self, *exc) -> None:
        self.inside = False

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def _one_call(target, profile, plan):
    return simulate(SimSpec(cpus=2, target=target, profile=profile, mms=(MmSpec("app", (0,)),),
                            callers=(CallerSpec("mover", "app", 0, (plan,)),)))


def simulate_1g(target, profile, reps: int = 5) -> dict:
    setup, plan_t, cost_t, eng_t, plan_cpu, eng_cpu = [], [], [], [], [], []
    collector = CollectorTime()
    plans, results = [], []
    # One untimed repetition first, as the real kernel's timing has (measure_shape's
    # warmup=1): the first call in a process imports the planner's and engine's lazily
    # loaded modules and fills their per-target tables (about 4 ms of plan CPU here).
    # Each repetition is what a simulation does with the move, plan then simulate(), and
    # nothing else: the cost model's row_costs is timed on its own in a second loop, since
    # a row_costs call between the two (its arrays made and freed) made the next plan and
    # simulate() about 25 % slower (2026-12-02, docs/throughput.md "Thirteenth pass").
    for rep in range(-1, reps):
        t0 = time.perf_counter()
        space = AddressSpace((Vma(SRC, SRC + GiB, name="heap"),),
                             PageTables.empty(target.arch).populate(SRC, SRC + GiB))
        t1 = time.perf_counter()
        c1 = time.process_time()
        plan = plan_mremap(space, MoveRequest(old_addr=SRC, old_len=GiB, new_addr=DST), target)
        c2 = time.process_time()
        t2 = time.perf_counter()
        c3 = time.process_time()
        with collector:
            res = _one_call(target, profile, plan)
        c4 = time.process_time()
        t4 = time.perf_counter()
        if rep < 0:
            collector.total_s = 0.0
            continue
        plans.append(plan)
        results.append(res)
        setup.append(t1 - t0)
        plan_t.append(t2 - t1)
        eng_t.append(t4 - t2)
        plan_cpu.append(c2 - c1)
        eng_cpu.append(c4 - c3)
    for plan, res in zip(plans, results, strict=True):
        t2 = time.perf_counter()
        rc = row_costs(plan, profile, cpus=1)
        cost_t.append(time.perf_counter() - t2)
        assert int(res.calls.latency_ns[0]) == int(rc.total.sum())
    med = {k: statistics.median(v) for k, v in
           (("setup_s", setup), ("plan_s", plan_t), ("cost_s", cost_t), ("engine_s", eng_t),
            ("plan_cpu_s", plan_cpu), ("engine_cpu_s", eng_cpu))}
    # Means too: a garbage collection runs in some calls only (not in the medians).
    med["engine_cpu_mean_s"] = statistics.mean(eng_cpu)
    med["engine_gc_s"] = collector.total_s / reps  # collections inside simulate(), per call
    collector.close()
    # The engine computes the row costs itself; cost_s is timed apart only to show its share.
    med["sim_s"] = med["plan_s"] + med["engine_s"]
    med["steps"] = len(plan.steps)
    med["predicted_ns"] = int(rc.total.sum())
    return med


def simulate_small_cpu(target, profile, reps: int = 200) -> tuple[float, float, float]:
    """CPU seconds of ``simulate()`` of one 4 KiB unaligned move (a fresh plan each time,
    planned outside the timing), median and mean of ``reps``: the fixed cost of a run,
    which the 1 GiB move's engine figure includes (the mean with the garbage collections
    some calls run), and the collections' wall time per call."""
    got = []
    collector = CollectorTime()
    for _ in range(reps):
        space = AddressSpace((Vma(SRC, SRC + 4 * KiB, name="heap"),),
                             PageTables.empty(target.arch).populate(SRC, SRC + 4 * KiB))
        plan = plan_mremap(space, MoveRequest(old_addr=SRC, old_len=4 * KiB, new_addr=DST),
                           target)
        c0 = time.process_time()
        with collector:
            _one_call(target, profile, plan)
        got.append(time.process_time() - c0)
    collector.close()
    return statistics.median(got), statistics.mean(got), collector.total_s / reps


def cpu_figures(reps: int) -> dict:
    """The CPU figures of section 1 in this process's perfsim: the 1 GiB move's plan and
    engine (medians of ``reps``) and a 4 KiB move's simulate() (median of 200)."""
    target = resolve_target("6.18", "x86_64")
    profile = load_cost_profile("kvm-host").fixed()
    simulate_1g(target, profile, 2)  # warm up (first calls of every path), not counted
    sim = simulate_1g(target, profile, reps)
    small, small_mean, small_gc = simulate_small_cpu(target, profile)
    return {"plan_cpu_s": sim["plan_cpu_s"], "engine_cpu_s": sim["engine_cpu_s"],
            "engine_cpu_mean_s": sim["engine_cpu_mean_s"], "engine_gc_s": sim["engine_gc_s"],
            "small_cpu_s": small, "small_cpu_mean_s": small_mean, "small_gc_s": small_gc}


def first_figures() -> dict:
    """The 1 GiB move's plan and engine CPU as section 1 measures them in a fresh process:
    the medians of repetitions 1-5 after one warm-up (code run only a few times, not yet
    specialised by the interpreter)."""
    target = resolve_target("6.18", "x86_64")
    sim = simulate_1g(target, load_cost_profile("kvm-host").fixed(), 5)
    return {"first5_plan_cpu_s": sim["plan_cpu_s"], "first5_engine_cpu_s": sim["engine_cpu_s"]}


def _child(tree: str | None, flag: str, reps: int) -> dict:
    """The figures ``flag`` prints, from a child process on ``tree`` (None: this tree)."""
    cmd = [sys.executable, __file__, flag, f"--reps={reps}"] + (["--tree", tree] if tree else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_against(tree: str, reps: int, rounds: int = 1) -> None:
    """Section 1's CPU figures of ``tree`` (a child process) and of this tree, side by
    side, with their ratios. With ``rounds`` > 1 both trees are measured in child
    processes, alternately (old, new, then new, old, ...), ``rounds`` times, and each
    figure is the least of its rounds (a busy host only adds time). Each round also runs
    section 1's first five repetitions in a fresh child of each tree (:func:`first_figures`)."""
    runs: dict = {"old": [], "new": []}
    for r in range(rounds):
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            where = tree if side == "old" else None
            got = _child(where, "--cpu-json", reps) if rounds > 1 or side == "old" else \
                cpu_figures(reps)
            if rounds > 1:
                got.update(_child(where, "--first-json", 5))
            runs[side].append(got)
    old, new = ({k: min(run[k] for run in runs[side]) for k in runs[side][0]}
                for side in ("old", "new"))
    how = f"least of {rounds} alternated rounds" if rounds > 1 else "one run each"
    print(f"0) CPU time side by side, {tree} -> this tree ({ROOT}), 1 GiB medians of {reps} "
          f"(and means: with the garbage collections some calls run); {how}")
    rows = [("plan_cpu_s", "1 GiB move: plan"), ("engine_cpu_s", "1 GiB move: engine"),
            ("engine_cpu_mean_s", "  engine, mean"),
            ("engine_gc_s", "  engine, gc (wall)"),
            ("small_cpu_s", "4 KiB move: simulate()"),
            ("small_cpu_mean_s", "  simulate(), mean"),
            ("small_gc_s", "  simulate(), gc (wall)")]
    if rounds > 1:
        rows += [("first5_plan_cpu_s", "1 GiB plan, reps 1-5"),
                 ("first5_engine_cpu_s", "1 GiB engine, reps 1-5")]
    for key, what in rows:
        ratio = f"RATIO {old[key] / new[key]:.2f}x" if new[key] > 0 else "(none after)"
        print(f"   {what:24} {old[key] * 1e3:8.3f} -> {new[key] * 1e3:8.3f} ms   {ratio}")


def _counted(fn) -> tuple[int, int]:
    """(Python calls, bytecodes) executed by ``fn()``: every function entered
    (``sys.settrace``'s call events, generator resumptions included) and every opcode
    event of those frames (``frame.f_trace_opcodes``)."""
    calls = codes = 0

    def local(_frame, event, _arg):
        nonlocal codes
        if event == "opcode":
            codes += 1
        return local

    def trace(frame, _event, _arg):
        nonlocal calls
        calls += 1
        frame.f_trace_opcodes = True
        return local

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return calls, codes


def count_figures() -> dict:
    """Python calls and bytecodes of one ``simulate()`` (:func:`_one_call`) of the 1 GiB
    move (a fresh plan, after the warm-up repetition section 1 makes) and of a 4 KiB move:
    what the engine executes, which load on the host cannot change. The code that runs
    once per call runs before the interpreter specialises it (section 1's repetitions
    1-5), so its cost there follows these counts."""
    target = resolve_target("6.18", "x86_64")
    profile = load_cost_profile("kvm-host").fixed()
    got = {}
    for key, size, src in (("1g", GiB, SRC), ("4k", 4 * KiB, SRC)):
        plans = []
        for _ in range(2):
            space = AddressSpace((Vma(src, src + size, name="heap"),),
                                 PageTables.empty(target.arch).populate(src, src + size))
            plans.append(plan_mremap(space, MoveRequest(old_addr=src, old_len=size,
                                                        new_addr=DST), target))
        _one_call(target, profile, plans[0])  # the warm-up
        got[f"{key}_calls"], got[f"{key}_bytecodes"] = _counted(
            lambda plan=plans[1]: _one_call(target, profile, plan))
    return got


def print_counts(tree: str) -> None:
    """:func:`count_figures` of ``tree`` and of this tree (each in a child process)."""
    old, new = _child(tree, "--count-json", 1), _child(None, "--count-json", 1)
    print(f"0) Python calls and bytecodes per simulate() (sys.settrace), {tree} -> this "
          f"tree ({ROOT})")
    for key, what in (("1g_calls", "1 GiB move: Python calls"),
                      ("1g_bytecodes", "1 GiB move: bytecodes"),
                      ("4k_calls", "4 KiB move: Python calls"),
                      ("4k_bytecodes", "4 KiB move: bytecodes")):
        print(f"   {what:26} {old[key]:7,} -> {new[key]:7,}   RATIO {old[key] / new[key]:.2f}x")


def kernel_1g(reps: int = 5) -> dict:
    from perfsim.host.measure import measure_shape

    recs = measure_shape("unaligned", GiB, threads=1, reps=reps, warmup=1, trace="off")
    lat = [r["latency_ns"] for r in recs]
    return {"kernel_s": statistics.median(lat) / 1e9, "samples_ns": lat}


def contention_spec(target, profile, *, duration_ns: int, walker_interval_ns: int,
                    caller_interval_ns: int, seed: int = 1) -> SimSpec:
    a = 0x7F0000200000
    b = 0x7F4000200000
    size = 64 * MiB
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(target.arch).populate(a, a + size))
    reqs = (MoveRequest(old_addr=a, old_len=size, new_addr=b),
            MoveRequest(old_addr=b, old_len=size, new_addr=a))
    n_calls = max(duration_ns // max(caller_interval_ns, 1), 1)
    walkers = tuple(WalkerSpec(f"w{i}", "anon_vma:heap", cpu=1, interval_ns=walker_interval_ns,
                               hold_ns=2_000, hold_sigma=0.3) for i in range(2))
    return SimSpec(cpus=2, target=target, profile=profile, mms=(MmSpec("app", (0, 1), space),),
                   callers=(CallerSpec("gc", "app", 0, reqs, repeat=int(n_calls // 2 + 1),
                                       interval_ns=caller_interval_ns),),
                   walkers=walkers, duration_ns=duration_ns, seed=seed)


def events_per_second(target, profile, reps: int = 3) -> dict:
    spec = contention_spec(target, profile, duration_ns=200_000_000, walker_interval_ns=5_000,
                           caller_interval_ns=200_000)
    dt = float("inf")
    for _ in range(reps):  # best of reps, like the SimPy reference
        t0 = time.perf_counter()
        res = simulate(spec)
        dt = min(dt, time.perf_counter() - t0)
    return {"events": res.summary["events"], "wall_s": dt, "events_per_s": res.summary["events"] / dt,
            "calls": len(res.calls), "holds": len(res.holds),
            "walker_waits": len(res.walker_waits)}


def _vm_hwm() -> int:
    """Peak RSS of this process's own mm (VmHWM). ru_maxrss would include the parent's RSS
    at fork time, which survives execve."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_hour_child() -> None:
    target = resolve_target("6.18", "x86_64")
    profile = load_cost_profile("kvm-host")
    spec = contention_spec(target, profile, duration_ns=3600 * 10**9, walker_interval_ns=5_000_000,
                           caller_interval_ns=100_000_000)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = simulate(spec, max_rows=50_000, spill_dir=d)
        rows = {k: v["rows"] for k, v in res.summary["tables"].items()}
    dt = time.perf_counter() - t0
    peak = _vm_hwm()
    print(json.dumps({"wall_s": dt, "peak_rss_bytes": peak, "events": res.summary["events"],
                      "rows": rows, "simulated_s": res.summary["end_ns"] / 1e9}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-kernel", action="store_true", help="skip timing the real kernel")
    ap.add_argument("--no-hour", action="store_true", help="skip the 1-hour memory run")
    ap.add_argument("--reps", type=int, default=5,
                    help="repetitions of the 1 GiB move (medians; default 5)")
    ap.add_argument("--against", metavar="TREE",
                    help="first print section 1's CPU figures of this perfsim tree and of "
                         "this one, side by side")
    ap.add_argument("--rounds", type=at_least_one, default=1,
                    help="with --against: measure both trees in child processes, "
                         "alternately, this many times, and print each figure's least "
                         "(with section 1's repetitions 1-5 too); default 1")
    ap.add_argument("--count", action="store_true",
                    help="with --against: print the Python calls and bytecodes of one "
                         "simulate() of the 1 GiB and of a 4 KiB move in both trees, and "
                         "nothing else")
    ap.add_argument("--count-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one-hour-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cpu-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reps < 1:
        print(f"--reps {args.reps}: must be at least 1", file=sys.stderr)
        return 2
    if args.one_hour_child:
        one_hour_child()
        return 0
    if args.cpu_json:
        print(json.dumps(cpu_figures(args.reps)))
        return 0
    if args.first_json:
        print(json.dumps(first_figures()))
        return 0
    if args.count_json:
        print(json.dumps(count_figures()))
        return 0
    if args.count and not args.against:
        print("--count: needs --against TREE", file=sys.stderr)
        return 2
    if args.against:
        require_tree(args.against)
    if args.count:
        print_counts(args.against)
        return 0
    import os

    print(f"load average: {os.getloadavg()}")
    target = resolve_target("6.18", "x86_64")
    profile = load_cost_profile("kvm-host")
    if args.against:
        print_against(args.against, args.reps, args.rounds)
    sim = simulate_1g(target, profile.fixed(), args.reps)
    print(f"1) 1 GiB fully populated, mutually unaligned move (E4), median of {args.reps}")
    print(f"   model setup (populate page-table state): {sim['setup_s'] * 1e3:8.2f} ms (not counted)")
    print(f"   plan:   {sim['plan_s'] * 1e3:8.2f} ms   ({sim['steps']} steps)")
    print(f"   engine: {sim['engine_s'] * 1e3:8.2f} ms  (includes the cost model; row_costs alone "
          f"{sim['cost_s'] * 1e3:.2f} ms)")
    print(f"   simulated total: {sim['sim_s'] * 1e3:8.2f} ms  (predicted kernel time "
          f"{sim['predicted_ns'] / 1e6:.3f} ms, kvm-host profile)")
    # The same move 50 times more in this process: by then the interpreter has specialised
    # the code of every function on the path (CPython 3.11 does so after a function's 8th
    # call), as it has in a batch of many calls; the median of the first repetitions above
    # is of code run for the 2nd to 6th time.
    steady = simulate_1g(target, profile.fixed(), STEADY_REPS)
    print(f"   steady state, median of the next {STEADY_REPS}: plan {steady['plan_s'] * 1e3:.2f} ms "
          f"+ engine {steady['engine_s'] * 1e3:.2f} ms = {steady['sim_s'] * 1e3:.2f} ms")
    small, small_mean, _small_gc = simulate_small_cpu(target, profile.fixed())
    print(f"   CPU time, median of {args.reps}: plan {sim['plan_cpu_s'] * 1e3:.3f} ms, engine "
          f"{sim['engine_cpu_s'] * 1e3:.3f} ms (mean {sim['engine_cpu_mean_s'] * 1e3:.3f}; "
          f"simulate() of a 4 KiB move, a run's fixed cost: {small * 1e3:.3f} ms, median of "
          f"200, mean {small_mean * 1e3:.3f})")
    if not args.no_kernel:
        k = kernel_1g()
        print(f"   real kernel:     {k['kernel_s'] * 1e3:8.2f} ms  (samples ns {k['samples_ns']})")
        print(f"   RATIO simulated/real = {sim['sim_s'] / k['kernel_s']:.3f}   "
              f"(engine incl. cost only: {sim['engine_s'] / k['kernel_s']:.3f}; aim <= 0.1)")
        cpu = sim['plan_cpu_s'] + sim['engine_cpu_s']
        print(f"   RATIO simulated CPU/real = {cpu / k['kernel_s']:.3f}   (plan CPU + engine CPU)")
        print(f"   RATIO steady-state simulated/real = {steady['sim_s'] / k['kernel_s']:.3f}   "
              f"(the median of {STEADY_REPS} repetitions after those; aim <= 0.1)")
    ev = events_per_second(target, profile)
    ref = lock_timeout_pairs_per_s()
    print("2) engine under contention (64 MiB PMD moves, 2 walkers on the same anon_vma, 200 ms)")
    print(f"   {ev['events']:,} events in {ev['wall_s']:.2f} s = {ev['events_per_s']:,.0f} events/s "
          f"({ev['calls']} calls, {ev['holds']} holds, {ev['walker_waits']} walker waits)")
    print(f"   SimPy alone: {ref:,.0f} lock+timeout pairs/s")
    print(f"   RATIO engine events/s / SimPy pairs/s = {ev['events_per_s'] / ref:.3f}   (aim >= 0.5)")
    if not args.no_hour:
        out = subprocess.run([sys.executable, __file__, "--one-hour-child"], capture_output=True,
                             text=True, check=True)
        h = json.loads(out.stdout.strip().splitlines()[-1])
        print("3) 1-hour simulated run with walkers (records spilled past 50k rows per table)")
        print(f"   simulated {h['simulated_s']:.0f} s in {h['wall_s']:.1f} s wall, "
              f"{h['events']:,} events, peak RSS {h['peak_rss_bytes'] / MiB:.0f} MiB, rows {h['rows']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
