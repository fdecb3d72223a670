"""``AddressSpace.with_span_replaced`` (of an unmap's carve) and ``with_vma_added``
(issue 13) give the space ``with_vmas`` gives, on seeded random layouts."""

from __future__ import annotations

import random

import pytest

from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.syscall import _carved
from perfsim.profiles import load_arch

ARCH = load_arch("x86_64")
PAGE = 4096


def _space(rng: random.Random) -> AddressSpace:
    vmas, at = [], rng.randrange(1, 64) * PAGE
    for _ in range(rng.randrange(0, 9)):
        length = rng.randrange(1, 32) * PAGE
        vmas.append(Vma(at, at + length, name=f"v{at}", pgoff=rng.randrange(100)))
        at += length + rng.choice([0, 0, PAGE, 5 * PAGE])
    rng.shuffle(vmas)
    return AddressSpace(vmas, PageTables.empty(ARCH), cpus=rng.randrange(1, 5))


def _same(a: AddressSpace, b: AddressSpace) -> None:
    assert a == b
    assert a.vmas == b.vmas and a._starts == b._starts
    assert a.__dict__ == b.__dict__


def _outcome(f, *args, **kwargs):
    try:
        return f(*args, **kwargs), None
    except ValueError as e:
        return None, str(e)


def _carve(vmas, start: int, end: int, ps: int) -> list[Vma]:
    """The definition: ``[start, end)`` removed from a VMA list, VMAs that straddle it split."""
    out = []
    for v in vmas:
        if v.end <= start or v.start >= end:
            out.append(v)
            continue
        if v.start < start:
            out.append(v.with_range(v.start, start))
        if v.end > end:
            out.append(v.with_range(end, v.end, v.pgoff + ((end - v.start) >> ps)))
    return out


def test_with_span_replaced_of_the_carved_pieces_is_with_vmas_of_the_carve():
    rng = random.Random(21)
    hits = 0
    for _ in range(600):
        space = _space(rng)
        start = rng.randrange(0, 200) * PAGE
        end = start + rng.randrange(1, 80) * PAGE
        i, j = space.intersecting_span(start, end)
        carved = _carve(list(space.vmas), start, end, ARCH.page_shift)
        if i == j:
            assert carved == list(space.vmas)
            continue
        hits += 1
        left = _carved(space.vmas[i:j], start, end, ARCH.page_shift)
        _same(space.with_span_replaced(i, j, left), space.with_vmas(carved))
    assert hits > 200
def test_with_vma_added_is_with_vmas_of_the_list_and_the_vma():
    rng = random.Random(22)
    for _ in range(1500):
        space = _space(rng)
        start = rng.randrange(0, 400) * PAGE
        vma = Vma(start, start + rng.randrange(1, 40) * PAGE, name="new")
        without = rng.sample(space.vmas, rng.randrange(0, len(space.vmas) + 1))
        ours, our_error = _outcome(space.with_vma_added, vma, without=without)
        theirs, their_error = _outcome(
            space.with_vmas, [v for v in space.vmas if v not in without] + [vma])
        assert our_error == their_error  # the same first overlapping pair is named
        if theirs is not None:
            _same(ours, theirs)


def test_with_vma_added_refuses_an_overlap():
    space = AddressSpace([Vma(0x10000, 0x20000)], PageTables.empty(ARCH))
    with pytest.raises(ValueError, match="VMAs overlap"):
        space.with_vma_added(Vma(0x1f000, 0x30000))
    with pytest.raises(ValueError, match="VMAs overlap"):
        space.with_vma_added(Vma(0x8000, 0x11000))
    assert space.with_vma_added(Vma(0x1f000, 0x30000), without=space.vmas).vmas == (
        Vma(0x1f000, 0x30000),)


def test_vma_with_range_is_the_replaced_vma():
    import dataclasses

    rng = random.Random(23)
    for _ in range(500):
        fields = dict(backing=rng.choice(["anon", "file", "shmem"]), thp=rng.random() < .5,
                      uffd_wp=rng.random() < .5, anon_vma=rng.random() < .5,
                      pgoff=rng.randrange(1000), file_id=rng.choice([None, "f"]),
                      anon_id=rng.choice([None, "a"]), prot=rng.choice(["rw", "r"]),
                      hugepage_size=rng.choice([0, 2 << 20]), folio_size=rng.choice([0, 65536]),
                      stack=rng.random() < .5, name=rng.choice(["", "x"]),
                      uffd_mode=rng.choice(["", "wp"]), shared=rng.random() < .5,
                      written_back=rng.random() < .5, dirty=rng.random() < .5,
                      shmem_huge=rng.random() < .5, nohugepage=rng.random() < .5,
                      noreserve=rng.random() < .5, account=rng.choice([None, True, False]))
        # every field is varied (a new Vma field fails here until with_range keeps it)
        assert {f.name for f in dataclasses.fields(Vma)} == {"start", "end", *fields}
        v = Vma(PAGE, PAGE * rng.randrange(2, 99), **fields)
        start = rng.randrange(0, 1 << 20) * PAGE
        end = start + rng.randrange(1, 64) * PAGE
        pgoff = rng.choice([None, rng.randrange(1 << 20)])
        want = dataclasses.replace(v, start=start, end=end) if pgoff is None else \
            dataclasses.replace(v, start=start, end=end, pgoff=pgoff)
        assert v.with_range(start, end, pgoff) == want
    with pytest.raises(ValueError):
        Vma(0, PAGE).with_range(PAGE, PAGE)
