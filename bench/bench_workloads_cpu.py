#!/usr/bin/env python3
"""Simulated calls per CPU-second over the shipped workloads, in this one process.

    python bench/bench_workloads_cpu.py [--reps 2]

Runs every shipped workload once per repetition (``run_workload``, the workload's own seed),
timing with ``time.process_time``, and SimPy's own timeouts per CPU-second before and after
(``bench/simpy_reference.py``'s loop, on the CPU clock). Prints the best of ``--reps`` for
both and issue 13's ratio (target >= 0.025). CPU time is much less sensitive than wall time
to other jobs on a shared host, so this is the figure to compare two trees with:
``--against TREE`` (a checkout of an earlier commit) measures that tree's ``perfsim`` in a
child process first (``--tree TREE``), then this one, and prints the speed-up.
``--per-workload`` also prints each workload's CPU per call (the best of ``--reps`` runs of
it, each timed on its own) and, with ``--against``, each workload's ratio of the two trees.
``--rounds N`` (with ``--against``) measures both trees in child processes, N times, the
order swapped each round (the other tree first in odd rounds), and prints the best figure
of each tree over the rounds and their ratios: on a shared, noisy host a single pair of runs moves by 10-20%.
``--fixed`` also prints what a run costs besides its calls: for each workload, the CPU of
loading it (``load_workload``) plus that of ``run_workload`` on it with every stream's
``count`` set to 1 (a call stream or trace keeps its calls: trace_replay's 5), best of
``--reps``; their total, and its share of the full runs' CPU (with ``--against``, each
tree's and their ratio).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)

from simpy_reference import timeouts_per_s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=at_least_one, default=2)
    ap.add_argument("--against", metavar="TREE", help="measure this perfsim tree first and "
                    "print the speed-up")
    ap.add_argument("--per-workload", action="store_true",
                    help="print each workload's CPU per call (and its ratio with --against)")
    ap.add_argument("--fixed", action="store_true",
                    help="print each workload's fixed CPU per run (its streams at count 1)")
    ap.add_argument("--rounds", type=at_least_one, default=1,
                    help="with --against: alternate the two trees this many times (child "
                    "processes) and compare the best of each")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rounds > 1:
        if not a.against:
            ap.error("--rounds needs --against TREE")
        if a.fixed:
            ap.error("--rounds does not take --fixed (use --fixed with one round)")
        require_tree(a.against)
        alternate(a.against, a.reps, a.rounds, a.per_workload)
        return
    old = None
    old_per: dict[str, float] = {}
    old_fixed: dict[str, float] = {}
    if a.against:
        import subprocess

        require_tree(a.against)
        cmd = [sys.executable, __file__, f"--reps={a.reps}", "--tree", a.against]
        if a.per_workload:
            cmd.append("--per-workload")
        if a.fixed:
            cmd.append("--fixed")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out, end="")
        old = float(next(ln for ln in out.splitlines() if ln.startswith("shipped workloads"))
                    .split(" calls, ")[1].split(" calls per")[0].replace(",", ""))
        old_per = {ln.split()[1]: float(ln.split()[6].replace(",", ""))
                   for ln in out.splitlines() if ln.startswith("  workload ")}
        old_fixed = {ln.split()[1]: float(ln.split()[2])
                     for ln in out.splitlines() if ln.startswith("  fixed ")}
    import pandas  # noqa: F401 - imported before timing, as in a warm worker

    from perfsim.workload import run_workload, workload_names

    print(f"tree: {ROOT}; load average {os.getloadavg()}")
    run_workload("trace_replay")  # warm imports and caches
    best_calls = best_simpy = best_took = 0.0
    per: dict[str, tuple[int, float]] = {}  # name -> (calls, best CPU-s of one run)
    for _ in range(a.reps):
        best_simpy = max(best_simpy, timeouts_per_s(repeats=1, clock=time.process_time))
        c0, calls = time.process_time(), 0
        for name in workload_names():
            w0 = time.process_time()
            _, m, _ = run_workload(name)
            took = time.process_time() - w0
            calls += m["calls"]
            if name not in per or took < per[name][1]:
                per[name] = (m["calls"], took)
        took_all = time.process_time() - c0
        if calls / took_all > best_calls:
            best_calls, best_took = calls / took_all, took_all
        best_simpy = max(best_simpy, timeouts_per_s(repeats=1, clock=time.process_time))
    if a.per_workload:
        for name, (n, took) in per.items():
            print(f"  workload {name} {n} calls, {took * 1e3:,.1f} ms, "
                  f"{took / max(n, 1) * 1e6:,.1f} us per call (best of {a.reps})")
    fixed = fixed_per_run(workload_names(), a.reps) if a.fixed else {}
    for name, (n, took) in fixed.items():
        print(f"  fixed {name} {took * 1e3:.3f} ms a run (load + {n} calls at count 1; best of "
              f"{a.reps})")
    if fixed:
        total = sum(t for _, t in fixed.values())
        print(f"fixed per run, every shipped workload: {total * 1e3:.2f} ms = "
              f"{total / best_took:.1%} of the full runs' {best_took * 1e3:.1f} ms")
    print(f"shipped workloads: {calls} calls, {best_calls:,.1f} calls per CPU-second (best of "
          f"{a.reps})")
    print(f"SimPy alone: {best_simpy:,.0f} timeouts per CPU-second")
    print(f"RATIO calls per CPU-s / SimPy timeouts per CPU-s = {best_calls / best_simpy:.5f}   "
          "(target >= 0.025)")
    if old is not None:
        print(f"RATIO this tree / {a.against}: {best_calls:,.1f} / {old:,.1f} calls per CPU-s = "
              f"{best_calls / old:.2f}x")
        for name, (n, took) in per.items():
            if name in old_per:
                now = took / max(n, 1) * 1e6
                print(f"  {name}: {old_per[name]:,.1f} -> {now:,.1f} us per call = "
                      f"{old_per[name] / now:.2f}x")

    if old is not None and fixed and old_fixed:
        was = sum(old_fixed.get(k, 0.0) for k in fixed)
        now = sum(t for _, t in fixed.values()) * 1e3
        print(f"RATIO fixed per run {a.against}/this tree: {was:.2f} / {now:.2f} ms = "
              f"{was / now:.2f}x")
        for name, (_, took) in fixed.items():
            if name in old_fixed:
                print(f"  fixed {name}: {old_fixed[name]:.3f} -> {took * 1e3:.3f} ms = "
                      f"{old_fixed[name] / (took * 1e3):.2f}x")


def _child(tree: str, reps: int, per_workload: bool) -> tuple[float, dict[str, float]]:
    """One child run on ``tree``: ``(calls per CPU-s, {workload: us per call})``."""
    import subprocess

    cmd = [sys.executable, __file__, f"--reps={reps}", "--tree", tree]
    if per_workload:
        cmd.append("--per-workload")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rate = float(next(ln for ln in out.splitlines() if ln.startswith("shipped workloads"))
                 .split(" calls, ")[1].split(" calls per")[0].replace(",", ""))
    per = {ln.split()[1]: float(ln.split()[6].replace(",", ""))
           for ln in out.splitlines() if ln.startswith("  workload ")}
    return rate, per


def alternate(against: str, reps: int, rounds: int, per_workload: bool) -> None:
    """``--rounds``: both trees in child processes, ``rounds`` times, the order swapped each
    round (``against`` first in odd rounds: on this host the tree measured first in a pair
    read 10-15% faster); the best of each tree (highest calls per CPU-s, lowest CPU per
    call) and the ratios."""
    trees = [str(Path(against).resolve()), str(ROOT)]
    best: dict[str, tuple[float, dict[str, float]]] = {}
    for r in range(rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            rate, per = _child(tree, reps, per_workload)
            print(f"round {r + 1} {tree}: {rate:,.1f} calls per CPU-s; load average "
                  f"{os.getloadavg()[0]:.2f}")
            was_rate, was_per = best.get(tree, (0.0, {}))
            best[tree] = (max(was_rate, rate),
                          {k: min(was_per.get(k, v), v) for k, v in per.items()})
    (old, old_per), (now, now_per) = best[trees[0]], best[trees[1]]
    print(f"RATIO this tree / {against}: {now:,.1f} / {old:,.1f} calls per CPU-s = "
          f"{now / old:.2f}x (best of {rounds} rounds x {reps} reps)")
    for name, us in now_per.items():
        if name in old_per:
            print(f"  {name}: {old_per[name]:,.1f} -> {us:,.1f} us per call = "
                  f"{old_per[name] / us:.2f}x")


def fixed_per_run(names: list[str], reps: int) -> dict[str, tuple[int, float]]:
    """``{workload: (calls, best CPU-s)}`` of loading it and running it with every stream
    that has a ``count`` at count 1: what a run costs besides its calls (and ~1 call per
    stream)."""
    from perfsim.workload import load_workload, resolve_workload, run_workload

    out: dict[str, tuple[int, float]] = {}
    for _ in range(reps):
        for name in names:
            c = time.process_time()
            w = load_workload(resolve_workload(name))
            load = time.process_time() - c
            one = w.model_copy(update={"streams": [
                s.model_copy(update={"count": 1}) if getattr(s, "count", None) else s
                for s in w.streams]})
            c = time.process_time()
            _, m, _ = run_workload(one)
            took = load + time.process_time() - c
            if name not in out or took < out[name][1]:
                out[name] = (m["calls"], took)
    return out


if __name__ == "__main__":
    main()
