"""The coalescing rule: which plan rows the engine may fold into one timeout.

A caller holds ``mmap_lock`` for write for its whole call, so no other mremap of the same mm
can interleave. Inside the call, only two things can make it wait:

* an **rmap section** (a row with ``rmap > 0``) whose rwsem some other actor also takes (a
  walker, or a caller in another mm sharing the file or anon_vma); and
* a **page-table spinlock** of a row (``ptl > 0``) on a PMD some walker also locks.

Such rows are *contended*: each is its own segment, advanced with real lock acquisitions
(and possibly waits). Every maximal run of uncontended rows is one segment, advanced with a
single timeout equal to the sum of its rows' costs. Records inside a coalesced segment (rmap
holds, flushes, IPIs) are produced from prefix sums with exact timestamps, so the results are
identical to stepping row by row, and a 1 GiB move with no contender costs one event.
"""

from __future__ import annotations

import numpy as np


def segments(contended: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split rows ``0..n`` into segments. Returns ``(starts, ends, hot)``: segment *k* covers
    rows ``starts[k]:ends[k]``; ``hot[k]`` is True for a single contended row.

    >>> s, e, h = segments(np.array([False, False, True, False]))
    >>> s.tolist(), e.tolist(), h.tolist()
    ([0, 2, 3], [2, 3, 4], [False, True, False])
    """
    c = np.asarray(contended, bool)
    n = len(c)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    # A boundary before row i when i is hot, or i-1 was hot.
    brk = np.zeros(n, bool)
    brk[0] = True
    brk[1:] = c[1:] | c[:-1]
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], n)
    return starts, ends, c[starts]


def contended_rows(steps, hot_lock_sets: np.ndarray, ptl_hot: np.ndarray | None = None) -> np.ndarray:
    """Rows that must be advanced one by one: rmap sections on a lock set flagged in
    ``hot_lock_sets`` (indexed like ``steps.lock_sets``), plus ``ptl_hot`` rows."""
    hot = np.zeros(len(steps), bool)
    if len(steps.lock_sets) and hot_lock_sets.any():
        hot = hot_lock_sets[steps.lock_set] & (steps.rmap > 0)
    if ptl_hot is not None:
        hot |= ptl_hot
    return hot
