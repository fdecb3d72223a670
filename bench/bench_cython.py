#!/usr/bin/env python3
"""Would compiling perfsim's call path with Cython, as it is, make a call faster?

    python bench/bench_cython.py --cython-python /path/to/python-with-cython [--rounds 2]

Copies this tree's committed files (``git archive HEAD``) into a scratch directory, compiles
every module of ``perfsim/planner``, ``mm``, ``engine``, ``cost`` and ``workload`` with
Cython (pure Python mode, no type declarations added: ``language_level=3``, ``binding=True``,
``annotation_typing=False`` so annotations stay hints) except the modules that define
pydantic models (pydantic needs Python functions in a class body to see its fields), then
runs every shipped workload on both trees in alternated child processes (``--rounds``, the
order swapped each round) and prints each workload's best CPU time of three runs per tree,
their ratio and the workloads that fail under Cython (with the error). Needs a C compiler
and a Python that imports Cython (``--cython-python``, default this one); building takes
about four minutes on two cores. No dependency of perfsim: this answers a question (docs/
throughput.md, "Eleventh pass"), it does not build anything perfsim uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "mm", "engine", "cost", "workload")

_SETUP = """
import sys
from setuptools import setup
from Cython.Build import cythonize
mods = sys.argv[1:]
setup(name="perfsim-cython-trial", script_args=["build_ext", "--inplace", "-j", "2"],
      ext_modules=cythonize(mods, nthreads=2, quiet=True, compiler_directives={
          "language_level": 3, "binding": True, "annotation_typing": False}))
"""

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import pandas  # noqa: F401 - imported before timing, as in a warm worker
import perfsim.planner.reference as ref
from perfsim.workload import run_workload, workload_names
run_workload("trace_replay")
out = {"compiled": ref.__file__.endswith(".so"), "cpu_s": {}, "failed": {}}
for name in workload_names():
    try:
        best = None
        for _ in range(3):
            c0 = time.process_time()
            run_workload(name)
            took = time.process_time() - c0
            best = took if best is None else min(best, took)
        out["cpu_s"][name] = best
    except Exception as e:  # a semantic difference of the compiled code: reported
        out["failed"][name] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def modules(tree: Path) -> list[str]:
    """The modules to compile: every non-package module of :data:`PACKAGES` that does not
    use pydantic."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((tree / "perfsim" / pkg).glob("*.py")):
            if path.name != "__init__.py" and "pydantic" not in path.read_text() \
                    and "StrictModel" not in path.read_text():
                out.append(str(path.relative_to(tree)))
    return out


def build(tree: Path, cython_python: str) -> list[str]:
    subprocess.run(f"git -C {ROOT} archive HEAD | tar -x -C {tree}", shell=True, check=True)
    mods = modules(tree)
    (tree / "cython_setup.py").write_text(_SETUP)
    got = subprocess.run([cython_python, "cython_setup.py", *mods], cwd=tree,
                         capture_output=True, text=True)
    if got.returncode:
        tail = (got.stderr or got.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"bench_cython: the Cython build failed: {tail[0]}")
    return mods


def run_child(tree: Path) -> dict:
    got = subprocess.run([sys.executable, "-c", _CHILD, str(tree)], capture_output=True,
                         text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cython-python", default=sys.executable,
                    help="a Python interpreter that imports Cython (default: this one)")
    ap.add_argument("--rounds", type=at_least_one, default=2,
                    help="alternations of the two trees (default 2)")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR (new or empty) and keep it")
    a = ap.parse_args(argv)
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        ap.error("no C compiler (cc or gcc) on PATH")
    try:
        no_cython = subprocess.run([a.cython_python, "-c", "import Cython"],
                                   capture_output=True).returncode
    except OSError as e:
        ap.error(f"--cython-python {a.cython_python}: {e.strerror}")
    if no_cython:
        ap.error(f"--cython-python {a.cython_python}: cannot import Cython")
    if a.keep and Path(a.keep).exists() and any(Path(a.keep).iterdir()):
        ap.error(f"--keep {a.keep}: not empty")
    scratch = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="perfsim-cython-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building {scratch} (Cython; a few minutes) ...", flush=True)
        mods = build(scratch, a.cython_python)
        print(f"compiled {len(mods)} modules", flush=True)
        best: dict[str, dict[str, float]] = {"python": {}, "cython": {}}
        failed: dict[str, str] = {}
        for r in range(a.rounds):
            order = (("python", ROOT), ("cython", scratch))
            for label, tree in (order if r % 2 == 0 else order[::-1]):
                got = run_child(tree)
                if got["compiled"] != (label == "cython"):
                    raise SystemExit(f"bench_cython: the {label} child imported the wrong "
                                     "perfsim")
                for name, s in got["cpu_s"].items():
                    best[label][name] = min(s, best[label].get(name, s))
                failed.update(got["failed"])
        print(f"{'workload':24s} {'CPython ms':>11s} {'Cython ms':>10s} {'speed-up':>9s}")
        tot_p = tot_c = 0.0
        for name, p in best["python"].items():
            c = best["cython"].get(name)
            if c is None:
                print(f"{name:24s} {p * 1e3:11.1f} {'failed':>10s}")
                continue
            tot_p, tot_c = tot_p + p, tot_c + c
            print(f"{name:24s} {p * 1e3:11.1f} {c * 1e3:10.1f} {p / c:8.2f}x")
        print(f"{'all that ran':24s} {tot_p * 1e3:11.1f} {tot_c * 1e3:10.1f} "
              f"{tot_p / tot_c:8.2f}x   (best of 3 runs x {a.rounds} rounds)")
        for name, err in failed.items():
            print(f"failed under Cython: {name}: {err}")
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
