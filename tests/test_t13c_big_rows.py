"""Issue 13, sixth pass ("bigcall"): the shortcuts of the large calls' planning, each held
to the path it stands for on seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.planner.fast_rows import _STEP_COLUMNS, RowBlock, zero_stride


def _same_column(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tolist() == b.tolist()
    assert (a.strides == (0,)) == (b.strides == (0,))
    assert a.flags.writeable == b.flags.writeable
    assert a.flags.c_contiguous == b.flags.c_contiguous


def _random_value(rng, n: int):
    k = int(rng.integers(0, 7))
    if k == 0:
        return int(rng.integers(0, 3))
    if k == 1:
        return bool(rng.integers(0, 2))
    if k == 2:
        return np.int64(rng.integers(0, 3))
    if k == 3:
        return rng.integers(0, 4, n).astype(rng.choice([np.int64, np.int32, np.int8]))
    if k == 4:
        return rng.integers(0, 2, n).astype(bool)
    if k == 5:  # long enough to be cast before its scatter
        return rng.integers(-3, 1 << 40, n).astype(np.int64)
    return zero_stride(int(rng.integers(0, 3)), np.int64, n)


def _random_block(rng) -> RowBlock:
    """The blocks the planners build: one group over every row and overlay groups at some
    positions, or groups at positions that together cover every row (or no group)."""
    n = int(rng.integers(1, 9)) if rng.random() < 0.5 else int(rng.integers(60, 300))
    rb = RowBlock(n)
    shape = rng.random()
    if shape < 0.4:
        groups = [None] + [np.sort(rng.choice(n, int(rng.integers(1, n + 1)), replace=False))
                           for _ in range(int(rng.integers(0, 3)))]
    elif shape < 0.95:
        part = rng.integers(0, int(rng.integers(1, 5)), n)
        groups = [np.flatnonzero(part == g) for g in range(int(part.max()) + 1)]
    else:
        groups = []
    names = [nm for nm, _ in _STEP_COLUMNS]
    for pos in groups:
        m = n if pos is None else len(pos)
        rb.add(pos, **{nm: _random_value(rng, m) for nm in names if rng.random() < 0.6})
    return rb


@pytest.mark.parametrize("seed", range(60))
def test_columns_of_groups_is_column_of_groups_per_column(seed):
    rng = np.random.default_rng(seed)
    rb = _random_block(rng)
    columns = _STEP_COLUMNS + (("absent", np.int32), ("also_absent", np.int64))
    shared_a: dict = {}
    shared_b: dict = {}
    got = rb.columns_of_groups(columns, shared_a)
    assert list(got) == [nm for nm, _ in columns]
    for nm, dt in columns:
        _same_column(got[nm], rb.column_of_groups(nm, dt, shared_b))
    # constants shared through the dict as column_of_groups shares them
    assert {k: v.tolist() for k, v in shared_a.items()} == {k: v.tolist() for k, v in shared_b.items()}
    for nm, dt in columns:
        _same_column(rb.columns_of_groups(((nm, dt),))[nm], rb.column_of_groups(nm, dt))


@pytest.mark.parametrize("seed", range(30))
def test_steps_of_several_groups_holds_what_column_makes(seed):
    from perfsim.planner import steps as S

    rng = np.random.default_rng(1000 + seed)
    rb = _random_block(rng)
    for pos, cols in rb.groups:
        cols["lock"] = 0
    st = rb.steps(((),))
    assert list(st.cols) == list(S.ADDR_COLUMNS + S.INT_COLUMNS)
    for nm, dt in _STEP_COLUMNS:
        _same_column(st.cols[nm], rb.column(nm, dt, {}))


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
