"""What a simulation is made of, as plain frozen dataclasses (the Python API's input).

A :class:`SimSpec` names the machine (``cpus``), the kernel target and cost profile, the mms
(each with the CPUs its threads run on, i.e. its ``mm_cpumask``, and optionally an address
space to plan against), and the actors: mremap callers, rmap walkers and user threads.
:mod:`perfsim.engine.scenario` builds one from a TOML file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from perfsim.cost.profile import CostProfile
from perfsim.profiles import Target


@dataclass(frozen=True)
class MmSpec:
    """One process: ``cpus`` its threads run on (its cpumask); ``space`` the address space
    requests are planned against (needed only for callers given requests, not plans)."""

    name: str
    cpus: tuple[int, ...]
    space: object | None = None


@dataclass(frozen=True)
class CallerSpec:
    """A thread of ``mm`` on ``cpu`` calling mremap ``repeat`` times over ``plans``.

    ``plans`` items are ``MovePlan``, ``Steps`` or ``MoveRequest`` (planned against the mm's
    current address space when the call holds ``mmap_lock``, the way the kernel decides under
    the lock). A generator is consumed lazily (``repeat`` must then be 1). ``interval_ns`` is
    the think time between calls, ``start_ns`` the first call's time.
    """

    name: str
    mm: str
    cpu: int
    plans: Iterable = ()
    repeat: int = 1
    interval_ns: int = 0
    start_ns: int = 0


@dataclass(frozen=True)
class WalkerSpec:
    """An rmap walker (reclaim / migration style) on ``cpu``: every ``interval_ns`` (mean of an
    exponential gap if ``poisson``) it takes rwsem ``lock`` for read and holds it for
    ``hold_ns`` (lognormal with log-sigma ``hold_sigma`` if > 0). With ``ptl_mm`` and
    ``ptl_range`` = ``(start, end)`` bytes it also takes the PTE-table spinlock of one
    uniformly chosen PMD of that range for ``ptl_hold_ns`` inside its hold
    (``page_vma_mapped_walk``)."""

    name: str
    lock: str
    cpu: int
    interval_ns: int
    hold_ns: int
    hold_sigma: float = 0.0
    poisson: bool = True
    start_ns: int = 0
    ptl_mm: str | None = None
    ptl_range: tuple[int, int] | None = None
    ptl_hold_ns: int = 0


@dataclass(frozen=True)
class UserSpec:
    """A thread running user work on ``cpu`` in back-to-back quanta of ``quantum_ns``; IPIs
    that hit its CPU stretch the quantum they land in."""

    name: str
    mm: str
    cpu: int
    quantum_ns: int = 100_000


@dataclass(frozen=True)
class SimSpec:
    """A whole simulation. ``duration_ns=None`` runs until every caller has finished."""

    cpus: int
    target: Target
    profile: CostProfile
    mms: tuple[MmSpec, ...]
    callers: tuple[CallerSpec, ...] = ()
    walkers: tuple[WalkerSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()
    duration_ns: int | None = None
    seed: int = 0
    meta: dict = field(default_factory=dict)
