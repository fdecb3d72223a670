"""What zapping written memory costs (issue t14 zap9): the calibration design holds calls
that zap (shrinks of written memory), the fit separates ``zap_pte_ns`` from them, and the
shipped profiles price a zapped page at a measured figure, not the old 10 / 24 ns
assumption."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from perfsim.calibrate.design import Config, design, fitted_group
from perfsim.calibrate.fit import fit_profile
from perfsim.calibrate.io import load_data
from perfsim.calibrate.model import design_matrix, plan_all, predicted_ns
from perfsim.calibrate.stats import for_condition, latency_samples, summarize
from perfsim.calibrate.timer import timer_args
from perfsim.cost import load_cost_profile, predict
from perfsim.cost.profile import CostProfile

ROOT = Path(__file__).parent.parent
KVM_EPYC_DATA = ROOT / "data" / "calibration" / "kvm-epyc.data.jsonl"
MiB = 1 << 20


def _zap_configs(**kw):
    return [c for c in design(**kw) if c.op == "shrink"]


def test_the_design_contains_shrinks_of_written_anonymous_memory():
    zaps = _zap_configs()
    anon = [c for c in zaps if c.group == "zap"]
    assert {c.backing for c in anon} == {"anon"} and {c.populate for c in anon} == {"full"}
    assert len({c.size for c in anon}) >= 4 and max(c.size for c in anon) >= 64 * MiB
    assert _zap_configs(quick=True), "the quick design zaps too"


def test_every_shrink_of_the_design_pays_zap_pte_ns_for_half_its_pages():
    prof = load_cost_profile("kvm-epyc")
    cfgs = _zap_configs()
    planned = plan_all([(c, *_addrs(c)) for c in cfgs], prof)
    for c in cfgs:
        assert planned[c.id].counts["zap_pte_ns"] == c.size // 2 // 4096, c.id


def _addrs(c):
    from perfsim.calibrate.model import default_addresses
    return default_addresses(c)


def test_a_move_keeps_its_config_id_and_a_shrink_is_marked():
    move = Config("pmd_aligned", 64 * MiB)
    assert move.id == "pmd_aligned/64M/t1/anon/full"
    assert Config("pmd_aligned", 64 * MiB, op="shrink").id == "pmd_aligned/64M/t1/anon/full/shrink"
    # data recorded before shrinks existed has no "op": it was a move
    assert Config.from_dict({"align": "pmd_aligned", "size": 64 * MiB}).op == "move"
    assert Config.from_dict({"align": "pmd_aligned", "size": 64 * MiB, "op": float("nan")}
                            ).op == "move"


def test_a_shrink_halves_a_multiple_of_8k_and_is_never_hugetlb():
    with pytest.raises(ValueError, match="8 KiB"):
        Config("pmd_aligned", 4096, op="shrink")
    with pytest.raises(ValueError, match="op must be"):
        Config("pmd_aligned", 8192, op="grow")


def test_the_shared_memfd_shrinks_are_measured_but_not_fitted():
    shared = [c for c in _zap_configs() if c.backing == "memfd"]
    assert shared and all(not fitted_group(c.group) for c in shared)
    assert fitted_group("zap") and fitted_group("core")


def test_the_timer_is_told_to_shrink():
    c = Config("unaligned", 4 * MiB, op="shrink", group="zap")
    assert timer_args(Path("t"), c, 3)[1] == "shrink"
    assert timer_args(Path("t"), Config("unaligned", 4 * MiB), 3)[1] == "move"


def _truth(prior: CostProfile, **ns) -> CostProfile:
    data = prior.model_dump()
    for p, v in ns.items():
        data["params"][p]["ns"] = v
        data["params"][p]["dist"] = "fixed"
        data["params"][p]["sigma"] = 0.0
    data["cold_cache"] = None
    data["name"] = "truth"
    return CostProfile(**data)


def test_the_fit_separates_zap_pte_ns_on_synthetic_data_from_known_parameters():
    prior = load_cost_profile("x86_64-generic")
    truth = _truth(prior, zap_pte_ns=330, unmap_ns=2500, syscall_ns=4000, pmd_move_ns=900,
                   pte_present_ns=20)
    cfgs = design(quick=True, thp_available=False, hugetlb=False, threads=(1,),
                  max_size=256 * MiB)
    planned = plan_all([(c, *_addrs(c)) for c in cfgs], prior)
    rng = np.random.default_rng(7)
    samples = {c.id: predicted_ns(planned[c.id], truth) * (1 + 0.01 * rng.standard_normal(7))
               for c in cfgs}
    ids = [c.id for c in cfgs if fitted_group(c.group)]
    meta = {c.id: c.as_dict() for c in cfgs}
    fit = fit_profile(ids, design_matrix(planned, ids), samples, prior, meta=meta, n_boot=20)
    assert fit.status["zap_pte_ns"] == "fitted"
    assert fit.values["zap_pte_ns"] == pytest.approx(330, rel=0.05)
    lo, hi = fit.ci["zap_pte_ns"]
    assert lo <= 330 * 1.05 and hi >= 330 * 0.95


SHIPPED = ("x86_64-generic", "kvm-host", "kvm-epyc", "kvm-xeon", "arm64-generic")


@pytest.mark.parametrize("name", SHIPPED)
def test_no_shipped_profile_prices_a_zapped_page_at_the_old_assumption(name):
    """The old guess was 10 ns a page; the two machines measured since price one at 252 ns
    (kvm-epyc) and 65 ns (kvm-xeon)."""
    prof = load_cost_profile(name)
    ns = prof.value("zap_pte_ns")
    src = _source(prof, "zap_pte_ns")
    assert ns not in (10, 24) and ns >= 50, (name, ns)
    assert not src.lower().startswith("assumption") and "measure" in src, src


def _source(prof: CostProfile, param: str) -> str:
    return getattr(prof.params, param).source


def _recorded_zap_medians():
    data = load_data(KVM_EPYC_DATA)
    recs = for_condition(data.records, "ordinary")
    table = summarize(recs)
    zap = table[(table.group == "zap")]
    return zap, latency_samples(recs)


def test_the_recorded_data_holds_shrinks_of_written_anonymous_memory():
    zap, _ = _recorded_zap_medians()
    assert len(zap) >= 6 and zap["size"].max() >= 64 * MiB


@pytest.mark.parametrize("name,factor", [("kvm-epyc", 1.5), ("kvm-host", 2.0),
                                         ("x86_64-generic", 2.0)])
def test_a_shrink_of_written_anon_memory_is_priced_within_a_factor_of_the_measured(name,
                                                                                   factor):
    """Recorded on this project's machine (data/calibration/kvm-epyc.data.jsonl, the zap
    group): every shrink of >= 1 MiB, predicted from its plan with the profile."""
    zap, _ = _recorded_zap_medians()
    prof = load_cost_profile(name)
    rows = zap[zap["size"] >= 1 * MiB]
    cfgs = [(Config.from_dict(r), int(r["src"]), int(r["dst"])) for r in rows.to_dict("records")]
    planned = plan_all(cfgs, prof)
    for r in rows.itertuples():
        got = predict(planned[r.config_id].plan, prof).predicted_ns
        assert r.median_ns / factor <= got <= r.median_ns * factor, (r.config_id, got,
                                                                     r.median_ns)


@pytest.mark.skipif(os.geteuid() != 0, reason="a live shrink is timed as root only")
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler to build the calibration timer")
def test_live_a_shrink_of_written_anon_memory_is_priced_within_a_factor_of_2():
    from perfsim.calibrate.timer import build_timer, run_timer

    from helpers import profile_of_this_machine

    name, why = profile_of_this_machine()
    if name is None:
        pytest.skip(why)
    c = Config("pmd_aligned", 16 * MiB, op="shrink", group="zap")
    lines = run_timer(build_timer(), c, 7)
    measured = float(np.median([h["latency_ns"] for h in lines[2:]]))
    prof = load_cost_profile(name)
    planned = plan_all([(c, *_addrs(c))], prof)
    got = predict(planned[c.id].plan, prof).predicted_ns
    assert measured / 2 <= got <= measured * 2, (got, measured)


def test_the_probe_holds_out_shrinks_at_sizes_the_design_lacks():
    from perfsim.calibrate.design import ZAP_SIZES
    from perfsim.calibrate.probe import heldout_configs

    shrinks = [c for c in heldout_configs() if c.op == "shrink"]
    assert shrinks and all(c.group == "heldout_zap" for c in shrinks)
    assert not {c.size for c in shrinks} & set(ZAP_SIZES)


def _probe_recs(cfg, lat_ns, src=0x7F0000200000, dst=0x7F4000600000):
    return [{"class": cfg.align, "size": cfg.size, "rep": i, "latency_ns": v, "src": src,
             "dst": src if cfg.op == "shrink" else dst, "cpu": 0, "cpus_seen": 1,
             "op": cfg.op, "config_id": cfg.id, "round": i % 2}
            for i, v in enumerate(lat_ns)]


def test_the_probe_summarizes_shrinks_apart_from_moves():
    from perfsim.calibrate.probe import probe_report

    move = Config("pmd_aligned", 32 * MiB, group="heldout")
    shrink = Config("pmd_aligned", 32 * MiB, group="heldout_zap", op="shrink")
    recs = _probe_recs(move, [60_000, 61_000, 59_000, 60_500]) + \
        _probe_recs(shrink, [1_300_000, 1_310_000, 1_290_000, 1_305_000])
    rep = probe_report(recs, "kvm-epyc")
    assert rep.summary["all"]["configurations"] == 1
    assert rep.summary["zap"]["configurations"] == 1
    row = rep.table.set_index("config_id").loc[shrink.id]
    assert row.predicted_ns > 500_000   # 4096 zapped pages at a measured price, not 10 ns


#: a probe run of 2026-12-02 03:26 UTC (busy machine, --busy-ok), six held-out shrinks
#: (2, 8, 32 MiB; pmd_aligned and unaligned) beside the 35 moves
HELDOUT_PROBE = ROOT / "data" / "calibration" / "kvm-epyc.probe-2026-12-02-0326.probe.jsonl"


def test_held_out_shrinks_are_priced_within_35_percent_by_the_shipped_kvm_epyc():
    """Sizes the design lacks, timed by the independent probe: each shrink within 35 %, the
    median within 20 % (with the old 10 ns per PTE the median error was 88 %)."""
    import json

    from perfsim.calibrate.probe import probe_report

    recs = [json.loads(x) for x in HELDOUT_PROBE.read_text().splitlines() if x.strip()]
    rep = probe_report(recs, "kvm-epyc")
    shrinks = rep.table[rep.table.op == "shrink"]
    assert len(shrinks) == 6
    assert (shrinks.rel_error.abs() <= 0.35).all(), shrinks[["config_id", "rel_error"]]
    assert rep.summary["zap"]["median_abs_error"] <= 0.20
