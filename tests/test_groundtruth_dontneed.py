"""The ``dontneed`` ground-truth grid (docs/groundtruth.md): what ``madvise(MADV_DONTNEED)``
leaves for a later mremap (docs/kernel-rules.md R27), recorded on Debian's kernels under
QEMU TCG and on this machine (dontneed-6.18.jsonl holds both). Every record is held to the
planner by ``tests/test_groundtruth.py::test_recorded_call_agrees_with_its_kernel_profile``;
these tests say what the records are evidence of: the kernels free the PTE tables of whole
2 MiB runs from 6.14 on (x86-64, ``CONFIG_PT_RECLAIM``), and the planner needs the version
rule to get the flushes right."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.groundtruth import grid as G
from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import measured, predicted
from perfsim.groundtruth.records import kernel_version, read_jsonl

DATA = Path(__file__).parent / "data" / "groundtruth"
MiB = 1 << 20
VERSIONS = sorted(f.stem.removeprefix("dontneed-") for f in DATA.glob("dontneed-*.jsonl"))
RECLAIMS = {"6.1": False, "6.12": False, "6.16": True, "6.17": True, "6.18": True,
            "6.19": True, "7.3": True}
WHOLE = "pmd_aligned/8M/1t/dontneed-2M+4M"  # two whole PMDs handed back, then moved


def _whole(counts: dict) -> tuple[int, int]:
    return counts["whole"]["flush_calls"], counts["whole"]["full_flushes"]


def test_the_grid_is_recorded_on_every_kernel_line():
    assert VERSIONS == sorted(RECLAIMS, key=lambda v: tuple(map(int, v.split("."))))
    ids = {c["id"] for c in G.dontneed_cases()}
    for v in VERSIONS:
        recs = read_jsonl(DATA / f"dontneed-{v}.jsonl")
        assert {r["id"] for r in recs} == ids
        assert all(kernel_version(r["kernel"]) == v and r["traced"] for r in recs)
    assert len(read_jsonl(DATA / "dontneed-6.18.jsonl")) == 2 * len(ids)  # QEMU and here


@pytest.mark.parametrize("version", sorted(RECLAIMS))
def test_whole_pmds_handed_back_are_skipped_by_the_move_only_where_tables_are_reclaimed(version):
    """8 MiB at a PMD boundary, [2 MiB, 6 MiB) of it handed back (two whole PMDs), then
    moved to a mutually aligned place: four PMD moves, one flush each, plus the call's last flush,
    where the emptied tables stay (6.1, 6.12); two fewer where they are freed."""
    recs = [r for r in read_jsonl(DATA / f"dontneed-{version}.jsonl") if r["id"] == WHOLE]
    want = (3, 2) if RECLAIMS[version] else (5, 4)
    assert {_whole(measured(r)) for r in recs} == {want}
    assert target_for(recs[0]).pt_reclaim == RECLAIMS[version]


@pytest.mark.parametrize("version", sorted(RECLAIMS))
def test_the_other_lines_rule_misses_half_the_grid(version):
    """Planned with ``pt_reclaim`` the other way, 10 of the 20 calls of each run get the
    flushes wrong (every move or shrink over a whole PMD handed back); with the
    profile's, none."""
    flipped = "none" if RECLAIMS[version] else "x86"
    wrong = right = 0
    recs = read_jsonl(DATA / f"dontneed-{version}.jsonl")
    for rec in recs:
        t = target_for(rec)
        got = _whole(measured(rec))
        right += _whole(predicted(rec, t)) != got
        wrong += _whole(predicted(rec, t.with_changes(**{"kernel.pt_reclaim": flipped}))) != got
    assert right == 0
    assert wrong == len(recs) // 2  # (6.18's file: QEMU's 20 and this machine's 20)


def test_dontneed_fields_are_checked_and_reach_the_probe():
    with pytest.raises(PerfsimError, match="'dontneed_len' must be a multiple of 4096"):
        G.shape_case("pmd_aligned", 8 * MiB, dontneed_len=100)
    with pytest.raises(PerfsimError, match="must not pass 'size'"):
        G.shape_case("pmd_aligned", 8 * MiB, dontneed_off=4 * MiB, dontneed_len=8 * MiB)
    line = G.probe_line(G.shape_case("pmd_aligned", 8 * MiB, dontneed_off=MiB,
                                     dontneed_len=2 * MiB))
    assert "dontneed_off=1048576 dontneed_len=2097152" in line and "/dontneed-1M+2M" in line
    assert "dontneed_len=0" in G.probe_line(G.shape_case("pmd_aligned", 8 * MiB))
