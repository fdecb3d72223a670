"""A small call's plan: the walk's and the syscall layer's per-call shortcuts held to what
they replace (issue 13, sixth pass).

``tlb.span_flushes`` (a per-target table of ``flush_range`` by length) to ``flush_range``;
``get_extent`` to its ``min`` definition; ``unmap.zap_spans`` to ``forcing_spans`` and
``not_anon_spans``; ``PteBatching.batches`` to ``folio_pages > 1``;
``MoveContext.alloc_new_pmd``'s read of ``alloc_new_pud``'s memo to the rules asked afresh;
``pgt_entry_row``'s memoised flushes to ``flush_range`` over one entry; the walk with
injected allocation failures to the vectorised driver; exec's stack relocation (its space
put together by bisection) to the same VMAs rebuilt and re-sorted as a list.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random

import numpy as np
import pytest
from helpers import kernel_arch_grid
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast_equivalence import assert_same_plan, build

from perfsim import resolve_target
from perfsim.mm.pagetable import PUD_NONE, PageTables, Window
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.batch import NO_BATCHING, PteBatching, pte_batching_of
from perfsim.planner.explain import explain_realign
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    HPAGE_PUD,
    NORMAL_PMD,
    NORMAL_PUD,
    MoveGates,
    alloc_new_pud,
    get_extent,
    pgt_entry_row,
    pmd_alloc,
)
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.reference import MoveContext
from perfsim.planner.tlb import (
    SpanFlushes,
    flush_pmd_range,
    flush_pud_range,
    flush_range,
    span_flushes,
)
from perfsim.planner.unmap import forcing_spans, not_anon_spans, zap_spans
from perfsim.profiles import arch_names
from perfsim.workload.generate import _sizes_of

TARGETS = kernel_arch_grid()
KINDS = (("anon", False, "rw"), ("anon", False, "r"), ("shmem", True, "rw"),
         ("file", True, "rw"), ("file", False, "rw"), ("file", True, "r"),
         ("hugetlb", True, "rw"))


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_span_flushes_is_flush_range_over_that_length(kernel, arch):
    """Each entry of a target's table of flushes by length is ``flush_range`` over any range
    of that length, with the table's stride, CPUs and freed-tables argument; one table per
    target and arguments."""
    t = resolve_target(kernel, arch)
    twin = t.with_changes(**{"kernel.freed_tables_in_flush_range": False})
    rng = random.Random(f"span{kernel}{arch}")
    a = t.arch
    for _ in range(200):
        target = rng.choice((t, twin))
        cpus = rng.randint(1, 9)
        kw = dict(stride_shift=rng.choice((None, a.page_shift, a.pmd_shift, a.pud_shift)),
                  cpus=cpus, lazy_cpus=rng.randint(0, cpus - 1),
                  freed_tables=rng.random() < 0.5)
        table = span_flushes(target, **kw)
        assert isinstance(table, SpanFlushes) and span_flushes(target, **kw) is table
        for _ in range(3):
            span = rng.choice((a.page_size * rng.randint(1, 600), a.pmd_size, a.pud_size,
                               rng.randint(1, 1 << 40)))
            start = rng.randrange(0, 1 << 46, a.page_size)
            want = flush_range(target, start, start + span, **kw)
            assert table[span] == want  # made
            assert table[span] == want  # remembered
            assert type(table[span].pages) is type(want.pages)


def test_a_full_span_table_starts_again_with_the_same_answers():
    t = resolve_target("6.18", "x86_64")
    table = SpanFlushes(t, dict(stride_shift=None, cpus=3, lazy_cpus=1, freed_tables=True))
    spans = [4096 * k for k in range(1, 5000)]
    for span in spans:
        assert table[span] == flush_range(t, 0, span, cpus=3, lazy_cpus=1)
    assert len(table) <= 4096
    for span in spans[:50]:
        assert table[span] == flush_range(t, 0, span, cpus=3, lazy_cpus=1)


@settings(max_examples=400, deadline=None)
@given(shift=st.sampled_from((14, 21, 25, 30, 39)), old=st.integers(0, 1 << 48),
       new=st.integers(0, 1 << 48), left=st.integers(1, 1 << 41))
def test_get_extent_is_the_least_of_the_three_distances(shift, old, new, left):
    size = 1 << shift
    assert get_extent(shift, old, new, old + left) == min(size - old % size, size - new % size,
                                                          left)


def _vmas(rng: random.Random) -> tuple[list[Vma], int]:
    pg, vmas, at = 4096, [], rng.randrange(1, 64) * 4096
    for i in range(rng.randint(0, 5)):
        at += rng.choice((0, pg, 7 * pg))
        length = rng.randrange(1, 40) * pg
        backing, shared, prot = rng.choice(KINDS)
        vmas.append(Vma(at, at + length, backing=backing, shared=shared, prot=prot,
                        file_id=f"f{i}" if backing != "anon" else None))
        at += length
    return vmas, at


def test_zap_spans_are_the_forcing_and_the_not_anonymous_spans():
    rng = random.Random("zap_spans")
    for _ in range(500):
        vmas, at = _vmas(rng)
        start = rng.randrange(0, at + 2 * 4096, 4096)
        end = start + rng.randrange(1, 120) * 4096
        assert zap_spans(vmas, start, end) == (forcing_spans(vmas, start, end),
                                               not_anon_spans(vmas, start, end))


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_pte_batching_batches_means_folios_of_more_than_one_page(kernel, arch):
    t = resolve_target(kernel, arch)
    rng = random.Random(f"batch{kernel}{arch}")
    made = [NO_BATCHING, PteBatching(), PteBatching(4, 0), PteBatching(32, 16, 512, 1024)]
    for _ in range(100):
        start = rng.randrange(1, 1 << 20) << t.arch.page_shift
        size = rng.choice((0, 4096, 16 << 10, 64 << 10, 128 << 10, 2 << 20))
        made.append(pte_batching_of(t, Vma(start, start + rng.randrange(1, 1200) * 4096,
                                           folio_size=size)))
    for b in made:
        assert b.batches is (b.folio_pages > 1)
        for other in (pickle.loads(pickle.dumps(b)), copy.copy(b), dataclasses.replace(b)):
            assert other == b and other.batches is b.batches
        assert dataclasses.replace(b, folio_pages=1).batches is False


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("seed", range(10))
def test_alloc_new_pmd_after_the_memo_is_the_rules_asked_afresh(arch, seed):
    """``alloc_new_pmd`` (which reads ``alloc_new_pud``'s memo before asking it) allocates,
    counts and fails as ``alloc_new_pud`` then ``pmd_alloc`` asked on the tables as they
    stand."""
    rng = random.Random(seed)
    t = resolve_target("6.18", arch)
    a = t.arch
    tops = [rng.randrange(0, 1 << (a.user_va_top.bit_length() - a.p4d_shift)) for _ in range(3)]
    have = set(rng.sample(tops, rng.randint(0, 2)))
    slots = [(rng.choice(tops) << (a.p4d_shift - a.pud_shift)) + rng.randrange(0, 4)
             for _ in range(4)]
    pud = {s: 1 for s in rng.sample(slots, rng.randint(0, 2))}  # (PUD_TABLE)
    win = Window(0, 1, set(have), dict(pud), {})
    fail = rng.choice((None, 1, 2, 3, 5, 8))
    ctx = MoveContext(t, win, S.StepLog(), fail_alloc_at=fail)
    allocations, stopped = 0, False
    for _ in range(12):
        slot = rng.choice(slots)
        addr = (slot << a.pud_shift) + rng.randrange(0, a.pud_size, a.page_size)
        p4d, pud_pages = alloc_new_pud(a, frozenset(have), addr)
        ok, want = True, {}
        for name, n in (("alloc_p4d", p4d), ("alloc_pud", pud_pages)):
            if n and ok:
                allocations += 1
                if allocations == fail:
                    ok = False
                else:
                    want[name] = 1
        if ok and pud_pages:
            have.add(addr >> a.p4d_shift)
        if ok and pmd_alloc(pud.get(addr >> a.pud_shift, PUD_NONE)):
            allocations += 1
            if allocations == fail:
                ok = False
            else:
                want["alloc_pmd"] = 1
                pud[addr >> a.pud_shift] = 1
        counts: dict = {}
        assert ctx.alloc_new_pmd(addr, counts) is ok
        assert counts == want
        assert win.pud_tables == have and win.pud == pud
        assert ctx.allocations == allocations
        stopped = stopped or not ok
    assert fail is None or stopped or allocations < fail


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_an_entry_moves_flush_is_flush_range_over_the_entry(kernel, arch):
    t = resolve_target(kernel, arch)
    a = t.arch
    vma = Vma(a.pud_size, 2 * a.pud_size, backing="shmem", file_id="f")
    rng = random.Random(f"entry{kernel}{arch}")
    for _ in range(30):
        cpus = rng.randint(1, 9)
        kw = dict(cpus=cpus, lazy_cpus=rng.randint(0, cpus - 1))
        gates = MoveGates.of(t, vma, vma, rng.random() < 0.5)
        want = {NORMAL_PUD: flush_range(t, 0, a.pud_size, **kw),
                NORMAL_PMD: flush_range(t, 0, a.pmd_size, **kw),
                HPAGE_PUD: flush_pud_range(t, 0, **kw), HPAGE_PMD: flush_pmd_range(t, 0, **kw)}
        for entry, flush in want.items():
            src, dst = rng.randrange(1 << 20), rng.randrange(1 << 20)
            for _ in range(2):  # made, then remembered
                assert pgt_entry_row(t, gates, entry, src, dst, **kw).flush == flush


SMALL = 4096 * 8


def _allocations(plan, phase: int) -> int:
    st = plan.steps
    rows = st.phase == phase
    return int(sum(st.col(c)[rows].sum() for c in ("alloc_p4d", "alloc_pud", "alloc_pmd",
                                                      "alloc_pte")))


@pytest.mark.parametrize("kernel", ("6.6", "6.18"))
@pytest.mark.parametrize("arch", ("x86_64", "arm64-4k"))
def test_a_walked_move_fails_at_the_kth_allocation(kernel, arch):
    """Small moves (walked) with the k-th page-table allocation failing: a move that needs
    fewer allocations is planned as without the failure; otherwise it stops there (an
    ``alloc_fail`` row after k - 1 allocations), is reverted and fails with ENOMEM."""
    rng = random.Random(f"fail{kernel}{arch}")
    for _ in range(12):
        t0 = resolve_target(kernel, arch)
        pmd, pg = t0.arch.pmd_size, t0.arch.page_size
        src = (rng.randrange(4, 64) << t0.arch.pud_shift) + rng.randrange(0, 8) * pmd \
            + rng.randrange(0, 512) * pg
        dst = (rng.randrange(70, 128) << t0.arch.pud_shift) + rng.randrange(0, 8) * pmd \
            + rng.choice((src % pmd, rng.randrange(0, 512) * pg))
        length = rng.choice((SMALL, pmd, 2 * pmd + 5 * pg, 5 * pmd))
        t, sp = build(src, length, kernel=kernel, arch=arch, dst=dst,
                      populate=rng.choice(("full", "0.3", "every:5")), seed=rng.randrange(99))
        base = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t)
        assert base.errno is None and base.moved[0].planner == "reference"
        need = _allocations(base, S.MOVE)
        for k in range(1, need + 3):
            p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst, fail_alloc_at=k), t)
            if k > need:
                assert p.errno is None
                assert_same_plan(base, p, [(src, src + length), (dst, dst + length)])
                continue
            assert p.errno == "ENOMEM" and p.moved[0].reverted
            assert _allocations(p, S.MOVE) == k - 1
            kinds = p.steps.kind[p.steps.phase == S.MOVE].tolist()
            assert kinds.count(S.K_ALLOC_FAIL) == 1 and kinds[-1] == S.K_ALLOC_FAIL


def _stack_space(rng: random.Random, t) -> tuple[AddressSpace, Vma]:
    a = t.arch
    top = a.user_va_top // a.page_size * a.page_size
    size = rng.randrange(1, 3 * a.ptrs_per_pte) * a.page_size
    stack = Vma(top - size, top, anon_vma=True, anon_id="stack", stack=True,
                pgoff=(top - size) // a.page_size, name="stack")
    vmas = [stack]
    at = top - size - rng.randrange(8, 64) * a.pmd_size
    for i in range(rng.randint(0, 3)):  # VMAs below the stack (and its new place)
        length = rng.randrange(1, 200) * a.page_size
        at -= length + rng.randrange(1, 40) * a.page_size
        vmas.append(Vma(at, at + length, anon_id=f"v{i}", name=f"v{i}"))
    pt = PageTables.empty(a).populate(stack.start, stack.end,
                                      fraction=rng.choice((1.0, 0.5)), seed=rng.randrange(99))
    return AddressSpace(tuple(vmas), pt, cpus=rng.randint(1, 4)), stack


@pytest.mark.parametrize("kernel", ("6.6", "6.18"))
@pytest.mark.parametrize("arch", ("x86_64", "arm64-4k", "riscv-sv39"))
def test_the_relocated_stacks_spaces_are_the_vma_lists_rebuilt(kernel, arch):
    """exec's stack relocation puts the expanded stack (for the move) and the shrunk one
    (after it) into the space by bisection: the VMAs are those of the list rebuilt with
    the stack replaced and re-sorted, and the realignment reason (read from the space
    during the move) is the one explained on that rebuilt space."""
    t = resolve_target(kernel, arch)
    a = t.arch
    rng = random.Random(f"stack{kernel}{arch}")
    for _ in range(40):
        space, stack = _stack_space(rng, t)
        shift = rng.choice((rng.randrange(1, 40) * a.page_size, rng.randrange(1, 4) * a.pmd_size))
        new = stack.start - shift
        plan = plan_mremap(space, MoveRequest(stack.start, stack.length, new_addr=new,
                                              for_stack=True, fixed=False), t)
        assert plan.errno is None
        expanded = dataclasses.replace(stack, start=new)
        during = space.with_vmas([expanded if v == stack else v for v in space.vmas])
        shrunk = dataclasses.replace(stack, start=new, end=new + stack.length)
        after = space.with_vmas([shrunk if v == stack else v for v in space.vmas])
        assert plan.after.vmas == after.vmas
        pmc = PageTableMoveControl(expanded, expanded, stack.start, new, stack.length,
                                   for_stack=True)
        assert plan.moved[0].realign == explain_realign(during, pmc, t)


@pytest.mark.parametrize("arch", arch_names())
def test_the_layouts_sizes_are_the_profiles(arch):
    a = resolve_target("6.18", arch).arch
    for _ in range(2):
        assert _sizes_of(a) == (a.page_size, a.pmd_size, a.pud_size)


def test_move_context_starts_empty_for_each_move():
    t = resolve_target("6.18", "x86_64")
    win = Window(0, 1, set(), {}, {})
    ctx = MoveContext(t, win, S.StepLog(), S.MOVE, 3, 1, 2)
    assert (ctx.phase, ctx.cpus, ctx.lazy_cpus, ctx.fail_alloc_at, ctx.allocations) == (
        S.MOVE, 3, 1, 2, 0)
    assert ctx.flushes is span_flushes(t, cpus=3, lazy_cpus=1)
    other = MoveContext(t, win, S.StepLog())
    assert other._has_pud_table == set() and other._has_pud_table is not ctx._has_pud_table
    assert np.int64(4096) not in ctx.flushes  # (numpy spans go through flush_span's own memo)


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_a_moves_remembered_entry_rows_are_pgt_entry_row(kernel, arch):
    """``MoveContext.entry_row`` (made once per entry kind and PMD-lock count of a move) is
    ``pgt_entry_row`` of the move's gates and CPUs between those slots."""
    t = resolve_target(kernel, arch)
    a = t.arch
    rng = random.Random(f"rows{kernel}{arch}")
    vma = Vma(a.pud_size, 2 * a.pud_size, backing=rng.choice(("anon", "shmem")), file_id="f")
    for _ in range(10):
        cpus = rng.randint(1, 9)
        ctx = MoveContext(t, Window(0, 1, set(), {}, {}), S.StepLog(), S.MOVE, cpus,
                          rng.randint(0, cpus - 1))
        gates = MoveGates.of(t, vma, vma, rng.random() < 0.5)
        for _ in range(40):
            entry = rng.choice((NORMAL_PMD, HPAGE_PMD, NORMAL_PUD, HPAGE_PUD))
            base = rng.randrange(1 << 20)
            src = base + rng.randrange(0, 3 << (a.pud_shift - a.pmd_shift))
            dst = rng.choice((src, base + rng.randrange(0, 1 << 12), rng.randrange(1 << 24)))
            assert ctx.entry_row(gates, entry, src, dst) == pgt_entry_row(
                t, gates, entry, src, dst, cpus=ctx.cpus, lazy_cpus=ctx.lazy_cpus)
