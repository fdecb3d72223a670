"""The planner's view of a calibration configuration: its address space, its plan, and the
per-parameter counts (one row of the fitting design matrix).

This is where measurement meets the simulator: a measured record names a :class:`Config`
and the real ``src``/``dst`` addresses; :func:`plan_config` rebuilds the same mm for the
planner (``perfsim.mm.build.single_move_space``) and plans the same ``mremap`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from perfsim.calibrate.design import SPARSE_EVERY, Config, GiB, MiB
from perfsim.cost import PARAM_NAMES, CostProfile, param_counts
from perfsim.cost.model import ipi_targets
from perfsim.host.layout import SHAPE_OFFSETS
from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.result import MovePlan
from perfsim.profiles import Target, resolve_target

_OFFSETS = SHAPE_OFFSETS  # perfsim.host.layout builds the shapes at these offsets
DEFAULT_BASE = 0x300000000000

#: Whole-call counters compared with the trace (per call, summed over phases).
FLUSH_METRICS = ("flush_calls", "full_flushes", "ipi_rounds")
#: the design matrix's column beyond the cost parameters: the cold-cache share of a call
#: (:class:`perfsim.cost.profile.ColdCache`), ``min(1, touched_bytes / saturation_bytes)``
COLD_COLUMN = "cold_cache_ns"
COLUMNS: tuple[str, ...] = (*PARAM_NAMES, COLD_COLUMN)


def touched_bytes(cfg: Config) -> int:
    """Bytes the caller wrote just before the call: populating the source writes (and the
    kernel zeroes) every page it faults in: all of it (``full``), one page in
    :data:`SPARSE_EVERY` (``sparse``), nothing (``none``)."""
    if cfg.populate == "full":
        return cfg.size
    if cfg.populate == "sparse":
        return cfg.size // SPARSE_EVERY
    return 0


def cold_share(touched: int, saturation_bytes: int | None) -> float:
    """The design-matrix value of :data:`COLD_COLUMN` (0 when the term is not modelled)."""
    if not saturation_bytes or touched <= 0:
        return 0.0
    return min(1.0, touched / saturation_bytes)


def default_addresses(cfg: Config, base: int = DEFAULT_BASE) -> tuple[int, int]:
    """Where ``perfsim.host.layout.build_layout`` puts source and destination."""
    soff, doff = _OFFSETS[cfg.align]
    span = -(-(cfg.size + 8 * MiB) // GiB) * GiB
    return base + soff, base + span + GiB + doff


def space_for(cfg: Config, target: Target, src: int, dst: int):
    """(AddressSpace, MoveRequest) of one configuration at the measured addresses (a
    ``shrink`` ignores ``dst``: it moves nothing)."""
    pop = {"full": Population("full"), "none": Population("none"),
           "sparse": Population("every", every=SPARSE_EVERY)}[cfg.populate]
    backing = {"anon": "anon", "memfd": "shmem", "hugetlb": "hugetlb"}[cfg.backing]
    space = single_move_space(target, src=src, length=cfg.size, backing=backing, thp=cfg.thp,
                              populate=pop, guard_below_src=cfg.align == "blocked",
                              cpus=cfg.threads,
                              hugepage_size=2 * MiB if cfg.backing == "hugetlb" else 0)
    if cfg.op == "shrink":  # mremap(src, size, size / 2, 0): the tail half is unmapped
        return space, MoveRequest(src, cfg.size, new_len=cfg.size // 2, maymove=False,
                                  fixed=False)
    return space, MoveRequest(src, cfg.size, new_addr=dst, dontunmap=cfg.op == "dontunmap")


@lru_cache(maxsize=4096)
def _plan_cached(cfg: Config, kernel: str, arch: str, src: int, dst: int) -> MovePlan:
    target = resolve_target(kernel, arch)
    space, req = space_for(cfg, target, src, dst)
    return plan_mremap(space, req, target)


def plan_config(cfg: Config, *, kernel: str = "6.18", arch: str = "x86_64",
                src: int | None = None, dst: int | None = None) -> MovePlan:
    """Plan the configuration's mremap (cached per configuration and addresses)."""
    if src is None or dst is None:
        src, dst = default_addresses(cfg)
    return _plan_cached(cfg, kernel, arch, int(src), int(dst))


def predicted_flushes(plan: MovePlan) -> dict[str, int]:
    """Whole-call flush_tlb_mm_range calls, full flushes and IPI rounds of a plan."""
    st = plan.steps
    fl = st.flushes > 0
    return {"flush_calls": int(st.flushes.sum()),
            "full_flushes": int((st.flush_full.astype(bool) & fl).sum()),
            "ipi_rounds": int(((st.ipis > 0) & fl).sum())}


def design_row(plan: MovePlan, profile: CostProfile) -> dict[str, int]:
    """How many times the whole call pays each cost parameter (the design-matrix row)."""
    counts = param_counts(plan.steps, ipi_targets(plan.steps, profile, None))
    return {p: int(counts[p].sum()) if p in counts else 0 for p in PARAM_NAMES}


@dataclass(frozen=True)
class Planned:
    """One configuration as the simulator sees it."""

    config: Config
    plan: MovePlan
    counts: dict[str, int]
    flushes: dict[str, int]

    @property
    def touched_bytes(self) -> int:
        return touched_bytes(self.config)


def predicted_ns(planned: Planned, profile: CostProfile) -> int:
    """The closed-form latency of one measured configuration: the cost model's
    (:func:`perfsim.cost.predict`, every parameter at its ``ns``) plus the profile's
    cold-cache charge for what the caller wrote before the call (0 without one)."""
    from perfsim.cost import predict

    return int(predict(planned.plan, profile,
                       written_before_bytes=planned.touched_bytes).predicted_ns)


def plan_all(configs_with_addr, profile: CostProfile, *, kernel: str = "6.18",
             arch: str = "x86_64") -> dict[str, Planned]:
    """``{config_id: Planned}`` for ``[(Config, src, dst), ...]``."""
    out = {}
    for cfg, src, dst in configs_with_addr:
        plan = plan_config(cfg, kernel=kernel, arch=arch, src=src, dst=dst)
        if plan.errno:
            raise RuntimeError(f"the planner rejects {cfg.id}: {plan.errno}")
        out[cfg.id] = Planned(cfg, plan, design_row(plan, profile), predicted_flushes(plan))
    return out


def design_matrix(planned: dict[str, Planned], ids: list[str],
                  saturation_bytes: int | None = None) -> np.ndarray:
    """Rows = configurations ``ids``, columns = :data:`COLUMNS`: the parameter counts, then
    the cold-cache share (0 unless ``saturation_bytes``)."""
    return np.array([[planned[i].counts.get(p, 0) for p in PARAM_NAMES]
                     + [cold_share(planned[i].touched_bytes, saturation_bytes)]
                     for i in ids], dtype=float)
