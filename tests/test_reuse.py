"""Reuse across the runs of a batch (issue 13): runs given one RunCaches produce exactly the
records of runs that share nothing, whatever ran before them in the batch."""

from __future__ import annotations

import pandas as pd

from perfsim.cost import load_cost_profile
from perfsim.engine import simulate
from perfsim.engine.reuse import RunCaches, TemplateStore
from perfsim.report.runner import ContentionTask, contention_spec
from perfsim.workload import run_workload

FIXED = load_cost_profile("kvm-host").fixed()
CHEAP_SYSCALL = FIXED.with_values(syscall_ns=1)


def _frames_equal(a, b) -> bool:
    fa, fb = a.frames(), b.frames()
    return set(fa) == set(fb) and all(fa[k].equals(fb[k]) for k in fa)


def test_runs_sharing_caches_record_what_runs_that_share_nothing_record():
    caches = RunCaches()
    runs = [("ipi_storm", 1, FIXED), ("ipi_storm", 2, FIXED), ("ipi_storm", 2, CHEAP_SYSCALL),
            ("exec_stack", 1, FIXED), ("exec_stack", 1, CHEAP_SYSCALL), ("ipi_storm", 1, FIXED)]
    for name, seed, prof in runs:
        shared, m_shared, _ = run_workload(name, seed=seed, profile=prof, caches=caches)
        alone, m_alone, _ = run_workload(name, seed=seed, profile=prof)
        assert _frames_equal(shared, alone), (name, seed, prof.name)
        assert m_shared == m_alone or pd.Series(m_shared).equals(pd.Series(m_alone))
    # the last run repeats the first: every one of its templates came from the store
    assert shared.reuse["templates_reused"] > alone.reuse["templates_reused"]


def test_templates_are_not_shared_between_cost_profiles():
    caches = RunCaches()
    a, _, _ = run_workload("exec_stack", seed=1, profile=FIXED, caches=caches)
    b, _, _ = run_workload("exec_stack", seed=1, profile=CHEAP_SYSCALL, caches=caches)
    assert b.reuse["templates_reused"] == run_workload(
        "exec_stack", seed=1, profile=CHEAP_SYSCALL)[0].reuse["templates_reused"]
    assert (a.calls["latency_ns"] > b.calls["latency_ns"]).all()


def _contention(profile: str, replication: int) -> ContentionTask:
    return ContentionTask("a", "6.18", "x86_64", profile, "pmd", "anon", 64 << 20, 8, 20_000,
                          2, 30_000, 2_000, 0.0, replication, 1)


def test_contention_runs_sharing_caches_plan_each_request_once():
    caches = RunCaches()
    first = simulate(contention_spec(_contention("kvm-host", 0)), record_zero_waits=True,
                     caches=caches)
    again = simulate(contention_spec(_contention("kvm-host", 1)), record_zero_waits=True,
                     caches=caches)
    alone = simulate(contention_spec(_contention("kvm-host", 1)), record_zero_waits=True)
    assert _frames_equal(again, alone)
    assert first.reuse["plans_reused"] == alone.reuse["plans_reused"]
    assert again.reuse["plans_reused"] == alone.reuse["plans_reused"] + 2  # fwd and back


def test_template_store_keeps_at_most_its_row_budget():
    store = TemplateStore(max_rows=10)
    for i in range(5):
        store.put(i, f"t{i}", 4)
    assert store.rows <= 10 and len(store) == 2
    assert store.get(0) is None and store.get(4) == "t4"
    store.put("big", "too big", 11)
    assert store.get("big") is None
