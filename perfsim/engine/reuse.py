"""What a batch of runs may share: plans and call templates, kept between simulations.

Every run has its own :class:`~perfsim.engine.plan_cache.PlanCache` and
:class:`~perfsim.engine.pricing.TemplateCache`. A caller that runs many simulations in a row
(a sweep batch, a tune batch, a report chunk) can hand them one :class:`RunCaches`, which
those per-run caches then read and fill. Sharing cannot change a result: both caches map a
key to a pure function of the key's content.

* plans: the key is the content fingerprint of the address space and the request plus the
  target's digest (:mod:`perfsim.engine.plan_cache`), so a plan found under it is the plan
  the planner would compute. Runs of one study often plan the same calls (the report's
  contention runs replay one forward/back pair per cost profile, thread count and
  replication).
* templates: the key is the plan's :func:`~perfsim.engine.pricing.signature` plus what a
  template is computed from besides the plan: the cost profile (by content digest), the set
  of contended lock names and the mm's CPU count. Templates are shared only for jitter-free
  profiles (the same rule as within a run). Runs of one workload under other seeds, kernels
  or knob values price many plans of equal signature. The rows a template miss prices
  are kept too (one memo per profile digest and folio mechanism set, bounded as a run's).

Memory is bounded: at most ``max_plans`` plans (each holding its address spaces) and call
templates totalling at most ``max_template_rows`` plan rows, least recently used evicted.
A RunCaches is an explicit object passed down (``simulate(..., caches=)``,
``run_workload(..., caches=)``); nothing is kept between batches or in module state.
"""

from __future__ import annotations

from collections import OrderedDict

from perfsim.engine.plan_cache import PlanCache


class TemplateStore:
    """Call templates of many runs: ``(scope, signature) → CallTemplate``, LRU, bounded by
    the total number of plan rows the kept templates describe."""

    def __init__(self, max_rows: int = 400_000) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self.entries: OrderedDict = OrderedDict()
        #: Priced rows of the runs sharing this store, one memo per (cost profile digest,
        #: folio mechanisms): ``TemplateCache.row_memo`` (a row's price is a pure function
        #: of its columns and IPI targets under one profile and folio).
        self.row_memos: dict = {}

    def get(self, key):
        hit = self.entries.get(key)
        if hit is None:
            return None
        self.entries.move_to_end(key)
        return hit[0]

    def put(self, key, template, rows: int) -> None:
        if rows > self.max_rows or key in self.entries:
            return
        self.entries[key] = (template, rows)
        self.rows += rows
        while self.rows > self.max_rows:
            _, (_, r) = self.entries.popitem(last=False)
            self.rows -= r

    def __len__(self) -> int:
        return len(self.entries)


class RunCaches:
    """Plans and call templates shared by the runs it is passed to (module docstring)."""

    def __init__(self, max_plans: int = 256, max_template_rows: int = 400_000) -> None:
        self.plans = PlanCache(max_entries=max_plans)
        self.templates = TemplateStore(max_template_rows)
