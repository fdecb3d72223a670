#!/usr/bin/env python3
"""CPU time of the page-table window round trip, of a synthetic call's draws and of its
layout, per call.

    python bench/bench_pagetable.py TREE [TREE ...] [--rounds 2]

In each TREE (a perfsim checkout), in a child process: every ``PageTables.window`` and
``replace_window`` call made while ``run_workload`` runs every shipped workload is recorded
(the state, the range, the window as written back); then the recorded windows are read
again and written back, each part timed with ``time.process_time``, best of 7, and the
synthetic streams' draws (``SyntheticDraws._chunk``, 4 chunks per stream) likewise. The
layouts (``layout_call``: the address space and its populated page tables) of every
synthetic call of each shipped workload (its own seed and counts, drawn beforehand) are
timed the same way, laid out as that tree's ``synthetic_plans`` lays them out (on one empty
state per stream where ``layout_call`` takes one): ``layout NAME`` per workload. Trees are
measured alternately ``--rounds`` times; the best per tree and the ratios to the first tree
are printed.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one  # noqa: E402

CHILD = r'''
import copy, sys, time
tree = sys.argv[1]
sys.path.insert(0, tree)
import numpy as np
import perfsim
assert perfsim.__file__.startswith(tree), perfsim.__file__
from perfsim.mm import pagetable as P
from perfsim.workload import load_workload, resolve_workload, run_workload, workload_names
from perfsim.workload.generate import SyntheticDraws
rec_w, rec_r = [], []
ow, orw = P.PageTables.window, P.PageTables.replace_window
def window(self, start, end):
    rec_w.append((self, start, end))
    return ow(self, start, end)
def replace_window(self, win):
    w2 = copy.copy(win)
    w2.pud, w2.pmd, w2.pud_tables = dict(win.pud), dict(win.pmd), set(win.pud_tables)
    rec_r.append((self, w2))
    return orw(self, win)
P.PageTables.window, P.PageTables.replace_window = window, replace_window
for n in workload_names():
    run_workload(n)
P.PageTables.window, P.PageTables.replace_window = ow, orw
def best(f, n):
    b = 1e9
    for _ in range(7):
        c = time.process_time(); f(); b = min(b, time.process_time() - c)
    return b / n * 1e6
def windows():
    for pt, s, e in rec_w:
        pt.window(s, e)  # dropped at once, as the planner drops it
def write_backs():
    for pt, w in rec_r:
        pt.replace_window(w)
out = {"window": best(windows, len(rec_w)), "replace_window": best(write_backs, len(rec_r))}
streams = []
for name in workload_names():
    wl = load_workload(resolve_workload(name))
    streams += [(i, s) for i, s in enumerate(wl.streams) if hasattr(s, "src_align")]
def draws():
    for i, s in streams:
        d = SyntheticDraws(s, np.random.SeedSequence(5), i)
        for _ in range(4):
            d._chunk()
from perfsim.workload.generate import CHUNK
out["draws"] = best(draws, len(streams) * 4 * CHUNK)
import inspect
from perfsim.mm.pagetable import PageTables
from perfsim.profiles import resolve_target
from perfsim.workload.generate import layout_call
shared = "empty" in inspect.signature(layout_call).parameters
for name in workload_names():
    wl = load_workload(resolve_workload(name))
    target = resolve_target(wl.kernel, wl.arch)
    lay = []
    for i, s in enumerate(wl.streams):
        if hasattr(s, "src_align") and s.count:
            it = iter(SyntheticDraws(s, np.random.SeedSequence(wl.seed), i))
            lay.append((s, [next(it) for _ in range(s.count)]))
    if not lay:
        continue
    def layouts():
        for s, ds in lay:
            if shared:
                e = PageTables.empty(target.arch)
                for d in ds:
                    layout_call(d, s, target, wl.cpus, e)
            else:
                for d in ds:
                    layout_call(d, s, target, wl.cpus)
    out["layout " + name] = best(layouts, sum(len(ds) for _, ds in lay))
print(repr(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--rounds", type=at_least_one, default=2)
    a = ap.parse_args()
    for tree in a.trees:
        if not (Path(tree) / "perfsim" / "__init__.py").is_file():
            print(f"{tree}: not a perfsim tree (no perfsim/__init__.py)", file=sys.stderr)
            raise SystemExit(2)
    a.trees = [str(Path(t).resolve()) for t in a.trees]
    best: dict[str, dict[str, float]] = {}
    for _ in range(a.rounds):
        for tree in a.trees:
            got = ast.literal_eval(subprocess.run([sys.executable, "-c", CHILD, tree], check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            mine = best.setdefault(tree, dict(got))
            for k, v in got.items():
                mine[k] = min(mine[k], v)
    for tree in a.trees:
        b = best[tree]
        print(f"{tree}: " + ", ".join(f"{k} {v:.2f} us" for k, v in b.items()) + " per call"
              + f"; window + replace_window {b['window'] + b['replace_window']:.2f} us")
    first = best[a.trees[0]]
    for tree in a.trees[1:]:
        b = best[tree]
        print(f"RATIO {a.trees[0]} / {tree}: " + ", ".join(
            f"{k} {first[k] / b[k]:.2f}x" for k in b) + ", round trip "
            f"{(first['window'] + first['replace_window']) / (b['window'] + b['replace_window']):.2f}x")


if __name__ == "__main__":
    main()
