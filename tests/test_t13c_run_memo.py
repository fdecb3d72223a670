"""Rows priced once per cost profile across runs (``pricing.profile_row_memo``): a run whose
rows were priced by earlier runs (other plans, profiles, CPU counts, folio mechanisms)
records what the same run records pricing every row afresh (``reuse=False``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cost import synthetic_plan

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, pricing, simulate
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SRC = 0x300000000000 + 2 * MiB + 4 * KiB
DST = 0x300000000000 + 2 * GiB + 6 * MiB + 8 * KiB
PROFILES = (load_cost_profile("x86_64-generic"), load_cost_profile("kvm-host").fixed(),
            load_cost_profile("x86_64-generic").with_values(pte_present_ns=7))


def _plan(size: int, populated: int):
    space = AddressSpace((Vma(SRC, SRC + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(SRC, SRC + populated))
    return plan_mremap(space, MoveRequest(old_addr=SRC, old_len=size, new_addr=DST), TARGET)


def _spec(plans, profile, mm_cpus) -> SimSpec:
    return SimSpec(cpus=4, target=TARGET, profile=profile, mms=(MmSpec("app", mm_cpus),),
                   callers=(CallerSpec("mover", "app", 0, tuple(plans)),))


def _same(a, b) -> None:
    for t in a.TABLES:
        pd.testing.assert_frame_equal(a.frame(t), b.frame(t))
    assert a.summary == b.summary


@pytest.mark.parametrize("seed", range(12))
def test_runs_priced_through_rows_of_earlier_runs_equal_runs_priced_afresh(seed):
    rng = np.random.default_rng(seed)
    for _ in range(4):
        size = int(rng.choice([4 * KiB, 2 * MiB, 64 * MiB + 12 * KiB]))
        populated = int(rng.integers(1, size // (4 * KiB) + 1)) * 4 * KiB
        plans = [_plan(size, populated), synthetic_plan(int(rng.integers(1, 9)),
                                                        int(rng.integers(1, 512)))]
        profile = PROFILES[int(rng.integers(len(PROFILES)))]
        mm_cpus = tuple(range(int(rng.integers(1, 5))))
        _same(simulate(_spec(plans, profile, mm_cpus)),
              simulate(_spec(plans, profile, mm_cpus), reuse=False))


def test_the_1gib_move_priced_through_rows_of_earlier_runs_equals_it_priced_afresh():
    plan = _plan(GiB, GiB)
    profile = PROFILES[1]
    first = simulate(_spec([plan], profile, (0,)))
    again = simulate(_spec([_plan(GiB, GiB)], profile, (0,)))
    fresh = simulate(_spec([plan], profile, (0,)), reuse=False)
    _same(first, fresh)
    _same(again, fresh)


def test_row_memos_are_one_per_profile_and_folio_and_bounded_in_number():
    a = pricing.profile_row_memo("digest-a", None)
    assert pricing.profile_row_memo("digest-a", None) is a
    assert pricing.profile_row_memo("digest-b", None) is not a
    for i in range(pricing.PROFILE_MEMOS + 3):
        pricing.profile_row_memo(f"other-{i}", None)
    assert len(pricing._PROFILE_ROW_MEMOS) <= pricing.PROFILE_MEMOS
    assert pricing.profile_row_memo("digest-a", None) is not a  # dropped, made anew


def test_a_template_cache_without_a_store_prices_through_its_profiles_memo():
    prof = PROFILES[0]
    cache = pricing.TemplateCache(prof, set())
    assert cache.row_memo(None) is pricing.profile_row_memo(prof.digest, None)
    assert pricing.TemplateCache(prof, set(), enabled=False).row_memo(None) is None
