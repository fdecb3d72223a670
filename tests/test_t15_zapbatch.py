"""R24a: from 6.9 ``zap_present_ptes`` zaps the consecutive PTEs of one large folio as one
batch (``folio_pte_batch`` → ``zap_present_folio_ptes``: one rmap removal, one
``__tlb_remove_folio_pages`` gather entry of two slots); before 6.9 every PTE is its own step.
A zap row's ``batches`` count those steps and ``zap_pte_ns`` is paid per batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import K, M
from test_t15_thpzap import _same_steps, thp_shrink

from perfsim import resolve_target
from perfsim.cost import load_cost_profile, predict
from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.gather import MmuGather, pages_until_forced_flush
from perfsim.planner.options import PlanOptions
from perfsim.planner.unmap import folio_pte_runs, gather_zapped_ptes, zap_batches_large_folio
from perfsim.profiles import kernel_names

ROOT = Path(__file__).parent.parent
SURVEY = ROOT / "tests" / "data" / "zap" / "thp_zap_survey.json"
BATCHING = ("6.12", "6.15", "6.16", "6.17", "6.18", "6.19", "7.3")
PER_PTE = ("6.1", "6.6", "6.7")


def zap_columns(plan):
    st = plan.steps
    sel = st.kind == S.K_ZAP
    return st.ptes[sel].tolist(), st.batches[sel].tolist()


# ---------------------------------------------------------------------------- the profile key
@pytest.mark.parametrize("kernel", kernel_names())
def test_zap_pte_batching_is_declared_true_from_6_9_and_false_before(kernel):
    t = resolve_target(kernel)
    assert t.kernel.zap_pte_batching is (tuple(t.kernel.version) >= (6, 9))


def test_a_zap_pte_batching_value_that_is_not_a_bool_is_refused():
    with pytest.raises(Exception, match="zap_pte_batching"):
        resolve_target("6.18").with_changes(**{"kernel.zap_pte_batching": "sometimes"})


# ---------------------------------------------------------------------------- R24a, planner
@pytest.mark.parametrize("kernel", BATCHING)
def test_r24a_a_split_thps_ptes_are_zapped_as_one_batch_from_6_9(kernel):
    p = thp_shrink(2 * M, 1 * M, kernel=kernel)  # the tail [1M, 2M): half the one THP
    assert zap_columns(p) == ([256], [1])
    assert p.syscall.ptes_zapped == 256  # the PTEs are still counted as PTEs


@pytest.mark.parametrize("kernel", PER_PTE)
def test_r24a_before_6_9_every_pte_of_a_split_thp_is_its_own_step(kernel):
    p = thp_shrink(2 * M, 1 * M, kernel=kernel)
    assert zap_columns(p) == ([256], [256])


@pytest.mark.parametrize("kernel", ["6.6", "6.18"])
def test_r24a_small_folios_are_zapped_one_pte_per_batch(kernel):
    t = resolve_target(kernel, "x86_64")
    src = 0x7F0000000000
    sp = single_move_space(t, src=src, length=8 * M, populate=Population("full"))
    p = plan_mremap(sp, MoveRequest(src, 8 * M, new_len=4 * M, maymove=False, fixed=False), t)
    ptes, batches = zap_columns(p)
    assert sum(ptes) == 1024 and batches == ptes


def test_r24a_a_hole_in_a_split_thp_ends_its_batch():
    assert folio_pte_runs(0b1111) == 1
    assert folio_pte_runs(0b1101_1111) == 2
    assert folio_pte_runs((1 << 512) - 1) == 1


def test_r24a_only_an_anonymous_split_is_batched_and_only_from_6_9():
    assert zap_batches_large_folio(resolve_target("6.18"), True)
    assert not zap_batches_large_folio(resolve_target("6.18"), False)
    assert not zap_batches_large_folio(resolve_target("6.6"), True)


# ---------------------------------------------------------------------------- the gather
def test_r24a_a_batch_of_several_ptes_takes_two_gather_slots_and_a_lone_pte_one():
    t = resolve_target("6.18")
    tlb = MmuGather(0)
    gather_zapped_ptes(t, tlb, 0, 0, 512, 0b1011 | (0xFF << 100), False, folio=True)
    # runs: [0, 2) -> 2 slots, [3] -> 1 slot, [100, 108) -> 2 slots
    assert tlb.batched == 5 and tlb.zap_ptes == 11 and tlb.zap_saved == 11 - 3
    plain = MmuGather(0)
    gather_zapped_ptes(t, plain, 0, 0, 512, 0b1011 | (0xFF << 100), False)
    assert plain.batched == 11 and plain.zap_saved == 0


@pytest.mark.parametrize("room", [1, 2, 3, 4, 5])
def test_r24a_the_batches_are_full_after_the_run_whose_two_slots_reach_the_room_left(room):
    t = resolve_target("6.18")
    tlb = MmuGather(0)
    full = pages_until_forced_flush(t, 0, False)
    tlb.batched = full - room
    gather_zapped_ptes(t, tlb, 0, 0, 512, 0b1111 | (0b1111 << 8), False, folio=True)
    forced_at = [f[1] for f in tlb.forced]
    # two runs of two slots each (PTEs 0-3, 8-11): the first fills the batches when at most
    # two were left, the second when three or four were; the flush ends after that run
    want = {1: [4 << 12], 2: [4 << 12], 3: [12 << 12], 4: [12 << 12], 5: []}[room]
    assert forced_at == want
    assert [f[7] for f in tlb.forced] == ([1] if room <= 2 else [2] if room <= 4 else [])


# ---------------------------------------------------------------------------- reference == array
@pytest.mark.parametrize("kernel", ["6.6", "6.18"])
@pytest.mark.parametrize("length,new_len", [(2 * M, 1 * M), (6 * M, 3 * M), (10 * M, 5 * M),
                                            (40 * M, 4 * M + 12 * K), (4 * M, 2 * M - 4 * K)])
def test_the_reference_and_the_array_unmap_agree_on_zap_batches(kernel, length, new_len):
    r = thp_shrink(length, new_len, kernel=kernel, options=PlanOptions("reference"))
    f = thp_shrink(length, new_len, kernel=kernel, options=PlanOptions("fast"))
    _same_steps(r, f)
    ptes, batches = zap_columns(r)
    if kernel == "6.6":
        assert batches == ptes
    else:  # a split THP's run is one batch
        assert all(0 < b <= n or b == n == 0 for n, b in zip(ptes, batches))
        assert (batches != ptes) is (sum(ptes) > 1)


# ---------------------------------------------------------------------------- pricing
def test_zap_pte_ns_is_charged_once_per_batch():
    prof = load_cost_profile("kvm-epyc")
    bumped = prof.with_values(zap_pte_ns=prof.value("zap_pte_ns") + 1000)
    for kernel, steps in (("6.18", 1), ("6.6", 256)):
        p = thp_shrink(2 * M, 1 * M, kernel=kernel)
        assert predict(p, bumped).predicted_ns - predict(p, prof).predicted_ns == 1000 * steps


def test_6_6_still_prices_a_split_thps_ptes_one_by_one():
    prof = load_cost_profile("kvm-epyc")
    old = thp_shrink(2 * M, 1 * M, kernel="6.6")
    new = thp_shrink(2 * M, 1 * M, kernel="6.18")
    gap = predict(old, prof).predicted_ns - predict(new, prof).predicted_ns
    assert gap == 255 * prof.value("zap_pte_ns")


def _partial_measured_ns(size_zapped: int) -> float:
    d = json.loads(SURVEY.read_text())["partial"]
    return float(d["thp_median_ns"][d["size_zapped_bytes"].index(size_zapped)])


def test_the_partial_1M_thp_shrink_on_kvm_epyc_6_18_is_within_1_5x_and_was_not_per_pte():
    measured = _partial_measured_ns(1 * M)  # mremap(p, 2M, 1M, 0) of a written THP
    prof = load_cost_profile("kvm-epyc")
    t = resolve_target("6.18")
    p = thp_shrink(2 * M, 1 * M)
    got = predict(p, prof).predicted_ns
    assert 1 / 1.5 <= got / measured <= 1.5, (got, measured)
    # the same kernel zapping one PTE per step (the pricing before R24a) was 4x off
    sp = single_move_space(t, src=0x7F0000000000, length=2 * M, thp=True,
                           populate=Population("full"))
    req = MoveRequest(0x7F0000000000, 2 * M, new_len=1 * M, maymove=False, fixed=False)
    per_pte = plan_mremap(sp, req, t.with_changes(**{"kernel.zap_pte_batching": False}))
    assert predict(per_pte, prof).predicted_ns / measured > 1.5


@pytest.mark.parametrize("size", [1 * M, 3 * M, 5 * M])
def test_every_recorded_partial_thp_shrink_is_priced_within_1_5x_on_6_18(size):
    measured = _partial_measured_ns(size)
    got = predict(thp_shrink(2 * size, size), load_cost_profile("kvm-epyc")).predicted_ns
    assert 1 / 1.5 <= got / measured <= 1.5, (size, got, measured)


def test_a_batched_zap_row_keeps_batches_at_most_its_ptes():
    p = thp_shrink(40 * M, 4 * M + 12 * K)
    st = p.steps
    z = st.kind == S.K_ZAP
    assert np.all(st.batches[z] <= st.ptes[z]) and np.all(st.batches[z] >= (st.ptes[z] > 0))
