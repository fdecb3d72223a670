"""The syscall layer's shortcuts (issue 13, eighth pass) held to the definitions they replace,
on seeded random layouts: the VMA span an unmap or a lookup reads, the neighbours a new VMA
touches, the floor and ceiling an unmap frees page tables between, the closed-form bounds."""

from __future__ import annotations

import random

import pytest

from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner import syscall
from perfsim.planner.fast_closed import Progressions
from perfsim.planner.tables import CallTables
from perfsim.profiles import load_arch, resolve_target

ARCH = load_arch("x86_64")
PAGE = 4096
TARGET = resolve_target("6.18", "x86_64")


def _space(rng: random.Random) -> AddressSpace:
    vmas, at = [], rng.randrange(0, 64) * PAGE
    for _ in range(rng.randrange(0, 9)):
        length = rng.randrange(1, 32) * PAGE
        vmas.append(Vma(at, at + length, name=f"v{at}", pgoff=rng.randrange(100),
                        backing=rng.choice(["anon", "anon", "shmem", "file"]),
                        shared=rng.random() < 0.3))
        at += length + rng.choice([0, 0, PAGE, 5 * PAGE])
    return AddressSpace(vmas, PageTables.empty(ARCH))


def _ranges(rng: random.Random, n: int):
    for _ in range(n):
        space = _space(rng)
        start = rng.randrange(0, 200) * PAGE
        yield space, start, start + rng.randrange(-2, 80) * PAGE


def test_intersecting_span_holds_exactly_the_vmas_that_intersect_the_range():
    rng = random.Random(81)
    for space, start, end in _ranges(rng, 3000):
        i, j = space.intersecting_span(start, end)
        want = [v for v in space.vmas if v.start < end and v.end > start] if start < end else []
        assert list(space.vmas[i:j]) == want
        assert space.intersecting(start, end) == want
        assert 0 <= i <= j <= len(space.vmas)


def test_touching_is_the_vmas_ending_at_start_and_starting_at_end():
    rng = random.Random(82)
    for space, start, end in _ranges(rng, 3000):
        if end <= start:
            continue
        prev, nxt = space.touching(start, end)
        # the definition copy_vma read before: the VMA containing the address below the
        # range if it ends at the range's start; the one containing the end if it starts there
        p = space.find_vma(start - 1) if start else None
        n = space.find_vma(end)
        assert prev == (p if p is not None and p.end == start else None)
        assert nxt == (n if n is not None and n.start == end else None)


def _prev_vma(vmas, addr):
    return max((v for v in vmas if v.end <= addr), key=lambda v: v.start, default=None)


def _next_vma(vmas, addr):
    return min((v for v in vmas if v.start >= addr), key=lambda v: v.start, default=None)


def test_do_munmap_frees_between_the_neighbours_left_and_keeps_the_rest(monkeypatch):
    """``free_pgtables``' floor and ceiling: the end of the VMA before the range and the
    start of the one after, in the space left once the range is carved out (0 if none)."""
    seen = []
    monkeypatch.setattr(syscall, "unmap_region", lambda *a, **k: seen.append(a[2]))
    rng = random.Random(83)
    hits = 0
    for space, start, end in _ranges(rng, 2000):
        if end <= start:
            continue
        seen.clear()
        rest = syscall._do_munmap(TARGET, space, CallTables(space.pt), start, end - start,
                                  S.StepLog(), S.UNMAP_SRC, syscall.DEFAULT)
        hit = [v for v in space.vmas if v.start < end and v.end > start]
        if not hit:
            assert rest is space and not seen
            continue
        hits += 1
        left = [v for v in rest.vmas if v.start < end and v.end > start]
        assert not left
        assert all(v in rest.vmas for v in space.vmas if v not in hit)
        (region,) = seen
        prev, nxt = _prev_vma(rest.vmas, start), _next_vma(rest.vmas, end)
        assert region.floor == (prev.end if prev else 0)
        assert region.ceiling == (nxt.start if nxt else 0)
        assert region.span == (min(start, hit[0].start), max(end, hit[-1].end))
        rest.with_vmas(rest.vmas)  # sorted and apart
    assert hits > 800


@pytest.mark.parametrize("seed", range(4))
def test_progressions_ends_are_the_bounds_at_both_ends(seed):
    rng = random.Random(seed)
    pmd = ARCH.pmd_size
    for _ in range(4000):
        o = rng.randrange(1, 1 << 20) * PAGE
        d = rng.randrange(1, 1 << 20) * PAGE
        length = rng.randrange(1, 3000) * PAGE * rng.choice([1, 8, 64])
        ext = Progressions.of(o, d, o + length, pmd)
        n = ext.n_inner
        if n < 1:
            continue
        hi, lo = rng.randrange(0, n + 1), rng.randrange(1, n + 2)
        assert ext.ends(hi, lo) == (ext.bounds(0, hi), ext.bounds(lo, n + 1))


def test_route_is_the_walk_and_closed_form_limits_of_each_implementation():
    """``PlanOptions.route``: the walk up to ``WALK_MAX_PMD_SLOTS`` slots spanned (an empty
    range too), the walk unless the closed form plans it up to
    ``WALK_UNLESS_CLOSED_MAX_PMD_SLOTS``, the arrays beyond; ``reference`` always walks,
    ``fast`` never does; ``walks`` and ``walks_unless_closed`` answer from it."""
    from perfsim.planner.options import (
        ARRAYS,
        WALK,
        WALK_MAX_PMD_SLOTS,
        WALK_UNLESS_CLOSED,
        WALK_UNLESS_CLOSED_MAX_PMD_SLOTS,
        PlanOptions,
    )

    rng = random.Random(84)
    shift = ARCH.pmd_shift
    for _ in range(5000):
        start = rng.randrange(0, 1 << 40) * PAGE
        end = start + rng.randrange(-4, 200) * rng.choice([PAGE, 1 << shift, 1 << 30])
        spanned = ((end - 1) >> shift) - (start >> shift) if end > start else 0
        auto = (WALK if end <= start or spanned < WALK_MAX_PMD_SLOTS
                else WALK_UNLESS_CLOSED if spanned < WALK_UNLESS_CLOSED_MAX_PMD_SLOTS else ARRAYS)
        for impl, want in (("auto", auto), ("reference", WALK), ("fast", ARRAYS)):
            o = PlanOptions(impl)
            assert o.route(shift, start, end) == want
            assert o.walks(shift, start, end) == (want == WALK)
            assert o.walks_unless_closed(shift, start, end) == (impl == "auto" and want != ARRAYS)


def test_an_anonymous_vma_never_forces_a_flush():
    """``zap_spans`` asks ``vma_zap_forces_flush`` only of VMAs that are not anonymous:
    that holds because the rule never forces for an anonymous page."""
    from perfsim.planner.unmap import zap_forces_flush

    for shared in (False, True):
        for dirty in (False, True):
            assert not zap_forces_flush("anon", shared, dirty)


def test_zap_spans_is_the_forcing_and_not_anonymous_spans():
    from perfsim.planner.unmap import forcing_spans, not_anon_spans, zap_spans

    rng = random.Random(85)
    for space, start, end in _ranges(rng, 2000):
        for v in space.vmas:  # (prot decides the dirty PTEs: some VMAs read-only)
            if rng.random() < 0.3:
                object.__setattr__(v, "prot", "r")
        vmas = space.vmas
        assert zap_spans(vmas, start, end) == (forcing_spans(vmas, start, end),
                                               not_anon_spans(vmas, start, end))


def test_table_flush_groups_of_one_run_is_the_definition_on_slices():
    from perfsim.planner.gather import table_flush_groups

    rng = random.Random(86)
    for _ in range(2000):
        n = rng.randrange(1, 12)
        addrs = [rng.randrange(0, 1 << 30) * PAGE for _ in range(n)]
        levels = [rng.randrange(0, 3) for _ in range(n)]
        cuts = sorted({0, *rng.sample(range(n), rng.randrange(0, n))})
        ends = [*cuts[1:], n]
        want = [(min(addrs[a:b]), max(addrs[a:b]) + PAGE, min(levels[a:b]), b - a)
                for a, b in zip(cuts, ends)]
        assert table_flush_groups(addrs, levels, cuts, PAGE) == want
        assert table_flush_groups(addrs, levels, [0], PAGE) == [
            (min(addrs), max(addrs) + PAGE, min(levels), n)]


class _Part:
    def __init__(self, n, lock_sets):
        self._len, self.lock_sets = n, lock_sets


def _parts_definition(parts):
    """What ``Steps(parts=...)`` keeps, its length and its lock sets, as the loop before."""
    kept, total, first, one = [], 0, None, True
    for p in parts:
        if p._len:
            kept.append(p)
            total += p._len
            if first is None:
                first = p.lock_sets
            elif one and p.lock_sets != first:
                one = False
    if one and (first is None or len(first) <= 1):
        return kept, total, first or ()
    return kept, total, tuple(sorted({n for p in kept for n in p.lock_sets}))


def test_steps_of_parts_keep_the_parts_with_rows_and_their_lock_sets():
    rng = random.Random(87)
    names = [(), ("anon_vma:a",), ("i_mmap:f", "anon_vma:a"), ("anon_vma:b",)]
    for _ in range(3000):
        parts = []
        for _ in range(rng.randrange(0, 7)):
            sets = tuple(rng.sample(names, rng.randrange(0, 3)))
            parts.append(_Part(rng.choice([0, 0, 1, 5, 200]), sets))
        kept, total, lock_sets = _parts_definition(parts)
        got = S.Steps(parts=parts)
        assert got._parts == kept and len(got) == total and got.lock_sets == lock_sets
