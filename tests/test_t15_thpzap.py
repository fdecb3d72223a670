"""Zapping a PMD-mapped THP (issue t15 thpzap; docs/kernel-rules.md R24): a huge PMD an unmap
covers wholly is one ``zap_huge_pmd`` (one huge entry in the ``zap`` row's ``slots``, priced
by ``zap_huge_pmd_ns``), not its 512 PTEs; a partly covered one is split, then its PTEs are
zapped. Profiles written before ``zap_huge_pmd_ns`` load with a documented fallback."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import A, B, K, M
from test_zap_dirty_shared import shrink

from perfsim import resolve_target
from perfsim.cli.main import main
from perfsim.cost import load_cost_profile, predict
from perfsim.cost.profile import FALLBACK_MARK, OLD_PTES_PER_HUGE_PMD, parse_cost_profile
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.options import PlanOptions

ROOT = Path(__file__).parent.parent
SURVEY = ROOT / "tests" / "data" / "zap" / "thp_zap_survey.json"
SRC = 0x7F0000000000  # 2 MiB (and 1 GiB) aligned


def thp_shrink(length, new_len, *, kernel="6.18", src=SRC, options=None, backing="anon"):
    """An in-place shrink of a fully populated THP source (test_zap_dirty_shared's)."""
    return shrink(kernel, length, new_len, src=src, options=options, thp=True, backing=backing)


def zap_rows(plan):
    st = plan.steps
    sel = st.kind == S.K_ZAP
    return st.ptes[sel].tolist(), st.slots[sel].tolist()


def unmap_kinds(plan):
    st = plan.steps
    return [S.KIND_NAMES[k] for k in st.kind[st.phase == S.UNMAP_DST]]


# ---------------------------------------------------------------------------- R24, planner
@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.18", "7.3"])
def test_a_huge_pmd_zapped_whole_is_one_huge_entry_not_its_512_ptes(kernel):
    p = thp_shrink(8 * M, 4 * M, kernel=kernel)
    assert zap_rows(p) == ([0], [2])
    assert p.syscall.huge_pmds_zapped == 2 and p.syscall.ptes_zapped == 0
    assert p.move.huge_pmds_zapped == 0
    assert "split_huge_pmd" not in unmap_kinds(p)
    # the gather cleared only huge PMDs: its one flush has a PMD stride (2 invalidations)
    st = p.steps
    fl = (st.phase == S.UNMAP_DST) & (st.flushes > 0)
    assert st.flush_pages[fl].tolist() == [2]


def test_a_huge_pmd_zapped_partly_is_split_then_its_ptes_zapped():
    p = thp_shrink(6 * M, 3 * M)  # the tail [3M, 6M): half of the PMD at 2M, the one at 4M
    kinds = unmap_kinds(p)
    assert kinds.count("split_huge_pmd") == 1
    assert kinds.index("split_huge_pmd") < kinds.index("zap")
    assert zap_rows(p) == ([256], [1])
    assert (p.syscall.thp_splits, p.syscall.ptes_zapped, p.syscall.huge_pmds_zapped) == (1, 256, 1)


def test_a_file_thp_zapped_partly_is_unmapped_whole_and_zaps_no_pte():
    p = thp_shrink(6 * M, 3 * M, backing="shmem")
    assert unmap_kinds(p).count("split_huge_pmd") == 1
    assert zap_rows(p) == ([0], [1])


# ---------------------------------------------------------------------------- reference == fast
def _same_steps(r, f):
    assert len(r.steps) == len(f.steps)
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        assert np.array_equal(r.steps.col(name), f.steps.col(name)), name
    assert r.move == f.move and r.syscall == f.syscall


@pytest.mark.parametrize("length,new_len", [(8 * M, 4 * M), (64 * M, 32 * M), (6 * M, 3 * M),
                                            (40 * M, 4 * M + 12 * K), (4 * M, 2 * M - 4 * K)])
def test_the_reference_and_the_array_unmap_agree_on_thp_shrinks(length, new_len):
    r = thp_shrink(length, new_len, options=PlanOptions("reference"))
    f = thp_shrink(length, new_len, options=PlanOptions("fast"))
    _same_steps(r, f)
    assert r.syscall.huge_pmds_zapped > 0


@pytest.mark.parametrize("dst_off", [0, 4 * K, 1 * M])
def test_the_reference_and_the_fast_planner_agree_on_a_fixed_move_onto_thp(dst_off):
    """MREMAP_FIXED onto a written THP destination: the destination's huge PMDs are zapped
    (whole, or split where the range starts inside one) before the move."""
    t = resolve_target("6.18", "x86_64")
    src, dst = A, B + dst_off
    vmas = (Vma(src, src + 20 * M, anon_id="s", name="s"),
            Vma(B, B + 30 * M, thp=True, anon_id="d", name="d"))
    pt = PageTables.empty(t.arch).populate(src, src + 20 * M).populate(B, B + 30 * M, thp=True)
    sp = AddressSpace(vmas, pt, cpus=2)
    req = MoveRequest(src, 20 * M, new_addr=dst)
    r = plan_mremap(sp, req, t, PlanOptions("reference"))
    f = plan_mremap(sp, req, t, PlanOptions("fast"))
    assert f.planner == "fast"
    _same_steps(r, f)
    whole = (20 * M - (2 * M - dst_off) % (2 * M) if dst_off else 20 * M) // (2 * M)
    assert r.syscall.huge_pmds_zapped == whole


# ---------------------------------------------------------------------------- pricing
def _survey_median_ns(size_zapped: int) -> float:
    d = json.loads(SURVEY.read_text())
    i = d["size_zapped_bytes"].index(size_zapped)
    return float(np.median([r["median_ns"][i] for r in d["rounds"]]))


def test_a_64M_thp_shrink_on_kvm_epyc_is_priced_within_2x_of_the_recorded_measurement():
    measured = _survey_median_ns(32 * M)  # mremap(p, 64M, 32M, 0): 32 MiB zapped
    p = thp_shrink(64 * M, 32 * M)
    prof = load_cost_profile("kvm-epyc")
    got = predict(p, prof).predicted_ns
    assert 0.5 <= got / measured <= 2.0, (got, measured)
    # the old pricing (every huge PMD as 512 PTEs at zap_pte_ns) was ~20x off
    old = prof.with_values(zap_huge_pmd_ns=OLD_PTES_PER_HUGE_PMD * prof.value("zap_pte_ns"))
    assert predict(p, old).predicted_ns / measured > 10


def test_zap_huge_pmd_ns_is_charged_once_per_huge_pmd_zapped_whole():
    p = thp_shrink(64 * M, 32 * M)
    prof = load_cost_profile("kvm-epyc")
    base = predict(p, prof.with_values(zap_huge_pmd_ns=0)).predicted_ns
    assert predict(p, prof.with_values(zap_huge_pmd_ns=1000)).predicted_ns - base == 16 * 1000


# ---------------------------------------------------------------------------- old profiles
def _without_zap_huge_pmd(text: str) -> str:
    out = re.sub(r"\[params\.zap_huge_pmd_ns\]\n(?:.+\n)*\n?", "", text)
    assert "[params.zap_huge_pmd_ns]" not in out
    return out


def test_a_profile_without_zap_huge_pmd_ns_loads_and_prices_a_huge_pmd_as_512_zap_ptes():
    text = (ROOT / "perfsim" / "data" / "cost" / "kvm-epyc.toml").read_text()
    old = parse_cost_profile(_without_zap_huge_pmd(text), "an old kvm-epyc")
    new = parse_cost_profile(text, "kvm-epyc")
    assert old.fallbacks == ("zap_huge_pmd_ns",) and new.fallbacks == ()
    zap_pte = old.value("zap_pte_ns")
    assert old.value("zap_huge_pmd_ns") == 512 * zap_pte
    assert old.param("zap_huge_pmd_ns").source.startswith(FALLBACK_MARK)
    # priced exactly as before the parameter: 16 huge PMDs = 8192 PTEs at zap_pte_ns
    p = thp_shrink(64 * M, 32 * M)
    zero = predict(p, old.with_values(zap_huge_pmd_ns=0)).predicted_ns
    assert predict(p, old).predicted_ns == zero + 16 * 512 * zap_pte
    # and it hashes as the file always did: the fallback is not part of its content
    data = old.model_dump(mode="json")
    if data.get("cold_cache") is None:
        data.pop("cold_cache", None)
    assert data["params"].pop("zap_huge_pmd_ns")["ns"] == 512 * zap_pte
    want = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert old.digest == want


def test_a_fallback_above_a_parameters_limit_is_one_error_naming_what_to_give():
    from perfsim.errors import PerfsimError

    text = _without_zap_huge_pmd((ROOT / "perfsim" / "data" / "cost" / "kvm-epyc.toml")
                                 .read_text())
    start = text.index("[params.zap_pte_ns]")
    block = text[start:text.index("\n[", start + 5)]
    text = text.replace(block, re.sub(r"ns = \d+", "ns = 900000000000", block, count=1))
    with pytest.raises(PerfsimError) as got:
        parse_cost_profile(text, "an old kvm-epyc")
    msg = str(got.value)
    assert "\n" not in msg and "zap_huge_pmd_ns is not given" in msg
    assert msg.endswith("give zap_huge_pmd_ns")


def test_a_fallback_follows_a_what_if_change_of_what_it_is_made_from():
    text = (ROOT / "perfsim" / "data" / "cost" / "kvm-epyc.toml").read_text()
    old = parse_cost_profile(_without_zap_huge_pmd(text), "an old kvm-epyc")
    moved = old.with_values(zap_pte_ns=100)
    assert moved.value("zap_huge_pmd_ns") == 51200 and moved.fallbacks == ("zap_huge_pmd_ns",)
    given = old.with_values(zap_huge_pmd_ns=7000)
    assert given.value("zap_huge_pmd_ns") == 7000 and given.fallbacks == ()


def test_the_plan_output_says_when_the_profile_predates_zap_huge_pmd_ns(tmp_path, capsys):
    text = (ROOT / "perfsim" / "data" / "cost" / "kvm-epyc.toml").read_text()
    old = tmp_path / "old-kvm-epyc.toml"
    old.write_text(_without_zap_huge_pmd(text))
    argv = ["plan", "--old-addr", hex(SRC), "--old-len", "8M", "--new-len", "4M", "--no-maymove",
            "--no-fixed", "--thp", "on", "--cost-profile"]
    notes = []
    for prof in (str(old), "kvm-epyc"):
        assert main([*argv, prof]) == 0
        notes.append([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note")])
    assert len(notes[0]) == 1 and "predates zap_huge_pmd_ns: 512 x zap_pte_ns" in notes[0][0]
    assert notes[1] == []
    assert main([*argv, str(old), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["cost_profile"]["fallbacks"]) == ["zap_huge_pmd_ns"]


# ---------------------------------------------------------------------------- held out
#: the latency probe (probes/latency/probe.c ... thp shrink) on this machine, 2026-12-02
#: 05:12:41 UTC (load average 1.0): the held-out THP shrinks (8, 32, 128 MiB), 2 x 11 each
THP_PROBE = ROOT / "tests" / "data" / "zap" / "kvm-epyc.probe-thp-2026-12-02-0512.probe.jsonl"


def test_the_probe_holds_out_thp_shrinks_of_whole_huge_pmds():
    from perfsim.calibrate.probe import heldout_configs

    thp = [c for c in heldout_configs() if c.thp]
    assert thp and all(c.op == "shrink" and c.align == "pmd_aligned" for c in thp)
    assert all(c.size % (4 * M) == 0 for c in thp)  # the tail is whole huge PMDs
    assert not [c for c in heldout_configs(thp_available=False) if c.thp]


def test_held_out_thp_shrinks_are_priced_by_kvm_epyc_within_40_percent_at_the_median():
    from perfsim.calibrate.probe import probe_report

    recs = [json.loads(x) for x in THP_PROBE.read_text().splitlines() if x.strip()]
    prof = load_cost_profile("kvm-epyc")
    after = probe_report(recs, prof)
    assert after.summary["zap_thp"]["configurations"] == 3 and "zap" not in after.summary
    assert after.summary["zap_thp"]["median_abs_error"] <= 0.40
    old = prof.with_values(zap_huge_pmd_ns=OLD_PTES_PER_HUGE_PMD * prof.value("zap_pte_ns"))
    before = probe_report(recs, old)
    assert (before.table.rel_error > 10).all()  # 15-19x with each THP as 512 PTEs


def test_the_engine_prices_a_thp_shrink_as_the_closed_form_does():
    from perfsim.engine import CallerSpec, MmSpec, SimSpec, simulate

    t = resolve_target("6.18", "x86_64")
    p = thp_shrink(64 * M, 32 * M)
    text = (ROOT / "perfsim" / "data" / "cost" / "kvm-epyc.toml").read_text()
    jit = parse_cost_profile(text.replace("[params.zap_huge_pmd_ns]\nns = 6641\n",
                                          "[params.zap_huge_pmd_ns]\nns = 6641\ndist = "
                                          "\"lognormal\"\nsigma = 0.2\n"), "jittered")
    for prof in (load_cost_profile("kvm-epyc"), jit):
        spec = SimSpec(cpus=2, target=t, profile=prof, mms=(MmSpec("app", (0,)),),
                       callers=(CallerSpec("mover", "app", 0, (p, p), 1, 0),), seed=5)
        res = simulate(spec)
        rng = np.random.default_rng(np.random.SeedSequence(5).spawn(1)[0])
        want = [predict(p, prof, cpus=1, rng=rng if not prof.is_fixed else None).predicted_ns
                for _ in range(2)]
        assert res.calls.latency_ns.tolist() == want
    assert want[0] != want[1]  # the jittered zap_huge_pmd_ns was drawn
