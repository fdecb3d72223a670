"""Drawing per-operation costs from a :class:`~perfsim.cost.profile.CostParam`.

Jitter is **per row and parameter**: the operations of one kind inside one plan row (the 511
PTEs of one ``move_ptes`` extent, say) share one draw, as they share cache and TLB state;
different rows draw independently. Draws are rounded to integer nanoseconds *before* they are
multiplied by counts, so every total is an exact integer sum.

Randomness only ever comes from a ``numpy.random.Generator`` the caller passes in (derived from
the run's ``SeedSequence``); ``rng=None`` means "use the median / mean", which is what the
closed form reports by default.
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.profile import CostParam


def draw(param: CostParam, size: int, rng: np.random.Generator | None) -> np.ndarray | int:
    """``size`` integer-ns draws of ``param``; a plain ``int`` when it is fixed or no ``rng``."""
    if param.is_fixed or rng is None or size == 0:
        return int(param.ns)
    z = rng.standard_normal(size)
    if param.dist == "lognormal":
        v = param.ns * np.exp(param.sigma * z)
    else:  # normal, truncated to [0, 2 ns]
        v = np.clip(param.ns * (1.0 + param.sigma * z), 0.0, 2.0 * param.ns)
    return np.rint(v).astype(np.int64)
