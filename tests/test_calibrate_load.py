"""A loaded machine, a stalled spinner, two measuring conditions (issue 12 item 3, issue 14):
detected and said in one line, never a traceback, never a leftover .partial file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import perfsim.calibrate.pipeline as pl
from perfsim.calibrate.design import Config
from perfsim.calibrate.io import load_data, render_data
from perfsim.calibrate.stats import (
    condition_medians,
    conditions_in,
    default_fit_condition,
    for_condition,
)
from perfsim.errors import PerfsimError
from perfsim.host.load import LoadSample, busy_fractions, load_verdict, parse_stat
from perfsim.host.spinner import SpinnerStalled

DATA = Path(__file__).parent / "data" / "calib" / "host-6.18.data.jsonl"
QUIET = LoadSample(0.1, 0, 0.02, 0.0, 2, 0.5)
BUSY = LoadSample(1.4, 1, 0.55, 0.0, 2, 0.5)
OVERLOADED = LoadSample(7.9, 6, 1.0, 0.01, 2, 0.5)

STAT0 = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0\n"
STAT1 = "cpu  250 0 150 850 0 0 0 50 0 0\ncpu0 50 0 50 400 0 0 0 0\n"


def test_busy_share_and_steal_come_from_the_aggregate_cpu_line():
    assert parse_stat(STAT0) == (1000, 200, 0)
    busy, steal = busy_fractions(STAT0, STAT1)
    assert busy == pytest.approx(250 / 300) and steal == pytest.approx(50 / 300)


def test_load_verdicts():
    assert load_verdict(QUIET)[0] == "quiet"
    assert load_verdict(BUSY)[0] == "busy"
    assert load_verdict(LoadSample(0.2, 0, 0.05, 0.08, 2, 0.5))[0] == "busy"   # steal
    v, why = load_verdict(OVERLOADED)
    assert v == "overloaded" and "load average 7.90 on 2 CPUs" in why and "\n" not in why


def _no_measuring(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("must not measure")
    monkeypatch.setattr(pl, "measure_configs", fail)
    monkeypatch.setattr(pl, "trace_plan", lambda mode: (False, "off"))


def test_an_overloaded_machine_is_refused_in_one_line_before_measuring(tmp_path, monkeypatch):
    _no_measuring(monkeypatch)
    with pytest.raises(PerfsimError) as e:
        pl.calibrate(tmp_path / "q.toml", quick=True, load_sample=OVERLOADED, progress=False,
                     log=lambda m: None)
    assert "machine overloaded" in str(e.value) and "--busy-ok" in str(e.value)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _fake_run(captured):
    def run(cfgs, settings, *, spool_path, progress, trace_mode, timer_exe=None):
        captured["settings"] = settings
        captured["timer_exe"] = timer_exe
        Path(spool_path).write_text("{}\n")
        raise SpinnerStalled("the spinner thread on CPU 1 did not run for 5 s (machine busy)")
    return run


def test_a_busy_machine_is_measured_with_more_repetitions_and_says_so(tmp_path, monkeypatch):
    got: dict = {}
    said: list[str] = []
    monkeypatch.setattr(pl, "measure_configs", _fake_run(got))
    monkeypatch.setattr(pl, "trace_plan", lambda mode: (False, "off"))
    monkeypatch.setattr(pl, "build_timer", lambda: Path("/nonexistent/timer"))
    with pytest.raises(SpinnerStalled):
        pl.calibrate(tmp_path / "q.toml", quick=True, load_sample=BUSY, progress=False,
                     log=said.append)
    assert got["settings"].reps == 3 * 6
    assert any("machine busy" in m and "3x the repetitions" in m for m in said)


def test_a_failed_measurement_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "measure_configs", _fake_run({}))
    monkeypatch.setattr(pl, "trace_plan", lambda mode: (False, "off"))
    monkeypatch.setattr(pl, "build_timer", lambda: Path("/nonexistent/timer"))
    with pytest.raises(SpinnerStalled):
        pl.calibrate(tmp_path / "q.toml", quick=True, load_sample=QUIET, progress=False,
                     log=lambda m: None)
    assert list(tmp_path.glob("*.partial")) == []


def test_a_stalled_spinner_skips_the_configuration_with_the_reason(monkeypatch):
    import perfsim.calibrate.measure as m

    calls = {"n": 0}

    def stalled(*a, **k):
        calls["n"] += 1
        raise SpinnerStalled("the spinner thread on CPU 1 did not run for 5 s (machine busy)")
    monkeypatch.setattr(m, "_one_call", stalled)
    monkeypatch.setattr(m, "tracing_status", lambda: (False, "not root"))
    monkeypatch.setattr(m, "machine_info", lambda: {})
    monkeypatch.setattr(m.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(m.sc, "pin_current_thread", lambda cpu: None)

    class NoSpinner:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *e):
            return None
    monkeypatch.setattr(m, "Spinner", NoSpinner)
    cfg = Config("pmd_aligned", 2 << 20, threads=2)
    run = m.measure_configs([cfg], m.MeasureSettings(reps=3, rounds=1, max_stalls=3),
                            progress=False, log=lambda s: None)
    assert run.status == "partial"
    assert run.skipped and "spinner" in run.skipped[0]["reason"]
    assert "machine busy" in run.skipped[0]["reason"]
    assert calls["n"] == 3          # retried max_stalls times, then skipped


def test_records_without_a_condition_are_isolated_and_fit_falls_back_to_them():
    recs = load_data(DATA).records
    assert conditions_in(recs) == ["isolated"]
    assert default_fit_condition(recs) == "isolated"


def _two_condition_records():
    recs = load_data(DATA).records
    out = []
    for r in recs:
        out.append(dict(r, condition="isolated"))
        if r.get("phase") == "latency":
            out.append(dict(r, condition="ordinary", latency_ns=int(r["latency_ns"] * 1.2)))
    return out


def test_the_ordinary_condition_is_fitted_by_default_and_both_are_reported(tmp_path):
    data = load_data(DATA)
    hdr = {k: v for k, v in data.header.items() if k not in ("kind", "format")}
    p = tmp_path / "two.data.jsonl"
    p.write_text(render_data(hdr, _two_condition_records()))
    res = pl.calibrate(tmp_path / "two.toml", from_data=p, n_boot=0, log=lambda m: None)
    assert res.fit_condition == "ordinary"
    assert res.conditions["ordinary_over_isolated"].median() == pytest.approx(1.2, abs=0.01)
    iso = pl.calibrate(tmp_path / "iso.toml", from_data=p, n_boot=0, log=lambda m: None,
                       fit_condition="isolated")
    assert res.fit.values["syscall_ns"] > iso.fit.values["syscall_ns"]
    doc = json.loads((tmp_path / "two.fit.json").read_text())
    assert doc["fit_condition"] == "ordinary" and doc["condition_medians"]


def test_for_condition_keeps_traced_repetitions():
    recs = _two_condition_records()
    sub = for_condition(recs, "ordinary")
    assert {r["condition"] for r in sub if r["phase"] == "latency"} == {"ordinary"}
    assert any(r["phase"] == "traced" for r in sub)
    assert set(condition_medians(recs).columns) == {"ordinary", "isolated",
                                                    "ordinary_over_isolated"}

