"""The engine's shortcuts (issue 13) held to the general path on the same runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cost import LOCK, synthetic_plan

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, UserSpec, WalkerSpec, simulate
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")
TABLES = ("calls", "holds", "flushes", "users")


def _spec(seed: int, walkers, *, callers: int = 2, users: int = 3, duration_ns=None) -> SimSpec:
    rng = np.random.default_rng(seed)
    plans = [synthetic_plan(pmd_moves=int(rng.integers(1, 30)), ptes=int(rng.integers(1, 512)))
             for _ in range(4)]
    cs = tuple(CallerSpec(f"mover{k}", "app", k % 2, tuple(plans), repeat=2,
                          interval_ns=int(rng.integers(0, 3000))) for k in range(callers))
    us = tuple(UserSpec(f"u{k}", "app", k % 4, int(rng.choice([3000, 10_000])))
               for k in range(users))
    return SimSpec(cpus=4, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0, 1, 2, 3)),),
                   callers=cs, walkers=tuple(walkers), users=us, seed=seed,
                   duration_ns=duration_ns)


def _same(a, b) -> None:
    for t in TABLES:
        pd.testing.assert_frame_equal(a.frame(t), b.frame(t))


@pytest.mark.parametrize("seed", range(8))
def test_rows_take_no_spinlock_when_no_walker_takes_the_mms_spinlocks(seed):
    """A contended row's PTLs are free whenever no walker locks the mm's page tables: the
    run equals one where a walker of the mm's spinlocks exists (so every contended row
    takes its PTLs for real) but never visits before the run ends."""
    reclaim = WalkerSpec("reclaim", LOCK[0], cpu=2, interval_ns=700, hold_ns=300,
                         hold_sigma=0.3)
    late = WalkerSpec("late", LOCK[0], cpu=3, interval_ns=10**15, hold_ns=1, poisson=False,
                      start_ns=10**15, ptl_mm="app", ptl_range=(0x7000_0000_0000, 0x7000_0020_0000),
                      ptl_hold_ns=1)
    skip = simulate(_spec(seed, [reclaim]))
    full = simulate(_spec(seed, [reclaim, late]))
    _same(skip, full)
    assert len(skip.holds) > 0 and skip.calls.segments.max() > 1
