"""The kernels between two profiles, held against a running kernel.

perfsim has kernel profiles for 6.19 and 7.3 and none for 7.0, 7.1 and 7.2: the functions
it models are the same from 6.19 to 7.3 (docs/kernels.md), so a user of those kernels is
pointed at either. tests/data/groundtruth/between/ holds the ``shapes`` and ``zap`` grids
recorded on 2026-12-02 under QEMU TCG on Debian's newest image of each of the three lines
(docs/groundtruth.md, "The kernels between two profiles"); both bracketing profiles must
predict every call, whole call and phase by phase.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.groundtruth import grid as G
from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import compare
from perfsim.groundtruth.records import kernel_version, read_jsonl
from perfsim.profiles import kernel_names

DATA = Path(__file__).parent / "data" / "groundtruth" / "between"
VERSIONS = ("7.0", "7.1", "7.2")
BRACKET = ("6.19", "7.3")


def _params():
    for v in VERSIONS:
        for stem in (v, f"zap-{v}"):
            for rec in read_jsonl(DATA / f"{stem}.jsonl"):
                for profile in BRACKET:
                    yield pytest.param(rec, profile, id=f"{stem}:{profile}:{rec['id']}")


@pytest.mark.parametrize("rec,profile", list(_params()))
def test_both_bracketing_profiles_predict_every_recorded_call(rec, profile):
    assert rec["traced"], rec.get("trace_skipped")
    c = compare(rec, target_for(rec, profile))
    assert c["agree"], c["diff"]


@pytest.mark.parametrize("version", VERSIONS)
def test_each_kernel_between_has_both_grids_recorded_and_no_profile_of_its_own(version):
    assert version not in kernel_names()  # (else it belongs in tests/data/groundtruth/)
    shapes = read_jsonl(DATA / f"{version}.jsonl")
    zap = read_jsonl(DATA / f"zap-{version}.jsonl")
    assert {r["id"] for r in shapes} == {c["id"] for c in G.shapes_grid()}
    assert {r["id"] for r in zap} == {c["id"] for c in G.zap_cases()}
    assert all(kernel_version(r["kernel"]) == version for r in shapes + zap)
    assert {r["source"] for r in shapes + zap} == {"qemu-tcg"}


def test_the_bracket_is_the_profiles_next_to_the_kernels_between():
    names = kernel_names()
    low, high = (names.index(p) for p in BRACKET)
    assert high == low + 1  # no profile lies between them


def test_a_kernel_between_two_profiles_is_told_which_two(capsys):
    """perfsim plan --kernel 7.1: one line naming the profiles around it; a version outside
    every profile gets the plain list."""
    from perfsim.cli.main import main

    assert main(["plan", "--old-len", "1G", "--kernel", "7.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "7.1 lies between the profiles 6.19 and 7.3" in err[0], err
    assert main(["plan", "--old-len", "1G", "--kernel", "9.9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown kernel profile '9.9'" in err[0]
    assert "lies between" not in err[0]


def test_comparing_a_record_of_a_kernel_between_says_which_profiles_bracket_it(capsys):
    from perfsim.cli.main import main

    assert main(["groundtruth", "--compare", str(DATA / "7.1.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "no kernel profile '7.1'" in err[0] and "between the profiles 6.19 and 7.3" in err[0]
    assert err[0].endswith("pass --profile NAME to compare with one")
    assert main(["groundtruth", "--compare", str(DATA / "7.1.jsonl"), "--profile", "7.3",
                 "--quiet"]) == 0
