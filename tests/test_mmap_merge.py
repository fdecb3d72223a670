"""mmap's merge of a new mapping into the neighbours it continues (perfsim.planner.syscall.
mmap_region, the kernel's ``__mmap_region`` → ``vma_merge_new_range``), as trace replay
(StatefulPlanner) applies it, held to the running kernel by scripts/mmap_merge.c."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner.syscall import anon_vma_prepare, mmap_region
from perfsim.profiles import resolve_target
from perfsim.workload.generate import Entry, StatefulPlanner

P = 4096
MiB = 1 << 20
BASE = 0x7F0000000000
T = resolve_target("6.18", "x86_64")
ROOT = Path(__file__).resolve().parents[1]


def _anon(i, n=4, **kw):
    """An anonymous VMA of ``n`` pages at page ``i`` from BASE (anon ``pgoff`` is the
    address in pages, as mmap gives a private anonymous mapping)."""
    lo = BASE + i * P
    kw.setdefault("anon_vma", False)
    return Vma(lo, lo + n * P, pgoff=lo // P, name=f"v{i}", **kw)


def _space(*vmas):
    return AddressSpace(tuple(vmas), PageTables.empty(T.arch))


def test_a_new_mapping_joins_the_vma_it_continues_on_either_side_or_both():
    left = mmap_region(_space(_anon(0)), _anon(4))
    assert [(v.start, v.end) for v in left.vmas] == [(BASE, BASE + 8 * P)]
    right = mmap_region(_space(_anon(4)), _anon(0))
    (r,) = right.vmas
    assert (r.start, r.end, r.pgoff, r.name) == (BASE, BASE + 8 * P, BASE // P, "v4")
    both = mmap_region(_space(_anon(0), _anon(8)), _anon(4))
    assert [(v.start, v.end) for v in both.vmas] == [(BASE, BASE + 12 * P)]


def test_two_anon_vmas_keep_the_right_neighbour_out():
    """Both neighbours written (each its own anon_vma): the new range joins the one before
    only (can_vma_merge_right asks the two anon_vmas to be compatible)."""
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), _anon(8, anon_vma=True, anon_id="b"))
    out = mmap_region(sp, _anon(4))
    assert [(v.start, v.end, v.anon_id) for v in out.vmas] == [
        (BASE, BASE + 8 * P, "a"), (BASE + 8 * P, BASE + 12 * P, "b")]
    # one written neighbour: all three are one, with its anon_vma
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), _anon(8))
    (v,) = mmap_region(sp, _anon(4)).vmas
    assert v.anon_vma and v.anon_id == "a" and v.end == BASE + 12 * P


@pytest.mark.parametrize("second", [
    dict(prot="r"), dict(noreserve=True), dict(thp=True), dict(backing="shmem", file_id="s2"),
])
def test_a_neighbour_with_other_flags_or_file_stays_apart(second):
    sp = _space(_anon(0, **({"backing": "shmem", "file_id": "s1"}
                            if second.get("backing") else {})))
    out = mmap_region(sp, _anon(4, **second))
    assert len(out.vmas) == 2


def test_a_file_mapping_joins_only_where_its_offset_continues():
    def f(i, off, **kw):
        return Vma(BASE + i * P, BASE + (i + 4) * P, backing="file", file_id="f", pgoff=off,
                   anon_vma=False, shared=False, prot="r", **kw)

    assert len(mmap_region(_space(f(0, 0)), f(4, 4)).vmas) == 1
    assert len(mmap_region(_space(f(0, 0)), f(4, 0)).vmas) == 2
    assert len(mmap_region(_space(f(0, 0)), f(4, 4).replaced(file_id="g")).vmas) == 2


def test_hugetlb_never_merges():
    def h(i):
        lo = BASE + i * 2 * MiB
        return Vma(lo, lo + 2 * MiB, backing="hugetlb", file_id="h", pgoff=i * 512,
                   hugepage_size=2 * MiB, anon_vma=False)

    assert len(mmap_region(_space(h(0)), h(1)).vmas) == 2


def test_an_overlap_is_still_refused():
    with pytest.raises(ValueError):
        mmap_region(_space(_anon(0, n=8)), _anon(4))


def test_a_replayed_program_moves_two_mmaps_that_merged_as_one():
    """A trace maps 4 pages, then 4 more right after them, then moves all 8: the kernel's
    mremap finds one VMA (the second mmap merged into the first), so the replay does."""
    entries = [Entry("mmap", BASE, 4 * P), Entry("mmap", BASE + 4 * P, 4 * P),
               Entry("mremap", BASE, 8 * P, new_len=8 * P, new_addr=BASE + 512 * P,
                     fixed=True)]
    planner = StatefulPlanner(_space(), entries, T, seed=1)
    (plan,) = list(planner)
    assert plan.errno is None and len(planner.before.vmas) == 1
    assert plan.move.ptes_moved == 8 and plan.move.move_ptes_calls == 1  # (one VMA, one walk)


def _ids(space):
    return [(v.start, v.anon_vma, v.anon_id) for v in space.vmas]


def test_a_first_write_shares_the_next_neighbours_anon_vma_before_the_previous_ones():
    """find_mergeable_anon_vma asks the VMA after first, then the one before; prot alone
    may differ (anon_vma_compatible)."""
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), _anon(4, prot="rwx"),
                _anon(8, anon_vma=True, anon_id="b"))
    out = anon_vma_prepare(sp, sp.vmas[1])
    assert _ids(out)[1] == (BASE + 4 * P, True, "b")
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), _anon(4, prot="rwx"))
    assert _ids(anon_vma_prepare(sp, sp.vmas[1]))[1] == (BASE + 4 * P, True, "a")


@pytest.mark.parametrize("why, vma", [
    ("other flags", _anon(4, noreserve=True)),
    ("offsets that do not follow", _anon(4).replaced(pgoff=0)),
    ("a gap between them", _anon(5)),
])
def test_a_first_write_gets_its_own_anon_vma_next_to_one_it_may_not_share(why, vma):
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), vma)
    (_, has, anon_id) = _ids(anon_vma_prepare(sp, sp.vmas[1]))[1]
    assert has and anon_id != "a", why


def test_a_neighbour_without_an_anon_vma_lends_none_and_one_already_given_stays():
    sp = _space(_anon(0), _anon(4, prot="rwx"))
    (_, has, anon_id) = _ids(anon_vma_prepare(sp, sp.vmas[1]))[1]
    assert has and anon_id not in (None, "", sp.vmas[0].anon_id)
    sp = _space(_anon(0, anon_vma=True, anon_id="a"), _anon(4, anon_vma=True, anon_id="c"))
    assert anon_vma_prepare(sp, sp.vmas[1]) is sp


def test_a_fragment_written_apart_from_its_written_sibling_gets_an_anon_vma_of_its_own():
    """Two pieces of one mapping (named alike) with a hole between them: the second one
    written does not take the first's anon_vma by its name."""
    sp = _space(_anon(0, anon_vma=True, anon_id="m"), _anon(8, anon_id="m"))
    (_, has, anon_id) = _ids(anon_vma_prepare(sp, sp.vmas[1]))[1]
    assert has and anon_id != "m"


# ------------------------------------------------------- scripts/mmap_merge.c, replayed
SLOT = 16 * P


def _c_cases():
    """scripts/mmap_merge.c's cases as trace entries: ``{case: (entries, lo, hi)}``, the
    pages ``[lo, hi)`` it counts VMAs over; each in its own slot of a PROT_NONE reservation
    starting at BASE, two pages into it."""
    def anon(at, prot="rw", populate=0.0, **kw):
        return Entry("mmap", at, 4 * P, prot=prot, populate=populate, **kw)

    def file(at, off, shared=False, prot="r"):
        return Entry("mmap", at, 4 * P, backing="file", file="tmp", shared=shared,
                     prot=prot, offset=off, populate=0.0)

    def shm(at):
        return Entry("mmap", at, 4 * P, backing="shmem", shared=True, populate=0.0)

    def prot(at, n, to="rw"):
        return Entry("mprotect", at, n * P, prot=to)

    # {case: (its entries at slot start s, the pages it counts from s)}
    layouts = {
        "left": lambda s: ([anon(s), anon(s + 4 * P)], 8),
        "right": lambda s: ([anon(s + 4 * P), anon(s)], 8),
        "both": lambda s: ([anon(s), anon(s + 8 * P), anon(s + 4 * P)], 12),
        "both_faulted": lambda s: ([anon(s, populate=1.0), anon(s + 8 * P, populate=1.0),
                                    anon(s + 4 * P)], 12),
        "left_faulted": lambda s: ([anon(s, populate=1.0), anon(s + 8 * P),
                                    anon(s + 4 * P)], 12),
        "prot": lambda s: ([anon(s), anon(s + 4 * P, prot="r")], 8),
        "noreserve": lambda s: ([anon(s), anon(s + 4 * P, noreserve=True)], 8),
        "shared_anon": lambda s: ([shm(s), shm(s + 4 * P)], 8),
        "file_next": lambda s: ([file(s, 0), file(s + 4 * P, 4 * P)], 8),
        "file_same": lambda s: ([file(s, 0), file(s + 4 * P, 0)], 8),
        "file_shared": lambda s: ([file(s, 0, True, "rw"),
                                   file(s + 4 * P, 4 * P, True, "rw")], 8),
        # (find_mergeable_anon_vma at the first write, seen through an mprotect that
        # makes the prots equal: it merges the two only where they share an anon_vma)
        "exec_prev": lambda s: ([anon(s, populate=1.0), anon(s + 4 * P, "rwx", 1.0),
                                 prot(s + 4 * P, 4)], 8),
        "exec_next": lambda s: ([anon(s + 4 * P, populate=1.0), anon(s, "rwx", 1.0),
                                 prot(s, 4)], 8),
        "exec_apart": lambda s: ([anon(s, populate=1.0), anon(s + 8 * P, "rwx", 1.0),
                                  anon(s + 4 * P, "rwx"), prot(s + 4 * P, 8)], 12),
        "exec_between": lambda s: ([anon(s, populate=1.0), anon(s + 8 * P, populate=1.0),
                                    anon(s + 4 * P, "rwx", 1.0), prot(s + 4 * P, 4)], 8),
    }
    out = {}
    for i, (name, make) in enumerate(layouts.items()):
        s = BASE + i * SLOT + 2 * P
        es, pages = make(s)
        out[name] = (es, s, s + pages * P)
    return out


def _replayed() -> dict[str, int]:
    """The VMAs the replay leaves over each case's pages, all cases in one address space
    (as the program runs them)."""
    cases = _c_cases()
    entries = [Entry("mmap", BASE, len(cases) * SLOT, prot="", populate=0.0)]
    for es, _, _ in cases.values():
        entries += es
    planner = StatefulPlanner(_space(), entries, T, seed=1)
    assert list(planner) == [] and planner.skipped == 0
    sp = planner.space
    return {name: len(sp.intersecting(lo, hi)) for name, (_, lo, hi) in cases.items()}


def test_the_c_cases_as_replayed():
    """What the replay answers (on 6.18.44, 2026-12-04, scripts/mmap_merge.c printed the
    same: test_this_kernel_merges_new_mappings_as_replayed runs it)."""
    assert _replayed() == {"left": 1, "right": 1, "both": 1, "both_faulted": 2,
                           "left_faulted": 1, "prot": 2, "noreserve": 2, "shared_anon": 2,
                           "file_next": 1, "file_same": 2, "file_shared": 1,
                           "exec_prev": 1, "exec_next": 1, "exec_apart": 2,
                           "exec_between": 2}


def test_this_kernel_merges_new_mappings_as_replayed(tmp_path):
    """scripts/mmap_merge.c on the running kernel (no root needed)."""
    if not shutil.which("gcc") or os.sysconf("SC_PAGE_SIZE") != 4096:
        pytest.skip("needs gcc and 4 KiB pages to build and run scripts/mmap_merge.c")
    exe = tmp_path / "mmap_merge"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "scripts" / "mmap_merge.c")],
                   check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    assert got == _replayed()
