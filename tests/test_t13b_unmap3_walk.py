"""The walked unmap's shortcuts (issue 13, fifth pass, "unmap3") hold to the array driver.

``zap_range`` skips slots with nothing present and looks for PUD leaves only when the
window holds one; ``free_pgd_range`` looks for entries left under a PUD entry or top-level
slot only where its table could be freed; ``tlb_finish_mmu`` takes the one flush of
recorded tables without putting them in free order. Each is held here to the array driver
(``PlanOptions("fast")``: ``unmap_arrays``, which does none of these) on a seeded grid of
multi-VMA unmaps over architectures and kernels, or to the sorted path right at the
boundary where the tables stop fitting in one flush.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from perfsim import resolve_target
from perfsim.mm.pagetable import PMD_TABLE, PUD_LEAF, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    MmuGather,
    pages_until_forced_flush,
    table_flush_cuts,
    table_flush_groups,
    tables_per_forced_flush,
    tlb_finish_mmu,
)
from perfsim.planner.options import PlanOptions
from perfsim.planner.syscall import do_munmap
from perfsim.planner.tlb import flush_range
from perfsim.planner.unmap import forcing_spans, not_anon_spans, vma_zap_forces_flush

ARCHS = ("x86_64", "x86_64-la57", "arm64-4k", "arm64-16k", "riscv-sv39")
KERNELS = ("6.1", "6.12", "6.18")
# (backing, shared, prot, thp): forcing (shared dirty shmem/file), not anonymous, THP
KINDS = (("anon", False, "rw", False), ("anon", False, "rw", True), ("anon", False, "r", False),
         ("shmem", True, "rw", False), ("shmem", True, "rw", True), ("file", True, "rw", False),
         ("file", False, "rw", False), ("file", True, "r", True))


def _space(rng: random.Random, t) -> tuple[AddressSpace, int, int]:
    """A few VMAs near a PUD (half the time a top-level) boundary, some populated (whole,
    sparse, THP, or not at all), and an unmap range over some of them."""
    a = t.arch
    pg, P = a.page_size, a.pmd_size
    top = rng.choice((a.pud_size, 1 << a.p4d_shift))
    at = rng.randrange(1, 4) * top - rng.randrange(0, 6) * P - rng.randrange(0, 3) * pg
    vmas, pt = [], PageTables.empty(a)
    if rng.random() < 0.2:  # a 1 GiB hugetlb page below (a PUD leaf), maybe in the range
        at += a.pud_size - at % a.pud_size
        vmas.append(Vma(at, at + a.pud_size, backing="hugetlb", hugepage_size=a.pud_size,
                        file_id="h", name="h"))
        pt = pt.populate(at, at + a.pud_size, pud_leaf=True)
        at += a.pud_size
    for i in range(rng.randint(1, 4)):
        at += rng.choice((0, pg, P, rng.randrange(1, 3 * a.ptrs_per_pte) * pg))
        length = rng.choice((rng.randrange(1, 2 * a.ptrs_per_pte) * pg,
                             rng.randrange(1, 6) * P + rng.randrange(0, 3) * pg))
        backing, shared, prot, thp = rng.choice(KINDS)
        if thp and rng.random() < 0.8:  # whole PMDs: huge PMDs to zap whole or split
            at += -at % P
            length = rng.randrange(1, 4) * P
        vmas.append(Vma(at, at + length, backing=backing, shared=shared, prot=prot, thp=thp,
                        anon_id=f"a{i}", file_id=f"f{i}" if backing != "anon" else None,
                        name=f"v{i}"))
        how = rng.choice(("full", "full", "every", "none"))
        if how == "full":
            pt = pt.populate(at, at + length, thp=thp)
        elif how == "every":
            pt = pt.populate(at, at + length, every=rng.choice((2, 5, 17)))
        at += length
    lo, hi = vmas[0].start, vmas[-1].end
    if rng.random() < 0.3:  # entries outside every VMA, in the PUD (or top-level) entry of
        # the first or the last: the PMD (or PUD) table above them still maps something
        unit = rng.choice((a.pud_size, 1 << a.p4d_shift))
        at = rng.choice((lo - lo % unit, hi + (-hi % unit) - P))
        if at + P <= lo or at >= hi + P:
            pt = pt.populate(at, at + rng.randrange(1, 4) * pg)
    if rng.random() < 0.25:  # all of it (a PUD leaf zapped whole, every table freed)
        return AddressSpace(tuple(vmas), pt, cpus=rng.randint(1, 4)), lo, hi
    inside = rng.choice(vmas)  # (from inside a VMA: a THP of it partly covered)
    start = rng.choice((lo, rng.randrange(lo - 2 * P, hi, pg),
                        rng.randrange(inside.start, inside.end, pg)))
    end = rng.choice((hi, min(hi + 2 * P, start + rng.choice(
        (pg, rng.randrange(1, 8 * a.ptrs_per_pte) * pg)))))
    return AddressSpace(tuple(vmas), pt, cpus=rng.randint(1, 4)), max(start, pg), end


def _pt_view(pt: PageTables, lo: int, hi: int):
    a = pt.arch
    i0, i1 = np.searchsorted(pt.pmd_idx, [lo >> a.pmd_shift, ((hi - 1) >> a.pmd_shift) + 1])
    kinds = pt.pmd_kind[i0:i1].tolist()
    words = [pt.masks[r].tolist() if k == PMD_TABLE else None  # (a leaf's row is unused)
             for k, r in zip(kinds, pt.pmd_mask[i0:i1].tolist())]
    return (pt.pmd_idx[i0:i1].tolist(), kinds, words, pt.pud_idx.tolist(),
            pt.pud_kind.tolist(), sorted(pt.pud_tables))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("arch", ARCHS)
def test_walked_unmap_equals_the_array_unmap_on_mixed_layouts(arch, kernel):
    """``do_munmap`` walked (``reference``) and with arrays (``fast``) give the same rows
    and the same page tables, over unmaps of 1-4 VMAs of every backing, some forcing
    flushes, THPs split or zapped whole, empty and sparse tables, neighbours sharing the
    tables at each level, and PUD and top-level boundaries crossed."""
    t = resolve_target(kernel, arch)
    rng = random.Random(f"unmap3 {arch} {kernel}")
    rows_seen, forced, leaves = set(), 0, 0
    for _ in range(80):
        sp, start, end = _space(rng, t)
        if rng.random() < 0.5 and len(sp.vmas) > 1:
            # an earlier munmap of one VMA, whose tables its neighbours kept: entries left
            # under PUD entries and top-level slots the next unmap may free
            v = rng.choice(sp.vmas)
            sp = do_munmap(t, sp, v.start, v.end - v.start, S.StepLog(), S.UNMAP_DST)
        out = []
        for implementation in ("reference", "fast"):
            log = S.StepLog()
            after = do_munmap(t, sp, start, end - start, log, S.UNMAP_DST,
                              options=PlanOptions(implementation))
            out.append((log.freeze(), after))
        (s1, a1), (s2, a2) = out
        assert len(s1) == len(s2)
        for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
            assert np.array_equal(s1.col(name), s2.col(name)), name
        lo = min(start, sp.vmas[0].start) - t.arch.pmd_size
        hi = max(end, sp.vmas[-1].end) + t.arch.pmd_size
        assert _pt_view(a1.pt, lo, hi) == _pt_view(a2.pt, lo, hi)
        assert a1.vmas == a2.vmas
        kinds = s1.col("kind").tolist()
        rows_seen.update(kinds)
        forced += sum(1 for k, f in zip(kinds, s1.col("flushes").tolist()) if k == S.K_ZAP and f)
        leaves += int(sp.pt.pud_kind.tolist().count(PUD_LEAF) > a1.pt.pud_kind.tolist().count(PUD_LEAF))
    # the grid reaches the zap, the freeing of tables, the split of a partly covered THP,
    # the zap's forced flushes and the zap of a PUD leaf
    assert {S.K_ZAP, S.K_FREE_TABLES, S.K_THP_SPLIT} <= rows_seen
    assert forced and leaves


@pytest.mark.parametrize("kernel,platform", [("6.18", "kvm-guest"), ("6.1", "bare-metal"),
                                             ("6.12", "bare-metal")])
def test_one_flush_boundary_of_recorded_tables(kernel, platform):
    """Recorded tables at, just below and just above the number that fits in one flush
    (the table batch, or on old bare metal the page batches left after the zap) give the
    rows of the flushes of the same tables in free order."""
    t = resolve_target(kernel, "x86_64")
    t = t.model_copy(update={"kernel": t.kernel.model_copy(update={"platform": platform})})
    a = t.arch
    rng = random.Random(f"boundary {kernel} {platform}")
    shift_of = {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift, PUD_TABLE_PAGE: a.p4d_shift}
    cap = tables_per_forced_flush(t)
    for _ in range(6):
        batched = rng.randrange(0, 700)
        first = cap if cap is not None else pages_until_forced_flush(t, batched, False)
        for n in (first - 1, first, first + 1):
            tlb = MmuGather(0)
            base = rng.randrange(0, 1 << 40, a.pud_size)
            for _ in range(n):
                tlb.free_table(base + (rng.randrange(0, 2 * n) << a.pmd_shift),
                               rng.choice((PTE_TABLE, PTE_TABLE, PMD_TABLE_PAGE, PUD_TABLE_PAGE)))
            tlb.batched = batched
            cuts = table_flush_cuts(t, batched, n)
            assert (len(cuts) == 1) == (n <= first)
            addrs, levels = tlb.freed(t)
            want = table_flush_groups(addrs, levels, cuts, a.page_size)
            log = S.StepLog()
            tlb_finish_mmu(t, tlb, log, S.UNMAP_SRC, 0, a.page_size, 0, n, cpus=3, lazy_cpus=1)
            assert len(log.rows) == len(want)
            for (s_, e_, lv, k), row in zip(want, log.rows):
                f = flush_range(t, s_, e_, stride_shift=shift_of[lv], cpus=3, lazy_cpus=1)
                assert row[S.ROW_FIELDS.index("freed")] == k
                assert row[S.ROW_FIELDS.index("flush_full")] == int(f.full)
                assert row[S.ROW_FIELDS.index("flush_pages")] == f.pages
                assert row[S.ROW_FIELDS.index("ipis")] == f.ipis


def test_spans_are_each_touched_vmas_part_of_the_range():
    """``forcing_spans`` / ``not_anon_spans``: per VMA in address order that overlaps the
    range and forces a flush (is not anonymous), its part of the range; none for others."""
    rng = random.Random("spans")
    pg = 4096
    for _ in range(300):
        vmas, at = [], rng.randrange(1, 64) * pg
        for _i in range(rng.randint(0, 5)):
            at += rng.choice((0, pg, 7 * pg))
            length = rng.randrange(1, 40) * pg
            backing, shared, prot, _ = rng.choice(KINDS)
            vmas.append(Vma(at, at + length, backing=backing, shared=shared, prot=prot,
                            file_id="f" if backing != "anon" else None))
            at += length
        start = rng.randrange(0, at + 2 * pg, pg)
        end = start + rng.randrange(1, 120) * pg
        clip = [(max(v.start, start), min(v.end, end), v) for v in vmas
                if v.start < end and v.end > start]
        assert forcing_spans(vmas, start, end) == tuple(
            (s_, e_) for s_, e_, v in clip if vma_zap_forces_flush(v))
        assert not_anon_spans(vmas, start, end) == tuple(
            (s_, e_) for s_, e_, v in clip if v.backing != "anon")
