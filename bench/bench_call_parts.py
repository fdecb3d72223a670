#!/usr/bin/env python3
"""CPU time of each part of one small simulated call: layout, plan, price.

    python bench/bench_call_parts.py [--calls 60] [--against TREE]

For each workload given (default ``ipi_storm`` and ``allocator_realloc``), the first
``--calls`` calls of each of its synthetic streams (``SyntheticDraws`` from seed 5, an mm of
4 CPUs) are laid out (``layout_call``: the address space and its page tables, each stream's
calls on one ``PageTables.empty`` made in the timed part, as ``synthetic_plans`` lays
them out; a tree from before that lays each call out on a new empty state), planned
(``plan_mremap``) and priced (``build_template`` with the workload's default cost profile,
on steps whose columns are already materialised, so this is a template miss). The part
"template (run memo)" prices the same plans as the engine prices a miss: freshly planned
(their columns not made unless pricing makes them), through one row memo (a fresh dict
per rep, shared by all the calls of the rep, as ``TemplateCache.row_memo`` is by a run's
calls; a tree from before the memo prices them without one, as its engine did); it is
timed before "template", which then reads the columns. Each part is
timed over all the calls with ``time.process_time``, best of ``--reps``, and printed per
call in microseconds. ``--against TREE`` (a checkout of an earlier commit) measures that
tree first in a child process, then this one, alternating ``--rounds`` times, and prints
each part's ratio of the best times. ``--count`` prints instead the function calls a call's
layout and plan make (``cProfile`` over one pass of each: Python functions, and all calls
including builtins), a figure the host's load does not move. Results are not checked here:
the tests hold every path to the same rows.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)

PARTS = ("layout", "plan", "template", "template (run memo)")



def _stream_draws(w, calls: int):
    """``(draws, streams)``: the first ``calls`` draws of each synthetic stream of workload
    ``w`` (seed 5), as ``(draw, stream, which synthetic stream)``, and how many streams."""
    import numpy as np

    from perfsim.workload.generate import SyntheticDraws

    root = np.random.SeedSequence(5)
    draws, n_streams = [], 0
    for i, s in enumerate(w.streams):
        if not hasattr(s, "src_align"):
            continue
        it = iter(SyntheticDraws(s, root, i))
        draws += [(next(it), s, n_streams) for _ in range(calls)]
        n_streams += 1
    return draws, n_streams

def measure(names: list[str], calls: int, reps: int) -> dict[str, dict[str, float]]:
    """``{workload: {part: best CPU µs per call}}`` in this process's ``perfsim``."""

    from perfsim.cost import load_cost_profile
    from perfsim.engine.pricing import build_template
    from perfsim.mm.pagetable import PageTables
    from perfsim.planner import plan_mremap
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import layout_call

    target = resolve_target("6.18", "x86_64")
    # A tree from before the run's row memo (2026-12-01 afternoon) priced a miss without it.
    has_memo = "memo" in inspect.signature(build_template).parameters
    # A tree from before the shared empty state (2026-12-01, f53dd3f) laid each call out on
    # a new empty state (layout_call made it).
    has_empty = "empty" in inspect.signature(layout_call).parameters
    out = {}
    for name in names:
        w = load_workload(resolve_workload(name))
        prof = load_cost_profile(w.cost_profile)
        draws, n_streams = _stream_draws(w, calls)
        best = dict.fromkeys(PARTS, float("inf"))
        for _ in range(reps):
            c = time.process_time()
            if has_empty:  # one empty state per stream, as synthetic_plans lays them out
                empties = [PageTables.empty(target.arch) for _ in range(n_streams)]
                pairs = [layout_call(d, s, target, 4, empties[k]) for d, s, k in draws]
            else:
                pairs = [layout_call(d, s, target, 4) for d, s, _ in draws]
            best["layout"] = min(best["layout"], time.process_time() - c)
            c = time.process_time()
            plans = [plan_mremap(space, req, target) for space, req in pairs]
            best["plan"] = min(best["plan"], time.process_time() - c)
            memo: dict = {}
            c = time.process_time()
            for p in plans:
                if has_memo:
                    build_template(p.steps, prof, 4, None, (), None, None, memo)
                else:
                    build_template(p.steps, prof, 4, None, (), None)
            best["template (run memo)"] = min(best["template (run memo)"],
                                              time.process_time() - c)
            for p in plans:
                p.steps.cols  # noqa: B018 - materialise outside the timed part
            c = time.process_time()
            for p in plans:
                build_template(p.steps, prof, 4, None, (), None)
            best["template"] = min(best["template"], time.process_time() - c)
        out[name] = {k: v / len(draws) * 1e6 for k, v in best.items()}
    return out


def count_calls(names: list[str], calls: int) -> dict[str, dict[str, tuple[float, float]]]:
    """``{workload: {part: (Python function calls, all calls) per call}}`` of the layout and
    the plan of the same calls :func:`measure` times (after one untimed pass of each)."""
    import cProfile
    import pstats

    from perfsim.mm.pagetable import PageTables
    from perfsim.planner import plan_mremap
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import layout_call

    target = resolve_target("6.18", "x86_64")
    has_empty = "empty" in inspect.signature(layout_call).parameters
    out = {}
    for name in names:
        w = load_workload(resolve_workload(name))
        draws, n_streams = _stream_draws(w, calls)

        def layout(draws=draws, n_streams=n_streams):
            if has_empty:
                empties = [PageTables.empty(target.arch) for _ in range(n_streams)]
                return [layout_call(d, s, target, 4, empties[k]) for d, s, k in draws]
            return [layout_call(d, s, target, 4) for d, s, _ in draws]

        pairs = layout()
        for space, req in pairs:
            plan_mremap(space, req, target)
        parts = {}
        for part in ("layout", "plan"):
            prof = cProfile.Profile()
            prof.enable()
            if part == "layout":
                layout()
            else:
                for space, req in pairs:
                    plan_mremap(space, req, target)
            prof.disable()
            st = pstats.Stats(prof)
            # (a builtin's entry has the file name "~"; the profiler's own disable is one)
            python = sum(v[1] for k, v in st.stats.items() if k[0] != "~")
            parts[part] = (python / len(draws), st.total_calls / len(draws))
        out[name] = parts
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", default=["ipi_storm", "allocator_realloc"])
    ap.add_argument("--calls", type=at_least_one, default=60, help="calls per synthetic stream")
    ap.add_argument("--reps", type=at_least_one, default=5)
    ap.add_argument("--rounds", type=at_least_one, default=2, help="alternations with --against")
    ap.add_argument("--against", metavar="TREE")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--count", action="store_true",
                    help="function calls per call (layout, plan) instead of CPU time")
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw:
        print(repr(count_calls(a.workloads, a.calls) if a.count
                   else measure(a.workloads, a.calls, a.reps)))
        return
    if a.against:
        require_tree(a.against)
    trees = ([str(Path(a.against).resolve())] if a.against else []) + [str(ROOT)]
    if a.count:
        got = {}
        for tree in trees:
            cmd = [sys.executable, __file__, *a.workloads, f"--calls={a.calls}", "--count",
                   "--raw", "--tree", tree]
            got[tree] = ast.literal_eval(subprocess.run(cmd, check=True, capture_output=True,
                                                        text=True).stdout)
            print(f"tree {tree}")
            for w, parts in got[tree].items():
                print(f"  {w}: " + ", ".join(f"{k} {py:.1f} Python calls ({every:.1f} with "
                                             f"builtins)" for k, (py, every) in parts.items())
                      + " per call")
        if a.against:
            old, new = got[trees[0]], got[trees[1]]
            for w in new:
                print(f"RATIO {w} start/this tree: " + ", ".join(
                    f"{k} calls {old[w][k][0] / new[w][k][0]:.2f}x "
                    f"({old[w][k][1] / new[w][k][1]:.2f}x with builtins)" for k in new[w]))
        return
    best: dict[str, dict] = {}
    for _ in range(a.rounds if a.against else 1):
        for tree in trees:
            cmd = [sys.executable, __file__, *a.workloads, f"--calls={a.calls}",
                   f"--reps={a.reps}", "--raw", "--tree", tree]
            got = ast.literal_eval(subprocess.run(cmd, check=True, capture_output=True,
                                                  text=True).stdout)
            mine = best.setdefault(tree, {})
            for w, parts in got.items():
                cur = mine.setdefault(w, dict(parts))
                for k, v in parts.items():
                    cur[k] = min(cur[k], v)
    for tree in trees:
        print(f"tree {tree}")
        for w, parts in best[tree].items():
            print(f"  {w}: " + ", ".join(f"{k} {parts[k]:.0f} us" for k in PARTS) + " per call")
    if a.against:
        old, new = best[trees[0]], best[trees[1]]
        for w in new:
            print(f"RATIO {w} start/this tree: " + ", ".join(
                f"{k} {old[w][k] / new[w][k]:.2f}x" for k in PARTS))


if __name__ == "__main__":
    main()
