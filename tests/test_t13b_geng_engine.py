"""The engine's fixed costs per run, kept equal to what they replace: a caller's seed
sequence is made only when it draws (``caller.ChildSeed``, the spawned child), a table's
summary names its aggregates as before, the segment record layouts are shared by every
recorder."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.engine.caller import ChildSeed
from perfsim.engine.records import Recorder, Table


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**40 + 3, 2**64 + 5])
def test_a_child_seed_is_the_spawned_child_of_the_run_seed(seed):
    kids = np.random.SeedSequence(seed).spawn(6)
    for i, kid in enumerate(kids):
        mine = ChildSeed(seed, i).sequence()
        assert mine.state == kid.state
        a = np.random.default_rng(mine).standard_normal(8)
        b = np.random.default_rng(kid).standard_normal(8)
        assert np.array_equal(a, b)


def test_a_table_summary_lists_counts_then_sums_then_maxima_in_column_order():
    t = Table("t", ("a", "b", "c"), numeric=("c", "a"))
    t.add(1, "x", 5)
    t.add(4, "y", 2)
    assert list(t.summary().items()) == [
        ("rows", 2), ("kept", 2), ("dropped", 0), ("spilled_parts", 0),
        ("sum_c", 7), ("sum_a", 5), ("max_c", 5), ("max_a", 4)]
    assert list(Table("u", ("a",)).summary()) == ["rows", "kept", "dropped", "spilled_parts"]
    empty = Table("t", ("a", "b", "c"), numeric=("c", "a"))
    got = empty.summary()
    assert list(got.items()) == [
        ("rows", 0), ("kept", 0), ("dropped", 0), ("spilled_parts", 0),
        ("sum_c", 0), ("sum_a", 0), ("max_c", 0), ("max_a", 0)]
    got["rows"] = 5  # a copy: the next summary is not changed
    assert empty.summary()["rows"] == 0


def test_every_recorder_shares_one_layout_per_segment_table():
    a, b = Recorder(), Recorder()
    assert a.segment_holds is b.segment_holds and a.segment_flushes is b.segment_flushes
    assert a.segment_holds.columns == a.holds.columns
    assert a.segment_flushes.columns == a.flushes.columns
