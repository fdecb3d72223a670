"""mprotect and madvise before a move: the VMAs and page tables they leave (R27,
perfsim.planner.mprotect, perfsim.planner.madvise), their trace rows, and a real program
recorded on this machine (tests/data/realprog/mm_calls/)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.host.program import compare_program, replay_inputs
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.mm.pagetable import PMD_TABLE
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.madvise import madvise_dontneed, pte_table_reclaim_possible
from perfsim.planner.mprotect import do_mprotect
from perfsim.profiles import resolve_target
from perfsim.workload import parse_trace_csv
from perfsim.workload.generate import Entry, StatefulPlanner
from perfsim.workload.trace import convert_strace, strace_rows

KiB, MiB = 1 << 10, 1 << 20
PMD = 2 * MiB
BASE = 0x7F0000000000
DATA = Path(__file__).parent / "data" / "realprog" / "mm_calls"
ROOT = Path(__file__).resolve().parents[1]


def _space(target, n_pmds=16, start=BASE, **vma):
    v = Vma(start, start + n_pmds * PMD, name="buf", pgoff=start >> 12, anon_id="buf", **vma)
    return AddressSpace((v,), PageTables.empty(target.arch).populate(v.start, v.end))


def _pmd_kind(space, addr):
    win = space.pt.window(addr, addr + 1)
    ent = win.pmd.get(addr >> space.arch.pmd_shift)
    return None if ent is None else ent[0]


def _present(space, lo, hi):
    win = space.pt.window(lo, hi)
    n = 0
    ms, ps = space.arch.pmd_shift, space.arch.page_shift
    for slot in range(lo >> ms, ((hi - 1) >> ms) + 1):
        ent = win.pmd.get(slot)
        if ent is None or ent[0] != PMD_TABLE:
            continue
        base = slot << ms
        a = max(lo, base) - base >> ps
        b = min(hi, base + (1 << ms)) - base >> ps
        n += (ent[1] >> a & ((1 << (b - a)) - 1)).bit_count()
    return n


# --------------------------------------------------------------------------- madvise
@pytest.mark.parametrize("kernel, arch, freed", [
    ("6.1", "x86_64", False), ("6.12", "x86_64", False), ("6.18", "x86_64", True),
    ("6.18", "arm64-4k", False), ("7.3", "x86_64", True), ("7.3", "arm64-4k", True),
    ("7.3", "riscv-sv48", True),
])
def test_dontneed_of_whole_pmds_frees_their_tables_where_pt_reclaim_is(kernel, arch, freed):
    t = resolve_target(kernel, arch)
    pmd = t.arch.pmd_size
    v = Vma(BASE, BASE + 16 * pmd, name="buf", pgoff=BASE >> t.arch.page_shift, anon_id="b")
    sp = AddressSpace((v,), PageTables.empty(t.arch).populate(v.start, v.end))
    got = madvise_dontneed(t, sp, BASE + pmd, 4 * pmd)
    assert got.tables_freed == (4 if freed else 0)
    for k in range(1, 5):
        assert _pmd_kind(got.space, BASE + k * pmd) == (None if freed else PMD_TABLE)
        assert _present(got.space, BASE + k * pmd, BASE + (k + 1) * pmd) == 0
    assert _pmd_kind(got.space, BASE) == PMD_TABLE  # the PMD before and after: untouched
    assert _present(got.space, BASE + 5 * pmd, BASE + 6 * pmd) == pmd // t.arch.page_size


def test_dontneed_that_covers_a_table_partly_keeps_it_even_emptied_in_two_calls():
    t = resolve_target("6.18", "x86_64")
    sp = _space(t)
    got = madvise_dontneed(t, sp, BASE + 2 * PMD + 4 * KiB, PMD)  # straddles slots 2 and 3
    assert got.tables_freed == 0
    assert _present(got.space, BASE + 2 * PMD, BASE + 4 * PMD) == 512 * 2 - 512
    first = madvise_dontneed(t, sp, BASE + 6 * PMD + 4 * KiB, PMD - 4 * KiB)
    second = madvise_dontneed(t, first.space, BASE + 6 * PMD, 4 * KiB)
    assert first.tables_freed == second.tables_freed == 0
    assert _pmd_kind(second.space, BASE + 6 * PMD) == PMD_TABLE
    assert _present(second.space, BASE + 6 * PMD, BASE + 7 * PMD) == 0


def test_dontneed_frees_an_empty_table_it_covers_and_not_one_shared_by_two_vmas():
    t = resolve_target("6.18", "x86_64")
    # two VMAs meeting inside slot 1: each VMA's part of the range covers slot 1 only partly
    a = Vma(BASE, BASE + PMD + 64 * KiB, name="a", pgoff=BASE >> 12, anon_id="a")
    b = Vma(BASE + PMD + 64 * KiB, BASE + 4 * PMD, name="b", anon_id="b",
            pgoff=(BASE >> 12) + 1000)
    sp = AddressSpace((a, b), PageTables.empty(t.arch).populate(BASE, BASE + 4 * PMD))
    got = madvise_dontneed(t, sp, BASE, 4 * PMD)
    assert got.tables_freed == 3  # slots 0, 2, 3
    assert _pmd_kind(got.space, BASE + PMD) == PMD_TABLE
    assert not pte_table_reclaim_possible(t, BASE + PMD + 64 * KiB, BASE + 4 * PMD,
                                          (BASE + PMD) >> 21)
    # a second call over the now empty tables frees nothing more; slot 1 stays
    again = madvise_dontneed(t, got.space, BASE, 4 * PMD)
    assert again.tables_freed == 0 and _pmd_kind(again.space, BASE + PMD) == PMD_TABLE
    # an empty table left by a partial zap is freed by a later whole-PMD call
    part = madvise_dontneed(t, _space(t), BASE + 4 * KiB, PMD - 4 * KiB)
    part = madvise_dontneed(t, part.space, BASE, 4 * KiB)
    assert _pmd_kind(part.space, BASE) == PMD_TABLE
    assert madvise_dontneed(t, part.space, BASE, PMD).tables_freed == 1


def test_dontneed_skips_holes_and_leaves_hugetlb_alone():
    t = resolve_target("6.18", "x86_64")
    a = Vma(BASE, BASE + 2 * PMD, name="a", pgoff=BASE >> 12, anon_id="a")
    h = Vma(BASE + 8 * PMD, BASE + 10 * PMD, backing="hugetlb", hugepage_size=PMD,
            name="h", file_id="h", anon_vma=False)
    pt = PageTables.empty(t.arch).populate(a.start, a.end)
    pt = pt.populate(h.start, h.end, thp=True)
    sp = AddressSpace((a, h), pt)
    got = madvise_dontneed(t, sp, BASE, 10 * PMD)
    assert got.tables_freed == 2 and got.skipped_hugetlb == 1
    slots = range(h.start >> 21, h.end >> 21)
    before, after = sp.pt.window(h.start, h.end).pmd, got.space.pt.window(h.start, h.end).pmd
    assert [after.get(s) for s in slots] == [before.get(s) for s in slots]


def test_dontneed_of_a_whole_thp_zaps_it_and_of_part_splits_it():
    t = resolve_target("6.18", "x86_64")
    v = Vma(BASE, BASE + 4 * PMD, name="t", pgoff=BASE >> 12, anon_id="t", thp=True)
    sp = AddressSpace((v,), PageTables.empty(t.arch).populate(v.start, v.end, thp=True))
    got = madvise_dontneed(t, sp, BASE, PMD)
    assert _pmd_kind(got.space, BASE) is None
    part = madvise_dontneed(t, sp, BASE + PMD, 64 * KiB)
    assert _pmd_kind(part.space, BASE + PMD) == PMD_TABLE
    assert _present(part.space, BASE + PMD, BASE + 2 * PMD) == 512 - 16


def test_a_move_after_dontneed_skips_the_freed_tables_on_618_and_moves_them_on_612():
    sizes = {}
    for k in ("6.12", "6.18"):
        t = resolve_target(k, "x86_64")
        sp = madvise_dontneed(t, _space(t), BASE + 2 * PMD, 6 * PMD).space
        plan = plan_mremap(sp, MoveRequest(BASE, 16 * PMD, new_addr=BASE + 64 * PMD), t)
        sizes[k] = (plan.move.pmd_moves, plan.move.tlb_flushes)
    assert sizes["6.12"] == (16, 16)  # the empty tables are moved, each flushed
    assert sizes["6.18"] == (10, 10)  # their slots are none: skipped


# --------------------------------------------------------------------------- mprotect
def test_mprotect_of_a_page_splits_in_three_and_back_merges_into_one():
    t = resolve_target("6.18", "x86_64")
    sp = _space(t)
    got = do_mprotect(sp, BASE + 3 * PMD, 4 * KiB, "r")
    assert got.errno is None
    assert [(v.start - BASE, v.end - BASE, v.prot, v.pgoff - (BASE >> 12))
            for v in got.space.vmas] == [
        (0, 3 * PMD, "rw", 0), (3 * PMD, 3 * PMD + 4 * KiB, "r", 3 * 512),
        (3 * PMD + 4 * KiB, 16 * PMD, "rw", 3 * 512 + 1)]
    assert got.space.vmas[1].dirty  # written before its write permission went
    back = do_mprotect(got.space, BASE + 3 * PMD, 4 * KiB, "rw")
    assert [(v.start, v.end, v.prot, v.dirty) for v in back.space.vmas] == \
        [(BASE, BASE + 16 * PMD, "rw", False)]
    same = do_mprotect(sp, BASE, 16 * PMD, "rw")  # no change: no split, the same space
    assert same.space is sp
    # a move of the three VMAs is one call from 6.17 on, EFAULT before
    req = MoveRequest(BASE, 16 * PMD, new_addr=BASE + 64 * PMD)
    assert plan_mremap(got.space, req, t).errno is None
    assert plan_mremap(got.space, req, resolve_target("6.12", "x86_64")).errno == "EFAULT"


def test_mprotect_stops_at_a_hole_with_enomem_and_refuses_nothing_mapped():
    t = resolve_target("6.18", "x86_64")
    a = Vma(BASE, BASE + PMD, name="a", pgoff=BASE >> 12, anon_id="a")
    b = Vma(BASE + 2 * PMD, BASE + 3 * PMD, name="b", pgoff=(BASE >> 12) + 1024, anon_id="a")
    sp = AddressSpace((a, b), PageTables.empty(t.arch))
    got = do_mprotect(sp, BASE, 3 * PMD, "")
    assert got.errno == "ENOMEM"
    assert [v.prot for v in got.space.vmas] == ["", "rw"]
    none = do_mprotect(sp, BASE + PMD, PMD, "r")
    assert none.errno == "ENOMEM" and none.space is sp
    with pytest.raises(ValueError, match="not page aligned"):
        do_mprotect(sp, BASE + 1, 4 * KiB, "r")


def test_mprotect_merges_with_a_neighbour_only_when_it_continues_it():
    t = resolve_target("6.18", "x86_64")
    pg = BASE >> 12
    # (a and c were written and made read-only before: VM_ACCOUNT kept, as b's will be)
    a = Vma(BASE, BASE + PMD, name="a", pgoff=pg, anon_id="a", prot="r", account=True)
    b = Vma(BASE + PMD, BASE + 2 * PMD, name="b", pgoff=pg + 512, anon_id="a")
    c = Vma(BASE + 2 * PMD, BASE + 3 * PMD, name="c", pgoff=pg + 99_999, anon_id="a",
            prot="r", account=True)
    sp = AddressSpace((a, b, c), PageTables.empty(t.arch))
    got = do_mprotect(sp, BASE + PMD, PMD, "r")  # b joins a; c's pgoff does not follow
    assert [(v.start, v.end) for v in got.space.vmas] == [(BASE, BASE + 2 * PMD),
                                                          (BASE + 2 * PMD, BASE + 3 * PMD)]


def _layout(*vmas):
    return AddressSpace(vmas, PageTables.empty(resolve_target("6.18").arch))


def test_vm_account_and_vm_noreserve_keep_neighbours_apart_as_the_kernel_does():
    """The live check of planner/mprotect.py's docstring (this machine, 6.18, 2026-12-03):
    an anonymous MAP_NORESERVE mapping beside an ordinary one stays apart; an unfaulted
    read-write mapping made read-only beside a read-only one merges (6.7+: its VM_ACCOUNT
    dropped), a written one does not (VM_ACCOUNT kept), nor does an unfaulted one on 6.6;
    a PROT_NONE reservation opened read-write beside a read-write mapping merges (it gains
    VM_ACCOUNT)."""
    pg = BASE >> 12
    rw = Vma(BASE, BASE + PMD, pgoff=pg, anon_vma=False)
    nores = Vma(BASE + PMD, BASE + 2 * PMD, pgoff=pg + 512, anon_vma=False, noreserve=True)
    assert rw.account and not nores.account
    # both read-only, then made writable together: the ordinary one is charged, the
    # MAP_NORESERVE one is not, and VM_NORESERVE differs anyway
    both_ro = _layout(rw.replaced(prot="r", account=False), nores.replaced(prot="r"))
    assert len(do_mprotect(both_ro, BASE, 2 * PMD, "rw").space.vmas) == 2
    plain = _layout(rw.replaced(prot="r", account=False),
                    nores.replaced(prot="r", noreserve=False))
    assert len(do_mprotect(plain, BASE, 2 * PMD, "rw").space.vmas) == 1
    ro = Vma(BASE + PMD, BASE + 2 * PMD, pgoff=pg + 512, anon_vma=False, prot="r")
    assert not ro.account
    unfaulted = do_mprotect(_layout(rw, ro), BASE, PMD, "r").space
    assert len(unfaulted.vmas) == 1
    assert len(do_mprotect(_layout(rw, ro), BASE, PMD, "r", (6, 6)).space.vmas) == 2
    written = rw.replaced(anon_vma=True, anon_id="w")
    assert len(do_mprotect(_layout(written, ro), BASE, PMD, "r").space.vmas) == 2
    none = Vma(BASE + PMD, BASE + 2 * PMD, pgoff=pg + 512, anon_vma=False, prot="")
    opened = do_mprotect(_layout(rw, none), BASE + PMD, PMD, "rw").space
    assert len(opened.vmas) == 1 and opened.vmas[0].account


def test_a_trace_row_says_map_noreserve_by_name_or_by_bit():
    from perfsim.workload.trace import map_noreserve

    assert map_noreserve("MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE")
    assert map_noreserve("0x4022") and not map_noreserve("0x22")
    assert not map_noreserve("MAP_PRIVATE|MAP_ANONYMOUS") and not map_noreserve("")


# --------------------------------------------------------------------------- trace rows
_HEADER = "time_ns,op,addr,old_len,new_len,flags,new_addr,result,backing,populate,prot\n"


def test_trace_csv_reads_mprotect_madvise_and_touch_rows():
    text = _HEADER + (
        "0,mmap,0x7f0000000000,8388608,,,,0x7f0000000000,anon,,PROT_NONE\n"
        "1,mprotect,0x7f0000000000,4194304,,,,0,,0.5,PROT_READ|PROT_WRITE\n"
        "2,madvise,0x7f0000000000,2097152,,MADV_DONTNEED,,0,,,\n"
        "3,madvise,0x7f0000000000,2097152,,0x8,,0,,,\n"
        "4,touch,0x7f0000000000,4096,,,,,,,\n")
    es = parse_trace_csv(text, "t.csv")
    assert [e.op for e in es] == ["mmap", "mprotect", "madvise", "madvise", "touch"]
    assert es[0].prot == "" and es[1].prot == "rw" and es[1].populate == 0.5
    assert es[2].advice == "MADV_DONTNEED" and es[3].advice == "MADV_FREE"


@pytest.mark.parametrize("row, message", [
    ("0,mprotect,0x7f0000000000,4096,,,,0,,,\n", "an mprotect row needs 'prot'"),
    ("0,mprotect,0x7f0000000000,4096,,,,0,,,PROT_BANANA\n", "column 'prot': 'PROT_BANANA'"),
    ("0,madvise,0x7f0000000000,4096,,MADV_BANANA,,0,,,\n", "is not a madvise advice"),
    ("0,madvise,0x7f0000000000,4096,,77,,0,,,\n", "is not a madvise advice"),
    ("0,madvise,0x7f0000000001,4096,,MADV_DONTNEED,,0,,,\n", "page-aligned 'addr'"),
    ("0,touch,0x7f0000000000,-1,,,,,,,\n", "page-aligned 'addr'"),
])
def test_trace_csv_refuses_bad_mm_call_rows_in_one_line(row, message):
    with pytest.raises(PerfsimError, match=message) as e:
        parse_trace_csv(_HEADER + row, "t.csv")
    assert "\n" not in str(e.value) and "t.csv:2" in str(e.value)


def test_strace_converter_keeps_mprotect_and_madvise_and_counts_unmodelled_advice():
    log = "\n".join([
        "7 10:00:00.000100 mmap(NULL, 16777216, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0) = 0x7ffff6e00000 <0.000010>",  # noqa: E501
        "7 10:00:00.000200 mprotect(0x7ffff6e00000, 8388608, PROT_READ|PROT_WRITE) = 0 <0.000010>",
        "7 10:00:00.000300 madvise(0x7ffff6e00000, 4194304, MADV_DONTNEED) = 0 <0.000010>",
        "7 10:00:00.000310 madvise(0x7ffff6e00000, 4194304, 0xc /* MADV_MERGEABLE */) = 0 <0.000010>",
        "7 10:00:00.000315 madvise(0x7ffff6e00000, 4194304, 0xe /* MADV_HUGEPAGE */) = 0 <0.000010>",
        "7 10:00:00.000320 mprotect(0x7ffff0000000, 4096, PROT_NONE) = -1 ENOMEM (Cannot allocate memory) <0.000010>",  # noqa: E501
        "7 10:00:00.000330 mprotect(0x7ffff6e00001, 4096, PROT_READ) = -1 EINVAL (Invalid argument) <0.000010>",  # noqa: E501
        "7 10:00:00.000340 madvise(0x7ffff6e00000, 4096, 0x99) = 0 <0.000010>",
    ])
    out = io.StringIO()
    st = convert_strace(log, out, "t.strace")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["op"], r["prot"] or r["flags"]) for r in rows[1:]] == [
        ("mprotect", "PROT_READ|PROT_WRITE"), ("madvise", "MADV_DONTNEED"),
        ("madvise", "MADV_MERGEABLE"), ("madvise", "MADV_HUGEPAGE"), ("mprotect", "PROT_NONE")]
    assert st.failed == 2
    # huge-page advice is replayed (madvise_hugepage); MADV_MERGEABLE and the unknown are not
    assert st.not_replayed == {"MADV_MERGEABLE": 1, "0x99 (unknown advice)": 1}
    assert len(strace_rows(log)) == 6


def test_replay_populates_no_prot_none_mapping_and_what_mprotect_opens():
    t = resolve_target("6.18", "x86_64")
    sp = AddressSpace((), PageTables.empty(t.arch))
    entries = [Entry("mmap", BASE, 8 * PMD, prot="", populate=1.0),
               Entry("mprotect", BASE + PMD, 2 * PMD, prot="rw", populate=1.0),
               Entry("madvise", BASE + PMD, PMD, advice="MADV_DONTNEED"),
               Entry("madvise", BASE, PMD, advice="MADV_MERGEABLE"),
               Entry("touch", BASE + PMD, 4 * KiB),
               Entry("mremap", BASE, 8 * PMD, new_addr=BASE + 64 * PMD, fixed=True)]
    sp_planner = StatefulPlanner(sp, entries, t, seed=1)
    (plan,) = list(sp_planner)
    before = sp_planner.before
    assert _present(before, BASE, BASE + PMD) == 0  # PROT_NONE: never faulted in
    assert _present(before, BASE + PMD, BASE + 2 * PMD) == 1  # freed, then one page written
    assert _present(before, BASE + 2 * PMD, BASE + 3 * PMD) == 512
    assert [v.prot for v in before.vmas] == ["", "rw", ""]
    assert sp_planner.not_replayed == {"madvise MADV_MERGEABLE": 1}
    assert plan.errno is None


# --------------------------------------------------------------------------- huge-page advice
def _thp_slots(space, lo, hi):
    from perfsim.mm.pagetable import PMD_LEAF

    pmd = space.pt.window(lo, hi).pmd
    return [s - (lo >> 21) for s in range(lo >> 21, hi >> 21) if pmd.get(s, (None,))[0] == PMD_LEAF]


def test_hugepage_advice_splits_and_merges_like_mprotect():
    from perfsim.planner.madvise import madvise_hugepage

    t = resolve_target("6.18", "x86_64")
    sp = _space(t)
    got = madvise_hugepage(sp, BASE + PMD, 2 * PMD, "MADV_HUGEPAGE")
    assert [(v.start - BASE, v.end - BASE, v.thp) for v in got.vmas] == [
        (0, PMD, False), (PMD, 3 * PMD, True), (3 * PMD, 16 * PMD, False)]
    # MADV_NOHUGEPAGE sets VM_NOHUGEPAGE, a flag of its own: over all of it, one VMA again
    back = madvise_hugepage(got, BASE, 16 * PMD, "MADV_NOHUGEPAGE")
    assert [(v.start, v.end, v.thp, v.nohugepage) for v in back.vmas] == [
        (BASE, BASE + 16 * PMD, False, True)]
    assert madvise_hugepage(got, BASE + PMD, PMD, "MADV_HUGEPAGE") is got  # no change
    part = madvise_hugepage(sp, BASE, PMD, "MADV_NOHUGEPAGE")  # neither flag -> NOHUGEPAGE
    assert [v.nohugepage for v in part.vmas] == [True, False]
    with pytest.raises(ValueError):
        madvise_hugepage(sp, BASE + 1, PMD, "MADV_HUGEPAGE")


def test_memory_written_after_hugepage_advice_is_thp_where_the_vma_covers_whole_pmds():
    """glibc's malloc with glibc.malloc.hugetlb=1: mmap, madvise(MADV_HUGEPAGE), write; then
    mremap to grow, madvise the grown block, write the added part. The pages are faulted
    after the advice: THPs in the PMD ranges the VMA covers whole, base pages at its ends."""
    t = resolve_target("6.18", "x86_64")
    sp = AddressSpace((), PageTables.empty(t.arch))
    start, size = BASE + 4 * KiB, 3 * PMD  # not PMD aligned: two whole PMDs inside
    entries = [Entry("mmap", start, size, populate=1.0),
               Entry("madvise", start, size, advice="MADV_HUGEPAGE"),
               Entry("mremap", start, size, new_len=5 * PMD, maymove=True),
               Entry("madvise", start, 5 * PMD, advice="MADV_HUGEPAGE"),
               Entry("mremap", start, 5 * PMD, new_addr=BASE + 64 * PMD + 4 * KiB, fixed=True)]
    planner = StatefulPlanner(sp, entries, t, seed=1, populate_growth=True)
    grow, move = list(planner)
    assert grow.errno is None and move.errno is None
    before_grow = planner.before  # (of the second call: the grown block written)
    # PMD 3 already had a PTE table (the block's last page, faulted before the growth), so
    # the growth's faults there map base pages; PMD 4 is whole in the added part: a THP
    assert _thp_slots(before_grow, BASE, BASE + 8 * PMD) == [1, 2, 4]
    assert _present(before_grow, start, BASE + PMD) == 511  # the head: base pages
    assert move.move.thp_moves == 3  # mutually aligned: the huge PMDs move whole
    # without the advice the same calls find base pages only
    plain = StatefulPlanner(sp, [e for e in entries if e.op != "madvise"], t, seed=1,
                            populate_growth=True)
    list(plain)
    assert _thp_slots(plain.before, BASE, BASE + 8 * PMD) == []


@pytest.mark.parametrize("enabled, advice, thp", [
    ("madvise", None, False), ("madvise", "MADV_HUGEPAGE", True),
    ("always", None, True), ("always", "MADV_NOHUGEPAGE", False),
    ("never", "MADV_HUGEPAGE", False),
])
def test_which_faults_map_thps_follows_the_systems_thp_setting(enabled, advice, thp):
    from perfsim.planner.madvise import thp_vma_allowable

    t = resolve_target("6.18", "x86_64")
    entries = [Entry("mmap", BASE, 4 * PMD, populate=1.0)]
    if advice:
        entries.append(Entry("madvise", BASE, 4 * PMD, advice=advice))
    entries.append(Entry("mremap", BASE, 4 * PMD, new_addr=BASE + 64 * PMD, fixed=True))
    planner = StatefulPlanner(AddressSpace((), PageTables.empty(t.arch)), entries, t, seed=1,
                              thp_enabled=enabled)
    (plan,) = list(planner)
    assert (plan.move.thp_moves == 4) == thp and (plan.move.pmd_moves == 4) == (not thp)
    assert thp_vma_allowable(planner.before.vmas[0], enabled) == thp
    with pytest.raises(ValueError, match="allowed: always, madvise, never"):
        thp_vma_allowable(planner.before.vmas[0], "sometimes")


# --------------------------------------------------------------------------- a real program
def _arena(csv_text=None, target=None):
    log = (DATA / "c_arena.strace").read_text()
    records = [json.loads(x) for x in (DATA / "c_arena.kernel.jsonl").read_text().splitlines()
               if x.strip()]
    rows, entries = replay_inputs(log, "c_arena", 1.0, csv_text=csv_text)
    return compare_program(rows, entries, records, target or resolve_target("6.18", "x86_64"),
                           1, ipis=True)


def _arena_csv(edit) -> str:
    out = io.StringIO()
    convert_strace((DATA / "c_arena.strace").read_text(), out, "c_arena")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    rows = edit(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _with_reuse_written(rows):
    """The arena's handed-back block written again (``memset(b + 4 MiB, 2, 2 MiB)`` after
    the guard was opened): a store, which no log shows, given as a touch row."""
    out = []
    for r in rows:
        out.append(r)
        if r["op"] == "mprotect" and r["old_len"] == "4096" and "PROT_WRITE" in r["prot"]:
            b = int(r["addr"], 16) - 16 * MiB
            out.append({**{k: "" for k in r}, "time_ns": str(int(r["time_ns"]) + 1),
                        "op": "touch", "addr": hex(b + 4 * MiB), "old_len": str(2 * MiB)})
    return out


def test_arena_program_agrees_where_the_log_shows_what_it_did():
    got = _arena()
    assert [r["agree"] for r in got] == [True, False, True]
    # the second call finds the block the program wrote again: more flushes than replayed
    assert got[1]["kernel"]["whole"]["flush_calls"] > got[1]["planned"]["whole"]["flush_calls"]
    assert all(r["agree"] for r in _arena(_arena_csv(_with_reuse_written)))


def test_arena_program_needs_the_reclaimed_tables():
    """Planned as if MADV_DONTNEED kept the tables, the first move takes the four emptied
    tables along: 16 flushes where the kernel made 12."""
    no_reclaim = resolve_target("6.18", "x86_64").with_changes(**{"kernel.pt_reclaim": "none"})
    got = _arena(_arena_csv(_with_reuse_written), target=no_reclaim)
    assert (got[0]["planned"]["whole"]["flush_calls"],
            got[0]["kernel"]["whole"]["flush_calls"]) == (16, 12)


def test_arena_program_without_its_mprotect_and_madvise_rows_agrees_nowhere():
    stripped = _arena_csv(lambda rows: [r for r in rows if r["op"] not in
                                        ("mprotect", "madvise")])
    assert not any(r["agree"] for r in _arena(stripped))


def test_convert_strace_command_says_which_advice_it_does_not_replay(tmp_path):
    log = tmp_path / "a.strace"
    log.write_text("7 10:00:00.000100 madvise(0x7ffff6e00000, 4194304, MADV_MERGEABLE) = 0\n"
                   "7 10:00:00.000150 madvise(0x7ffff6e00000, 4194304, MADV_HUGEPAGE) = 0\n"
                   "7 10:00:00.000200 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
                   " = 0x7ffff7000000\n")
    p = subprocess.run([sys.executable, "-m", "perfsim", "workload", "convert-strace", str(log),
                        "-o", str(tmp_path / "a.csv")], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "not replayed" in p.stderr and "MADV_MERGEABLE x1" in p.stderr
    assert "MADV_HUGEPAGE" not in p.stderr
    assert ",madvise," in (tmp_path / "a.csv").read_text()


def test_python_threads_with_glibc_arenas_replay_with_their_mprotect_and_madvise():
    """py_threads recorded again with mprotect and madvise traced (14:32 UTC): two threads'
    glibc arenas (PROT_NONE heaps opened with mprotect, trimmed with MADV_DONTNEED) beside
    the bytearrays they grow. Read, those calls change no count: 26 of 27 agree as
    replayed, and the one that does not is CPython's unwritten bytearray tail (as in the
    first recording); with the written prefix explicit, 27 of 27."""
    from helpers import bytearray_written

    log = (DATA / "py_threads.strace").read_text()
    assert log.count("mprotect(") >= 8 and log.count("MADV_DONTNEED") == 2
    records = [json.loads(x) for x in (DATA / "py_threads.kernel.jsonl").read_text().splitlines()
               if x.strip()]
    rows, entries = replay_inputs(log, "py_threads", 1.0)
    assert {e.op for e in entries} >= {"mprotect", "madvise"}
    t = resolve_target("6.18", "x86_64")
    got = compare_program(rows, entries, records, t, 2, ipis=False)
    bad = [r for r in got if not r["agree"]]
    assert len(got) == 27 and len(bad) == 1
    assert bad[0]["planned"]["whole"]["flush_calls"] > bad[0]["kernel"]["whole"]["flush_calls"]
    assert all(r["agree"] for r in compare_program(rows, entries, records, t, 2, ipis=False,
                                                   written=bytearray_written))


def test_glibc_malloc_with_huge_pages_advised_replays_its_thp_splits():
    """``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 realloc_growth 1`` (recorded 14:37 UTC):
    glibc advises MADV_HUGEPAGE on every block it maps and grows, so the block is THP-backed
    where it covers whole PMDs, and each move to where the kernel put it (not mutually PMD
    aligned) splits those THPs. Read, the advice gives 7 of 7 calls (2 and 7 splits
    planned); ignored, the replay moves base pages and two calls miss."""
    log = (DATA / "c_realloc_thp.strace").read_text()
    assert log.count("MADV_HUGEPAGE") == 9
    records = [json.loads(x) for x in
               (DATA / "c_realloc_thp.kernel.jsonl").read_text().splitlines() if x.strip()]
    t = resolve_target("6.18", "x86_64")
    rows, entries = replay_inputs(log, "c_realloc_thp", 1.0)
    got = compare_program(rows, entries, records, t, 1, ipis=False)
    assert len(got) == 7 and all(r["agree"] for r in got)
    from perfsim.host.program import replay_plans

    assert [p.move.thp_splits for p in replay_plans(entries, t, 1)] == [0, 0, 0, 0, 2, 0, 7]
    plain = [e for e in entries if e.op != "madvise"]
    assert sum(not r["agree"] for r in compare_program(rows, plain, records, t, 1,
                                                       ipis=False)) == 2


# --------------------------------------------------------------------------- THP "always"
ALWAYS = Path(__file__).parent / "data" / "realprog" / "thp_always"


@pytest.mark.parametrize("name, agree, as_madvise", [
    ("c_realloc_always", 13, 11), ("perl_string_always", 15, 14),
    ("py_bytearray_always", 16, 16),
])
def test_programs_recorded_with_thp_always_replay_with_that_setting(name, agree, as_madvise):
    """realloc_growth 1, perl and python3 recorded with transparent_hugepage/enabled set to
    ``always`` (14:44 UTC; the records say so): every anonymous fault in a PMD range a VMA
    covers whole maps a THP, advised or not. Replayed with the recorded setting the calls
    agree as the ``madvise`` recordings do (python3's three misses are its bytearray tail,
    below); replayed as if ``madvise``, fewer."""
    log = (ALWAYS / f"{name}.strace").read_text()
    records = [json.loads(x) for x in (ALWAYS / f"{name}.kernel.jsonl").read_text().splitlines()
               if x.strip()]
    assert {r["thp_enabled"] for r in records} == {"always"}
    rows, entries = replay_inputs(log, name, 1.0)
    t = resolve_target("6.18", "x86_64")
    got = compare_program(rows, entries, records, t, 1, ipis=False)
    assert sum(r["agree"] for r in got) == agree
    mad = compare_program(rows, entries, records, t, 1, ipis=False, thp_enabled="madvise")
    assert sum(r["agree"] for r in mad) == as_madvise


def test_python_bytearray_with_thp_always_agrees_with_its_written_prefix_explicit():
    """A THP is faulted in whole by a write anywhere in its PMD range: with the bytearray's
    written prefix explicit, every call of the ``always`` recording agrees."""
    from helpers import bytearray_written

    name = "py_bytearray_always"
    log = (ALWAYS / f"{name}.strace").read_text()
    records = [json.loads(x) for x in (ALWAYS / f"{name}.kernel.jsonl").read_text().splitlines()
               if x.strip()]
    rows, entries = replay_inputs(log, name, 1.0)
    got = compare_program(rows, entries, records, resolve_target("6.18", "x86_64"), 1,
                          ipis=False, written=bytearray_written)
    assert len(got) == 19 and all(r["agree"] for r in got)


def test_recorded_thp_setting_is_read_from_the_records():
    from perfsim.host.program import recorded_thp_enabled, thp_enabled_of

    assert thp_enabled_of("always [madvise] never\n") == "madvise"
    assert thp_enabled_of("garbage") is None
    assert recorded_thp_enabled([{"thp_enabled": "always"}, {"thp_enabled": "always"}]) == \
        "always"
    assert recorded_thp_enabled([{}]) == "madvise"  # records made before the field
    with pytest.raises(PerfsimError, match="different transparent_hugepage settings"):
        recorded_thp_enabled([{"thp_enabled": "always"}, {"thp_enabled": "never"}])


def test_a_trace_stream_takes_the_recorded_thp_setting(tmp_path):
    from perfsim.workload import parse_workload, run_workload

    (tmp_path / "t.csv").write_text(_HEADER + (
        "0,mmap,0x7f0000000000,8388608,,,,0x7f0000000000,anon,,\n"
        "1,mremap,0x7f0000000000,8388608,8388608,MREMAP_MAYMOVE|MREMAP_FIXED,"
        "0x7f4000000000,0x7f4000000000,,,\n"))
    moves = {}
    for mode in ("madvise", "always"):
        (tmp_path / "w.toml").write_text(f"""
name = "t"
cpus = 2
[[processes]]
name = "app"
threads = 1
[[streams]]
name = "r"
kind = "trace"
process = "app"
path = "{tmp_path / 't.csv'}"
thp_enabled = "{mode}"
""")
        _, m, _ = run_workload(parse_workload((tmp_path / "w.toml").read_text()))
        moves[mode] = (m["thp_moves"], m["pmd_moves"])
    assert moves == {"madvise": (0, 4), "always": (4, 0)}
    (tmp_path / "w.toml").write_text((tmp_path / "w.toml").read_text().replace(
        'thp_enabled = "always"', 'thp_enabled = "sometimes"'))
    with pytest.raises(PerfsimError, match="thp_enabled"):
        parse_workload((tmp_path / "w.toml").read_text())


# --------------------------------------------------------------------------- perfsim plan
def _plan_cli(*args):
    return subprocess.run([sys.executable, "-m", "perfsim", "plan", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_plan_dontneed_option_hands_memory_back_before_the_call():
    """E9 (docs/kernel-rules.md): 8 MiB at A, its middle two PMDs handed back, moved to B:
    the emptied tables move on 6.12 and are gone on 6.18."""
    got = {}
    for k in ("6.12", "6.18"):
        p = _plan_cli("--kernel", k, "--old-addr", "A", "--old-len", "8M", "--new-addr", "B",
                      "--dontneed", "A+2M:4M", "--json")
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        got[k] = (d["move"]["pmd_moves"], d["syscall"]["tlb_flushes"])
    assert got == {"6.12": (4, 5), "6.18": (2, 3)}
    p = _plan_cli("--old-addr", "A", "--old-len", "8M", "--new-addr", "B",
                  "--dontneed", "A+2M:4M", "--dontneed", "A+7M:4K")
    assert "MADV_DONTNEED A+2M:4M first, MADV_DONTNEED A+7M:4K first" in p.stdout


@pytest.mark.parametrize("value, message", [
    ("A+2M", "is not START:SIZE"), ("A+1:4K", "must be page aligned"),
    ("A:0", "at least a page"), ("banana:4M", "--dontneed start: cannot parse"),
    ("A:lots", "--dontneed size: cannot parse"),
])
def test_plan_dontneed_bad_values_are_one_line(value, message):
    p = _plan_cli("--old-addr", "A", "--old-len", "8M", "--new-addr", "B", "--dontneed", value)
    assert p.returncode == 2 and message in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_plan_request_file_takes_a_dontneed_list(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[request]\nold_addr = "A"\nold_len = "8M"\nnew_addr = "B"\n'
                 'dontneed = ["A:2M"]\nkernel = "6.18"\n')
    p = _plan_cli("--file", str(f), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["move"]["pmd_moves"] == 3
    f.write_text('[request]\nold_addr = "A"\nold_len = "8M"\nnew_addr = "B"\ndontneed = "A:2M"\n')
    p = _plan_cli("--file", str(f))
    assert p.returncode == 2 and "key 'dontneed'" in p.stderr and "a list of" in p.stderr


@pytest.mark.parametrize("noreserve, after", [("false", 1), ("true", 2)])
def test_plan_vma_noreserve_keeps_the_moved_range_from_merging(capsys, noreserve, after):
    """``--vma ...:noreserve=true``: a destination neighbour mapped MAP_NORESERVE does not
    take the moved range in (copy_vma's merge compares VM_NORESERVE), an ordinary one
    whose offsets it continues does."""
    from perfsim.cli.main import main

    pg = (0x7F0000000000 >> 12) - 1024
    assert main(["plan", "--vma", "A:4M:file=x", "--vma",
                 f"B-4M:4M:file=x,touched=false,pgoff={pg},noreserve={noreserve}",
                 "--old-addr", "A", "--old-len", "4M", "--new-addr", "B", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["vmas_after"]) == after
    assert main(["plan", "--vma", "A:4M:account=maybe", "--old-addr", "A", "--old-len", "4M",
                 "--new-addr", "B"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key 'account'" in err[0]


def _vma_flags_layouts(version: tuple[int, int]) -> dict[str, int]:
    """scripts/vma_flags_merge.c's four cases planned: the VMAs over each pair after its
    mprotect (do_mprotect)."""
    pg, P4 = BASE >> 12, 4 * 4096

    def two(a, b):
        return AddressSpace((a, b), PageTables.empty(resolve_target("6.18").arch))

    def vma(i, **kw):
        return Vma(BASE + i * P4, BASE + (i + 1) * P4, pgoff=pg + 4 * i, **kw)

    runs = {
        "noreserve": (two(vma(0, prot="r", anon_vma=False),
                          vma(1, prot="r", anon_vma=False, noreserve=True)), 0, 2 * P4, "rw"),
        "unfaulted": (two(vma(0, anon_vma=False), vma(1, prot="r", anon_vma=False)),
                      0, P4, "r"),
        "faulted": (two(vma(0, anon_id="f"), vma(1, prot="r", anon_vma=False)), 0, P4, "r"),
        "opened": (two(vma(0, anon_vma=False), vma(1, prot="", anon_vma=False)), P4, P4, "rw"),
    }
    return {name: len(do_mprotect(sp, BASE + at, n, prot, version).space.vmas)
            for name, (sp, at, n, prot) in runs.items()}


def test_the_vma_flag_cases_as_planned_on_6_6_and_6_18():
    assert _vma_flags_layouts((6, 18)) == {"noreserve": 2, "unfaulted": 1, "faulted": 2,
                                           "opened": 1}
    assert _vma_flags_layouts((6, 6))["unfaulted"] == 2  # VM_ACCOUNT kept before 6.7


def test_this_kernel_merges_as_the_vma_flags_say(tmp_path):
    """scripts/vma_flags_merge.c on the running kernel (no root needed): the VMAs it counts
    after each mprotect are the ones do_mprotect plans for the same layouts."""
    import os
    import shutil

    if not shutil.which("gcc") or os.sysconf("SC_PAGE_SIZE") != 4096:
        pytest.skip("needs gcc and 4 KiB pages to build and run scripts/vma_flags_merge.c")
    exe = tmp_path / "vfm"
    src = Path(__file__).parent.parent / "scripts" / "vma_flags_merge.c"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert got == _vma_flags_layouts((major, minor))
