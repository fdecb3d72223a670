"""The C timing helper of the ordinary calibration condition (probes/calibrate/timer.c,
perfsim.calibrate.timer): it builds, it runs, its records parse, the ordinary condition uses
it, and recorded C-timed data refits deterministically."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from perfsim.calibrate.cbuild import c_compiler
from perfsim.calibrate.design import Config, GiB, KiB, MiB
from perfsim.calibrate.io import load_data
from perfsim.calibrate.layouts import LayoutMismatch
from perfsim.calibrate.timer import (
    HELPER_FIELDS,
    TIMER_NAME,
    TimerFailed,
    build_timer,
    helper_record,
    parse_timer_line,
    run_timer,
    timer_entry_ns,
    timer_source,
)
from perfsim.host.layout import SHAPE_OFFSETS

DATA = Path(__file__).parent / "data" / "calib" / "host-6.18-ctimer.data.jsonl"
IS_LINUX = sys.platform.startswith("linux")


def _need_helper():
    if not IS_LINUX:
        pytest.skip("the calibration timer needs Linux (mremap, /proc/self/task/*/schedstat)")
    if c_compiler() is None:
        pytest.skip("no C compiler (gcc or cc) on PATH to build probes/calibrate/timer.c")


@pytest.fixture
def helper(tmp_path_factory, monkeypatch):
    _need_helper()
    monkeypatch.setenv("PERFSIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    return build_timer()


def _line(**over) -> dict:
    base = {k: 0 for k in HELPER_FIELDS}
    base.update(src=0x7f0000200000, dst=0x7f0080600000, latency_ns=9000, thp_kb=-1,
                hugetlb_kb=-1, cpu_last=-1, cpus_seen=1, spin_run_delay_ns=-1, spin_pcount=-1)
    base.update(over)
    return base


# -- building and running -------------------------------------------------------------------

def test_the_timer_is_built_into_the_cache_dir_once(helper):
    assert helper.is_file() and os.access(helper, os.X_OK)
    assert helper.parent == Path(os.environ["PERFSIM_CACHE_DIR"])
    assert helper.name.startswith("calibrate-timer-")
    assert build_timer() == helper


def test_the_timer_is_not_the_validation_probe():
    from perfsim.calibrate.probe import probe_source

    timer, probe = timer_source().read_text(), probe_source().read_text()
    assert timer_source().parent.name == "calibrate" and timer != probe
    # no function of the probe is in the helper (they share no code)
    assert "note_cpu" in probe and "note_cpu" not in timer


def test_each_repetition_reports_the_addresses_it_used_at_the_class_offsets(helper):
    cfg = Config("unaligned", 64 * KiB)
    recs = run_timer(helper, cfg, 3)
    assert len(recs) == 3 and [r["rep"] for r in recs] == [0, 1, 2]
    soff, doff = SHAPE_OFFSETS["unaligned"]
    for r in recs:
        assert r["latency_ns"] > 0
        assert r["src"] % GiB == soff and r["dst"] % GiB == doff
        assert r["dst"] - r["src"] == 2 * GiB + doff - soff  # span 1 GiB + 1 GiB gap


def test_the_first_repetition_verifies_that_a_nothp_source_has_no_thp(helper):
    recs = run_timer(helper, Config("pmd_aligned", 4 * MiB), 2)
    assert recs[0]["thp_kb"] == 0 and recs[1]["thp_kb"] == -1
    rec = helper_record(Config("pmd_aligned", 4 * MiB), recs[0])
    assert rec["timer"] == TIMER_NAME and rec["condition"] == "ordinary"


def test_two_threads_run_a_spinner_whose_counters_are_reported(helper):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("a 2-thread configuration needs 2 CPUs")
    recs = run_timer(helper, Config("pmd_aligned", 2 * MiB, threads=2), 2)
    assert all(r["spin_run_delay_ns"] >= 0 and r["spin_pcount"] >= 0 for r in recs)
    assert all(r["cpu_before"] == 0 for r in recs)  # the caller is pinned to CPU 0


def test_the_entry_cost_is_timed_in_c(helper):
    e = timer_entry_ns(helper, reps=21)
    assert e["reps"] == 21 and 0 < e["p10_ns"] <= e["median_ns"] <= e["p90_ns"]
    assert e["timer"] == TIMER_NAME


def test_a_failing_helper_is_one_message_naming_the_configuration(helper, tmp_path):
    bad = tmp_path / "fails"
    bad.write_text("#!/bin/sh\necho 'timer: map source: Cannot allocate memory' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(TimerFailed) as e:
        run_timer(bad, Config("unaligned", 64 * KiB), 2)
    assert "unaligned/64K/t1/anon/full" in str(e.value) and "Cannot allocate" in str(e.value)


def test_a_stalled_helper_spinner_raises_spinner_stalled(tmp_path):
    from perfsim.host.spinner import SpinnerStalled

    stalled = tmp_path / "stalls"
    stalled.write_text("#!/bin/sh\necho 'timer: the spinner thread on CPU 1 did not run for "
                       "5 s (machine busy)' >&2\nexit 3\n")
    stalled.chmod(0o755)
    with pytest.raises(SpinnerStalled, match="did not run for 5 s"):
        run_timer(stalled, Config("pmd_aligned", 2 * MiB, threads=2), 2)


# -- records ---------------------------------------------------------------------------------

def test_timer_lines_parse_to_integers():
    assert parse_timer_line(json.dumps(_line()))["latency_ns"] == 9000


@pytest.mark.parametrize("text", ["not json", json.dumps({"rep": 0}),
                                  json.dumps(_line(latency_ns="9000"))])
def test_malformed_timer_lines_are_refused(text):
    with pytest.raises(TimerFailed):
        parse_timer_line(text)


def test_a_repetition_is_disturbed_when_the_caller_waited_was_preempted_or_migrated():
    cfg = Config("unaligned", 64 * KiB)
    assert not helper_record(cfg, _line())["disturbed"]
    assert helper_record(cfg, _line(main_run_delay_ns=5))["disturbed"]
    assert helper_record(cfg, _line(main_nivcsw=1))["disturbed"]
    moved = helper_record(cfg, _line(cpu_last=1, cpu_before=0, cpu_after=0))
    assert moved["disturbed"] and moved["migrated"]
    assert helper_record(cfg, _line(cpu_before=0, cpu_after=1))["migrated"]


def test_a_repetition_is_disturbed_when_the_spinner_was_switched_out():
    cfg = Config("pmd_aligned", 2 * MiB, threads=2)
    ok = helper_record(cfg, _line(spin_run_delay_ns=0, spin_pcount=0))
    assert ok["spinner_disturbed"] is False and not ok["disturbed"]
    assert helper_record(cfg, _line(spin_run_delay_ns=0, spin_pcount=1))["disturbed"]


def test_thp_backing_is_verified_on_what_the_helper_read():
    thp = Config("pmd_aligned", 4 * MiB, thp=True, group="thp")
    assert helper_record(thp, _line(thp_kb=4096))["thp_kb"] == 4096
    with pytest.raises(LayoutMismatch, match="THP backing 2048 kB, expected 4096 kB"):
        helper_record(thp, _line(thp_kb=2048))
    huge = Config("pmd_aligned", 4 * MiB, backing="hugetlb", group="hugetlb")
    with pytest.raises(LayoutMismatch, match="hugetlb backing"):
        helper_record(huge, _line(hugetlb_kb=0))


# -- the ordinary condition uses it ----------------------------------------------------------

@pytest.mark.host
def test_the_ordinary_condition_is_timed_by_the_helper(helper):
    from perfsim.calibrate.measure import MeasureSettings, measure_configs

    cfgs = [Config("unaligned", 64 * KiB), Config("pmd_aligned", 4 * MiB, populate="none")]
    settings = MeasureSettings(reps=3, rounds=1, traced_reps=0, max_attempts=9,
                               conditions=("ordinary", "isolated"), nice=None)
    run = measure_configs(cfgs, settings, progress=False, trace_mode="off",
                          log=lambda m: None, timer_exe=helper)
    lat = [r for r in run.records if r["phase"] == "latency"]
    by = {(r["condition"], r["timer"]) for r in lat}
    assert by == {("ordinary", TIMER_NAME), ("isolated", "python")}
    assert run.timers == {"ordinary": TIMER_NAME, "isolated": "python"}
    assert run.machine["syscall_entry_c_helper"]["timer"] == TIMER_NAME
    for r in lat:
        if r["condition"] == "ordinary":
            cfg = Config.from_dict(r)
            soff, doff = SHAPE_OFFSETS[cfg.align]
            assert r["src"] % GiB == soff and r["dst"] % GiB == doff


def test_without_a_compiler_the_c_timed_calibration_is_refused_before_measuring(
        tmp_path, monkeypatch):
    import perfsim.calibrate.cbuild as cb
    import perfsim.calibrate.pipeline as pl
    from perfsim.errors import PerfsimError
    from perfsim.host.load import LoadSample

    monkeypatch.setenv("PERFSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cb, "c_compiler", lambda: None)
    monkeypatch.setattr(pl, "trace_plan", lambda mode: (False, "off"))
    monkeypatch.setattr(pl, "measure_configs", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(PerfsimError, match="needs a C compiler"):
        pl.calibrate(tmp_path / "q.toml", quick=True, progress=False, log=lambda m: None,
                     load_sample=LoadSample(0.1, 0, 0.02, 0.0, 2, 0.5))
    assert not (tmp_path / "q.data.jsonl").exists()


# -- recorded C-timed data -------------------------------------------------------------------

def test_the_recorded_c_timed_data_says_which_timer_measured():
    d = load_data(DATA)
    assert d.header["timers"] == {"ordinary": TIMER_NAME, "isolated": "python"}
    lat = [r for r in d.records if r["phase"] == "latency"]
    assert {r["timer"] for r in lat if r["condition"] == "ordinary"} == {TIMER_NAME}
    assert {r["timer"] for r in lat if r["condition"] == "isolated"} == {"python"}


def test_recorded_c_timed_data_refits_deterministically(tmp_path):
    from perfsim.calibrate.pipeline import calibrate
    from perfsim.cost import load_cost_profile

    a = calibrate(tmp_path / "a.toml", from_data=DATA, n_boot=20, log=lambda m: None)
    b = calibrate(tmp_path / "b.toml", from_data=DATA, n_boot=20, log=lambda m: None)
    assert a.fit_condition == "ordinary" and a.timer == TIMER_NAME
    assert a.fit.values == b.fit.values and a.fit.ci == b.fit.ci
    text = (tmp_path / "a.toml").read_text()
    assert "latencies timed by c-helper" in text
    prof = load_cost_profile(tmp_path / "a.toml")
    assert prof.param("syscall_ns").ns == a.fit.values["syscall_ns"]
    fit = json.loads((tmp_path / "a.fit.json").read_text())
    assert fit["timer"] == TIMER_NAME
    assert fit["overhead_split"]["syscall_entry_ns"]["ns"] == \
        d_entry(DATA)["median_ns"]


def d_entry(path: Path) -> dict:
    return load_data(path).header["machine"]["syscall_entry_c_helper"]


def test_the_c_timed_fit_has_a_smaller_fixed_cost_than_the_python_timed_one(tmp_path):
    """What the helper is for: the same configurations, same minutes, timed by C in the
    ordinary condition and by this process in the isolated one: the fixed per-call cost a
    C program pays is smaller."""
    from perfsim.calibrate.pipeline import calibrate

    c = calibrate(tmp_path / "c.toml", from_data=DATA, n_boot=0, log=lambda m: None)
    p = calibrate(tmp_path / "p.toml", from_data=DATA, n_boot=0, log=lambda m: None,
                  fit_condition="isolated")
    assert p.timer == "python"
    assert c.fit.values["syscall_ns"] < p.fit.values["syscall_ns"]
