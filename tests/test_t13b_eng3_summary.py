"""A run's summary is made when first read (:class:`perfsim.engine.simulate.RunSummary`):
the same dict, key order included, as the one made from the run's machine and tables at the
end of the run, whenever it is read (before or after the tables' frames), and pickled with
the result."""

from __future__ import annotations

import importlib
import pickle

import pytest
from test_t13b_geng2_engine import _contended_spec, _plan, _spec

from perfsim.cost import load_cost_profile
from perfsim.engine import WalkerSpec, simulate
from perfsim.engine.records import Recorder

sim = importlib.import_module("perfsim.engine.simulate")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FIXED = load_cost_profile("kvm-host").fixed()
JITTERED = load_cost_profile("kvm-host")


def _summary_at_once(spec, **recorder) -> dict:
    """The definition: the summary built from the machine and tables right after the run."""
    rec = Recorder(**recorder)
    m = sim.run(spec, rec)
    return {
        "end_ns": m.end_ns, "events": m.events, "scheduled_events": m.scheduled_events,
        "seed": spec.seed,
        "tables": {k: t.summary() for k, t in rec.tables().items()},
        "walker_visits": dict(rec.walker_visits),
        "cpu_ipis": [c.ipis for c in m.cpus], "cpu_stolen_ns": [c.stolen for c in m.cpus],
    }


def _specs():
    walkers = (WalkerSpec("w0", "anon_vma:heap", cpu=1, interval_ns=3_000, hold_ns=1_500),)
    return {
        "4k": _spec([_plan(4 * KiB)], FIXED),
        "2m_jittered": _spec([_plan(2 * MiB + 12 * KiB)] * 3, JITTERED),
        "1g": _spec([_plan(GiB)], FIXED),
        "walker": _spec([_plan(2 * MiB + 12 * KiB)] * 4, JITTERED, walkers=walkers,
                        duration_ns=400_000),
        "contended_fixed": _contended_spec(FIXED, 300_000),
        "contended_jittered": _contended_spec(JITTERED, 300_000),
    }


SPECS = _specs()


def _same(a: dict, b: dict) -> None:
    assert a == b
    assert list(a) == list(b) and list(a["tables"]) == list(b["tables"])
    for name in a["tables"]:
        assert list(a["tables"][name]) == list(b["tables"][name]), name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_summary_made_when_read_is_the_one_made_at_the_end_of_the_run(name):
    spec = SPECS[name]
    _same(simulate(spec).summary, _summary_at_once(spec))


@pytest.mark.parametrize("name", ["walker", "contended_jittered", "1g"])
def test_a_summary_read_after_the_frames_is_the_one_read_before(name):
    before = simulate(SPECS[name])
    early = before.summary
    after = simulate(SPECS[name])
    after.frames()
    _same(after.summary, early)


@pytest.mark.parametrize("max_rows", [3, 5])
def test_a_summary_of_a_run_dropping_rows_counts_them_as_made_at_once(max_rows):
    for spec in (SPECS["1g"], SPECS["2m_jittered"]):
        got = simulate(spec, max_rows=max_rows).summary
        _same(got, _summary_at_once(spec, max_rows=max_rows))
        assert got["tables"]["flushes"]["dropped"] > 0


def test_a_summary_of_a_run_spilling_rows_is_the_one_made_at_once(tmp_path):
    spec = SPECS["2m_jittered"]
    got = simulate(spec, max_rows=5, spill_dir=tmp_path / "a")
    _same(got.summary, _summary_at_once(spec, max_rows=5, spill_dir=tmp_path / "b"))
    assert got.summary["tables"]["flushes"]["spilled_parts"] > 0


def test_a_pickled_result_carries_its_summary_unread_before():
    res = simulate(SPECS["contended_jittered"])
    back = pickle.loads(pickle.dumps(res))
    _same(back.summary, _summary_at_once(SPECS["contended_jittered"]))
    _same(res.summary, back.summary)


def test_a_summary_given_or_set_is_the_one_read():
    res = simulate(SPECS["4k"])
    res.summary = {"end_ns": 1}
    assert res.summary == {"end_ns": 1}
    given = sim.SimResult({}, {"x": 2}, {})
    assert given.summary == {"x": 2}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_run_totals_are_the_summary_without_its_tables(name):
    res = simulate(SPECS[name])
    totals = res.run_totals
    assert res._make_summary is not None  # read without making the summary
    want = {k: v for k, v in _summary_at_once(SPECS[name]).items() if k != "tables"}
    assert totals == want and list(totals) == list(want)
    assert res.run_totals == {k: v for k, v in res.summary.items() if k != "tables"}


def test_run_totals_of_a_given_summary_leave_out_its_tables():
    given = sim.SimResult({}, {"end_ns": 5, "tables": {}, "events": 2}, {})
    assert given.run_totals == {"end_ns": 5, "events": 2}
