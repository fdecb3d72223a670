"""A small plan's template miss priced through a run's row memo (``cost/model.py``
``scalar_row_costs`` / ``_price_dense``, ``engine/pricing.py`` ``_small_template``): the
weights and folio terms are read only when a row is not in the memo, a one-row plan is
unzipped on its own, the flush records are mapped from the per-row lists. Held here to the
vectorised path (``vector_row_costs``, ``_array_template``) on seeded random tables with
memos empty, partly filled and full."""

from __future__ import annotations

import numpy as np
import pytest
from test_t13_price_counts import (
    FOLIOS,
    _distinct_profile,
    _same_costs,
    _same_template,
    _tables,
    random_steps,
)

from perfsim.cost.model import column_lists, scalar_row_costs, vector_row_costs
from perfsim.engine.pricing import _array_template, _small_template


def _memos_partly_filled(prof, seed: int) -> dict:
    """One row memo per folio mechanism set, each holding the rows of a few other random
    tables (so a table priced next finds some of its rows in it and misses others)."""
    memos = {}
    for k, folio in enumerate(FOLIOS):
        memo: dict = {}
        for steps in _tables(100 + 7 * seed + k, 6, 8):
            scalar_row_costs(column_lists(steps), prof, 4, folio, memo)
        memos[folio] = memo
    return memos


@pytest.mark.parametrize("seed", range(4))
def test_rows_priced_through_a_partly_filled_memo_equal_vectorised_row_costs(seed):
    prof = _distinct_profile()
    memos = _memos_partly_filled(prof, seed)
    for steps in _tables(seed, 20, 8):
        lists = column_lists(steps)
        for folio in FOLIOS:
            for cpus in (None, 1, 4):
                memo = memos[folio] if cpus == 4 else {}
                for _ in range(2):  # cold (or partly filled), then every row from the memo
                    _same_costs(scalar_row_costs(lists, prof, cpus, folio, memo),
                                vector_row_costs(steps, prof, cpus=cpus, folio=folio))


@pytest.mark.parametrize("seed", range(3))
def test_one_row_plans_priced_through_the_memo_equal_vectorised_row_costs(seed):
    prof = _distinct_profile("arm64-generic")
    rng = np.random.default_rng(seed)
    for folio in FOLIOS:
        memo: dict = {}
        for _ in range(25):
            steps = random_steps(rng, 1)
            for _ in range(2):
                rc = scalar_row_costs(column_lists(steps), prof, 3, folio, memo)
                _same_costs(rc, vector_row_costs(steps, prof, cpus=3, folio=folio))
            # the category sums handed out are the caller's: changing them leaves the memo
            rc._sums[0] += 1
            _same_costs(scalar_row_costs(column_lists(steps), prof, 3, folio, memo),
                        vector_row_costs(steps, prof, cpus=3, folio=folio))


@pytest.mark.parametrize("seed", range(4))
def test_small_templates_through_a_run_memo_equal_templates_built_on_columns(seed):
    prof = _distinct_profile()
    memos = _memos_partly_filled(prof, seed)
    rng = np.random.default_rng(50 + seed)
    for steps in _tables(seed, 12, 12):
        for hot in (set(), {"anon_vma:heap"}):
            # contended rows split the plan: later segments' offsets start past row 0
            for ptl_hot in (None, rng.random(len(steps)) < 0.3):
                folio = FOLIOS[int(rng.integers(0, len(FOLIOS)))]
                for cpus in (1, 4):
                    want = _array_template(steps, prof, cpus, None, hot, ptl_hot, folio)
                    for _ in range(2):
                        _same_template(_small_template(steps, prof, cpus, hot, ptl_hot,
                                                       folio, memos[folio]), want)
