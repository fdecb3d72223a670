"""The ``truncate`` and ``zap-sparse`` ground-truth grids (docs/groundtruth.md): what
``ftruncate`` of a mapped file leaves for a later mremap (docs/kernel-rules.md R25), and the
range a zap's flush covers (the PTEs it cleared, not the range it walked), recorded on
Debian's kernels under QEMU TCG and on this machine. Every record is also held to the
planner by ``tests/test_groundtruth.py::test_recorded_call_agrees_with_its_kernel_profile``;
these tests say what the records are evidence of, and that the planner needs what it was
given to get them right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.groundtruth import grid as G
from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import measured, predicted, space_for_record
from perfsim.groundtruth.records import kernel_version, read_jsonl
from perfsim.mm.pagetable import PMD_TABLE
from perfsim.planner.gather import MmuGather
from perfsim.planner.unmap import gather_zapped_ptes
from perfsim.profiles import resolve_target

DATA = Path(__file__).parent / "data" / "groundtruth"
MiB = 1 << 20
#: every kernel line the shapes grid is recorded for (the files named by a version)
VERSIONS = sorted(f.stem for f in DATA.glob("*.jsonl")
                  if not f.stem.startswith(("host-", "zap-", "truncate-", "random-", "kernel-picks-",
                                       "dontneed-")))
GRIDS = {"truncate": G.truncate_cases, "zap-sparse": G.zap_sparse_cases}


def _whole(counts: dict) -> tuple[int, int]:
    return counts["whole"]["flush_calls"], counts["whole"]["full_flushes"]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("version", VERSIONS)
def test_each_kernel_line_has_the_grid_recorded(grid, version):
    recs = read_jsonl(DATA / f"{grid}-{version}.jsonl")
    assert {r["id"] for r in recs} == {c["id"] for c in GRIDS[grid]()}
    assert all(kernel_version(r["kernel"]) == version and r["traced"] for r in recs)


class _ById(dict):
    """id -> every record of it in a file (6.18's hold QEMU's and this machine's)."""

    def one(self, case_id: str) -> dict:
        return self[case_id][0]


def _by_id(grid: str, version: str) -> _ById:
    out = _ById()
    for r in read_jsonl(DATA / f"{grid}-{version}.jsonl"):
        out.setdefault(r["id"], []).append(r)
    return out


def _measured(recs: list[dict]) -> set[tuple[int, int]]:
    """The whole-call counts of every record of one case (one value where they agree)."""
    return {_whole(measured(r)) for r in recs}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_truncated_tail_is_shrunk_with_one_flush_where_untruncated_it_forces_one_per_table(
        version):
    """8 MiB of written memfd shrunk to 2 MiB: 3 forced full flushes and the tables' flush
    untruncated; once the file was truncated to 2 MiB (or 0) the tail's tables are empty and
    the shrink flushes once. A growth changes nothing."""
    recs = _by_id("truncate", version)
    base = "pmd_aligned/8M/1t/memfd/to-2M/shrink"
    assert _measured(recs[base]) == {(4, 3)}
    assert _measured(recs[base + "/trunc-2M"]) == {(1, 0)}
    assert _measured(recs[base + "/trunc-0"]) == {(1, 0)}
    assert _measured(recs[base + "/trunc-16M"]) == {(4, 3)}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_planner_needs_the_truncation_to_get_the_shrink_right(version):
    """The same record planned as if the file had not been truncated misses the kernel:
    the truncation (R25), not the layout, is what the planner's agreement rests on."""
    for rec in _by_id("truncate", version)["pmd_aligned/8M/1t/memfd/to-2M/shrink/trunc-2M"]:
        target = target_for(rec)
        assert _whole(predicted(rec, target)) == _whole(measured(rec)) == (1, 0)
        assert _whole(predicted({**rec, "truncate": -1}, target)) == (4, 3)


def test_the_rebuilt_space_keeps_the_truncated_tails_tables_empty():
    """The hole starts at the next page after a new end that is not page-aligned; the
    tables past it stay, with no PTE present."""
    rec = _by_id("truncate", "6.18").one("pmd_aligned/8M/1t/memfd/to-2M/shrink/trunc-2097252")
    space, _ = space_for_record(rec, target_for(rec))
    slot = int(rec["src"]) >> 21
    assert space.pt.pmd_entry(slot) == (PMD_TABLE, (1 << 512) - 1)
    assert space.pt.pmd_entry(slot + 1) == (PMD_TABLE, 1)  # the page holding byte 2 MiB+99
    assert space.pt.pmd_entry(slot + 2) == (PMD_TABLE, 0)
    assert space.pt.pmd_entry(slot + 3) == (PMD_TABLE, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_sparse_tail_flushes_the_pages_it_cleared(version):
    """Two (30) written pages in the kept table: one ranged flush, on every kernel and for
    anon, shmem and memfd alike; pages every 32 from 3 MiB span more than the x86 ceiling
    of 33 pages: full."""
    recs = _by_id("zap-sparse", version)
    for b in ("", "/shmem", "/memfd"):
        for pop in ("first3153920", "first3268608"):
            assert _measured(recs[f"pmd_aligned/8M/1t{b}/{pop}/to-3M/shrink"]) == {(1, 0)}
    assert _measured(recs["pmd_aligned/8M/1t/every32/to-3M/shrink"]) == {(1, 1)}


def test_gathered_range_is_first_to_last_cleared_pte():
    """``gather_zapped_ptes`` widens the range by the PTEs it clears, in the per-PTE and in
    the large-folio path."""
    target = resolve_target("6.18")
    base = 64 << 21
    hit = (1 << 100) | (1 << 101) | (1 << 300)
    for folio in (False, True):
        tlb = MmuGather(base)
        gather_zapped_ptes(target, tlb, base, 0, 512, hit, forces=False, folio=folio)
        assert (tlb.start, tlb.end) == (base + 100 * 4096, base + 301 * 4096), folio


def test_truncate_field_is_checked():
    with pytest.raises(PerfsimError, match="'truncate' needs a backing with a file"):
        G.shape_case("pmd_aligned", 8 * MiB, truncate=MiB)
    with pytest.raises(PerfsimError, match="'truncate' must be a size"):
        G.shape_case("pmd_aligned", 8 * MiB, backing="memfd", truncate=-2)
    line = G.probe_line(G.shape_case("pmd_aligned", 8 * MiB, backing="memfd", truncate=MiB))
    assert "truncate=1048576" in line and "/trunc-1M" in line
    assert "truncate=-1" in G.probe_line(G.shape_case("pmd_aligned", 8 * MiB))


def test_truncate_files_grid_needs_native(capsys):
    from perfsim.cli.main import main

    assert main(["groundtruth", "--kernel", "6.12", "--grid", "truncate-files"]) == 2
    assert "--grid truncate-files needs --native" in capsys.readouterr().err
