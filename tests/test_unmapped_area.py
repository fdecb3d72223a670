"""Where the kernel puts a range it chooses the address of (``get_unmapped_area``,
perfsim/planner/unmapped_area.py, docs/kernel-rules.md R26), and the ``kernel-picks``
ground-truth grids that hold the rule to real kernels: Debian's 6.1, 6.12, 6.16-6.19 and 7.3
under QEMU TCG, and this machine's 6.18 (anon, memfd, shmem, tmpfs and ext4). Every record is
also compared call by call (address included) by
``tests/test_groundtruth.py::test_recorded_call_agrees_with_its_kernel_profile``; these tests
say what the records are evidence of, and that the rule is what makes them agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.groundtruth import grid as G
from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import compare, errno_name
from perfsim.groundtruth.records import read_jsonl
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import unmapped_area as U
from perfsim.planner.unmapped_area import x86_mmap_base
from perfsim.profiles import load_kernel, resolve_target

DATA = Path(__file__).parent / "data" / "groundtruth"
K, M = 1 << 10, 1 << 20
PMD = 2 * M
VERSIONS = ("6.1", "6.12", "6.16", "6.17", "6.18", "6.19", "7.3")
T = {v: resolve_target(v, "x86_64") for v in ("6.1", "6.7", "6.8", "6.11", "6.18")}
BASE = 0x7F00_0000_0000  # mmap_base of the spaces below (PMD-aligned)


def space(*vmas: Vma, base: int = BASE, target=T["6.18"]) -> AddressSpace:
    return AddressSpace(vmas, PageTables.empty(target.arch), mmap_base_addr=base)


# ------------------------------------------------------------------ the rule, on its own
def test_the_plain_search_takes_the_highest_gap_that_fits():
    sp = space(Vma(BASE - 3 * M, BASE - M))
    assert U.mm_get_unmapped_area(sp, M, None) == BASE - M  # the gap above it fits
    assert U.mm_get_unmapped_area(sp, 2 * M, None) == BASE - 5 * M  # only the one below
    assert U.mm_get_unmapped_area(sp, M, BASE - 8 * M) == BASE - 8 * M  # a free hint
    assert U.mm_get_unmapped_area(sp, M, BASE - 2 * M) == BASE - M  # a taken one


def test_an_anonymous_range_of_whole_pmds_starts_on_a_pmd_boundary_from_6_12():
    src = Vma(BASE - 64 * M + 4 * K, BASE - 60 * M + 4 * K, pgoff=(BASE - 64 * M + 4 * K) >> 12)
    sp = space(src, Vma(BASE - 3 * M - 4 * K, BASE - 3 * M))
    pg = src.pgoff
    # 6.18: 8 MiB (whole PMDs) is searched padded by a PMD, then aligned
    got = U.get_unmapped_area(T["6.18"], sp, src, 8 * M, None, pg)
    assert got % PMD == 0 and got + 8 * M <= BASE - 3 * M - 4 * K
    # not a whole number of PMDs, or with a hint: the plain search
    assert U.get_unmapped_area(T["6.18"], sp, src, 8 * M + 4 * K, None, pg) == \
        U.mm_get_unmapped_area(sp, 8 * M + 4 * K, None)
    # 6.1: never aligned
    assert U.get_unmapped_area(T["6.1"], sp, src, 8 * M, None, pg) == \
        U.mm_get_unmapped_area(sp, 8 * M, None)
    # 6.7: any length of a PMD or more lands congruent with the VMA's own pgoff
    got7 = U.get_unmapped_area(T["6.7"], sp, src, 6 * M + 4 * K, None, pg)
    assert got7 % PMD == src.start % PMD


def test_a_file_range_lands_congruent_with_its_file_offset():
    f = Vma(BASE - 64 * M, BASE - 56 * M, backing="file", file_id="f", pgoff=(3 * M) >> 12)
    sp = space(f)
    got = U.get_unmapped_area(T["6.18"], sp, f, 6 * M + 4 * K, None, f.pgoff)
    assert got % PMD == (3 * M) % PMD
    # a range holding no whole PMD-aligned chunk of the file: the plain search
    assert U.thp_get_unmapped_area(sp, 2 * M, None, 1 * M, T["6.18"]) == \
        U.mm_get_unmapped_area(sp, 2 * M, None)


def test_an_already_congruent_start_moves_one_pmd_up_on_a_topdown_mm_from_6_8():
    """``__thp_get_unmapped_area`` with the padded gap's start already congruent: 6.12+
    take it a PMD higher (the padding below), 6.1 and 6.7 keep it (the padding above)."""
    sp = space(Vma(BASE - PMD, BASE))  # the top gap ends on a PMD boundary
    assert U.thp_get_unmapped_area(sp, 4 * M, None, 0, T["6.18"]) == BASE - PMD - 4 * M
    assert U.thp_get_unmapped_area(sp, 4 * M, None, 0, T["6.1"]) == BASE - PMD - 6 * M
    assert U.thp_get_unmapped_area(sp, 4 * M, None, 0, T["6.7"]) == BASE - PMD - 6 * M


def test_hugetlb_ranges_are_aligned_to_the_huge_page():
    """The search is for the length plus the alignment less one byte
    (``unmapped_area_topdown``): a 5 MiB top gap cannot hold 4 MiB at a 2 MiB boundary for
    sure, so the gap below is taken, its end rounded down."""
    sp = space(Vma(BASE - 5 * M - 4 * K, BASE - 5 * M))
    assert U.hugetlb_get_unmapped_area(sp, 4 * M, PMD) == BASE - 10 * M
    sp = space(Vma(BASE - 7 * M, BASE - 7 * M + 4 * K))
    assert U.hugetlb_get_unmapped_area(sp, 4 * M, PMD) == BASE - 4 * M
    assert U.unmapped_area_topdown(sp, 4 * M, (1 << 30) - 1) == BASE - (1 << 30)


def test_no_gap_is_enomem():
    target = T["6.18"]
    full = space(Vma(target.arch.page_size, BASE))
    assert U.get_unmapped_area(target, full, full.vmas[0], M, None, 0) is None
    sp = space(Vma(BASE - 12 * M, BASE - 8 * M, pgoff=(BASE - 12 * M) >> 12),
               Vma(target.arch.page_size, BASE - 16 * M), Vma(BASE - 8 * M, BASE - 8 * M + 4 * K))
    plan = plan_mremap(sp, MoveRequest(BASE - 12 * M, 4 * M, 64 * M, fixed=False), target)
    assert plan.errno == "ENOMEM"


def test_a_realloc_growth_is_realigned_on_6_7_and_copied_pte_by_pte_on_6_18():
    """4 MiB at a page past a PMD boundary grown to 8 MiB past a blocking page: 6.7 puts it
    congruent with the source and realigns the move (PMD moves); 6.12+ put it on a PMD
    boundary, 4 KiB off the source's offset, so every PTE is copied."""
    src = BASE - 64 * M + 4 * K
    sp = space(Vma(src, src + 4 * M, pgoff=src >> 12), Vma(src + 4 * M, src + 4 * M + 4 * K))
    sp = AddressSpace(sp.vmas, sp.pt.populate(src, src + 4 * M), mmap_base_addr=BASE)
    req = MoveRequest(src, 4 * M, 8 * M, fixed=False)
    p7, p18 = plan_mremap(sp, req, T["6.7"]), plan_mremap(sp, req, T["6.18"])
    assert p7.result_addr % PMD == src % PMD and p7.move.pmd_moves == 2
    assert p18.result_addr % PMD == 0 and p18.move.pmd_moves == 0
    assert p18.move.ptes_moved == 1024


def test_6_8_to_6_10_put_an_anonymous_growth_of_any_length_on_a_pmd_boundary():
    """The same source grown to 5 MiB (not whole PMDs): 6.7 places it congruent with the
    source (pgoff), 6.8 on a PMD boundary (pgoff 0, any length of a PMD or more), 6.11 (as
    of 6.11.7) and 6.18 where the plain search says, here 1 MiB and a page off a boundary; a
    growth to less than a PMD goes through the plain search on every line."""
    src = BASE - 64 * M + 4 * K
    sp = space(Vma(src, src + 1 * M, pgoff=src >> 12), Vma(src + 1 * M, src + 1 * M + 4 * K))
    sp = AddressSpace(sp.vmas, sp.pt.populate(src, src + 1 * M), mmap_base_addr=BASE - 4 * K)
    req = MoveRequest(src, 1 * M, 5 * M, fixed=False)
    got = {v: plan_mremap(sp, req, T[v]).result_addr for v in ("6.7", "6.8", "6.11", "6.18")}
    assert got["6.7"] % PMD == src % PMD
    assert got["6.8"] % PMD == 0
    assert got["6.11"] == got["6.18"] == BASE - 4 * K - 5 * M
    assert got["6.18"] % PMD == M - 4 * K  # not on a boundary, nor congruent with the source
    small = MoveRequest(src, 1 * M, 1 * M + 8 * K, fixed=False)
    assert len({plan_mremap(sp, small, T[v]).result_addr for v in ("6.8", "6.18")}) == 1
    assert U.handler(T["6.8"], sp, sp.vmas[0], 5 * M, None) == "anon_zero"
    assert "6.8-6.10" in U.placement(T["6.8"], sp, sp.vmas[0], 5 * M, None)


def test_the_mmap_base_of_a_process_without_randomisation():
    top = (1 << 47) - 4096
    assert x86_mmap_base(top, 8 << 20) == 0x7FFFF7FFF000  # where ld.so ends under setarch -R
    assert x86_mmap_base(top, 512 << 20) == top - (513 << 20)
    assert x86_mmap_base(top, -1) == -(-(top - top // 6 * 5) // 4096) * 4096


def test_the_profiles_say_which_alignment_each_kernel_line_has():
    lines = ("6.1", "6.6", "6.7", "6.8", "6.9", "6.10", "6.11", "6.12", "6.13", "7.3")
    assert [load_kernel(v).anon_thp_align for v in lines] == [
        "none", "none", "any_length", "pmd_span", "pmd_span", "pmd_span", "pmd_multiple",
        "pmd_multiple", "pmd_multiple", "pmd_multiple"]
    assert [load_kernel(v).thp_honours_topdown for v in lines] == [False] * 3 + [True] * 7


def test_bad_kernel_picks_cases_are_one_line():
    with pytest.raises(PerfsimError, match="'maymove'.*new_size"):
        G.normalise({"size": 4096, "src_off": 0, "dst_off": 0, "flags": "maymove"})
    with pytest.raises(PerfsimError, match="'dontunmap-any'"):
        G.normalise({"size": 8192, "src_off": 0, "dst_off": 0, "flags": "dontunmap-any",
                     "new_size": 4096})


# ------------------------------------------------------------------ the recorded grids
def _recs(name: str) -> list[dict]:
    return read_jsonl(DATA / f"{name}.jsonl")


@pytest.mark.parametrize("version", VERSIONS)
def test_each_kernel_line_has_the_kernel_picks_grid_recorded(version):
    recs = _recs(f"kernel-picks-{version}")
    want = {c["id"] for c in G.kernel_picks_cases()}
    for source in {r["source"] for r in recs}:
        assert {r["id"] for r in recs if r["source"] == source} == want, source
    assert all(r["randomized"] is False and r["stack_rlimit"] == 8 << 20 for r in recs)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_kernel_aligns_anonymous_whole_pmd_ranges_from_6_12_and_not_on_6_1(version):
    """The recorded fact: a growth to 8 MiB (whole PMDs) lands on a PMD boundary on every
    kernel from 6.12, whatever the source's offset; on 6.1 where the plain search says."""
    recs = [r for r in _recs(f"kernel-picks-{version}")
            if r["flags"] == "maymove" and r["new_size"] == 8 * M and r["errno"] == 0]
    aligned = [r["ret"] % PMD == 0 for r in recs]
    assert recs
    if version == "6.1":
        assert not all(aligned)
    else:
        assert all(aligned)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_other_kernel_lines_rule_gets_the_addresses_wrong(version):
    """Planned with the other rule (6.1's records with 6.12's profile and the rest with
    6.1's), 25 of the 45 calls go elsewhere than the kernel put them: the grid tells the
    rules apart, and the profile's field is what makes them agree."""
    other = "6.12" if version == "6.1" else "6.1"
    wrong = 0
    for r in _recs(f"kernel-picks-{version}"):
        if r["source"] != "qemu-tcg":
            continue
        assert compare(r, target_for(r))["agree"]
        wrong += "new_addr" in compare(r, target_for(r, other))["diff"]
    assert wrong >= 20


@pytest.mark.parametrize("version", VERSIONS)
def test_shmem_with_huge_pages_allowed_is_aligned_to_its_file_offset(version):
    """Under QEMU the initramfs sets ``shmem_enabled=advise``: memfd and shared anonymous
    ranges of a PMD or more land congruent with their file offset (0 here), on every kernel
    line; planned as if the superblock had huge pages off, most land elsewhere."""
    recs = _recs(f"kernel-picks-shmem-{version}")
    assert {r["id"] for r in recs} == {c["id"] for c in G.named_grid("kernel-picks-shmem")}
    assert all("[advise]" in r["thp_shmem_enabled"] for r in recs)
    big = [r for r in recs if r["errno"] == 0 and r["new_size"] >= PMD]
    assert big and all(r["ret"] % PMD == 0 for r in big)
    assert all(compare(r, target_for(r))["agree"] for r in recs)
    never = sum(compare({**r, "thp_shmem_enabled": "[never]"}, target_for(r))["agree"]
                for r in recs)
    assert never < len(recs) // 2


def test_a_shmem_range_is_aligned_only_where_its_superblock_allows_huge_pages():
    sh = Vma(BASE - 64 * M, BASE - 56 * M, backing="shmem", file_id="m", pgoff=0)
    sp = space(sh, Vma(BASE - 3 * M - 4 * K, BASE - 3 * M))
    plain = U.mm_get_unmapped_area(sp, 6 * M, None)
    assert plain % PMD  # the plain search lands off a boundary here
    assert U.get_unmapped_area(T["6.18"], sp, sh, 6 * M, None, 0) == plain
    huge = sh.replaced(shmem_huge=True)
    got = U.get_unmapped_area(T["6.18"], sp, huge, 6 * M, None, 0)
    assert got % PMD == 0 and got + 6 * M <= BASE - 3 * M - 4 * K
    # an offset off a PMD boundary whose range does not reach a second PMD: plain
    assert U.shmem_get_unmapped_area(sp, 2 * M, None, 4 * K, True) == \
        U.mm_get_unmapped_area(sp, 2 * M, None)
    assert U.shmem_get_unmapped_area(sp, M, None, 0, True) == U.mm_get_unmapped_area(sp, M, None)


def test_this_machine_places_ext4_ranges_by_file_offset_and_shmem_plainly():
    """6.18 here (shmem_enabled=never): every ext4 range of 2 MiB or more starts on a PMD
    boundary (the file offset is 0: thp_get_unmapped_area); memfd, shmem and tmpfs ranges
    are where the plain search says, which only sometimes is a boundary."""
    recs = [r for r in _recs("host-6.18-kernel-picks-files") if r["errno"] == 0]
    ext4 = [r for r in recs if r["backing"] == "ext4" and r["new_size"] >= PMD]
    assert ext4 and all(r["ret"] % PMD == 0 for r in ext4)
    shm = [r for r in recs if r["backing"] != "ext4" and r["new_size"] >= PMD]
    assert any(r["ret"] % PMD for r in shm)
    assert all(compare(r, target_for(r))["agree"] for r in recs)


def test_perfsim_plan_says_which_path_placed_the_destination(capsys):
    from perfsim.cli.main import main

    args = ["plan", "--vma", "A+4K:4M", "--vma", "A+4M+4K:4K", "--old-addr", "A+4K",
            "--old-len", "4M", "--new-len", "8M", "--no-fixed"]
    placed = {}
    for k in ("6.1", "6.7", "6.18"):
        assert main([*args, "--kernel", k]) == 0
        out = capsys.readouterr().out
        placed[k] = next(ln for ln in out.splitlines() if ln.startswith("placed"))
    assert "mm_get_unmapped_area" in placed["6.1"]
    assert "VMA's pgoff" in placed["6.7"]
    assert "PMD boundary" in placed["6.18"]
    assert main(["plan", "--old-len", "4M"]) == 0  # MREMAP_FIXED: no such line
    assert "placed" not in capsys.readouterr().out


# ------------------------------------------------------------------ random layouts, held out
@pytest.mark.parametrize("version", VERSIONS)
def test_random_picks_are_recorded_for_seeds_1_to_3_on_each_kernel_line(version):
    """``random-picks`` (docs/groundtruth.md): random layouts of anon, shmem and memfd, each
    moved where the kernel chooses; drawn and recorded after R26 was written (held out)."""
    recs = [r for r in _recs(f"random-picks-{version}") if r["source"] == "qemu-tcg"]
    want = {c["id"] for s in (1, 2, 3) for c in G.random_cases(s, 80, picks=True)}
    assert {r["id"] for r in recs} == want
    assert all(compare(r, target_for(r))["agree"] for r in recs)


def test_random_picks_with_files_here():
    recs = _recs("host-6.18-random-picks-files")
    want = {c["id"] for s in range(1, 6) for c in G.random_cases(s, 80, files=True, picks=True)}
    assert {r["id"] for r in recs} == want
    moved = [r for r in recs if r["errno"] == 0]
    assert len(moved) > 300 and any(r["ret"] % PMD == 0 for r in moved)
    assert all(compare(r, target_for(r))["agree"] for r in recs)


def test_bad_random_picks_grid_names_are_one_line():
    with pytest.raises(PerfsimError, match="random-picks:SEED:COUNT"):
        G.named_grid("random-picks:x")
    with pytest.raises(PerfsimError, match="random-picks-files"):
        G.named_grid("random-pick")


def test_a_kernel_picks_record_as_a_request_file_lands_where_the_kernel_put_it(tmp_path, capsys):
    """``perfsim groundtruth --requests`` writes such a call without an address and with the
    process's ``mmap_base``: ``perfsim plan --file`` then returns the kernel's address (or
    its errno), from the request file alone."""
    import json

    from perfsim.cli.main import main
    from perfsim.groundtruth.requests import request_toml

    recs = _recs("kernel-picks-6.18")
    for line, rec in enumerate(recs, 1):
        path = tmp_path / f"r{line}.toml"
        path.write_text(request_toml(rec, records_name="kernel-picks-6.18.jsonl", line=line))
        capsys.readouterr()
        assert main(["plan", "--file", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        if rec["errno"]:
            assert doc["errno"] == errno_name(rec["errno"]), rec["id"]
        else:
            assert doc["result_addr"] == rec["ret"], rec["id"]


# ------------------------------------------------------------------ properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ARCHES = ("x86_64", "arm64-4k", "arm64-16k", "riscv-sv48")


@settings(max_examples=300, deadline=None)
@given(arch=st.sampled_from(ARCHES), kernel=st.sampled_from(("6.1", "6.7", "6.8", "6.18")),
       backing=st.sampled_from(("anon", "file", "shmem")), huge=st.booleans(),
       holes=st.lists(st.tuples(st.integers(1, 4096), st.integers(1, 4096)), max_size=6),
       pages=st.integers(1, 40000), whole_pmds=st.sampled_from([0] * 8 + list(range(1, 9))),
       pgoff=st.integers(0, 1 << 20))
def test_a_placed_range_is_free_below_mmap_base_and_aligned_as_its_path_says(
        arch, kernel, backing, huge, holes, pages, whole_pmds, pgoff):
    """Whatever the neighbours: the range the kernel would place is page-aligned, maps
    nothing already mapped, ends at or below ``mmap_base``; an ext4 or 6.7 anonymous range
    of a PMD or more, and a 6.12+ anonymous one of whole PMDs, is congruent with its offset
    when the plain search had room for the padding."""
    t = resolve_target(kernel, arch)
    a = t.arch
    base = (a.user_va_top // 2) // a.pud_size * a.pud_size
    vmas, top = [], base
    for gap, size in holes:  # VMAs stacked down from mmap_base, with gaps between them
        end = top - gap * a.page_size
        start = end - size * a.page_size
        if start <= a.page_size:
            break
        vmas.append(Vma(start, end))
        top = start
    sp = AddressSpace(tuple(vmas), PageTables.empty(a), mmap_base_addr=base)
    length = whole_pmds * a.pmd_size or pages * a.page_size  # (whole PMDs half the time)
    vma = Vma(a.page_size, 2 * a.page_size, backing=backing, file_id=None if backing == "anon"
              else "f", pgoff=pgoff, shmem_huge=huge and backing == "shmem")
    got = U.get_unmapped_area(t, sp, vma, length, None, pgoff)
    if got is None:
        assert U.mm_get_unmapped_area(sp, length, None) is None
        return
    assert got % a.page_size == 0 and a.page_size <= got and got + length <= base
    assert sp.intersecting(got, got + length) == []
    pmd = a.pmd_size
    how = U.handler(t, sp, vma, length, None)
    padded_fits = U.unmapped_area_topdown(sp, length + pmd) is not None
    off = {"anon_pmd": 0, "anon_zero": 0}.get(how, pgoff * a.page_size)
    whole_chunk = off + length - (-(-off // pmd) * pmd) >= pmd
    if how in ("file", "anon_pgoff", "anon_pmd", "anon_zero") and padded_fits and whole_chunk:
        assert (got - off) % pmd == 0, (how, hex(got), hex(off))


# ------------------------------------------------------------------ live, on this kernel
def _live_reason() -> str | None:
    import os
    import shutil

    from perfsim.profiles import kernel_names

    if os.uname().machine != "x86_64":
        return "the probe measures x86-64 kernels"
    if not shutil.which("gcc"):
        return "needs gcc to build the probe"
    v = ".".join(os.uname().release.split(".")[:2])
    if v not in kernel_names():
        return f"no kernel profile for this kernel ({os.uname().release})"
    return None


@pytest.mark.host
def test_this_kernel_places_ranges_where_the_planner_says():
    """The probe, untraced (no root needed), makes a handful of kernel-placed moves on the
    running kernel; the planner, on the layout the probe recorded, picks the same addresses."""
    reason = _live_reason()
    if reason:
        pytest.skip(reason)
    from perfsim.groundtruth.model import space_for_record
    from perfsim.groundtruth.native import run_native

    cases = [c for c in G.kernel_picks_cases() if c["layout"] == "ordinary"
             and c["src_off"] in (0, 4 * K)][:10]
    _hdr, recs = run_native(cases, link="dynamic", untraced=True)
    assert len(recs) == len(cases)
    for rec in recs:
        space, req = space_for_record(rec, target_for(rec))
        plan = plan_mremap(space, req, target_for(rec))
        got = plan.errno or plan.result_addr
        want = errno_name(rec["errno"]) if rec["errno"] else rec["ret"]
        assert got == want, (rec["id"], got, want)
