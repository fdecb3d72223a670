"""Fixed and per-unit costs identified apart (issue 12, item 4): small calls fit the per-call
terms, large calls the per-unit ones; the per-call overhead split into syscall entry, VMA work
and the first flush."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perfsim.calibrate.fit import PER_CALL, FitResult, staged_fit
from perfsim.calibrate.pipeline import calibrate, overhead_split

SHIPPED = Path(__file__).parent.parent / "data" / "calibration" / "kvm-host.data.jsonl"


def _synthetic():
    """Per-call cost 8,000 ns, 12 ns per PTE; large calls carry 15% the model lacks."""
    ptes = np.array([1, 2, 4, 8, 16, 256, 4096, 65536, 262144, 1048576], float)
    small = ptes <= 16
    y = 8000 + 12 * ptes
    y = np.where(small, y, y * 1.15)
    a = np.column_stack([np.ones(len(ptes)), ptes])
    return a, y, small


def test_small_calls_identify_the_per_call_term_and_large_ones_the_per_unit_term():
    a, y, small = _synthetic()
    theta, _rw, stages = staged_fit(a, y, np.zeros(len(y)), ["syscall_ns", "pte_present_ns"],
                                    small)
    assert theta[0] == pytest.approx(8000, rel=0.01)
    assert theta[1] == pytest.approx(12 * 1.15, rel=0.05)
    assert stages["staged"]["used"]
    assert stages["staged"]["median_abs_rel_error_small"] < \
        stages["joint"]["median_abs_rel_error_small"]


def test_calls_that_move_little_count_as_small_whatever_their_size():
    """An unpopulated 1 GiB source pays the per-call terms and hardly anything else."""
    ptes = np.array([0, 0, 0, 65536, 262144, 1048576], float)   # three unpopulated calls
    y = 8000 + 12 * ptes
    a = np.column_stack([np.ones(len(ptes)), ptes])
    by_size = np.zeros(len(y), bool)                            # none is small by size
    theta, _rw, stages = staged_fit(a, y, np.zeros(len(y)), ["syscall_ns", "pte_present_ns"],
                                    by_size)
    assert stages["staged"]["used"] and theta[0] == pytest.approx(8000, rel=0.01)


def test_too_few_small_calls_fall_back_to_the_joint_fit():
    ptes = np.array([65536, 131072, 262144, 524288, 1048576], float)
    y = 8000 + 12 * ptes
    a = np.column_stack([np.ones(len(ptes)), ptes])
    _theta, _rw, stages = staged_fit(a, y, np.zeros(len(y)), ["syscall_ns", "pte_present_ns"],
                                     np.zeros(len(y), bool))
    assert stages["staged"]["used"] is False


def test_per_call_terms_are_the_syscall_and_the_first_flush():
    assert set(PER_CALL) == {"syscall_ns", "tlb_first_flush_ns"}


def _fit(values):
    return FitResult(values=values, status={p: "fitted" for p in values}, sd={}, ci={},
                     sigma={}, fit_ids=[], rel_residuals={}, robust_weights={}, n_boot=0,
                     condition=1.0, prior_name="x")


def test_overhead_split_subtracts_the_measured_entry_from_the_per_call_term():
    split = overhead_split(_fit({"syscall_ns": 9000, "tlb_first_flush_ns": 3000}),
                           {"median_ns": 1100, "p10_ns": 1000, "p90_ns": 1300, "reps": 201,
                            "how": "EINVAL"})
    assert split["syscall_entry_ns"]["ns"] == 1100
    assert split["vma_work_ns"]["ns"] == 7900
    assert split["first_flush_ns"]["ns"] == 3000
    assert all(split[k]["evidence"] for k in ("syscall_entry_ns", "vma_work_ns",
                                              "first_flush_ns"))


def test_data_without_an_entry_measurement_says_so():
    split = overhead_split(_fit({"syscall_ns": 9000, "tlb_first_flush_ns": 0}), None)
    assert split["syscall_entry_ns"]["ns"] is None and "not measured" in \
        split["syscall_entry_ns"]["evidence"]


def test_on_the_shipped_data_staging_fits_per_call_terms_on_small_calls_only(tmp_path):
    res = calibrate(tmp_path / "k.toml", from_data=SHIPPED, n_boot=0, log=lambda m: None)
    st = res.fit.stages
    assert st["staged"]["used"] and st["small_calls"] >= 10 and st["large_calls"] >= 10
    assert set(st["small"]["values"]) <= set(PER_CALL)
    assert not set(st["large"]["values"]) & set(PER_CALL)
    # large calls are fitted better once the per-call terms no longer absorb their costs
    assert st["staged"]["median_abs_rel_error_large"] < st["joint"]["median_abs_rel_error_large"]
    doc = json.loads((tmp_path / "k.fit.json").read_text())
    assert doc["stages"] == json.loads(json.dumps(st))
    assert "overhead_split" in doc


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux")
def test_the_syscall_entry_is_measured_like_a_call():
    from perfsim.host.measure import syscall_entry_ns

    e = syscall_entry_ns(reps=21)
    assert 0 < e["p10_ns"] <= e["median_ns"] <= e["p90_ns"]


def test_the_joint_estimator_refits_the_shipped_kvm_host_profile_exactly(tmp_path):
    """kvm-host was fitted jointly (before staging existed): refitting its shipped data with
    scipy's NNLS and the joint estimator gives back every fitted value."""
    from perfsim.cost import load_cost_profile

    res = calibrate(tmp_path / "k.toml", from_data=SHIPPED, n_boot=0, log=lambda m: None,
                    estimator="joint")
    shipped = load_cost_profile("kvm-host")
    fitted = [p for p, st in res.fit.status.items() if st == "fitted"]
    assert len(fitted) == 11
    for p in fitted:
        assert res.fit.values[p] == shipped.value(p), p
