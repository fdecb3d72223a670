"""Validation against the independent C probe (issue 12 item 3): held-out configurations,
model error next to the test-retest spread of two rounds. Report logic on recorded probe
output; the probe itself only where a C compiler exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from perfsim.calibrate.design import FULL_SIZES, QUICK_SIZES, Config
from perfsim.calibrate.probe import (
    HELDOUT_SIZES,
    build_probe,
    heldout_configs,
    probe_report,
    run_probe,
)
from perfsim.cli.main import main

RECORDED = Path(__file__).parent / "data" / "probe" / "kvm-guest-2026-12-01.probe.jsonl"
needs_cc = pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")),
                              reason="no C compiler to build the probe")


def _records():
    return [json.loads(x) for x in RECORDED.read_text().splitlines()]


def test_heldout_sizes_are_not_in_the_calibration_design():
    assert not set(HELDOUT_SIZES) & (set(FULL_SIZES) | set(QUICK_SIZES))
    assert {c.size for c in heldout_configs(2 << 20)} == {8 << 10, 16 << 10, 256 << 10, 2 << 20}


def test_model_error_is_against_the_pooled_median_and_spread_between_the_two_rounds():
    rep = probe_report(_records(), "kvm-host")
    t = rep.table
    assert len(t) == 20 and (t.n > 0).all()
    for r in t.itertuples():
        assert r.rel_error == pytest.approx(r.predicted_ns / r.measured_ns - 1)
        a, b = r.round_medians_ns
        assert r.retest_spread == pytest.approx(abs(a - b) / ((a + b) / 2))
    s = rep.summary
    assert s["all"]["median_abs_error"] == pytest.approx(float(np.median(abs(t.rel_error))))
    assert s["all"]["error_over_spread"] == pytest.approx(
        s["all"]["median_abs_error"] / s["all"]["median_retest_spread"])


def test_predictions_use_the_addresses_the_probe_used():
    from perfsim.calibrate.model import plan_config
    from perfsim.cost import predict

    recs = [r for r in _records() if r["config_id"] == "unaligned/2M/t1/anon/full"]
    r0 = recs[0]
    plan = plan_config(Config("unaligned", 2 << 20), src=r0["src"], dst=r0["dst"])
    rep = probe_report(recs, "kvm-host")
    assert rep.table.predicted_ns[0] == predict(plan, "kvm-host").predicted_ns


def test_cli_reports_recorded_probe_output_and_refuses_an_existing_out(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["validate", "--cost", "kvm-host", "--from-probe", str(RECORDED),
                 "--out", str(out)]) == 0
    text = (out / "README.md").read_text()
    assert "test-retest spread" in text and "unaligned/2M/t1/anon/full" in text
    assert {p.name for p in out.iterdir()} == {"README.md", "probe.csv", "probe.jsonl",
                                               "meta.json"}
    capsys.readouterr()
    assert main(["validate", "--cost", "kvm-host", "--from-probe", str(RECORDED),
                 "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_file_that_is_not_probe_output_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"a": 1}\n')
    assert main(["validate", "--cost", "kvm-host", "--from-probe", str(bad), "--out",
                 str(tmp_path / "o")]) == 2
    assert "no probe repetitions" in capsys.readouterr().err


@needs_cc
def test_the_probe_is_built_into_the_cache_dir_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSIM_CACHE_DIR", str(tmp_path / "cache"))
    exe = build_probe()
    assert exe.parent == tmp_path / "cache" and exe.is_file()
    assert build_probe() == exe
    repo = Path(__file__).resolve().parents[1]
    assert not list((repo / "probes").rglob("latency-probe-*"))   # never in the tree


@needs_cc
def test_the_probe_times_a_move_like_an_ordinary_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSIM_CACHE_DIR", str(tmp_path / "cache"))
    recs = run_probe(build_probe(), Config("unaligned", 64 << 10), reps=2)
    assert len(recs) == 2 and all(r["latency_ns"] > 0 for r in recs)
    assert all(r["dst"] - r["src"] >= (1 << 30) for r in recs)
    assert all(r["cpus_seen"] >= 1 for r in recs)
