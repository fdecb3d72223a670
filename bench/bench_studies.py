#!/usr/bin/env python3
"""Wall time of the two study commands the speed targets name, measured in one run.

    python bench/bench_studies.py [--workers 2] [--skip-report] [--skip-tune] [--cli]
                                  [--repeat N] [--cpu] [--bytecode] [--against TREE]
    python bench/bench_studies.py --timeline [--workers 2] [--bytecode] [--against TREE]

* ``perfsim tune studies/tune_flush_ceiling.toml``: :func:`perfsim.tune.run_tune` on a
  ``process:W`` pool (pool start included, as the command pays it);
* with ``--cli`` also the whole command, ``python -m perfsim tune
  studies/tune_flush_ceiling.toml --quiet --executor process:W`` into a throw-away
  directory, in a child process: interpreter start, imports, the tuning and its report;
* ``perfsim report`` (the default study): :func:`perfsim.report.run_study` plus
  :func:`perfsim.report.write_report` into a throw-away directory (target <= 20 s on 2 cores).

``--repeat N`` measures every figure N times, each time in a fresh child process (so each
run pays what the command pays: imports, a cold pool; a second pool in one process would
reuse the first one's forkserver), and keeps the fastest of each: the one least slowed by
other jobs on a shared machine. With ``--against`` the two trees take turns.

``--bytecode`` measures with bytecode, as an installed package has it (:func:`warm_bytecode`:
a private cache filled by one untimed run of each tree): where ``PYTHONDONTWRITEBYTECODE`` is
set, as in this sandbox, every start of the command otherwise compiles the hundred-odd
perfsim modules it imports from source (about 0.12 CPU-s here, 2026-12-01), in each tree.

Prints each wall time and the host's load average before and after (the machine may be
shared: compare figures from one run, or before/after runs made back to back). With
``--cpu`` both run in this process instead (``serial`` executor) and the CPU time they take
is printed too: a figure that depends much less on other load than wall time does.

``--timeline`` runs the whole command once (per tree) and prints when each of its processes
(the command, its figure process and its copy writing the SVG, the pool's workers) reached
each step: imports of the big libraries, the forks, each task, the analysis, the report's
writing and each image, the exit; wall-clock seconds from just before the command's start
(the stamps are written by hooks installed in the child: an import hook and wrapped
functions, a few per cent slower than the plain command). The critical path of the command
is read off it (:func:`timeline_phases` sums it up).

``--against TREE`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/old
<commit>``) first runs the same measurements on that tree's ``perfsim`` (a child process of
this script with ``--tree TREE``), then on this one, and prints the speed-up of each (its
time / ours; wall time, or CPU time with ``--cpu``): issue 13's "tune 5x faster than
today" as a ratio measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)


def _executor(workers: int, cpu: bool) -> str:
    return "serial" if cpu else f"process:{workers}"


def bench_tune(workers: int, cpu: bool = False) -> float:
    # pandas is loaded before the clock starts, in every tree: perfsim.tune imported it at
    # its own import until 2026-12-01, run_tune imports it where it needs it since; so the
    # search and its analysis are timed alike in both trees.
    import pandas  # noqa: F401

    from perfsim.tune import load_tune, run_tune

    spec = load_tune(ROOT / "studies" / "tune_flush_ceiling.toml")
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_tune(spec, executor=_executor(workers, cpu), quiet=True)
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    where = f"{used:7.2f} s CPU in this process" if cpu else f"on {workers} worker(s)"
    print(f"tune flush_ceiling: {wall:7.2f} s wall {where}, {len(res.runs)} runs")
    return used if cpu else wall


def bench_tune_cli(workers: int, cpu: bool = False) -> float:
    """The whole ``perfsim tune`` command in a child process (wall time; with ``cpu`` the
    child's CPU time, its own and its workers', on the serial executor)."""
    import resource
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "perfsim", "tune",
                        str(ROOT / "studies" / "tune_flush_ceiling.toml"), "--quiet",
                        "--out", out, "--executor", _executor(workers, cpu)],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    where = f"{used:7.2f} s CPU in the child" if cpu else f"on {workers} worker(s)"
    print(f"perfsim tune command: {wall:7.2f} s wall {where} (start, imports, tune, report)")
    return used if cpu else wall


def bench_report(workers: int, cpu: bool = False) -> float:
    from perfsim.report import default_study, run_study, write_report

    t0, c0 = time.perf_counter(), time.process_time()
    res = run_study(default_study(), executor=_executor(workers, cpu), quiet=True)
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        write_report(res, f"{out}/default")
    t2, c2 = time.perf_counter(), time.process_time()
    if cpu:
        print(f"report (default study): simulate {c1 - c0:6.2f} s CPU + write {c2 - c1:6.2f} s "
              f"CPU = {c2 - c0:6.2f} s CPU in this process ({t2 - t0:.1f} s wall)")
        return c2 - c0
    print(f"report (default study): simulate {t1 - t0:6.2f} s + write {t2 - t1:6.2f} s = "
          f"{t2 - t0:6.2f} s on {workers} worker(s) (target <= 20 s on 2 cores)")
    return t2 - t0


TIMELINE_FUNCTIONS = {
    "perfsim.cli.tune": ("run", "build_spec"),
    "perfsim.tune.search": ("run_tune", "tune_executor", "evaluate_batch", "analyze"),
    "perfsim.report.tune_report": ("write_tune_report",),
    "perfsim.report.write": ("write_document",),
    "perfsim.report.figure_process": ("_serve", "draw_both", "draw_here"),
    "perfsim.report.tune_figure": ("draw_tune", "save_png", "save_svg"),
}
"""The functions whose start and end the timeline stamps (``> name`` and ``< name``), by
module; a name a tree does not have is skipped."""

TIMELINE_IMPORTS = ("numpy", "matplotlib", "matplotlib.figure", "matplotlib.pyplot",
                    "perfsim.tune", "pandas", "pyarrow.parquet")
"""The modules whose import the timeline stamps (start and end), in any process."""


def _timeline_child(out: str, argv: list[str]) -> None:
    """In a child process: stamp ``time.time() - TIMELINE_T0``, the process id and what
    happened (``TIMELINE_FUNCTIONS``, ``TIMELINE_IMPORTS``, forks, ``os._exit``) into
    ``out``, and run ``perfsim`` with ``argv`` as the program (its quick exit included)."""
    import functools
    import importlib.abc

    t0 = float(os.environ["TIMELINE_T0"])
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def stamp(what: str) -> None:
        os.write(fd, f"{time.time() - t0:.4f} {os.getpid()} {time.process_time():.4f} "
                     f"{what}\n".encode())

    def wrapped(f):
        @functools.wraps(f)
        def w(*a, **k):
            stamp(f"> {f.__name__}")
            try:
                return f(*a, **k)
            finally:
                stamp(f"< {f.__name__}")
        return w

    watched = set(TIMELINE_FUNCTIONS) | set(TIMELINE_IMPORTS)

    class Stamps(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in watched:
                return None
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        break
            else:
                return None
            run = spec.loader.exec_module

            def exec_module(module):
                stamp(f"import {name} ...")
                run(module)
                for fn in TIMELINE_FUNCTIONS.get(name, ()):
                    if callable(getattr(module, fn, None)):
                        setattr(module, fn, wrapped(getattr(module, fn)))
                stamp(f"import {name} done")

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Stamps())
    sys.addaudithook(lambda ev, args: stamp("fork") if ev == "os.fork" else None)
    real_exit = os._exit

    def _exit(status):
        stamp(f"exit {status}")
        real_exit(status)

    os._exit = _exit
    stamp("python started")
    sys.argv = ["perfsim", *argv]
    from perfsim.cli.main import main

    status = main()
    stamp(f"exit {status}")
    raise SystemExit(status)


def timeline_phases(lines: list[tuple[float, int, float, str]]) -> dict[str, float]:
    """The command's phases from its stamps: when the figure process and the pool were
    forked, the first task started and the last one ended, the figure process started
    drawing, the analysis ended, the PNG was written, the command exited."""
    main_pid = lines[0][1]
    first = {}
    last = {}
    for t, pid, _, what in lines:
        first.setdefault((pid == main_pid, what), t)
        last[(pid == main_pid, what)] = t
    got = {"figure process forked": first.get((True, "fork")),
           "first task started": first.get((False, "> evaluate_batch")),
           "last task ended": last.get((False, "< evaluate_batch")),
           "figure started": first.get((False, "> draw_both")),
           "analysis done": last.get((True, "< analyze")),
           "PNG written": last.get((False, "< save_png")),
           "report written": last.get((True, "< write_tune_report")),
           "command exited": last.get((True, "exit 0"))}
    return {k: v for k, v in got.items() if v is not None}


def bench_timeline(tree: str | Path, workers: int) -> None:
    """Run the whole ``perfsim tune`` of ``tree`` once with stamps; print them."""
    import subprocess

    root = Path(tree).resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with tempfile.TemporaryDirectory() as tmp:
        stamps = Path(tmp) / "stamps"
        env["TIMELINE_T0"] = repr(time.time())
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--tree", str(root),
                        "--timeline-child", str(stamps), "--", "tune",
                        str(root / "studies" / "tune_flush_ceiling.toml"), "--quiet",
                        "--out", str(Path(tmp) / "out"), "--executor",
                        f"process:{workers}"], check=True, env=env, cwd=root,
                       stdout=subprocess.DEVNULL)
        end = time.time() - float(env["TIMELINE_T0"])
        rows = []
        for line in stamps.read_text().splitlines():
            t, pid, cpu, what = line.split(" ", 3)
            rows.append((float(t), int(pid), float(cpu), what))
    rows.sort(key=lambda r: r[0])
    main_pid = rows[0][1]
    names = {main_pid: "command"}
    for _, pid, _, what in rows:
        if pid not in names:
            names[pid] = ("figures" if what == "> _serve" else
                          f"worker {sum(n.startswith('worker') for n in names.values()) + 1}"
                          if what == "> evaluate_batch" else
                          "figures (SVG copy)" if what == "> save_svg" else f"pid {pid}")
    print(f"=== {root}: timeline of one perfsim tune (s since just before its start; the "
          "process's CPU-s so far)")
    for t, pid, cpu, what in rows:
        print(f"  {t:7.3f}  {names[pid]:<18} {cpu:6.3f}  {what}")
    print(f"  {end:7.3f}  {'(this script)':<18} the command's exit seen")
    for k, v in timeline_phases(rows).items():
        print(f"TIMELINE {k}: {v:.3f} s")
    cpu = {}  # a process's last stamp: its CPU-s (a forked child's count restarts at 0)
    for _, pid, used, _ in rows:
        cpu[pid] = used
    for pid, used in cpu.items():
        print(f"TIMELINE CPU {names[pid]}: {used:.3f} s")
    print(f"TIMELINE CPU all: {sum(cpu.values()):.3f} s")
    print(f"TIMELINE wall: {end:.3f} s")


def _check_tree(tree: str) -> None:
    require_tree(tree)


def warm_bytecode(trees: list[str | Path], workers: int) -> str:
    """Give the measured commands bytecode, as an installed package has it: a private
    ``PYTHONPYCACHEPREFIX`` (so no tree and no site-packages directory is written to) with
    bytecode writing on, filled by one untimed ``perfsim tune`` of each tree. Returns the
    prefix (a temporary directory the caller removes)."""
    import subprocess

    prefix = tempfile.mkdtemp(prefix="bench-pyc-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for tree in trees:
        root = Path(tree).resolve()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "perfsim", "tune",
                            str(root / "studies" / "tune_flush_ceiling.toml"), "--quiet",
                            "--out", out, "--executor", f"process:{workers}"],
                           check=True, env=env, cwd=root, stdout=subprocess.DEVNULL)
        print(f"bytecode of {root}'s perfsim tune written to {prefix} (untimed run)")
    return prefix


def _best(trees: list[str | Path], argv: list[str], n: int) -> list[dict]:
    """For each tree, the fastest of ``n`` child runs (each a fresh process) of each figure.
    The trees take turns (one run of each, ``n`` times), so a change of the host's load
    between runs falls on both."""
    runs: list[list[dict]] = [[] for _ in trees]
    for _ in range(n):
        for i, tree in enumerate(trees):
            print(f"--- {Path(tree).resolve()}")
            runs[i].append(_child(tree, argv))
    out = []
    for tree, rs in zip(trees, runs, strict=True):
        best = {k: min(r[k] for r in rs) for k in rs[0]}
        for k, v in best.items():
            print(f"  {Path(tree).resolve()}: {k}: best of {n}: {v:.2f} s "
                  f"({', '.join(f'{r[k]:.2f}' for r in rs)})")
        out.append(best)
    return out


def _child(tree: str | Path, argv: list[str]) -> dict:
    """This script measuring ``tree`` once in a child process; its figures."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        # The process pool's workers import perfsim afresh, with the working directory first
        # on their path: run in the tree measured, with it on PYTHONPATH, so that they import
        # that tree and not the one installed in the venv.
        root = Path(tree).resolve()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--tree",
                        str(root), "--json-out", str(out)], check=True, env=env, cwd=root)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=at_least_one, default=2)
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run serially, print CPU time")
    ap.add_argument("--cli", action="store_true",
                    help="also time the whole perfsim tune command in a child process")
    ap.add_argument("--repeat", type=at_least_one, default=1, metavar="N",
                    help="measure each figure N times, keep the fastest (default 1)")
    ap.add_argument("--against", metavar="TREE", help="also measure this perfsim tree first "
                    "and print the speed-ups")
    ap.add_argument("--bytecode", action="store_true",
                    help="measure with bytecode, as installed (a private cache, warmed first)")
    ap.add_argument("--timeline", action="store_true",
                    help="time the steps of one whole perfsim tune per tree (its processes)")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--timeline-child", help=argparse.SUPPRESS)
    if "--timeline-child" in sys.argv:
        cut = sys.argv.index("--")
        a = ap.parse_args(sys.argv[1:cut])
        _timeline_child(a.timeline_child, sys.argv[cut + 1:])
    a = ap.parse_args()
    own = [f"--workers={a.workers}"] + [
        f for f, on in (("--skip-report", a.skip_report), ("--skip-tune", a.skip_tune),
                        ("--cpu", a.cpu), ("--cli", a.cli)) if on]
    old = None
    if a.against:
        _check_tree(a.against)
    prefix = None
    if a.bytecode and a.tree is None:
        prefix = warm_bytecode(([a.against] if a.against else []) + [ROOT], a.workers)
    if a.timeline:
        print(f"load average before: {os.getloadavg()}")
        for tree in ([a.against] if a.against else []) + [ROOT]:
            bench_timeline(tree, a.workers)
        print(f"load average after: {os.getloadavg()}")
        if prefix is not None:
            import shutil

            shutil.rmtree(prefix, ignore_errors=True)
        return
    print(f"load average before: {os.getloadavg()}")
    got = {}
    if a.repeat > 1 and a.tree is None:
        if a.against:
            old, got = _best([a.against, ROOT], own, a.repeat)
        else:
            (got,) = _best([ROOT], own, a.repeat)
    else:
        if a.against:
            print(f"=== {Path(a.against).resolve()}")
            old = _child(a.against, own)
            print(f"=== {ROOT}")
        if not a.skip_tune:
            got["tune"] = bench_tune(a.workers, a.cpu)
            if a.cli:
                got["tune command"] = bench_tune_cli(a.workers, a.cpu)
        if not a.skip_report:
            got["report"] = bench_report(a.workers, a.cpu)
    print(f"load average after: {os.getloadavg()}")
    if prefix is not None:
        import shutil

        shutil.rmtree(prefix, ignore_errors=True)
    if a.json_out:
        import json

        Path(a.json_out).write_text(json.dumps(got))
    if old is not None:
        what = "CPU time" if a.cpu else "wall time"
        for k, v in got.items():
            target = "  (target >= 5x)" if k.startswith("tune") else ""
            print(f"RATIO {k} {what} against / this tree = {old[k]:.2f} s / {v:.2f} s = "
                  f"{old[k] / v:.2f}x{target}")


if __name__ == "__main__":
    main()
