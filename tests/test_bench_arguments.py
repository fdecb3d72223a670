"""The benchmarks refuse a count below one in one usage line (exit status 2) instead of
ending in a traceback after their set-up (``bench/tree.py`` ``at_least_one``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

CASES = [
    ("bench_workloads_cpu.py", ["--reps", "0"]),
    ("bench_call_parts.py", ["--calls", "-1"]),
    ("bench_engine_calls.py", ["--reps", "0"]),
    ("bench_plan_walk.py", ["--rounds", "0"]),
    ("bench_studies.py", ["--repeat", "0"]),
    ("bench_sweep.py", ["--workers", "two"]),
    ("bench_sweep.py", ["--against", ".", "--rounds", "0"]),
    ("bench_report.py", ["--workers", "0"]),
    ("bench_pagetable.py", [".", ".", "--rounds", "0"]),
    ("profile_modules.py", ["--top", "0"]),
]


@pytest.mark.parametrize(("script", "args"), CASES, ids=[f"{c[0]}-{c[1][-2]}" for c in CASES])
def test_a_count_below_one_is_one_usage_error(script, args):
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: argument ") and (
        "must be at least 1" in last or "is not a whole number" in last)


def test_at_least_one_takes_whole_numbers_from_one():
    sys.path.insert(0, str(BENCH))
    try:
        from tree import at_least_one
    finally:
        sys.path.remove(str(BENCH))
    import argparse

    assert at_least_one("1") == 1 and at_least_one("12") == 12
    for bad in ("0", "-3", "1.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            at_least_one(bad)


def test_profile_modules_names_an_unknown_workload_in_one_line():
    p = subprocess.run([sys.executable, str(BENCH / "profile_modules.py"), "--workload", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(
        "profile_modules.py: error: unknown workload 'nope'; shipped: ")
