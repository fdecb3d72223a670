"""A small call's plan and layout: the seventh pass's shortcuts held to what they replace
(issue 13).

``syscall.copy_vma``'s early return (no neighbour touches the new range) to the merge
tests asked in full; ``mremap_to`` looking the source up again only when the FIXED unmap
changed the space to the lookup made every time; the walk's rows that carry allocations
(``move_ptes``, ``move_pgt_entry``: by position) to the keyword rows ``StepLog.add`` makes
and to the vectorised path; ``alloc_new_pud``'s test order to its definition;
``populate_each``'s small path (arguments by position, the first range's bounds checked
once) to the chained ``populate`` calls; ``_rows_to_ints`` on bytes to the little-endian
read; ``PageTables.window`` on a freshly populated small state to an eager copy's.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import random

import numpy as np
import pytest
from helpers import kernel_arch_grid
from test_fast_equivalence import assert_same_plan, build

from perfsim import resolve_target
from perfsim.mm.pagetable import _POPULATE_DEFAULTS, PageTables, _rows_to_ints, _words_to_int
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, PlanOptions, plan_mremap, reference, syscall
from perfsim.planner import steps as S
from perfsim.planner.pgtable_move import alloc_new_pud
from perfsim.profiles import arch_names, load_arch

M = 1 << 20
K = 1 << 10
TARGETS = kernel_arch_grid()
ALLOC_COLUMNS = ("alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte")


# ---------------------------------------------------------------- syscall.copy_vma
def _copy_vma_in_full(space, vma, new_addr, new_len, pgoff):
    """``copy_vma`` as the merge rules read: both neighbours tested, whether or not one
    touches the new range."""
    ps = space.arch.page_shift
    new = dataclasses.replace(vma, start=new_addr, end=new_addr + new_len, pgoff=pgoff)
    prev = space.find_vma(new_addr - 1) if new_addr else None
    nxt = space.find_vma(new_addr + new_len)
    merged, absorbed = new, []
    if prev is not None and prev.end == new_addr and syscall.is_mergeable_vma(prev, new) \
            and prev.pgoff + (prev.length >> ps) == new.pgoff:
        merged = dataclasses.replace(merged, start=prev.start, pgoff=prev.pgoff,
                                     anon_vma=prev.anon_vma or merged.anon_vma,
                                     anon_id=prev.anon_id if prev.anon_vma else merged.anon_id)
        absorbed.append(prev)
    if nxt is not None and nxt.start == new_addr + new_len and \
            syscall.is_mergeable_vma(nxt, new) and new.pgoff + (new.length >> ps) == nxt.pgoff:
        merged = dataclasses.replace(merged, end=nxt.end,
                                     anon_vma=merged.anon_vma or nxt.anon_vma,
                                     anon_id=merged.anon_id if merged.anon_vma else nxt.anon_id)
        absorbed.append(nxt)
    if not absorbed:
        return new, absorbed, False
    return merged, absorbed, merged.pgoff <= vma.pgoff


@pytest.mark.parametrize("seed", range(40))
def test_copy_vma_is_the_merge_rules_asked_in_full(seed):
    rng = random.Random(seed)
    t = resolve_target("6.18", rng.choice(arch_names()))
    page = t.arch.page_size
    src = (1 << 40) + rng.randrange(64) * page
    vma = Vma(src, src + rng.randrange(1, 16) * page, backing=rng.choice(["anon", "shmem"]),
              anon_vma=rng.random() < 0.7, pgoff=rng.randrange(1 << 20), file_id="f",
              anon_id="a")
    new_addr = (1 << 41) + rng.randrange(64) * page
    new_len = vma.length
    pgoff = rng.choice([vma.pgoff, new_addr // page, rng.randrange(1 << 20)])
    vmas = [vma]
    for side in ("prev", "next"):
        if rng.random() < 0.2:
            continue  # no neighbour on this side
        gap = rng.choice([0, 0, page, 3 * page])  # mostly touching
        n = rng.randrange(1, 8) * page
        start = new_addr - gap - n if side == "prev" else new_addr + new_len + gap
        off = (pgoff - n // page) if side == "prev" else pgoff + new_len // page
        vmas.append(Vma(start, start + n, backing=rng.choice([vma.backing, "anon", "file"]),
                        anon_vma=rng.random() < 0.5, pgoff=off + rng.choice([0, 0, 1]),
                        file_id="f", anon_id=rng.choice(["a", "b"]),
                        prot=rng.choice(["rw", "rw", "r"])))
    space = AddressSpace(tuple(vmas), PageTables.empty(t.arch))
    assert syscall.copy_vma(space, vma, new_addr, new_len, pgoff) == \
        _copy_vma_in_full(space, vma, new_addr, new_len, pgoff)


# ---------------------------------------------------------------- mremap_to's second lookup
def _fixed_move_cases():
    rng = random.Random(7)
    for i in range(36):
        kernel, arch = TARGETS[i % len(TARGETS)]
        t = resolve_target(kernel, arch)
        page = t.arch.page_size
        src = (1 << 40) + rng.randrange(1, 512) * page
        length = rng.randrange(1, 64) * page
        dst = (1 << 41) + rng.randrange(1, 512) * page
        vmas = [Vma(src, src + length, anon_id="src")]
        if rng.random() < 0.6:  # something mapped where the move lands (or next to it)
            lo = dst + rng.randrange(-8, 8) * page
            vmas.append(Vma(lo, lo + rng.randrange(1, 32) * page, anon_id="dst"))
        if rng.random() < 0.5:  # a neighbour of the source
            vmas.append(Vma(src + length, src + length + page, prot="r", anon_id="next"))
        pt = PageTables.empty(t.arch).populate_each(
            [(v.start, v.end, {"fraction": 0.5, "seed": i}) for v in vmas])
        space = AddressSpace(tuple(vmas), pt, cpus=rng.choice([1, 4]))
        yield t, space, MoveRequest(src, length, new_addr=dst, fixed=True)


@pytest.mark.parametrize("case", list(_fixed_move_cases()), ids=lambda c: "")
def test_a_fixed_move_looks_the_source_up_again_only_when_the_unmap_changed_the_space(
        case, monkeypatch):
    t, space, req = case
    got = plan_mremap(space, req, t)
    unmap = syscall._munmap

    def unmap_then_copy(vrm, *args, **kw):
        before = vrm.space
        unmap(vrm, *args, **kw)
        if vrm.space is before:  # a new space object: mremap_to then looks the VMA up
            vrm.space = vrm.space._copy()

    monkeypatch.setattr(syscall, "_munmap", unmap_then_copy)
    want = plan_mremap(space, req, t)
    assert (got.errno, got.result_addr, got.note) == (want.errno, want.result_addr, want.note)
    assert got.after.vmas == want.after.vmas
    assert_same_plan(got, want, [(req.old_addr, req.old_addr + req.old_len),
                                 (req.new_addr, req.new_addr + req.old_len)])


def test_an_unmap_that_finds_nothing_mapped_keeps_the_space_object():
    t = resolve_target("6.18", "x86_64")
    v = Vma(1 << 40, (1 << 40) + 16 * K)
    space = AddressSpace((v,), PageTables.empty(t.arch).populate(v.start, v.end))
    log = S.StepLog()
    assert syscall.do_munmap(t, space, 1 << 41, 64 * K, log, S.UNMAP_DST) is space
    assert not log.rows
    assert syscall.do_munmap(t, space, v.start, 4 * K, log, S.UNMAP_DST) is not space


# ---------------------------------------------------------------- the walk's counted rows
def test_the_walk_counts_only_allocation_columns():
    """``move_ptes`` and ``move_pgt_entry`` put a step's ``counts`` in the alloc_* columns by
    position: every key the walk counts must be one of them."""
    keys = set()
    for node in ast.walk(ast.parse(inspect.getsource(reference))):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id == "counts" and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if isinstance(node, ast.Tuple) and len(node.elts) == 2 and \
                isinstance(node.elts[0], ast.Constant) and \
                str(node.elts[0].value).startswith("alloc_"):
            keys.add(node.elts[0].value)
    assert keys and keys <= set(ALLOC_COLUMNS)


@pytest.mark.parametrize("subset", [c for n in range(5) for c in itertools.combinations(ALLOC_COLUMNS, n)])
def test_a_row_with_allocations_by_position_is_the_keyword_row(subset):
    counts = {k: i + 1 for i, k in enumerate(subset)}
    got = counts.get
    by_position, by_keyword = S.StepLog(), S.StepLog()
    by_position.add_row(S.MOVE, S.K_PTE_MOVE, 1 << 30, 1 << 31, 8 * K, 2, 2, 2,
                        got("alloc_p4d", 0), got("alloc_pud", 0), got("alloc_pmd", 0),
                        got("alloc_pte", 0), 0, None, ("anon_vma:a",), 2, 0)
    by_keyword.add(S.MOVE, S.K_PTE_MOVE, 1 << 30, 1 << 31, 8 * K, ptes=2, slots=2, batches=2,
                   rmap=("anon_vma:a",), ptl=2, **counts)
    assert by_position.rows == by_keyword.rows
    assert by_position.lock_names == by_keyword.lock_names


def _moves_that_allocate():
    rng = random.Random(11)
    for i in range(40):
        kernel, arch = TARGETS[(3 * i) % len(TARGETS)]
        a = load_arch(arch)
        page, pmd = a.page_size, a.pmd_size
        src = (5 << a.p4d_shift) + rng.randrange(0, 4) * pmd + rng.randrange(0, 16) * page
        # a destination in a PMD, PUD or top-level slot nothing maps yet: PTE, PMD, PUD
        # (and on 5 levels P4D) tables are allocated on the way
        dst = rng.choice([src + rng.randrange(4, 8) * pmd,
                          src + (1 << a.pud_shift) + rng.randrange(0, 8) * page,
                          src + (3 << a.p4d_shift) + rng.randrange(0, 8) * page])
        length = rng.choice([rng.randrange(1, 32) * page, pmd, 2 * pmd + 4 * page])
        yield dict(kernel=kernel, arch=arch, src=src, dst=dst, length=length,
                   populate=rng.choice(["full", "0.4", "every:3"]), seed=i,
                   thp=rng.random() < 0.3)


@pytest.mark.parametrize("case", list(_moves_that_allocate()), ids=lambda c: "")
def test_walked_moves_that_allocate_tables_equal_the_vectorised_ones(case):
    c = dict(case)
    src, dst, length = c.pop("src"), c.pop("dst"), c.pop("length")
    t, space = build(src, length, dst=dst, **c)
    req = MoveRequest(src, length, new_addr=dst, fixed=True)
    walked = plan_mremap(space, req, t, PlanOptions("reference"))
    vectorised = plan_mremap(space, req, t, PlanOptions("fast"))
    assert_same_plan(walked, vectorised, [(src, src + length), (dst, dst + length)])


# ---------------------------------------------------------------- alloc_new_pud
def _alloc_new_pud_definition(arch, pud_tables, addr):
    if arch.pud_folded:
        return 0, 0
    top = addr >> arch.p4d_shift
    if top in pud_tables:
        return 0, 0
    shift = arch.pgd_shift - arch.p4d_shift
    shares_pgd = any((t >> shift) == (top >> shift) for t in pud_tables)
    return (0 if arch.p4d_folded or shares_pgd else 1), 1


@pytest.mark.parametrize("arch_name", arch_names())
def test_alloc_new_pud_in_its_test_order_is_its_definition(arch_name):
    arch = load_arch(arch_name)
    rng = random.Random(arch_name)
    for _ in range(300):
        tops = {rng.randrange(0, 16) for _ in range(rng.randrange(0, 5))}
        addr = rng.randrange(0, 16) << arch.p4d_shift | rng.randrange(1 << arch.p4d_shift)
        assert alloc_new_pud(arch, tops, addr) == _alloc_new_pud_definition(arch, tops, addr)


# ---------------------------------------------------------------- population
def _arrays(pt):
    return (pt.pud_tables, pt.pud_idx.tolist(), pt.pud_kind.tolist(), pt.pmd_idx.tolist(),
            pt.pmd_kind.tolist(), pt.pmd_mask.tolist(), pt.masks.tolist(), pt.mask_pop.tolist(),
            pt.pud_idx.dtype, pt.pmd_mask.dtype, pt.masks.dtype, pt.mask_pop.dtype)


@pytest.mark.parametrize("seed", range(30))
def test_populate_each_by_position_is_the_chained_populate(seed):
    rng = random.Random(seed)
    arch = load_arch(rng.choice(arch_names()))
    page, pmd = arch.page_size, arch.pmd_size
    base = (7 << arch.p4d_shift) + rng.randrange(0, 4) * pmd
    ranges = []
    for _ in range(rng.randrange(1, 4)):
        lo = base + rng.randrange(0, 6 * arch.ptrs_per_pte) * page
        hi = lo + rng.choice([rng.randrange(1, 3 * arch.ptrs_per_pte) * page, pmd, 3 * pmd])
        kw = {}
        for name, values in (("every", [1, 2, 3]), ("fraction", [1.0, 0.5, 0.1]),
                             ("seed", [0, seed]), ("thp", [False, True]),
                             ("pud_leaf", [False])):
            if rng.random() < 0.5:
                kw[name] = rng.choice(values)
        ranges.append((lo, hi, kw))
    empty = PageTables.empty(arch)
    chained = arrays = empty
    for lo, hi, kw in ranges:
        chained = chained.populate(lo, hi, **kw)
        args = {**_POPULATE_DEFAULTS, **kw}
        arrays = arrays._populate_arrays(lo, hi, *args.values())  # the array path throughout
    got = _arrays(empty.populate_each(ranges))
    assert got == _arrays(chained)
    assert got == _arrays(arrays)


def test_rows_to_ints_on_bytes_reads_them_little_endian():
    rng = np.random.default_rng(3)
    for n, width in ((1, 64), (3, 64), (5, 8192 // 8)):
        rows = np.packbits(rng.random((n, width * 8)) < 0.3, axis=1, bitorder="little")
        assert _rows_to_ints(rows) == [int.from_bytes(r.tobytes(), "little") for r in rows]
        words = rows.view("<u8")
        assert _rows_to_ints(rows) == [_words_to_int(w) for w in words]
        assert _rows_to_ints(rows[:, ::-1][:, ::-1]) == _rows_to_ints(rows)  # a strided view


@pytest.mark.parametrize("seed", range(12))
def test_a_fresh_small_states_window_is_an_eager_copys(seed):
    rng = random.Random(seed)
    arch = load_arch(rng.choice(arch_names()))
    page = arch.page_size
    base = (3 << arch.p4d_shift) + (1 << arch.pud_shift) - 2 * arch.pmd_size
    ranges = [(lo, lo + rng.randrange(1, 2 * arch.ptrs_per_pte) * page,
               rng.choice([{}, {"fraction": 0.4, "seed": seed}, {"every": 3}]))
              for lo in sorted(base + rng.randrange(0, 4 * arch.ptrs_per_pte) * page
                               for _ in range(rng.randrange(1, 4)))]
    for s_off, e_off in ((0, 4 * arch.pmd_size), (arch.pmd_size, 2 * arch.pmd_size)):
        small = PageTables.empty(arch).populate_each(ranges)  # fresh: no row read yet
        eager = PageTables(arch, small.pud_tables, small.pud_idx, small.pud_kind,
                           small.pmd_idx, small.pmd_kind, small.pmd_mask, small.masks,
                           small.mask_pop)
        got, want = small.window(base + s_off, base + e_off), eager.window(base + s_off,
                                                                             base + e_off)
        assert (got.lo, got.hi, got.pud_tables, got.pud, got.pmd) == \
            (want.lo, want.hi, want.pud_tables, want.pud, want.pmd)
        assert small.replace_window(got) is small


def test_the_walked_moves_above_allocate_at_every_level_they_can():
    """The cases above put rows with allocations through the walk: PTE and PMD tables on
    every arch, PUD tables where the PUD level is not folded."""
    seen = set()
    for case in _moves_that_allocate():
        c = dict(case)
        src, dst, length = c.pop("src"), c.pop("dst"), c.pop("length")
        t, space = build(src, length, dst=dst, **c)
        steps = plan_mremap(space, MoveRequest(src, length, new_addr=dst, fixed=True), t,
                            PlanOptions("reference")).steps
        seen |= {k for k in ALLOC_COLUMNS[1:] if steps.col(k).sum()}
    assert seen == {"alloc_pud", "alloc_pmd", "alloc_pte"}


@pytest.mark.parametrize("seed", [0, 1, 5, 2**31 + 7, 2**63 + 11, 2**64 - 1])
def test_drawn_rows_come_from_default_rng(seed):
    """``_drawn_rows`` makes ``default_rng(seed)``'s generator itself (a PCG64 seeded with
    ``seed``): the same doubles, whether every slot is drawn or some are skipped."""
    from perfsim.mm.pagetable import _drawn_rows

    want = np.random.default_rng(seed).random((5, 512)) < 0.3
    assert np.array_equal(_drawn_rows(seed, 5, [0, 1, 2, 3, 4], 512, 0.3), want)
    assert np.array_equal(_drawn_rows(seed, 5, [1, 3], 512, 0.3), want[[1, 3]])
