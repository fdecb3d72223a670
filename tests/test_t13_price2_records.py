"""A small call template hands its segments' holds and flushes to the record blocks as Python
lists (no numpy array per template miss); the tables read back the same rows, dtypes and
aggregates as when the same blocks are given as the template's numpy arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_t13_engine_records import _as_columns, _flush_row, _hold_row, _ints

from perfsim.engine.records import SEGMENT_DTYPES, ColumnList, Recorder, Table


def _listed(rng, arrays: tuple) -> tuple:
    """Some of ``arrays`` as Python lists (ints; bools for a bool array), as a small
    template gives them."""
    return tuple(ColumnList(a.tolist()) if rng.random() < 0.7 else a for a in arrays)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("bound", ["kept", "dropped", "spilled"])
def test_segment_blocks_given_as_lists_read_back_as_the_same_arrays(seed, bound, tmp_path):
    rng = np.random.default_rng(900 + seed)
    for name, row_of in (("holds", _hold_row), ("flushes", _flush_row)):
        rec = Recorder()
        block = rec.segment_holds if name == "holds" else rec.segment_flushes
        base = getattr(rec, name)
        kw = {"max_rows": 40} if bound != "kept" else {}
        tables = []
        for side in ("got", "want"):
            if bound == "spilled":
                kw["spill_dir"] = tmp_path / f"{name}-{side}"
            tables.append(Table(name, base.columns, numeric=base.numeric, **kw))
        got, want = tables
        for _ in range(80):
            r = rng.random()
            if r < 0.1:
                assert (got.sums, got.maxes) == (want.sums, want.maxes)
            elif r < 0.3:
                row = row_of(rng)
                got.add(*row)
                want.add(*row)
            else:
                n = int(rng.integers(1, 6))
                if name == "holds":
                    off = _ints(rng, n)
                    arrays, shifted = (_ints(rng, n, 100), _ints(rng, n)), (off, off)
                else:
                    arrays = (_ints(rng, n, 100), rng.random(n) < 0.5, _ints(rng, n, 600),
                              _ints(rng, n, 32), _ints(rng, n, 5000))
                    shifted = (_ints(rng, n),)
                consts = tuple(row_of(rng)[got.columns.index(c)] for c, _ in block.consts)
                t0 = int(rng.integers(0, 10**9))
                got.add_block(block, n, consts, _listed(rng, arrays), _listed(rng, shifted), t0)
                want.add_columns(_as_columns(block, n, consts, arrays, shifted, t0))
        assert got.summary() == want.summary()
        a, b = got.to_frame(), want.to_frame()
        pd.testing.assert_frame_equal(a, b)
        assert list(a.dtypes) == list(b.dtypes)


def test_segment_dtypes_are_those_of_the_template_arrays():
    assert SEGMENT_DTYPES["full"] == np.dtype(bool)
    assert all(dt == np.dtype(np.int64) for c, dt in SEGMENT_DTYPES.items() if c != "full")
    rec = Recorder()
    assert set(SEGMENT_DTYPES) == set(rec.segment_holds.arrays + rec.segment_holds.shifted
                                      + rec.segment_flushes.arrays + rec.segment_flushes.shifted)
