"""Speed paths (issue 13) compute what the plain definitions compute."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.cost import load_cost_profile
from perfsim.cost.model import CATEGORIES, PARAM_CATEGORY, PARAM_NAMES, param_counts, row_costs
from perfsim.planner import plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.result import Counters
from perfsim.profiles import resolve_target
from perfsim.workload import load_workload, resolve_workload, synthetic_requests

TARGET = resolve_target("6.18", "x86_64")


def _plans(name: str, n: int = 40):
    w = load_workload(resolve_workload(name))
    root = np.random.SeedSequence(5)
    pairs = [pair for i, s in enumerate(w.streams) if hasattr(s, "src_align")
             for pair in synthetic_requests(s, root, i, TARGET, 4, n)]
    return [plan_mremap(space, req, TARGET) for space, req in pairs]


@pytest.mark.parametrize("name", ["random_layout_stress", "ipi_storm", "exec_stack"])
@pytest.mark.parametrize("profile", ["x86_64-generic", "kvm-host"])
def test_median_row_costs_are_count_times_median_summed_per_category(name, profile):
    prof = load_cost_profile(profile)
    for plan in _plans(name):
        for cpus in (None, 1, 4):
            rc = row_costs(plan, prof, cpus=cpus)
            counts = param_counts(plan.steps, rc.ipis)
            n = len(plan.steps)
            want = {c: np.zeros(n, np.int64) for c in CATEGORIES}
            for p in PARAM_NAMES:
                if p != "ipi_receiver_ns":
                    want[PARAM_CATEGORY[p]] += counts[p] * int(prof.param(p).ns)
            for c in CATEGORIES:
                assert rc.by_category[c].dtype == np.int64
                assert np.array_equal(rc.by_category[c], want[c]), (c, plan.request)
            assert np.array_equal(rc.total, sum(want.values(), np.zeros(n, np.int64)))
            own = (plan.steps.flush_full.astype(np.int64) * prof.param("tlb_full_flush_ns").ns
                   + plan.steps.flush_pages.astype(np.int64) * prof.param("tlb_invlpg_ns").ns)
            stolen = np.where(rc.ipis > 0, prof.param("ipi_receiver_ns").ns + own, 0)
            assert np.array_equal(rc.stolen, stolen)


def test_a_fixed_profile_with_a_generator_prices_like_no_generator():
    fixed = load_cost_profile("kvm-host").fixed()
    for plan in _plans("random_layout_stress", 20):
        a = row_costs(plan, fixed, cpus=4, rng=np.random.default_rng(1))
        b = row_costs(plan, fixed, cpus=4)
        assert np.array_equal(a.total, b.total) and np.array_equal(a.stolen, b.stolen)


def test_lazy_counters_equal_counting_the_rows_of_the_plan():
    for plan in _plans("random_layout_stress", 30):
        assert plan.move == Counters.of(plan.steps, (S.MOVE,))
        assert plan.syscall == Counters.of(plan.steps, tuple(range(len(S.PHASE_NAMES))))
        assert plan.move is plan.move  # computed once
