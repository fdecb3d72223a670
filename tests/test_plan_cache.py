"""Reuse within a run (issue 13): reused plans and call templates equal fresh ones.

The engine reuses a plan when a request meets an address space whose content it has planned
before (``perfsim.engine.plan_cache``), and a call template (row costs, segments, records)
when two plans have the same non-address columns and the profile has no jitter
(``perfsim.engine.pricing``). Neither may change a single record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, WalkerSpec, simulate
from perfsim.engine.plan_cache import PlanCache, fingerprint
from perfsim.engine.pricing import TemplateCache, build_template, signature
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.profiles import resolve_target
from perfsim.workload import load_workload, resolve_workload, run_workload, synthetic_requests
from perfsim.workload.generate import compile_workload

ROOT = Path(__file__).resolve().parents[1]
TARGET = resolve_target("6.18", "x86_64")
KVM = load_cost_profile("kvm-host")      # has jitter
FIXED = KVM.fixed()                     # the same medians, no jitter
MiB = 1 << 20


def _steps_equal(a: S.Steps, b: S.Steps) -> bool:
    if len(a) != len(b) or a.lock_sets != b.lock_sets:
        return False
    if not np.array_equal(a.lock_set, b.lock_set):
        return False
    return all(np.array_equal(a.col(c), b.col(c)) for c in S.ADDR_COLUMNS + S.INT_COLUMNS)


def _random_requests(name: str, seed: int, n: int):
    w = load_workload(resolve_workload(name))
    root = np.random.SeedSequence(seed)
    return [pair for i, s in enumerate(w.streams) if hasattr(s, "src_align")
            for pair in synthetic_requests(s, root, i, TARGET, 2, n)]


# --------------------------------------------------------------------------- plans
def test_roundtrip_state_has_the_same_fingerprint_and_the_same_plan():
    a, b = 0x7F0000200000, 0x7F4000200000
    size = 64 * MiB
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + size), cpus=2)
    fwd = MoveRequest(old_addr=a, old_len=size, new_addr=b)
    back = MoveRequest(old_addr=b, old_len=size, new_addr=a)
    s2 = plan_mremap(plan_mremap(space, fwd, TARGET).after, back, TARGET).after
    s4 = plan_mremap(plan_mremap(s2, fwd, TARGET).after, back, TARGET).after
    assert fingerprint(s2) == fingerprint(s4)
    assert _steps_equal(plan_mremap(s2, fwd, TARGET).steps, plan_mremap(s4, fwd, TARGET).steps)


def test_fingerprint_sees_one_missing_pte_and_one_changed_vma_field():
    a = 0x7F0000200000
    vma = Vma(a, a + 4 * MiB, name="heap")
    full = PageTables.empty(TARGET.arch).populate(a, a + 4 * MiB)
    holed = PageTables.empty(TARGET.arch).populate(a, a + 2 * MiB).populate(
        a + 2 * MiB + 4096, a + 4 * MiB)
    base = AddressSpace((vma,), full)
    assert fingerprint(base) != fingerprint(AddressSpace((vma,), holed))
    assert fingerprint(base) != fingerprint(AddressSpace((Vma(a, a + 4 * MiB, name="heap",
                                                               uffd_wp=True),), full))
    assert fingerprint(base) != fingerprint(AddressSpace((vma,), full, cpus=2))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       name=st.sampled_from(["random_layout_stress", "ipi_storm", "exec_stack",
                             "allocator_realloc", "gc_compaction"]))
def test_cached_plans_equal_fresh_plans_over_random_layouts(seed, name):
    cache = PlanCache()
    for space, req in _random_requests(name, seed, 4):
        # Twice: the second time from the cache, for a rebuilt (equal, distinct) space.
        first = cache.plan(space, req, TARGET)
        again = cache.plan(AddressSpace(space.vmas, space.pt, cpus=space.cpus), req, TARGET)
        fresh = plan_mremap(space, req, TARGET)
        for p in (first, again):
            assert p.errno == fresh.errno and p.result_addr == fresh.result_addr
            assert _steps_equal(p.steps, fresh.steps)
            if fresh.errno is None:
                assert fingerprint(p.after) == fingerprint(fresh.after)
    assert cache.hits >= cache.misses


# --------------------------------------------------------------------------- templates
def _template_equal(a, b) -> bool:
    if a.segments != b.segments or a.stats != b.stats or a.any_contended != b.any_contended:
        return False
    if not np.array_equal(a.rc.total, b.rc.total):
        return False
    for ra, rb in zip(a.records, b.records, strict=True):
        if (ra is None) != (rb is None):
            return False
        if ra is None:
            continue
        if ra.credits != rb.credits or len(ra.holds) != len(rb.holds):
            return False
        for ha, hb in zip(ra.holds, rb.holds, strict=True):
            if ha[0] != hb[0] or not all(np.array_equal(x, y) for x, y in zip(ha[1:], hb[1:])):
                return False
        if (ra.flush is None) != (rb.flush is None):
            return False
        if ra.flush is not None and not all(np.array_equal(x, y)
                                            for x, y in zip(ra.flush, rb.flush, strict=True)):
            return False
    return True


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       name=st.sampled_from(["random_layout_stress", "ipi_storm", "exec_stack",
                             "shared_file_reclaim", "allocator_realloc"]),
       cpus=st.sampled_from([1, 2, 16]))
def test_reused_templates_equal_fresh_ones_for_plans_with_the_same_signature(seed, name, cpus):
    hot = {"anon_vma:heap", "i_mmap:files"}
    cache = TemplateCache(FIXED, hot)
    assert cache.enabled
    plans = [plan_mremap(s, r, TARGET) for s, r in _random_requests(name, seed, 8)]
    for p in plans:
        got = cache.get(p.steps, cpus, None)
        assert _template_equal(got, build_template(p.steps, FIXED, cpus, None, hot, None))
    # Plans with one signature but different addresses share a template; it is theirs too.
    by_sig: dict = {}
    for p in plans:
        key = signature(p.steps, cpus)
        if key is not None:  # None: a periodic plan, never reused
            by_sig.setdefault(key, []).append(p)
    for group in by_sig.values():
        ref = build_template(group[0].steps, FIXED, cpus, None, hot, None)
        for p in group[1:]:
            assert _template_equal(ref, build_template(p.steps, FIXED, cpus, None, hot, None))


@pytest.mark.parametrize("name", ["random_layout_stress", "allocator_realloc", "exec_stack"])
def test_a_template_does_not_depend_on_the_columns_its_signature_leaves_out(name):
    from perfsim.engine.pricing import SIGNATURE_COLUMNS

    hot = {"anon_vma:heap"}
    left_out = [c for c in S.ADDR_COLUMNS + S.INT_COLUMNS if c not in SIGNATURE_COLUMNS]
    assert "length" in left_out
    for space, req in _random_requests(name, 3, 6):
        steps = plan_mremap(space, req, TARGET).steps
        cols = {k: np.array(v) for k, v in steps.cols.items()}
        for c in left_out:
            cols[c] = cols[c] * 3 + 4096
        other = S.Steps(cols, steps.lock_sets, np.array(steps.lock_set))
        assert signature(other, 4) == signature(S.Steps(
            {k: np.array(v) for k, v in steps.cols.items()}, steps.lock_sets,
            np.array(steps.lock_set)), 4)
        assert _template_equal(build_template(steps, FIXED, 4, None, hot, None),
                               build_template(other, FIXED, 4, None, hot, None))


def test_templates_are_not_reused_when_the_profile_has_jitter():
    from test_engine import jitter_profile

    assert not TemplateCache(jitter_profile(), set()).enabled
    assert not TemplateCache(KVM, set()).enabled
    assert TemplateCache(FIXED, set()).enabled
    assert not TemplateCache(FIXED, set(), enabled=False).enabled


# --------------------------------------------------------------------------- whole runs
def _frames_equal(a, b) -> None:
    for name in a.TABLES:
        pd.testing.assert_frame_equal(a.frame(name), b.frame(name), check_exact=True)
    assert a.summary == b.summary


@pytest.mark.parametrize("name", ["ipi_storm", "shared_file_reclaim", "gc_compaction",
                                  "trace_replay", "db_buffer_pool"])
def test_reuse_changes_no_record_of_a_shipped_workload(name):
    w = load_workload(resolve_workload(name))
    comp = compile_workload(w, TARGET, load_cost_profile(w.cost_profile), 11)
    comp2 = compile_workload(w, TARGET, load_cost_profile(w.cost_profile), 11)
    _frames_equal(simulate(comp.spec, record_zero_waits=True),
                  simulate(comp2.spec, record_zero_waits=True, reuse=False))


@pytest.mark.parametrize("path", sorted((ROOT / "workloads" / "scenarios").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_reuse_changes_no_record_of_a_shipped_scenario(path):
    _frames_equal(simulate(path, record_zero_waits=True),
                  simulate(path, record_zero_waits=True, reuse=False))


@pytest.mark.parametrize("profile", [KVM, FIXED], ids=["jitter", "fixed"])
def test_contended_back_and_forth_reuses_plans_and_changes_nothing(profile):
    a, b = 0x7F0000200000, 0x7F4000200000
    size = 64 * MiB
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + size), cpus=2)
    reqs = (MoveRequest(old_addr=a, old_len=size, new_addr=b),
            MoveRequest(old_addr=b, old_len=size, new_addr=a))
    walkers = tuple(WalkerSpec(f"w{i}", "anon_vma:heap", cpu=1, interval_ns=5_000,
                               hold_ns=2_000, hold_sigma=0.3) for i in range(2))
    spec = SimSpec(cpus=2, target=TARGET, profile=profile, mms=(MmSpec("app", (0, 1), space),),
                   callers=(CallerSpec("gc", "app", 0, reqs, repeat=10, interval_ns=200_000),),
                   walkers=walkers, seed=3)
    reused = simulate(spec, record_zero_waits=True)
    assert reused.reuse["plans_reused"] >= 16
    assert (reused.reuse["templates_reused"] >= 16) == profile.is_fixed
    _frames_equal(reused, simulate(spec, record_zero_waits=True, reuse=False))


def test_workload_metrics_are_the_same_with_and_without_reuse():
    _, m, _ = run_workload("exec_stack", seed=5)
    w = load_workload(resolve_workload("exec_stack"))
    comp = compile_workload(w, TARGET, load_cost_profile(w.cost_profile),
                            np.random.SeedSequence(5))
    from dataclasses import replace

    from perfsim.workload.run import Tally, summarize

    tally = Tally()
    spec = replace(comp.spec, callers=tuple(replace(c, plans=tally.wrap(c.plans))
                                            for c in comp.spec.callers))
    assert summarize(simulate(spec, reuse=False), tally.realigned) == m


def test_periodic_plans_are_priced_directly_not_keyed():
    a, b = 0x7F0000200000 + 4096, 0x7F4000600000 + 8192
    size = 1 << 30
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + size))
    plan = plan_mremap(space, MoveRequest(old_addr=a, old_len=size, new_addr=b), TARGET)
    assert any(isinstance(p, S.PeriodicBlock) for p in plan.steps.parts())
    assert signature(plan.steps, 1) is None
    cache = TemplateCache(FIXED, set())
    got = cache.get(plan.steps, 1, None)
    assert cache.hits == cache.misses == 0
    assert _template_equal(got, build_template(plan.steps, FIXED, 1, None, set(), None))


def test_spaces_too_large_to_hash_cheaply_are_planned_directly():
    a, b = 0x7F0000000000, 0x7F4000000000
    size = 4 << 30
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + size))
    req = MoveRequest(old_addr=a, old_len=size, new_addr=b)
    cache = PlanCache(max_bytes=1 << 10)
    p1, p2 = cache.plan(space, req, TARGET), cache.plan(space, req, TARGET)
    assert cache.hits == cache.misses == 0 and p1 is not p2
    assert _steps_equal(p1.steps, p2.steps)


def test_a_space_with_a_field_the_fingerprint_does_not_know_is_planned_directly():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Odd:
        thing: object

    with pytest.raises(TypeError):
        fingerprint(Odd(object()))
    a = 0x7F0000200000
    space = AddressSpace((Vma(a, a + 4 * MiB, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + 4 * MiB))
    req = MoveRequest(old_addr=a, old_len=4 * MiB, new_addr=0x7F4000200000)
    cache = PlanCache()
    object.__setattr__(space, "mmap_base_addr", object())  # not hashable by content
    p = cache.plan(space, req, TARGET)
    assert cache.hits == cache.misses == 0 and p.errno is None


def test_calls_in_an_mm_whose_ptls_a_walker_takes_are_not_reused():
    # Two mms with the same layout, walkers locking the PTLs of one PMD in one mm and three
    # in the other: the same plan is contended in different rows (and segments) in each.
    a, b = 0x7F0000200000, 0x7F4000200000
    size = 8 * MiB
    def space(name):  # distinct anon_vmas: no rmap lock is shared between the two mms
        return AddressSpace((Vma(a, a + size, name=name, anon_id=name),),
                            PageTables.empty(TARGET.arch).populate(a, a + size), cpus=1)
    reqs = (MoveRequest(old_addr=a, old_len=size, new_addr=b),
            MoveRequest(old_addr=b, old_len=size, new_addr=a))
    mms = (MmSpec("x", (0,), space("heap-x")), MmSpec("y", (1,), space("heap-y")))
    callers = tuple(CallerSpec(f"c{m}", m, c, reqs, repeat=4, interval_ns=50_000)
                    for m, c in (("x", 0), ("y", 1)))
    walkers = (WalkerSpec("wx", "anon_vma:elsewhere", 2, 3_000, 1_000, ptl_mm="x",
                          ptl_range=(a, a + 2 * MiB), ptl_hold_ns=500),
               WalkerSpec("wy", "anon_vma:elsewhere", 2, 3_000, 1_000, ptl_mm="y",
                          ptl_range=(a + 2 * MiB, a + 8 * MiB), ptl_hold_ns=500))
    spec = SimSpec(cpus=3, target=TARGET, profile=FIXED, mms=mms, callers=callers,
                   walkers=walkers, seed=2)
    reused = simulate(spec, record_zero_waits=True)
    assert reused.reuse["templates_reused"] == 0
    fresh = simulate(spec, record_zero_waits=True, reuse=False)
    seg = fresh.calls.groupby("caller")["segments"].apply(list)
    assert seg["cx"] != seg["cy"]
    _frames_equal(reused, fresh)
