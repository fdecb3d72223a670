"""Results that look wrong are explained next to them, from the data and the planner:
latency falling with size (the flush ceiling, a PMD move, a PUD move), blocked moves cheaper
than realignable ones, THP cheaper than no THP."""

from __future__ import annotations

import pytest

from perfsim.report import parse_study, run_study
from perfsim.report.explain import blocked_cheaper, latency_drops, thp_cheaper
from perfsim.report.shapes import plan_call, target_for


def _study(**calls):
    return parse_study({
        "name": "explain", "cost_profiles": ["x86_64-generic"],
        "calls": {"threads": [1], "backings": ["anon"], "thp": [False], "replications": 2,
                  **calls},
        "contention": {"enabled": False}, "workloads": {"enabled": False}, "tune": [],
        "traces": []})


@pytest.fixture(scope="module")
def small():
    return run_study(_study(sizes=["128K", "256K", "1M", "2M", "512M", "1G"]),
                     executor="serial", quiet=True)


def test_flush_ceiling_explains_the_drop_from_128k_to_256k(small):
    notes = [n for n in latency_drops(small) if n.startswith("Why a 256K move")]
    assert len(notes) == 1
    n = notes[0]
    ceiling = target_for("6.18", "x86_64").arch.tlb.single_page_flush_ceiling
    pages = plan_call(target_for("6.18", "x86_64"), "pmd", 128 << 10).move.tlb_pages_invalidated
    assert f"ceiling = {ceiling}" in n and f"invalidates {pages} pages" in n
    assert "every class, on both kernels" in n


def test_a_whole_pmd_explains_the_drop_at_2m(small):
    n = next(n for n in latency_drops(small) if n.startswith("Why a 2M move"))
    assert "move_normal_pmd" in n and "256 PTE copies of 1M" in n


def test_a_pud_move_explains_the_drop_at_1g(small):
    n = next(n for n in latency_drops(small) if n.startswith("Why a 1G move"))
    assert n.count("pud") >= 1 and "move_normal_pud" in n and "256 PMD moves" in n


def test_blocked_below_realignable_is_the_kept_source_page_table(small):
    notes = blocked_cheaper(small)
    assert len(notes) == 1
    n = notes[0]
    t = target_for("6.18", "x86_64")
    freed_re = plan_call(t, "realignable", 128 << 10).syscall.tables_freed
    freed_bl = plan_call(t, "blocked", 128 << 10).syscall.tables_freed
    assert freed_bl < freed_re
    assert f"frees {freed_bl} page-table pages" in n and f"against {freed_re}" in n
    assert "128K–1M" in n and "free_pgtables" in n


def test_shmem_thp_at_4k_is_never_pmd_mapped_so_nothing_needs_explaining():
    # thp_vma_suitable_order: a shmem VMA 4 KiB past a PMD boundary gets no PMD mapping, so
    # the unaligned shmem move costs the same with and without THP (it once looked cheaper,
    # when perfsim PMD-mapped it and priced the split that only clears the PMD).
    r = run_study(_study(sizes=["64M"], classes=["unaligned", "pmd"], backings=["shmem"],
                         thp=[False, True], populate="full"),
                  executor="serial", quiet=True)
    assert thp_cheaper(r) == []
    t = target_for(r.study.new, r.study.arch)
    on = plan_call(t, "unaligned", 64 << 20, backing="shmem", thp=True, populate="full")
    off = plan_call(t, "unaligned", 64 << 20, backing="shmem", thp=False, populate="full")
    assert on.move.thp_splits == 0 and on.move.ptes_moved == off.move.ptes_moved


def test_no_explanation_where_nothing_looks_wrong():
    r = run_study(_study(sizes=["2M", "4M"], classes=["pmd", "unaligned"]),
                  executor="serial", quiet=True)
    assert latency_drops(r) == [] and blocked_cheaper(r) == [] and thp_cheaper(r) == []
