"""probes/calibrate/thp_zap_fit.py: the measurement behind the shipped ``zap_huge_pmd_ns``
values, re-run from the recorded surveys (and live where root, THP and a C compiler are)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from perfsim.cost import load_cost_profile

ROOT = Path(__file__).parent.parent
ZAP = ROOT / "tests" / "data" / "zap"


def _fit_script():
    path = ROOT / "probes" / "calibrate" / "thp_zap_fit.py"
    spec = importlib.util.spec_from_file_location("thp_zap_fit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("profile,survey,key", [
    ("kvm-epyc", "thp_zap_survey.json", "absolute_ns"),
    ("kvm-xeon", "kvm-xeon.thp_zap_survey.json", "relative_ns"),
])
def test_each_shipped_value_is_what_its_recorded_survey_gives(profile, survey, key):
    """The profile's zap_huge_pmd_ns is recomputed from its survey and the profile's other
    parameters (which the fit subtracts), by the estimator its source names."""
    mod = _fit_script()
    res = mod.fit(json.loads((ZAP / survey).read_text()), profile)
    assert res[key] == load_cost_profile(profile).value("zap_huge_pmd_ns")


def test_the_rest_of_a_thp_shrink_grows_only_with_its_flush_and_table_work():
    """What is subtracted is a few microseconds of call overhead, rising slowly with size: the
    huge PMDs are priced by nothing else (else the fit would count them twice)."""
    mod = _fit_script()
    base = [mod.base_ns(s, "kvm-xeon") for s in mod.SIZES]
    assert base == sorted(base) and base[-1] - base[0] < 5_000
    assert mod.base_ns(64 << 20, "kvm-xeon") < load_cost_profile("kvm-xeon").value(
        "zap_huge_pmd_ns") * 32 / 5


def test_the_command_prints_both_estimates(capsys):
    mod = _fit_script()
    assert mod.main(["--cost", "kvm-epyc", "--from-survey",
                     str(ZAP / "thp_zap_survey.json")]) == 0
    out = capsys.readouterr().out
    assert "zap_huge_pmd_ns = 6641 ns by least squares of absolute error" in out
    assert "zap_huge_pmd_ns = 6372 ns by least squares of relative error" in out


@pytest.mark.parametrize("args,needle", [
    (["--cost", "no-such-profile", "--from-survey", "x.json"], "no-such-profile"),
    (["--cost", "kvm-xeon", "--rounds", "0"], "--rounds 0"),
    (["--cost", "kvm-xeon", "--from-survey", "missing.json"], "missing.json"),
    (["--cost", "kvm-xeon", "--from-survey", "notasurvey.json"], "not a zap survey"),
    (["--cost", "kvm-xeon", "--from-survey", "x.json", "--out", "y.json"], "--from-survey"),
    (["--cost", "kvm-xeon", "--out", "exists.json"], "exists"),
    (["--cost", "kvm-xeon", "--out", "nodir/y.json"], "directory does not exist"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notasurvey.json").write_text('{"rounds": []}')
    (tmp_path / "exists.json").write_text("{}")
    mod = _fit_script()
    assert mod.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("thp_zap_fit: error:") and needle in err[0], err


def _live_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (times THP shrinks of written memory)"
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        return "no THP here (transparent_hugepage/enabled missing or 'never')"
    from perfsim.calibrate.cbuild import c_compiler

    if c_compiler() is None:
        return "needs a C compiler (gcc or cc) to build probes/calibrate/zap_survey.c"
    return None


@pytest.mark.host
def test_live_one_round_measures_every_size_and_fits_a_positive_value(tmp_path):
    reason = _live_reason()
    if reason:
        pytest.skip(reason)
    mod = _fit_script()
    out = tmp_path / "s.json"
    assert mod.main(["--cost", "kvm-xeon", "--rounds", "1", "--out", str(out)]) == 0
    survey = json.loads(out.read_text())
    assert len(survey["rounds"]) == 1 and len(survey["rounds"][0]["median_ns"]) == len(mod.SIZES)
    # more huge PMDs zapped never costs less than one (medians of 11: the spread is small)
    med = survey["rounds"][0]["median_ns"]
    assert med[-1] > med[0]
    assert mod.fit(survey, "kvm-xeon")["relative_ns"] > 0
