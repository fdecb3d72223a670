"""Weighted sums of small integer vectors, all lanes at once, in one Python int.

A plan made of periodic blocks is priced row by row for its few distinct rows, and its
totals are each row's values times the number of times the row occurs in the plan
(:func:`perfsim.cost.model.periodic_prices`). Summing a vector of a few dozen values per
row in Python costs one operation per value; packed as fixed-width lanes of one integer
(:func:`pack`), the same weighted sum is one multiplication and one addition per row,
read back lane by lane at the end (:func:`weighted_sum`).

It is exact, not approximate: packing is linear (``pack(a) * w + pack(b) == pack(a * w +
b)`` lane by lane) as long as no lane's sum leaves ``[0, 2**LANE_BITS)``. :func:`pack`
accepts only values in ``[0, VALUE_LIMIT)`` and :func:`weighted_sum` only weights that are
non-negative ints summing to less than ``VALUE_LIMIT``, so every lane's sum is below
``VALUE_LIMIT ** 2 == 2**LANE_BITS``; anything else is summed lane by lane in Python
(the definition). ``tests/test_t13d_engine_lanes.py`` holds the two to each other.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from operator import mul

LANE_BITS = 64
#: Every packed value and the sum of the weights are below this: a lane's weighted sum
#: is then below ``2**LANE_BITS``, so no lane carries into the next.
VALUE_LIMIT = 1 << (LANE_BITS // 2)


@lru_cache(maxsize=8)
def _layout(n: int) -> struct.Struct:
    """``n`` little-endian unsigned 64-bit lanes (a constant per vector length)."""
    return struct.Struct(f"<{n}Q")


def pack(values) -> int | None:
    """``values`` (ints or bools) as one int, value ``i`` in lane ``i``; None when a value
    is negative or not below :data:`VALUE_LIMIT` (it could not be summed exactly)."""
    values = tuple(values)
    if not values or min(values) < 0 or max(values) >= VALUE_LIMIT:
        return None
    return int.from_bytes(_layout(len(values)).pack(*values), "little")


def unpack(packed: int, n: int) -> tuple[int, ...]:
    """The ``n`` lanes of a packed int (or of a weighted sum of packed ints)."""
    return _layout(n).unpack(packed.to_bytes(n * LANE_BITS // 8, "little"))


def weighted_sum(weights: list, vectors: list, packed: list) -> list[int]:
    """``sum(w * v for w, v in zip(weights, vectors))`` lane by lane, for ``vectors`` of
    one length: from their :func:`pack` ints (``packed``, the same order) when every one
    packed and the weights allow it (module docstring), else lane by lane."""
    n = len(vectors[0]) if vectors else 0
    if (None not in packed and n and weights and min(weights) >= 0
            and sum(weights) < VALUE_LIMIT and set(map(type, weights)) == {int}):
        return list(unpack(sum(map(mul, weights, packed)), n))
    return lane_sums(weights, vectors)


def lane_sums(weights: list, vectors: list) -> list[int]:
    """``sum(w * v for w, v in zip(weights, vectors))`` lane by lane, in Python: the
    vectors of weight 1 (most rows of a plan) summed together, then each other one's
    lanes times its weight added (the same integers as one product per lane)."""
    if not vectors:
        return []
    ones = [v for w, v in zip(weights, vectors, strict=True) if w == 1]
    got = list(map(sum, zip(*ones, strict=True))) if ones else [0] * len(vectors[0])
    for w, v in zip(weights, vectors, strict=True):
        if w != 1 and w:
            got = [g + w * x for g, x in zip(got, v, strict=True)]
    return got
