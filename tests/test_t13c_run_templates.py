"""Shortcuts of a call template's pricing (issue 13, sixth pass), held to the general
path or to their definition: a periodic template's call sums read from its rows' summed
cost counts (``pricing._stats_of_counts``) are the column sums ``_row_stats`` makes; a
target on which no source VMA is charged a folio mechanism (``batching.never_charged``)
is one on which ``_mechanisms`` charges none, for any folio size and shift."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest
from test_t13_price_counts import random_steps

from perfsim.cost import load_cost_profile
from perfsim.cost.batching import _mechanisms, folio_batching_of_plan, never_charged
from perfsim.cost.model import SCALAR_ROWS, column_sequences, scalar_row_costs
from perfsim.engine.pricing import _C_RMAP, _STAT_COUNTS, _row_stats, _stats_of_counts
from perfsim.profiles import arch_names, kernel_names, resolve_target

KiB, MiB = 1 << 10, 1 << 20


@pytest.mark.parametrize("seed", range(20))
def test_call_sums_from_summed_counts_equal_the_column_sums_of_the_rows(seed):
    rng = np.random.default_rng(seed)
    prof = load_cost_profile("x86_64-generic")
    for _ in range(10):
        steps = random_steps(rng, int(rng.integers(1, SCALAR_ROWS + 1)))
        lists = column_sequences(steps)
        rc = scalar_row_costs([list(c) for c in lists], prof, int(rng.integers(1, 5)), None)
        counts = rc._scalar[3]
        summed = [sum(col) for col in zip(*map(_STAT_COUNTS, counts), strict=True)]
        rmap_rows = sum(1 for v in lists[_C_RMAP] if v > 0)
        assert _stats_of_counts(summed, rmap_rows) == _row_stats(lists)


def _targets():
    for k in kernel_names():
        for a in arch_names():
            try:
                yield resolve_target(k, a)
            except Exception:  # noqa: BLE001 (a kernel that does not build for an arch)
                continue


def test_a_target_never_charged_charges_no_folio_of_any_size_or_shift():
    seen = set()
    for t in _targets():
        never = never_charged(tuple(t.kernel.version), t.arch.contpte_entries,
                              t.kernel.pte_batching)
        seen.add(never)
        charged = [any(_mechanisms(t, size, shift)[2:])
                   for size in (0, 4 * KiB, 16 * KiB, 64 * KiB, 2 * MiB, 1 << 30)
                   for shift in (0, 4 * KiB, 64 * KiB, 2 * MiB + 4 * KiB, 1 << 30)]
        if never:
            assert not any(charged), (t.kernel.name, t.arch.name)
    assert seen == {True, False}  # both kinds of target are shipped


def test_folio_batching_of_a_plan_is_none_on_a_target_that_never_charges():
    from perfsim.mm import AddressSpace, PageTables, Vma
    from perfsim.planner import MoveRequest, plan_mremap

    src, dst = 0x7F0000200000, 0x7F4000200000
    charged = 0
    for t in _targets():
        space = AddressSpace((Vma(src, src + 2 * MiB, name="heap", folio_size=64 * KiB),),
                             PageTables.empty(t.arch).populate(src, src + 2 * MiB))
        plan = plan_mremap(space, MoveRequest(old_addr=src, old_len=2 * MiB, new_addr=dst), t)
        got = folio_batching_of_plan(plan, t)
        m = _mechanisms(t, 64 * KiB, plan.result_addr - src) if plan.errno is None else None
        if never_charged(tuple(t.kernel.version), t.arch.contpte_entries,
                         t.kernel.pte_batching):
            assert got is None
        elif m is not None and any(m[2:]):
            assert got is not None and astuple(got) == m
            charged += 1
    assert charged  # some shipped target charges these folios
