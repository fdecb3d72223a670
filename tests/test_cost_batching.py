"""Large-folio mechanisms as costs (issue 12, item 2): one test per kernel rule of
perfsim.cost.batching, and their charges per move_ptes row."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.cost import load_cost_profile, param_counts, predict
from perfsim.cost.batching import (
    FolioBatching,
    contpte_mapped,
    folio_batching,
    mremap_folio_pte_batch_looks_up,
    ptep_get_and_clear_unfolds,
    set_ptes_refolds,
)
from perfsim.mm.build import single_move_space
from perfsim.planner import MoveRequest, PlanOptions, plan_mremap
from perfsim.profiles import resolve_target

K, M = 1 << 10, 1 << 20
SRC = 1 << 30
MTHP_SIZES = (16 * K, 32 * K, 64 * K, 128 * K, 256 * K, 512 * K, 1024 * K)


def _plan(kernel, arch, length, folio_bytes, shift=M, **changes):
    t = resolve_target(kernel, arch)
    if changes:
        t = t.with_changes(**changes)
    space = single_move_space(t, src=SRC, length=length, folio_size=folio_bytes)
    plan = plan_mremap(space, MoveRequest(SRC, length, new_addr=SRC + shift), t,
                       PlanOptions("reference"))
    return t, plan, folio_batching(t, folio_bytes, shift_bytes=shift)


def _counts(plan, fb):
    c = param_counts(plan.steps, plan.steps.ipis.astype(np.int64), fb)
    return {k: int(v.sum()) for k, v in c.items()}


def test_contpte_mapped_needs_arm64_contpte_kernel_6_9_and_a_whole_block():
    assert contpte_mapped((6, 9), 16, 16)
    assert not contpte_mapped((6, 7), 16, 16)      # contpte for user mappings came in 6.9
    assert not contpte_mapped((6, 18), 16, 8)      # a 32 KiB folio is smaller than a block
    assert not contpte_mapped((6, 18), 1, 512)     # x86: no contiguous bit


def test_folio_lookup_happens_per_batch_under_gate_folio_and_only_for_contpte_under_hint():
    assert mremap_folio_pte_batch_looks_up("folio", contpte=False)
    assert not mremap_folio_pte_batch_looks_up("hint", contpte=False)
    assert mremap_folio_pte_batch_looks_up("hint", contpte=True)
    assert not mremap_folio_pte_batch_looks_up("none", contpte=True)


def test_unfold_and_refold_happen_only_pte_by_pte_on_contpte_mappings():
    assert ptep_get_and_clear_unfolds("none", contpte=True)
    assert not ptep_get_and_clear_unfolds("hint", contpte=True)
    assert not ptep_get_and_clear_unfolds("none", contpte=False)
    assert set_ptes_refolds("none", True, 64 * K, shift_bytes=M)
    assert not set_ptes_refolds("none", True, 64 * K, shift_bytes=M + 4 * K)  # misaligned dst
    assert not set_ptes_refolds("folio", True, 64 * K, shift_bytes=M)


def test_without_a_folio_context_nothing_extra_is_charged():
    _, plan, _ = _plan("6.17", "x86_64", M, 0, **{"kernel.pte_batching": "folio"})
    c = _counts(plan, None)
    assert c["folio_lookup_ns"] == c["contpte_unfold_ns"] == c["contpte_fold_ns"] == 0
    assert not FolioBatching().charges_anything


def test_gate_folio_looks_up_every_small_folio_pte_on_x86():
    """The x86 regression of f822a9a81a31: one vm_normal_folio per present PTE."""
    _, plan, fb = _plan("6.17", "x86_64", M, 0, **{"kernel.pte_batching": "folio"})
    assert _counts(plan, fb)["folio_lookup_ns"] == 256
    _, plan, fb = _plan("6.17", "x86_64", M, 0)
    assert _counts(plan, fb)["folio_lookup_ns"] == 0          # the hint gate: no lookup


def test_pre_6_17_arm64_unfolds_and_refolds_every_contpte_block():
    _, plan, fb = _plan("6.15", "arm64-4k", M, 64 * K)
    c = _counts(plan, fb)
    assert c["contpte_unfold_ns"] == c["contpte_fold_ns"] == 16 and c["folio_lookup_ns"] == 0
    assert c["pte_present_ns"] == 256


def test_6_17_arm64_moves_contpte_blocks_as_batches_with_one_lookup_each():
    _, plan, fb = _plan("6.17", "arm64-4k", M, 64 * K)
    c = _counts(plan, fb)
    assert c["contpte_unfold_ns"] == c["contpte_fold_ns"] == 0
    assert c["pte_present_ns"] == c["folio_lookup_ns"] == 16
    assert c["contpte_pte_ns"] == 240


@pytest.mark.parametrize("folio", MTHP_SIZES)
def test_each_mthp_size_is_priced_on_arm64(folio):
    """Below the 64 KiB contpte block an mTHP is not contiguous-mapped: 6.17's hint gate
    leaves it PTE by PTE, and 6.15 does not unfold it; from 64 KiB up, 6.17 is faster."""
    p = load_cost_profile("arm64-generic")
    old = _ns("6.15", folio, p)
    new = _ns("6.17", folio, p)
    small = _ns("6.17", 0, p)
    if folio < 64 * K:
        assert old == new == small
    else:
        assert new < small < old


def _pair(kernel, folio):
    _, plan, fb = _plan(kernel, "arm64-4k", M, folio)
    return plan, fb


def _ns(kernel, folio, profile):
    plan, fb = _pair(kernel, folio)
    return predict(plan, profile, folio=fb).predicted_ns


def test_batching_parameters_are_tunable_by_name():
    p = load_cost_profile("arm64-generic").with_values(contpte_unfold_ns=0, contpte_fold_ns=0)
    assert _ns("6.15", 64 * K, p) < _ns("6.15", 64 * K, load_cost_profile("arm64-generic"))


@pytest.mark.parametrize("kernel", ["6.15", "6.17", "7.3"])
def test_the_engine_charges_the_large_folio_mechanisms_like_the_closed_form(kernel):
    """A simulated call of a 64 KiB-folio move on arm64 costs what ``predict`` says with the
    plan's :func:`folio_batching_of_plan` (the contpte unfold/refold before 6.17, a folio
    lookup per batch after), and more than the same rows priced without it (6.15)."""
    from perfsim.cost.batching import folio_batching_of_plan
    from perfsim.engine import CallerSpec, MmSpec, SimSpec, simulate

    t, plan, fb = _plan(kernel, "arm64-4k", M, 64 * K)
    assert folio_batching_of_plan(plan, t) == fb
    profile = load_cost_profile("arm64-generic")
    spec = SimSpec(cpus=1, target=t, profile=profile, mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("mover", "app", 0, (plan,), 1, 0),), seed=0)
    latency = int(simulate(spec).calls.latency_ns.iloc[0])
    assert latency == predict(plan, profile, folio=fb).predicted_ns
    if kernel == "6.15":
        assert latency > predict(plan, profile).predicted_ns


def test_small_folios_on_x86_carry_no_folio_mechanism():
    from perfsim.cost.batching import folio_batching_of_plan
    t, plan, _ = _plan("6.18", "x86_64", M, 0)
    assert folio_batching_of_plan(plan, t) is None
