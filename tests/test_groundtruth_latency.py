"""Untraced call times of random layouts against the cost model (held-out latency).

``tests/data/groundtruth/latency/host-6.18-random-files-untraced.jsonl``: the
``random-files`` grid, seeds 1-5, each run three times untraced on this machine (Intel Xeon
host, 6.18.44; docs/calibration.md, *Held out: random layouts*). None of these layouts
was used to fit a cost profile, so the figures below say how well ``kvm-xeon`` prices calls
it has never seen; the bounds are the measured ones with room, so a cost-model change
that makes them much worse fails here.
"""

from __future__ import annotations

from pathlib import Path

from perfsim.groundtruth.latency import latency_rows, size_class, summary, written_bytes
from perfsim.groundtruth.records import read_jsonl

DATA = Path(__file__).parent / "data" / "groundtruth" / "latency"
RECORDS = read_jsonl(DATA / "host-6.18-random-files-untraced.jsonl")


def test_the_records_are_untraced_and_timed_three_times_each():
    assert all(not r["traced"] and r["call_ns"] > 0 for r in RECORDS)
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == 1200 and all(ids.count(i) == 3 for i in set(ids[:20]))


def test_kvm_xeon_prices_random_layouts_within_a_fifth_in_the_median():
    rows = latency_rows(RECORDS, "kvm-xeon")
    assert len(rows) >= 350 and all(r.runs == 3 for r in rows)
    (_, n, med, mabs), = [s for s in summary(rows, lambda r: 0) if s[0] == "all"]
    assert n == len(rows)
    assert abs(med) <= 0.15 and mabs <= 0.25, (med, mabs)
    # every size class is priced to within 30 % in the median
    for g, _n, _med, gabs in summary(rows, lambda r: size_class(r.rec))[:-1]:
        assert gabs <= 0.30, (g, gabs)


def test_written_bytes_counts_the_source_population_and_a_written_destination():
    base = {"size": 8 << 20, "dst_mode": "hole"}
    assert written_bytes({**base, "populate": "full"}) == 8 << 20
    assert written_bytes({**base, "populate": "none"}) == 0
    assert written_bytes({**base, "populate": "every:512"}) == 4 * 4096
    assert written_bytes({**base, "populate": "every:3"}) == 683 * 4096
    assert written_bytes({**base, "populate": "first:65536"}) == 65536
    assert written_bytes({**base, "populate": "none", "dst_mode": "written"}) == 8 << 20


def test_untraced_needs_native(capsys):
    from perfsim.cli.main import main

    assert main(["groundtruth", "--kernel", "6.12", "--untraced"]) == 2
    assert "--untraced needs --native" in capsys.readouterr().err


PICKS = read_jsonl(DATA / "host-6.18-random-picks-files-untraced.jsonl")


def _by_flag(rows, flag):
    return [r for r in rows if r.rec["flags"] == flag]


def test_kvm_xeon_prices_kernel_placed_growths_near_the_kernel():
    """``random-picks-files``, seeds 1-3, three runs each (recorded after the placement rule
    and the profile): growths the kernel places are priced within a fifth in the median."""
    rows = latency_rows(PICKS, "kvm-xeon")
    grow = _by_flag(rows, "maymove")
    assert len(grow) >= 120
    (_, _n, med, mabs), = [s for s in summary(grow, lambda r: 0) if s[0] == "all"]
    assert abs(med) <= 0.15 and mabs <= 0.25, (med, mabs)


def test_moves_that_unmap_nothing_are_priced_without_an_unmap():
    """docs/calibration.md, *The source's unmap*: a DONTUNMAP move to a place the kernel
    chose unmaps nothing, and was over-priced by half while the fixed cost held the
    source's ``do_vmi_munmap``; charged apart (``unmap_ns`` on the ``do_vmi_munmap`` row),
    it is priced within a quarter in the median, and the growths the kernel places, which
    do unmap their source, are priced as before."""
    rows = latency_rows(PICKS, "kvm-xeon")
    for flag, bound in (("dontunmap-any", 0.25), ("maymove", 0.15)):
        got = _by_flag(rows, flag)
        assert len(got) >= 50, flag
        (_, _n, med, _mabs), = [s for s in summary(got, lambda r: 0) if s[0] == "all"]
        assert abs(med) <= bound, (flag, med)


def test_shrinks_pay_one_unmap_as_the_kernel_does():
    """In-place shrinks unmap their tail once: before the source's unmap was charged apart
    they paid it twice (in ``syscall_ns`` and in ``unmap_ns``), +24 % anon in the median;
    now within 15 %."""
    rows = [r for r in latency_rows(RECORDS, "kvm-xeon") if r.rec["flags"] == "shrink"]
    assert len(rows) >= 60
    (_, _n, med, _mabs), = [s for s in summary(rows, lambda r: 0) if s[0] == "all"]
    assert abs(med) <= 0.15, med


SEED4 = read_jsonl(DATA / "host-6.18-random-picks-files-seed4-untraced.jsonl")


def test_a_grid_recorded_after_the_unmap_split_is_priced_as_the_docs_say():
    """``random-picks-files`` seed 4, recorded at 17:43 UTC on 2026-12-03, after the
    source's unmap was charged apart and kvm-xeon refitted (docs/calibration.md, *The
    source's unmap*): never seen by any fit or rule. Anonymous DONTUNMAP moves the kernel
    places are priced within a tenth in the median (+43 % with the profile before);
    shared ones are still over-priced by half (a limit the docs name)."""
    rows = latency_rows(SEED4, "kvm-xeon")
    assert all(r.runs == 3 for r in rows) and len(rows) >= 60
    anon = [r for r in _by_flag(rows, "dontunmap-any") if r.rec["backing"] == "anon"]
    (_, n, med, _mabs), = [s for s in summary(anon, lambda r: 0) if s[0] == "all"]
    assert n >= 10 and abs(med) <= 0.10, med
    (_, _n, med_all, _), = [s for s in summary(rows, lambda r: 0) if s[0] == "all"]
    assert abs(med_all) <= 0.10, med_all
