"""Issue 13, sixth pass ("bigcall"): the benchmark's side-by-side rounds refuse bad
arguments in one line."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, says", [
    (["--rounds", "2"], "--rounds needs --against TREE"),
    (["--rounds", "2", "--against", ".", "--fixed"], "--rounds does not take --fixed"),
    (["--rounds", "0", "--against", "."], "must be at least 1"),
])
def test_bench_workloads_cpu_rounds_refuses_bad_arguments_in_one_line(args, says):
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_workloads_cpu.py"
    out = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert says in out.stderr and "Traceback" not in out.stderr
