"""The walked move's per-extent steps read inline, held to what they replace (issue 13,
eighth pass).

``reference.move_page_tables`` reads ``get_old_pud``, ``alloc_new_pmd`` and ``pte_alloc``
inline (calling ``pmd_alloc`` / ``pte_alloc`` of ``pgtable_move``, the context making the
allocations: ``MoveContext.alloc_pmd_table`` / ``alloc_pte_table``), and ``move_ptes`` asks
``mremap_folio_pte_batch`` only where the move batches (without batching it answers one
batch per present PTE). Held here: the context's methods to the rules they apply, the
shortcut to ``mremap_folio_pte_batch``'s own answer, and walked plans (with and without
batching, on every shipped kernel and arch, with injected allocation failures at every
allocation) to the vectorised driver's plans of the same moves.
"""

from __future__ import annotations

import random

import pytest
from helpers import kernel_arch_grid
from test_fast_equivalence import assert_same_plan, build

from perfsim import resolve_target
from perfsim.mm.pagetable import PMD_NONE, PMD_TABLE, PUD_NONE, PUD_TABLE, Window
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.batch import NO_BATCHING, PteBatching, mremap_folio_pte_batch
from perfsim.planner.options import PlanOptions
from perfsim.planner.pgtable_move import pmd_alloc, pte_alloc
from perfsim.planner.reference import MoveContext, move_constants

TARGETS = kernel_arch_grid()


def test_without_batching_each_present_pte_is_one_batch():
    """What ``move_ptes`` uses without batching (``present``, the extent's present PTEs) is
    ``mremap_folio_pte_batch``'s answer for a gate that does not batch."""
    rng = random.Random("nobatch")
    gates = [NO_BATCHING, PteBatching(1, 0, 0, 1 << 20), PteBatching(1, 16, 512, 4096)]
    for _ in range(3000):
        ptrs = rng.choice((512, 2048, 8192))
        mask = rng.getrandbits(ptrs) & rng.choice((-1, rng.getrandbits(ptrs)))
        lo = rng.randrange(ptrs)
        n = rng.randint(1, ptrs - lo)
        present = ((mask >> lo) & ((1 << n) - 1)).bit_count()
        for g in gates:
            assert not g.batches
            assert mremap_folio_pte_batch(g, mask, lo, n, (0, ptrs)) == present


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_the_allocation_steps_apply_pmd_alloc_and_pte_alloc(kernel, arch):
    """``MoveContext.alloc_new_pmd`` and ``pte_alloc`` allocate exactly where ``pmd_alloc``
    and ``pte_alloc`` say, through ``alloc_pmd_table`` / ``alloc_pte_table``: one
    allocation each, counted, the entry made; False at the injected failure, nothing
    made then."""
    t = resolve_target(kernel, arch)
    a = t.arch
    rng = random.Random(f"alloc{kernel}{arch}")
    for _ in range(40):
        tops = {0} if rng.random() < 0.8 else set()
        pud = {s: PUD_TABLE for s in range(4) if rng.random() < 0.5}
        pmd = {s: (PMD_TABLE, 0) for s in range(2048) if rng.random() < 0.3}
        win = Window(0, 1 << 20, set(tops), dict(pud), dict(pmd))
        fail = rng.choice((None, 1, 2, 3, 5))
        ctx = MoveContext(t, win, S.StepLog(), fail_alloc_at=fail)
        for _ in range(12):
            addr = rng.randrange(0, 4 * a.pud_size, a.page_size)
            before = ctx.allocations
            counts: dict = {}
            if rng.random() < 0.5:
                slot = addr >> a.pmd_shift
                need = pte_alloc(win.pmd.get(slot, (PMD_NONE, 0))[0])
                ok = ctx.pte_alloc(addr, counts)
                hit = need and before + 1 == fail
                assert ok is not hit
                assert ctx.allocations == before + need
                if need and not hit:
                    assert counts == {"alloc_pte": 1} and win.pmd[slot] == (PMD_TABLE, 0)
                else:
                    assert counts == {}
            else:
                slot = addr >> a.pud_shift
                had_pud_table = ctx._has_pud_table.copy()
                ok = ctx.alloc_new_pmd(addr, counts)
                if not ok or "alloc_p4d" in counts or "alloc_pud" in counts:
                    continue  # (alloc_new_pud's part: held in test_t13c_small_walk)
                need = (addr >> a.p4d_shift) in ctx._has_pud_table and \
                    counts.get("alloc_pmd", 0) == 1
                assert ctx.allocations == before + need
                if need:
                    assert win.pud[slot] == PUD_TABLE
                    assert pmd_alloc(pud.get(slot, PUD_NONE)) or \
                        (addr >> a.p4d_shift) not in had_pud_table
            if fail is not None and ctx.allocations >= fail:
                break


_ALLOC = ("alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte")


def _move_rows(plan) -> dict:
    """The MOVE phase's rows of ``plan``, as lists per column."""
    st = plan.steps
    rows = st.phase == S.MOVE
    return {c: st.col(c)[rows].tolist() for c in S.ADDR_COLUMNS + S.INT_COLUMNS}


def _random_ends(rng, a):
    """A seeded source and destination: the source in the lower half of the first PUD
    slots, the destination above it, at the source's offset within a PMD or another, and
    half the time under another top-level entry (no PUD table there yet)."""
    pmd, pg = a.pmd_size, a.page_size
    top = min(a.user_va_top >> a.pud_shift, 128)  # PUD slots below TASK_SIZE (some)
    src = (rng.randrange(1, top // 2) << a.pud_shift) + rng.randrange(0, 8) * pmd \
        + rng.randrange(0, a.ptrs_per_pte) * pg
    dst = (rng.randrange(top // 2, top - 1) << a.pud_shift) + rng.randrange(0, 8) * pmd \
        + rng.choice((src % pmd, rng.randrange(0, a.ptrs_per_pte) * pg))
    if rng.random() < 0.5 and dst + (2 << a.p4d_shift) < a.user_va_top:
        dst += 1 << a.p4d_shift
    return src, dst


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_walked_moves_match_the_vectorised_driver(kernel, arch):
    """Seeded moves walked (``PlanOptions("reference")``) and planned by the vectorised
    driver (``PlanOptions("fast")``): the same plan, field for field, for sparse, full and
    strided populations, with large folios (batched where the target batches) or not."""
    t0 = resolve_target(kernel, arch)
    a = t0.arch
    pmd, pg = a.pmd_size, a.page_size
    rng = random.Random(f"walk{kernel}{arch}")
    for _ in range(6):
        src, dst = _random_ends(rng, a)
        length = rng.choice((7 * pg, pmd, 2 * pmd + 5 * pg, 3 * pmd + (src % pmd or pg)))
        folio = rng.choice((0, 16 * pg, 32 * pg, 64 * 1024))
        t, sp = build(src, length, kernel=kernel, arch=arch, dst=dst,
                      populate=rng.choice(("full", "0.3", "every:5")), seed=rng.randrange(99),
                      folio_size=folio if folio >= pg else 0, guard_below_dst=rng.random() < 0.3)
        req = MoveRequest(src, length, new_addr=dst)
        r = plan_mremap(sp, req, t, PlanOptions("reference"))
        f = plan_mremap(sp, req, t, PlanOptions("fast"))
        assert_same_plan(r, f, [(src, src + length), (dst, dst + length)])


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_a_walk_stops_at_the_failed_allocation(kernel, arch):
    """With the k-th page-table allocation failing (every k the move makes, and one past),
    the walk's rows up to the step that asked for it are the unfailed walk's, then one
    ``alloc_fail`` row carrying that step's allocations before the failure (k - 1 in
    all), and the move fails with ENOMEM; one past the last allocation changes nothing."""
    t0 = resolve_target(kernel, arch)
    a = t0.arch
    pmd, pg = a.pmd_size, a.page_size
    rng = random.Random(f"fail{kernel}{arch}")
    failed = 0  # moves that allocate (so that fail)
    for _ in range(4):
        src, dst = _random_ends(rng, a)
        length = rng.choice((7 * pg, pmd, 2 * pmd + 5 * pg, 4 * pmd))
        t, sp = build(src, length, kernel=kernel, arch=arch, dst=dst,
                      populate=rng.choice(("full", "0.3")), seed=rng.randrange(99),
                      thp=rng.random() < 0.3)
        opts = PlanOptions("reference")
        base = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t, opts)
        want = _move_rows(base)
        per_row = [sum(x) for x in zip(*(want[c] for c in _ALLOC))]
        need = sum(per_row)
        failed += need > 0
        for k in range(1, need + 2):
            p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst, fail_alloc_at=k), t,
                            opts)
            got = _move_rows(p)
            if k > need:
                assert p.errno is None and got == want
                continue
            assert p.errno == "ENOMEM"
            j, made = 0, 0  # the row of the step that asked for the k-th allocation
            while made + per_row[j] < k:
                made += per_row[j]
                j += 1
            assert {c: v[:j] for c, v in got.items()} == {c: v[:j] for c, v in want.items()}
            assert len(got["kind"]) == j + 1 and got["kind"][j] == S.K_ALLOC_FAIL
            assert sum(got[c][j] for c in _ALLOC) == k - 1 - made
    assert failed >= 2


@pytest.mark.parametrize("kernel,arch", TARGETS)
def test_a_moves_constants_are_its_targets(kernel, arch):
    """``move_constants`` (what every ``MoveContext`` reads, once per target) is the arch's
    geometry and the target's ``have_move_pud`` / ``have_move_pmd``, for the target and for
    variants without NORMAL_PUD/PMD moves (each a target of its own)."""
    t = resolve_target(kernel, arch)
    variants = [t] + [t.with_changes(**{k: False}) for k in
                      ("arch.have_move_pud", "arch.have_move_pmd", "kernel.supports_move_pud",
                       "kernel.supports_move_pmd")]
    for v in variants + variants:  # (made, then remembered)
        a = v.arch
        got = move_constants(v)
        assert got == (a.page_shift, a.pmd_shift, a.pud_shift, a.p4d_shift, a.pud_folded,
                       a.ptrs_per_pte, a.pmd_size, a.pud_size, v.have_move_pud,
                       v.have_move_pmd)
        ctx = MoveContext(v, Window(0, 1, set(), {}, {}), S.StepLog())
        assert (ctx.have_move_pud, ctx.have_move_pmd) == (v.have_move_pud, v.have_move_pmd)
    assert any(not v.have_move_pud for v in variants) and any(not v.have_move_pmd
                                                             for v in variants)
