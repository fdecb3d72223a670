"""The walked planner's per-call shortcuts held to what they replace.

``flush_span`` (a memo keyed by the target's identity) to ``flush_range``; the walk's
geometry memo to the profile's own properties; ``MoveContext.alloc_new_pud``'s memory of
the top-level slots that have a PUD table to ``pgtable_move.alloc_new_pud`` asked every
time; ``tlb_finish_mmu``'s unsorted single flush to the flush of the tables in free order.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import kernel_arch_grid

from perfsim import resolve_target
from perfsim.mm.pagetable import Window
from perfsim.planner import steps as S
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    MmuGather,
    table_flush_cuts,
    table_flush_groups,
    tlb_finish_mmu,
)
from perfsim.planner.pgtable_move import alloc_new_pud
from perfsim.planner.reference import MoveContext, geometry_of
from perfsim.planner.tlb import flush_range, flush_span
from perfsim.profiles import arch_names

TARGETS = kernel_arch_grid()


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_flush_span_is_flush_range(kernel, arch):
    t = resolve_target(kernel, arch)
    twin = t.with_changes(**{"kernel.freed_tables_in_flush_range": False})
    rng = random.Random(f"{kernel}{arch}")
    a = t.arch
    for _ in range(300):
        target = rng.choice((t, twin))
        span = rng.choice((a.page_size * rng.randint(1, 600), a.pmd_size, a.pud_size,
                           rng.randint(1, 1 << 40)))
        if rng.random() < 0.3:
            span = np.int64(span)
        shift = rng.choice((None, a.page_shift, a.pmd_shift, a.pud_shift))
        cpus = rng.randint(1, 9)
        kw = dict(stride_shift=shift, cpus=cpus, lazy_cpus=rng.randint(0, cpus - 1),
                  freed_tables=rng.random() < 0.5)
        start = rng.randrange(0, 1 << 46, a.page_size)
        want = flush_range(target, start, start + span, **kw)
        for _ in range(2):  # made, then remembered
            got = flush_span(target, span, **kw)
            assert got == want
            assert type(got.pages) is type(want.pages)


@pytest.mark.parametrize("arch", arch_names())
def test_walk_geometry_is_the_profiles(arch):
    a = resolve_target("6.18", arch).arch
    for _ in range(2):
        assert geometry_of(a) == (a.page_shift, a.pmd_shift, a.pud_shift, a.p4d_shift,
                                   a.pud_folded, a.ptrs_per_pte, a.pmd_size, a.pud_size)


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("seed", range(15))
def test_alloc_new_pud_remembered_is_asked_each_time(arch, seed):
    """A walk's ``alloc_new_pud`` answers (allocations counted, tables added, injected
    failures) as :func:`alloc_new_pud` asked afresh on the tables as they stand."""
    rng = random.Random(seed)
    t = resolve_target("6.18", arch)
    a = t.arch
    tops = [rng.randrange(0, 1 << (a.user_va_top.bit_length() - a.p4d_shift)) for _ in range(4)]
    win = Window(0, 1, set(rng.sample(tops, rng.randint(0, 2))), {}, {})
    fail = rng.choice((None, 1, 2, 3, 5))
    ctx = MoveContext(t, win, S.StepLog(), fail_alloc_at=fail)
    have, allocations = set(win.pud_tables), 0
    for _ in range(12):
        addr = (rng.choice(tops) << a.p4d_shift) + rng.randrange(0, 1 << a.p4d_shift, a.page_size)
        p4d, pud = alloc_new_pud(a, frozenset(have), addr)
        ok, want = True, {}
        for name, n in (("alloc_p4d", p4d), ("alloc_pud", pud)):
            if n and ok:
                allocations += 1
                if fail is not None and allocations == fail:
                    ok = False
                else:
                    want[name] = 1
        if ok and pud:
            have.add(addr >> a.p4d_shift)
        counts: dict = {}
        assert ctx.alloc_new_pud(addr, counts) is ok
        assert counts == want
        assert set(win.pud_tables) == have
        assert ctx.allocations == allocations


def _gather(rng: random.Random, a, n: int) -> MmuGather:
    tlb = MmuGather(0)
    base = rng.randrange(0, 1 << 40, a.pud_size)
    for _ in range(n):  # (close together: a flush's range decides its page count)
        level = rng.choice((PTE_TABLE, PTE_TABLE, PMD_TABLE_PAGE, PUD_TABLE_PAGE))
        tlb.free_table(base + (rng.randrange(0, 80) << a.pmd_shift), level)
    if rng.random() < 0.5:
        start = rng.randrange(0, 1 << 47, a.page_size)
        tlb.adjust(start, start + a.page_size * rng.randint(1, 600))
        tlb.cleared_ptes = True
    return tlb


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_one_flush_of_unsorted_tables_is_the_free_orders(kernel, arch):
    """With every freed table in one flush, the flush of the tables as recorded is the one
    of the same tables in free order; ``tlb_finish_mmu`` logs the rows of that flush."""
    t = resolve_target(kernel, arch)
    a = t.arch
    rng = random.Random(f"{kernel}{arch}")
    for i in range(120):
        n = rng.randint(1, 12) if i % 8 else rng.randint(500, 1100)  # (then cut in several)
        tlb = _gather(rng, a, n)
        cuts = table_flush_cuts(t, tlb.batched, n)
        addrs, levels = tlb.freed(t)
        want = table_flush_groups(addrs, levels, cuts, a.page_size)
        if len(cuts) == 1:
            got = table_flush_groups([x for x, _ in tlb.tables], [lv for _, lv in tlb.tables],
                                     cuts, a.page_size)
            assert got == want
        shift_of = {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift,
                    PUD_TABLE_PAGE: a.p4d_shift}
        log = S.StepLog()
        tlb_finish_mmu(t, tlb, log, S.UNMAP_SRC, 0, a.page_size, 0, n, cpus=3, lazy_cpus=1)
        assert len(log.rows) == len(want)
        for i, ((s_, e_, lv, k), row) in enumerate(zip(want, log.rows)):
            shift = shift_of[lv]
            if i == 0 and tlb.start is not None:
                s_, e_, shift = min(s_, tlb.start), max(e_, tlb.end), min(shift, a.page_shift)
            f = flush_range(t, s_, e_, stride_shift=shift, cpus=3, lazy_cpus=1)
            assert row[S.ROW_FIELDS.index("freed")] == k
            assert row[S.ROW_FIELDS.index("flush_full")] == int(f.full)
            assert row[S.ROW_FIELDS.index("flush_pages")] == f.pages
            assert row[S.ROW_FIELDS.index("ipis")] == f.ipis
