"""The cold-cache term: a call after the caller wrote a lot of memory runs with the kernel's
working set evicted (perfsim.cost.profile.ColdCache), fitted from C-timed data only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from perfsim.calibrate.design import Config, KiB, MiB
from perfsim.calibrate.io import load_data
from perfsim.calibrate.model import COLUMNS, cold_share, design_matrix, touched_bytes
from perfsim.calibrate.pipeline import (
    COLD_SATURATION_CANDIDATES,
    calibrate,
    fit_table,
    planned_table,
)
from perfsim.cost import PARAM_NAMES, load_cost_profile, parse_cost_profile
from perfsim.cost.profile import ColdCache

HERE = Path(__file__).parent / "data" / "calib"
C_TIMED = HERE / "host-6.18-ctimer.data.jsonl"
PY_TIMED = HERE / "host-6.18.data.jsonl"
KVM_TOML = Path(__file__).parent.parent / "perfsim" / "data" / "cost" / "kvm-host.toml"


def test_the_cold_cache_charge_grows_linearly_then_saturates():
    cc = ColdCache(ns=20_000, saturation_bytes=16 * MiB, source="test")
    assert cc.charge_ns(0) == 0
    assert cc.charge_ns(4 * MiB) == 5_000
    assert cc.charge_ns(16 * MiB) == 20_000 == cc.charge_ns(1 << 30)


def test_a_profile_without_a_cold_cache_hashes_as_before():
    prof = load_cost_profile("kvm-host")
    assert prof.cold_cache is None and prof.cold_cache_ns(1 << 30) == 0
    data = prof.model_dump(mode="json")
    data.pop("cold_cache")
    old = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert prof.digest == old


def test_a_cold_cache_table_is_read_from_a_profile():
    text = KVM_TOML.read_text()
    prof = parse_cost_profile(text + "\n[cold_cache]\nns = 27000\nsaturation_bytes = 16777216\n"
                              "source = \"test\"\n")
    assert prof.cold_cache_ns(8 * MiB) == 13_500
    assert prof.digest != load_cost_profile("kvm-host").digest


def test_a_cold_cache_table_without_a_positive_saturation_is_refused():
    from perfsim.errors import PerfsimError

    text = KVM_TOML.read_text()
    with pytest.raises(PerfsimError, match="saturation_bytes"):
        parse_cost_profile(text + "\n[cold_cache]\nns = 1\nsaturation_bytes = 0\n"
                           "source = \"x\"\n")


def test_touched_bytes_are_what_populating_the_source_wrote():
    assert touched_bytes(Config("unaligned", 64 * MiB)) == 64 * MiB
    assert touched_bytes(Config("unaligned", 64 * MiB, populate="sparse")) == 4 * MiB
    assert touched_bytes(Config("unaligned", 64 * MiB, populate="none")) == 0
    assert cold_share(8 * MiB, 16 * MiB) == 0.5 and cold_share(8 * MiB, None) == 0.0


@pytest.fixture(scope="module")
def c_timed():
    data = load_data(C_TIMED)
    prior = load_cost_profile("x86_64-generic")
    table, planned, samples = planned_table(data, prior)
    return prior, table, planned, samples


def test_the_fit_recovers_a_known_cold_cache_term_and_its_saturation(c_timed):
    """Synthetic latencies from the recorded configurations with known costs and a 25 us
    cold-cache term saturating at 16 MiB (2 % noise): the profile search finds 16 MiB and
    the linear fit the 25 us."""
    prior, table, planned, _ = c_timed
    ids = list(table.config_id)
    true = {"syscall_ns": 4500, "pte_present_ns": 10, "pmd_move_ns": 150,
            "ipi_round_trip_ns": 800, "ipi_wakeup_ns": 20_000, "tlb_first_flush_ns": 2000}
    x = design_matrix(planned, ids, 16 * MiB)
    base = sum(x[:, PARAM_NAMES.index(p)] * prior.value(p) for p in PARAM_NAMES
               if p not in true and p != "ipi_receiver_ns" and p not in
               ("pud_move_ns", "pte_empty_ns", "move_ptes_call_ns", "thp_move_ns",
                "thp_split_ns", "hugetlb_entry_ns"))
    y = base + sum(x[:, PARAM_NAMES.index(p)] * v for p, v in true.items())
    y = y + x[:, PARAM_NAMES.index("pud_move_ns")] * 150 + 25_000 * x[:, COLUMNS.index(
        "cold_cache_ns")]
    for p, v in (("pte_empty_ns", 3), ("move_ptes_call_ns", 0), ("thp_move_ns", 200),
                 ("thp_split_ns", 9000), ("hugetlb_entry_ns", 150)):
        y = y + x[:, PARAM_NAMES.index(p)] * v
    rng = np.random.default_rng(3)
    samples = {i: np.array([v * np.exp(rng.normal(0, 0.02))]) for i, v in
               zip(ids, y, strict=True)}
    fit = fit_table(table, planned, samples, prior, n_boot=0, cold_cache=True)
    assert fit.cold_cache["saturation_bytes"] == 16 * MiB
    assert fit.cold_cache["ns"] == pytest.approx(25_000, rel=0.1)
    assert fit.values["syscall_ns"] == pytest.approx(4500, rel=0.1)


def test_c_timed_data_is_fitted_with_the_cold_cache_term(tmp_path):
    res = calibrate(tmp_path / "c.toml", from_data=C_TIMED, n_boot=20, log=lambda m: None)
    cc = res.fit.cold_cache
    assert cc["saturation_bytes"] in COLD_SATURATION_CANDIDATES and cc["ns"] > 0
    prof = load_cost_profile(tmp_path / "c.toml")
    assert prof.cold_cache.ns == cc["ns"] and "C-timed" in prof.cold_cache.source
    fit = json.loads((tmp_path / "c.fit.json").read_text())
    assert len(fit["stages"]["cold_cache_search"]) == len(COLD_SATURATION_CANDIDATES)
    assert set(res.fit.values) == set(PARAM_NAMES)


def test_python_timed_data_is_fitted_without_it(tmp_path):
    res = calibrate(tmp_path / "p.toml", from_data=PY_TIMED, n_boot=0, log=lambda m: None)
    assert res.timer == "python" and res.fit.cold_cache is None
    assert "[cold_cache]" not in (tmp_path / "p.toml").read_text()


def test_probe_predictions_charge_the_cold_cache():
    from perfsim.calibrate.probe import probe_report

    rec = {"config_id": "pmd_aligned/8M/t1/anon/full", "class": "pmd_aligned",
           "size": 8 * MiB, "src": 0x7f0000200000, "dst": 0x7f0080600000, "round": 0,
           "latency_ns": 20_000}
    recs = [rec, {**rec, "round": 1}]
    plain = load_cost_profile("kvm-host")
    cold = plain.model_copy(update={"cold_cache": ColdCache(ns=16_000,
                                                            saturation_bytes=16 * MiB,
                                                            source="t")})
    a = probe_report(recs, plain).table.predicted_ns[0]
    b = probe_report(recs, cold).table.predicted_ns[0]
    assert b - a == 8_000


def test_small_calls_barely_pay_it():
    assert cold_share(touched_bytes(Config("unaligned", 64 * KiB)), 16 * MiB) < 0.01


# -- the accuracy target on recorded data ----------------------------------------------------

#: the lead's quiet probe run: perfsim validate --cost kvm-host --probe --reps 7
#: (2026-12-01 11:38 UTC, load 0.33, 2 % busy), its probe.jsonl
QUIET_PROBE = HERE / "probe-quiet-2026-12-01.probe.jsonl"


def test_validate_probe_takes_a_fitted_profile_and_the_c_timed_fit_meets_the_target(
        tmp_path, capsys):
    """The C-timed slice's fit (a quick design on a busy machine) against the quiet probe's
    repetitions: calls of 30 us and more within 10 %; kvm-host (timed in Python) on the same
    repetitions is off by more than 30 % and several times further from the spread. (Whether
    a full C-timed fit is within 1.5x the spread is for a quiet measurement to say:
    docs/calibration.md.)"""
    from perfsim.cli.main import main

    calibrate(tmp_path / "c.toml", from_data=C_TIMED, n_boot=0, log=lambda m: None)
    for cost, out in ((tmp_path / "c.toml", tmp_path / "pc"), ("kvm-host", tmp_path / "pk")):
        assert main(["validate", "--cost", str(cost), "--probe", "--from-probe",
                     str(QUIET_PROBE), "--out", str(out)]) == 0
    capsys.readouterr()
    c = json.loads((tmp_path / "pc" / "meta.json").read_text())["summary"]["ge_30us"]
    k = json.loads((tmp_path / "pk" / "meta.json").read_text())["summary"]["ge_30us"]
    assert c["configurations"] == k["configurations"] == 11
    assert c["median_abs_error"] <= 0.10 and k["median_abs_error"] > 0.3
    assert c["error_over_spread"] * 5 < k["error_over_spread"]


def test_validate_of_two_condition_c_timed_data_holds_out_with_the_cold_cache(tmp_path):
    """Held-out refits of C-timed data fit the cold-cache term too, and the ordering check
    takes its rounds from the fitted condition only (two-condition data used to pair one
    condition's samples with both conditions' rounds)."""
    from perfsim.calibrate.validate import validate

    calibrate(tmp_path / "c.toml", from_data=C_TIMED, n_boot=0, log=lambda m: None)
    rep = validate(tmp_path / "c.data.jsonl", tmp_path / "c.toml", holdout="kfold:3")
    e = rep.errors
    held = e[(e.split == "held-out") & (e.metric == "median_ns")]
    assert len(held) == len(e[(e.split == "in-sample")
                              & (e.metric == "median_ns")])
    assert np.isfinite(held.rel_error).all()


def test_calibrate_prints_the_fitted_cold_cache_term(tmp_path, capsys):
    from perfsim.cli.main import main

    assert main(["calibrate", "--from-data", str(C_TIMED), "--out", str(tmp_path / "c.toml"),
                 "--bootstrap", "0", "--no-progress"]) == 3  # the slice was not traced
    out = capsys.readouterr().out
    assert "fitted from the ordinary condition (latencies timed by c-helper)" in out
    line = next(x for x in out.splitlines() if "cold cache" in x)
    assert "once per call after the caller wrote >=" in line and "MiB" in line


#: two more quiet probe runs (2026-12-01 12:34 and 12:36 UTC, load 0.5-1.3, 0-3 % busy): the
#: first right after the calibration that made kvm-epyc, the second after an independent
#: second calibration (docs/calibration.md, "The quiet-day check")
QUIET_PROBES_AFTER = (HERE / "probe-quiet-2026-12-01-1234.probe.jsonl",
                      HERE / "probe-quiet-2026-12-01-1236.probe.jsonl")


@pytest.mark.parametrize("probe", (QUIET_PROBE, *QUIET_PROBES_AFTER), ids=lambda p: p.stem)
def test_the_shipped_kvm_epyc_meets_issue_12s_target_on_every_quiet_probe_run(
        tmp_path, capsys, probe):
    """Held out (sizes the design lacks, an independent C program): calls of 30 us and more
    within 10 % and within 1.5x the test-retest spread of the same configurations."""
    from perfsim.cli.main import main

    assert main(["validate", "--cost", "kvm-epyc", "--probe", "--from-probe", str(probe),
                 "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    s = json.loads((tmp_path / "p" / "meta.json").read_text())["summary"]["ge_30us"]
    assert s["configurations"] >= 10
    assert s["median_abs_error"] <= 0.10
    assert s["error_over_spread"] <= 1.5
