"""Record blocks (issue 13): a block of rows kept as template arrays plus constants gives the
same table, aggregates and row counts as the same rows added as columns (the definition)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfsim.engine.records import (
    FLUSH_COLUMNS,
    HOLD_COLUMNS,
    Block,
    FlushRecord,
    HoldRecord,
    Recorder,
    Table,
)


def _as_columns(block: Block, n, consts, arrays, shifted, t0) -> dict:
    cols = {c: np.full(n, consts[k], dtype=dt) for k, (c, dt) in enumerate(block.consts)}
    cols.update({c: arrays[k] for k, c in enumerate(block.arrays)})
    cols.update({c: shifted[k] + t0 for k, c in enumerate(block.shifted)})
    return cols


def _fill(rng, got: Table, want: Table, layouts, row_of, steps: int) -> None:
    templates = []  # arrays reused by several blocks, as a call template's are
    for _ in range(steps):
        r = rng.random()
        if r < 0.05:  # the aggregates read mid-run (folded there, then added to)
            assert (got.sums, got.maxes) == (want.sums, want.maxes)
        elif r < 0.35:
            row = row_of(rng)
            if r < 0.2:  # as the engine adds its records: one record NamedTuple, kept
                rec = HoldRecord if got.columns == HOLD_COLUMNS else FlushRecord
                got.add_row(rec(*row))
            else:
                got.add(*row)
            want.add(*row)
        elif r < 0.45:
            n = int(rng.integers(0, 5))
            cols = {c: np.asarray([row_of(rng)[k] for _ in range(n)])
                    for k, c in enumerate(got.columns)}
            if n:
                got.add_columns(cols)
                want.add_columns(cols)
        else:
            block, make = layouts[int(rng.integers(len(layouts)))]
            if templates and rng.random() < 0.5:
                b2, n, arrays, shifted = templates[int(rng.integers(len(templates)))]
                if b2 is not block:
                    continue
            else:
                n = int(rng.integers(0, 6))
                arrays, shifted = make(rng, n)
                templates.append((block, n, arrays, shifted))
            consts = tuple(row_of(rng)[got.columns.index(c)] for c, _ in block.consts)
            t0 = int(rng.integers(0, 10**9))
            got.add_block(block, n, consts, arrays, shifted, t0)
            if n:
                want.add_columns(_as_columns(block, n, consts, arrays, shifted, t0))


def _hold_row(rng):
    return (str(rng.choice(["i_mmap:f", "anon_vma:heap"])), f"caller{rng.integers(3)}", "write",
            int(rng.integers(50)), int(rng.integers(100)), int(rng.integers(10**9)),
            int(rng.integers(10**9)), int(rng.integers(0, 3)) * 7, int(rng.integers(1, 10**5)))


def _flush_row(rng):
    return (f"caller{rng.integers(3)}", int(rng.integers(50)), int(rng.integers(100)),
            int(rng.integers(10**9)), bool(rng.random() < 0.5), int(rng.integers(600)),
            int(rng.integers(32)), int(rng.integers(5000)))


def _ints(rng, n, hi=10**6):
    return np.sort(rng.integers(0, hi, n)).astype(np.int64)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("bound", ["kept", "dropped", "spilled"])
def test_blocks_give_the_rows_and_aggregates_of_the_same_columns(seed, bound, tmp_path):
    rng = np.random.default_rng(seed)
    kw = {}
    if bound != "kept":
        kw["max_rows"] = 40
    if bound == "spilled":
        kw["spill_dir"] = tmp_path
    for name, columns, numeric, row_of in (
            ("holds", HOLD_COLUMNS, ("wait_ns", "hold_ns"), _hold_row),
            ("flushes", FLUSH_COLUMNS, ("targets", "stolen_ns"), _flush_row)):
        if bound == "spilled":
            kw["spill_dir"] = tmp_path / f"{name}-got"
        got = Table(name, columns, numeric=numeric, **kw)
        if bound == "spilled":
            kw["spill_dir"] = tmp_path / f"{name}-want"
        want = Table(name, columns, numeric=numeric, **kw)
        rec = Recorder()
        if name == "holds":
            b = rec.segment_holds
            other = Block(got, (("lock", object), ("holder", object), ("mode", object),
                                ("call", np.int64), ("hold_ns", np.int64)),
                          ("step", "request_ns", "wait_ns"), ("acquire_ns",))
            layouts = [(b, lambda rng, n: ((_ints(rng, n, 100), _ints(rng, n)),
                                          (_ints(rng, n), _ints(rng, n)))),
                       (other, lambda rng, n: ((_ints(rng, n, 100), _ints(rng, n),
                                               _ints(rng, n, 50)), (_ints(rng, n),)))]
        else:
            b = rec.segment_flushes
            layouts = [(b, lambda rng, n: ((_ints(rng, n, 100), rng.random(n) < 0.5,
                                           _ints(rng, n, 600), _ints(rng, n, 32),
                                           _ints(rng, n, 5000)), (_ints(rng, n),)))]
        _fill(rng, got, want, layouts, row_of, 120)
        assert got.summary() == want.summary()
        pd.testing.assert_frame_equal(got.to_frame(), want.to_frame())


def test_a_block_must_give_every_column_once():
    t = Table("t", ("a", "b", "c"))
    with pytest.raises(ValueError, match="must give each of its columns once: a, b, c"):
        Block(t, (("a", object),), ("b",), ("b",))


def test_consecutive_blocks_of_one_layout_read_back_in_order_between_rows():
    t = Table("t", ("who", "step", "time_ns"), numeric=("time_ns",))
    b = Block(t, (("who", object),), ("step",), ("time_ns",))
    t.add("x", 0, 5)
    t.add_block(b, 2, ("y",), (np.array([1, 2]),), (np.array([0, 10]),), 100)
    t.add_block(b, 1, ("z",), (np.array([3]),), (np.array([7]),), 200)
    t.add("w", 4, 1)
    df = t.to_frame()
    assert df.who.tolist() == ["x", "y", "y", "z", "w"]
    assert df.step.tolist() == [0, 1, 2, 3, 4]
    assert df.time_ns.tolist() == [5, 100, 110, 207, 1]
    assert (t.sums["time_ns"], t.maxes["time_ns"]) == (5 + 210 + 207 + 1, 207)
