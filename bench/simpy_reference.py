"""SimPy's own speed on this machine, measured in the same run as a perfsim benchmark.

The engine is built on SimPy, so SimPy's raw event rate is the yardstick its targets are
ratios of (the machine is shared and its speed varies; a ratio measured side by side does
not):

* :func:`timeouts_per_s`: one process yielding ``env.timeout(1)`` in a loop;
* :func:`lock_timeout_pairs_per_s`: two processes contending for one ``simpy.Resource``
  (capacity 1), each repeatedly requesting it, holding it for a timeout and releasing it;
  one pair = one acquisition + one timeout.

Each is the best of ``repeats`` runs of about ``n`` operations.
"""

from __future__ import annotations

import time

import simpy


def _best(fn, repeats: int) -> float:
    return max(fn() for _ in range(repeats))


def timeouts_per_s(n: int = 200_000, repeats: int = 3, clock=time.perf_counter) -> float:
    """``clock``: wall time by default; ``time.process_time`` for timeouts per CPU-second."""
    def once() -> float:
        env = simpy.Environment()

        def proc():
            for _ in range(n):
                yield env.timeout(1)

        env.process(proc())
        t0 = clock()
        env.run()
        return n / (clock() - t0)

    return _best(once, repeats)


def lock_timeout_pairs_per_s(n: int = 100_000, repeats: int = 3) -> float:
    def once() -> float:
        env = simpy.Environment()
        res = simpy.Resource(env, capacity=1)
        per = n // 2

        def proc():
            for _ in range(per):
                with res.request() as req:
                    yield req
                    yield env.timeout(1)

        env.process(proc())
        env.process(proc())
        t0 = time.perf_counter()
        env.run()
        return 2 * per / (time.perf_counter() - t0)

    return _best(once, repeats)


if __name__ == "__main__":
    print(f"SimPy timeouts/s: {timeouts_per_s():,.0f}")
    print(f"SimPy lock+timeout pairs/s: {lock_timeout_pairs_per_s():,.0f}")
