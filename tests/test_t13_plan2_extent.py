"""``get_extent`` (issue 13: computed with a mask) is still its definition: the distance to
the nearer next boundary of source and destination, capped by what is left."""

from __future__ import annotations

import random

from perfsim.planner.pgtable_move import get_extent


def _definition(shift: int, old_addr: int, new_addr: int, old_end: int) -> int:
    size = 1 << shift
    old_next = (old_addr // size + 1) * size
    new_next = (new_addr // size + 1) * size
    return min(old_next - old_addr, new_next - new_addr, old_end - old_addr)


def test_get_extent_is_the_distance_to_the_nearer_boundary_capped_by_the_end():
    rng = random.Random(7)
    for _ in range(20000):
        shift = rng.choice([21, 30, 25, 29, 39, 42])
        old = rng.randrange(1 << 48) >> rng.choice([0, 0, 12]) << rng.choice([0, 12])
        new = rng.choice([old, rng.randrange(1 << 48), old + (1 << shift)])
        end = old + rng.choice([1, 4096, 1 << shift, rng.randrange(1, 1 << 34)])
        assert get_extent(shift, old, new, end) == _definition(shift, old, new, end)
