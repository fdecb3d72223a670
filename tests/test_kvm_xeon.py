"""kvm-xeon: perfsim calibrate's fit on this project's machine as a Firecracker guest on an
Intel Xeon host (2026-12-02). Its data ships; a refit gives it back; its held-out probe run
ships and is what docs/calibration.md quotes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from perfsim.cost import PARAM_NAMES, load_cost_profile

ROOT = Path(__file__).parent.parent
CAL = ROOT / "data" / "calibration"
MEASURED = ("kvm-host", "kvm-epyc", "kvm-xeon")


@pytest.mark.parametrize("name", MEASURED)
def test_a_measured_profile_cites_the_shipped_data_it_was_fitted_from(name):
    p = load_cost_profile(name)
    assert "fitted by perfsim calibrate" in p.param("syscall_ns").source
    cited = re.search(r"sha256 ([0-9a-f]{16})", p.description).group(1)
    data = CAL / f"{name}.data.jsonl"
    assert hashlib.sha256(data.read_bytes()).hexdigest().startswith(cited)
    assert (CAL / f"{name}.fit.json").exists()


def test_a_refit_of_the_shipped_data_gives_kvm_xeon_back(tmp_path):
    """Every parameter and the cold-cache term, refitted with kvm-xeon as the prior (as its
    header says): the values the design does not identify are kvm-xeon's own, measured
    apart (unmap_ns by scripts/dontunmap_cost.c, zap_huge_pmd_ns by
    probes/calibrate/thp_zap_fit.py, which tests/test_thp_zap_fit.py recomputes)."""
    from perfsim.calibrate.pipeline import calibrate

    out = tmp_path / "refit.toml"
    calibrate(out, from_data=CAL / "kvm-xeon.data.jsonl", n_boot=0, prior="kvm-xeon",
              log=lambda m: None)
    got, shipped = load_cost_profile(str(out)), load_cost_profile("kvm-xeon")
    assert [n for n in PARAM_NAMES if got.value(n) != shipped.value(n)] == []
    # with the generic prior (an unmap of 3 us, more than this machine's whole fixed cost)
    # the intercept fits at its floor and other parameters take up the difference
    plain = tmp_path / "plain.toml"
    calibrate(plain, from_data=CAL / "kvm-xeon.data.jsonl", n_boot=0, log=lambda m: None)
    assert load_cost_profile(str(plain)).value("syscall_ns") < shipped.value("syscall_ns")
    assert (got.cold_cache.ns, got.cold_cache.saturation_bytes) == (
        shipped.cold_cache.ns, shipped.cold_cache.saturation_bytes)


def test_the_shipped_probe_run_holds_kvm_xeon_out_as_the_docs_say(tmp_path):
    """The held-out probe run of 10:24 UTC, priced again: the figures docs/calibration.md
    ("An Intel Xeon guest") quotes, and kvm-host, fitted on this kind of machine six days
    earlier from Python-timed calls, far worse on the same repetitions."""
    import json

    from perfsim.calibrate.probe import probe_report

    text = (CAL / "kvm-xeon.probe-2026-12-02-1024.probe.jsonl").read_text()
    recs = [json.loads(x) for x in text.splitlines() if x.strip()]
    xeon = probe_report(recs, "kvm-xeon").summary
    host = probe_report(recs, "kvm-host").summary
    assert xeon["all"]["configurations"] == 35
    # (refit 2026-12-03 with the source's unmap charged apart: 0.132, 0.135, 0.370 before)
    assert xeon["all"]["median_abs_error"] == pytest.approx(0.165, abs=0.001)
    assert xeon["zap"]["median_abs_error"] == pytest.approx(0.128, abs=0.001)
    assert xeon["zap_thp"]["median_abs_error"] == pytest.approx(0.216, abs=0.001)
    assert host["all"]["median_abs_error"] > 5 * xeon["all"]["median_abs_error"]


def test_the_probe_run_beyond_the_fitted_range_holds_kvm_xeon_out_as_the_docs_say():
    """The held-out probe run of 17:26 UTC, up to 512 MiB (kvm-xeon was fitted to 256 MiB):
    the figures docs/calibration.md ("Held out beyond the fitted range") quotes. Its moves of
    512 MiB are extrapolated within a quarter; the THP shrinks are 53 % off (the small ones
    charged the cold-cache term fitted on base pages, the large one a cost per huge PMD
    that doubles above 16 MiB zapped)."""
    import json

    from perfsim.calibrate.probe import probe_report

    text = (CAL / "kvm-xeon.probe-2026-12-02-1726.probe.jsonl").read_text()
    recs = [json.loads(x) for x in text.splitlines() if x.strip()]
    report = probe_report(recs, "kvm-xeon")
    xeon = report.summary
    assert xeon["all"]["configurations"] == 40
    # (refit 2026-12-03 with the source's unmap charged apart: 0.118, 0.092, 0.720 before)
    assert xeon["all"]["median_abs_error"] == pytest.approx(0.133, abs=0.001)
    assert xeon["ge_30us"]["median_abs_error"] == pytest.approx(0.092, abs=0.001)
    assert xeon["zap_thp"]["median_abs_error"] == pytest.approx(0.527, abs=0.001)
    t = report.table
    big = t[(t["size"] == 512 << 20) & (t["op"] == "move")]
    assert len(big) == 5 and (big["rel_error"].abs() < 0.25).all()
    for other in ("kvm-epyc", "kvm-host", "x86_64-generic"):
        assert probe_report(recs, other).summary["all"]["median_abs_error"] > \
            3 * xeon["all"]["median_abs_error"]
