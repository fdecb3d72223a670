"""The ``random`` ground-truth grids (docs/groundtruth.md): cases drawn from the probe's
whole vocabulary with a seed, recorded on Debian's kernels under QEMU TCG (``random-V.jsonl``:
seeds 1-5, 80 cases each) and here with tmpfs and ext4 files too
(``host-6.18-random-files.jsonl``: seeds 1-15). Seeds 3-5 there and 6-15 here were recorded
after the rules seeds 1-2 (1-5 here) taught the planner, as held-out data. Every record is held to the planner by
``tests/test_groundtruth.py``; these tests hold the grid itself and the rules the records
taught the planner.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.groundtruth import grid as G
from perfsim.groundtruth.records import kernel_version, read_jsonl
from perfsim.mm.pagetable import PMD_TABLE, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.truncate import split_folio_start, truncate_pagecache
from perfsim.planner.unmap import vma_ptes_dirty
from perfsim.profiles import resolve_target

DATA = Path(__file__).parent / "data" / "groundtruth"
VERSIONS = ("6.1", "6.12", "6.16", "6.17", "6.18", "6.19", "7.3")
M = 1 << 20


def test_a_seed_draws_the_same_cases_and_another_seed_others():
    a, b = G.named_grid("random:3:40"), G.named_grid("random:3:40")
    assert a == b and len(a) == 40
    assert {c["id"] for c in a} != {c["id"] for c in G.named_grid("random:4:40")}
    assert [c["threads"] for c in a] == sorted(c["threads"] for c in a)
    assert G.named_grid("random") == G.random_cases(1, 60)
    assert not {c["backing"] for c in G.random_cases(1, 200)} & {"tmpfs", "ext4"}
    assert {"tmpfs", "ext4"} <= {c["backing"] for c in G.random_cases(1, 200, files=True)}


@pytest.mark.parametrize("bad", ["random:0", "random:x", "random:1:2:3", "random:1:5000"])
def test_a_bad_random_grid_is_one_line(bad):
    with pytest.raises(PerfsimError, match="--grid"):
        G.named_grid(bad)


def test_random_files_needs_native(capsys):
    from perfsim.cli.main import main

    assert main(["groundtruth", "--kernel", "6.12", "--grid", "random-files:2"]) == 2
    assert "needs --native" in capsys.readouterr().err


@pytest.mark.parametrize("version", VERSIONS)
def test_each_kernel_line_has_five_random_seeds_recorded(version):
    recs = read_jsonl(DATA / f"random-{version}.jsonl")
    want = {c["id"] for s in range(1, 6) for c in G.random_cases(s, 80)}
    assert {r["id"] for r in recs} == want
    assert all(kernel_version(r["kernel"]) == version and r["traced"] for r in recs)


def test_host_random_files_hold_fifteen_seeds_and_the_file_backings():
    recs = read_jsonl(DATA / "host-6.18-random-files.jsonl")
    assert {r["id"] for r in recs} == {c["id"] for s in range(1, 16)
                                       for c in G.random_cases(s, 80, files=True)}
    assert {"tmpfs", "ext4"} <= {r["backing"] for r in recs}


def test_files_of_ext4_and_tmpfs_move_with_others_on_6_18():
    """The host's ext4 and tmpfs mappings split by mprotect were moved in one call."""
    recs = read_jsonl(DATA / "host-6.18-files.jsonl")
    assert {r["backing"] for r in recs} == {"ext4", "tmpfs", "memfd"}
    assert all(r["errno"] == 0 and r["summary"]["flush_calls"] > 0 for r in recs)


def test_a_truncation_inside_a_large_file_folio_unmaps_the_whole_folio():
    """R25a: a MADV_HUGEPAGE file VMA's page cache in PMD-order folios (ext4, 6.16+): the
    folio holding the new end is split, and every PTE of it unmapped; 6.12 keeps the pages
    below holebegin."""
    assert split_folio_start(700, 1100, 512) == 512
    t18, t12 = resolve_target("6.18"), resolve_target("6.12")
    base = 64 << 21
    vma = Vma(base, base + 4 * M, backing="file", thp=True, file_id="f", pgoff=0)
    pt = PageTables.empty(t18.arch)
    win = pt.window(base, base + 4 * M)
    full = (1 << 512) - 1
    win.pmd[base >> 21] = (PMD_TABLE, full)
    win.pmd[(base >> 21) + 1] = (PMD_TABLE, full)
    space = AddressSpace((vma,), pt.replace_window(win))
    size = 3 * M + 100  # holebegin: page 769 of the file; its folio starts at page 512
    got18 = truncate_pagecache(t18, space, "f", size).pt
    got12 = truncate_pagecache(t12, space, "f", size).pt
    assert got18.pmd_entry(base >> 21) == (PMD_TABLE, full)
    assert got18.pmd_entry((base >> 21) + 1) == (PMD_TABLE, 0)
    assert got12.pmd_entry((base >> 21) + 1) == (PMD_TABLE, (1 << 257) - 1)
    no_thp = replace(space, vmas=(vma.replaced(thp=False),))
    assert truncate_pagecache(t18, no_thp, "f", size).pt.pmd_entry((base >> 21) + 1) == \
        (PMD_TABLE, (1 << 257) - 1)


def test_a_page_written_before_mprotect_stays_dirty():
    ro = Vma(0, 4096, backing="shmem", prot="r")
    assert not vma_ptes_dirty(ro)
    assert vma_ptes_dirty(ro.replaced(dirty=True))
    assert not vma_ptes_dirty(ro.replaced(dirty=True, written_back=True))


def test_before_6_11_a_small_shmem_thp_vma_loses_its_whole_folio_to_a_truncation():
    """R25a for shmem: 6.1 gives a 92 KiB MADV_HUGEPAGE memfd a PMD-size folio, so a
    truncation to 27,825 bytes (holebegin: page 7) unmaps pages 0-6 too; 6.12 gives it
    small folios and keeps them."""
    t1, t12 = resolve_target("6.1"), resolve_target("6.12")
    base = 64 << 21
    vma = Vma(base, base + 23 * 4096, backing="shmem", thp=True, file_id="m")
    pt = PageTables.empty(t1.arch)
    win = pt.window(base, base + 23 * 4096)
    win.pmd[base >> 21] = (PMD_TABLE, (1 << 11) - 1)
    space = AddressSpace((vma,), pt.replace_window(win))
    assert truncate_pagecache(t1, space, "m", 27825).pt.pmd_entry(base >> 21) == (PMD_TABLE, 0)
    assert truncate_pagecache(t12, space, "m", 27825).pt.pmd_entry(base >> 21) == \
        (PMD_TABLE, (1 << 7) - 1)
