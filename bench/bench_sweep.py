"""Sweep throughput: simulated mremap calls per second per core, and the 1 → 2 worker speed-up.

    python bench/bench_sweep.py [--replications N] [--workers 2]
    python bench/bench_sweep.py --against TREE [--rounds 3]

Sweeps every shipped scenario (``workloads/*.toml``) × N replications (full simulations:
plan + cost + SimPy engine + summary), once on a 1-worker process pool and once on a
W-worker pool, each pool started and warmed up before the clock starts, results written to a
throw-away directory. Prints calls/s/core for both and the speed-up (target ≥ 1.7× for 2
workers), and checks that both runs produced identical rows.

Issue 13's target is a ratio to SimPy's own event rate measured in the same run
(``bench/simpy_reference.py``): calls/s/core >= 0.025 x SimPy's timeouts/s (about 20,000
calls/s/core on a machine where SimPy does 800,000 timeouts/s). It is printed for the
1-worker wall time and for the CPU time the simulations used (the latter does not depend on
other load on the host).

``--against TREE`` measures only the 1-worker sweep, in child processes on TREE and on this
tree alternated ``--rounds`` times (the least wall and CPU of each), and prints this tree's
speed-up: the figure a change to the sweep's own work (its store, its pool) moves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)  # (--tree PATH: a child measuring another tree)

from simpy_reference import timeouts_per_s  # noqa: E402 (this script's own folder)

from perfsim.batch import ProcessExecutor, load_results, parse_sweep, plan_sweep, run_sweep  # noqa: E402
from perfsim.batch.executors import cpu_count  # noqa: E402
from perfsim.workload import workload_names  # noqa: E402


def _warm(_x) -> str:
    """Make sure a worker has imported everything, and say which perfsim it imported (a
    worker must measure the tree its parent does)."""
    import perfsim
    import perfsim.batch.runner  # noqa: F401

    return str(Path(perfsim.__file__).resolve().parents[1])


def run(workers: int, reps: int, out: Path, fork: bool = False):
    names = workload_names()
    sweep = parse_sweep({"name": f"bench-{workers}", "seed": 1, "replications": reps,
                         "base": {"workload": names[0]}, "grid": {"workload": names}}, ROOT)
    points = plan_sweep(sweep)
    # Longest simulations first, so the pool does not finish on one straggler.
    weight = {"ipi_storm": 3, "random_layout_stress": 2, "shared_file_reclaim": 2}
    points.sort(key=lambda p: -weight.get(p.workload.name, 1))
    import inspect

    if fork and "start_method" not in inspect.signature(ProcessExecutor).parameters:
        raise SystemExit(f"bench_sweep.py: {ROOT}'s ProcessExecutor has no start_method, so "
                         "its workers cannot be forked from it; compare with a later tree")
    ex = ProcessExecutor(workers, **({"start_method": "fork"} if fork else {}))
    try:
        seen = set(ex.map_unordered(_warm, range(workers * 2)))  # start + warm the workers
        if seen != {str(ROOT)}:
            raise SystemExit(f"bench_sweep.py: the workers imported perfsim from "
                             f"{', '.join(sorted(seen))}, not {ROOT}")
        t0 = time.perf_counter()
        rep = run_sweep(sweep, out, executor=ex, batch_size=1, quiet=True, points=points)
        wall = time.perf_counter() - t0
    finally:
        ex.close()
    df = load_results(rep.path)
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["workload", "error"]]
    return wall, int(df["calls"].sum()), len(points), df


def _child(tree: str, reps: int) -> dict:
    """The 1-worker sweep measured by a child process on ``tree``, its worker forked from
    it (so it runs that tree: checked)."""
    out = subprocess.run([sys.executable, __file__, "--tree", tree, "--child",
                          "--replications", str(reps)], capture_output=True, text=True)
    if out.returncode:  # the child's own last line says why
        lines = out.stderr.strip().splitlines()
        raise SystemExit(lines[-1] if lines else f"bench_sweep.py: the child on {tree} failed "
                         f"(exit status {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_against(tree: str, reps: int, rounds: int) -> None:
    import os

    print(f"load average before: {os.getloadavg()}")
    figures: dict[str, list[dict]] = {tree: [], str(ROOT): []}
    for _ in range(rounds):
        for t in figures:
            figures[t].append(_child(t, reps))
    best = {t: {k: min(f[k] for f in fs) for k in ("wall_s", "cpu_s")} | {"calls": fs[0]["calls"]}
            for t, fs in figures.items()}
    old, new = best[tree], best[str(ROOT)]
    print(f"1-worker sweep of the shipped workloads x {reps} replications, least of {rounds} "
          "alternated child processes per tree")
    for name, b in ((tree, old), (str(ROOT), new)):
        print(f"  {name}: {b['calls']} calls, wall {b['wall_s']:.2f} s "
              f"({b['calls'] / b['wall_s']:,.0f} calls/s/core), simulations' CPU "
              f"{b['cpu_s']:.2f} s ({b['calls'] / b['cpu_s']:,.0f} calls per CPU-s)")
    print(f"RATIO this tree / {tree}: calls/s/core (wall) "
          f"{(new['calls'] / new['wall_s']) / (old['calls'] / old['wall_s']):.2f}x, "
          f"per CPU-s {(new['calls'] / new['cpu_s']) / (old['calls'] / old['cpu_s']):.2f}x")
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=at_least_one, default=2)
    ap.add_argument("--workers", type=at_least_one, default=2)
    ap.add_argument("--against", metavar="TREE",
                    help="also measure this perfsim tree's 1-worker sweep, alternated")
    ap.add_argument("--rounds", type=at_least_one, default=3,
                    help="with --against: alternated child processes per tree (default 3)")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    import os

    if a.child:
        with tempfile.TemporaryDirectory() as tmp:
            # forked workers: they carry the tree this child imported (a forkserver of
            # Python 3.11 ignores the parent's sys.path and imports the installed perfsim)
            w1, calls, _, df1 = run(1, a.replications, Path(tmp), fork=True)
        print(json.dumps({"wall_s": w1, "cpu_s": float(df1["cpu_s"].sum()), "calls": calls}))
        return
    if a.against:
        require_tree(a.against)
        print_against(str(Path(a.against).resolve()), a.replications, a.rounds)
        return

    print(f"host: {cpu_count()} usable CPUs; load average {os.getloadavg()}; "
          f"scenarios: {', '.join(workload_names())}")
    simpy_before = timeouts_per_s()
    with tempfile.TemporaryDirectory() as tmp:
        w1, calls, n, df1 = run(1, a.replications, Path(tmp))
        wn, calls_n, _, dfn = run(a.workers, a.replications, Path(tmp))
    simpy_rate = (simpy_before + timeouts_per_s()) / 2
    cols = ["wall_s", "cpu_s", "key"]
    same = df1.drop(columns=cols).reset_index(drop=True).equals(
        dfn.drop(columns=cols).reset_index(drop=True))
    cpu = float(df1["cpu_s"].sum())
    print(f"{n} simulations, {calls} simulated mremap calls per sweep")
    print(f"1 worker : {w1:7.2f} s  {calls / w1:9.1f} calls/s/core")
    print(f"{a.workers} workers: {wn:7.2f} s  {calls_n / wn / a.workers:9.1f} calls/s/core")
    print(f"CPU time in the simulations: {cpu:.2f} s -> {calls / cpu:.1f} calls per CPU-second "
          "(independent of other load on the host)")
    # What the speed-up would be on idle cores: greedy makespan of the measured per-point
    # CPU times over the workers, in the order the pool receives them.
    loads = [0.0] * a.workers
    order = df1.set_index("key").loc[[p for p in df1["key"]]]["cpu_s"]
    for c in sorted(order, reverse=True):
        loads[loads.index(min(loads))] += c
    print(f"schedulable speed-up on {a.workers} idle cores (from per-point CPU time): "
          f"{cpu / max(loads):.2f}x")
    print(f"speed-up 1 -> {a.workers} workers: {w1 / wn:.2f}x (target >= 1.7x)   "
          f"identical results: {same}")
    print(f"SimPy alone: {simpy_rate:,.0f} timeouts/s (mean of before and after the sweeps)")
    print(f"RATIO calls/s/core / SimPy timeouts/s: 1 worker wall {calls / w1 / simpy_rate:.5f}, "
          f"CPU time {calls / cpu / simpy_rate:.5f}  (target >= 0.025)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
