"""What a simulation is made of, as plain frozen dataclasses (the Python API's input).

A :class:`SimSpec` names the machine (``cpus``), the kernel target and cost profile, the mms
(each with the CPUs its threads run on, i.e. its ``mm_cpumask``, and optionally an address
space to plan against), and the actors: mremap callers, rmap walkers and user threads.
:mod:`perfsim.engine.scenario` builds one from a TOML file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import NamedTuple

from perfsim.cost.profile import CostProfile
from perfsim.profiles import Target


class _Factory:
    """The default of a field made by its ``default_factory`` (shown as dataclasses show it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def fast_init(cls):
    """Give a frozen dataclass (with an instance ``__dict__``, no ``__post_init__``) an
    ``__init__`` that sets its fields with one update of the instance's dict, instead of
    the generated one's ``object.__setattr__`` per field (a run makes a few specs; a
    frozen init of ten fields costs several times a plain one). The same signature, made
    from the same fields: positional or keyword in field order, the same defaults, a
    ``default_factory`` called when its field is not given; the instance is the same
    (``tests/test_t13c_run_fixed.py`` holds both inits to each other)."""
    if hasattr(cls, "__post_init__"):  # the one-update init would skip it
        raise TypeError(f"{cls.__name__}: fast_init cannot keep a __post_init__")
    ns = {"_MISSING": _FACTORY}
    params, items = [], []
    for f in fields(cls):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: fast_init needs every field in __init__")
        if f.default is not MISSING:
            ns[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
            items.append(f"{f.name}={f.name}")
        elif f.default_factory is not MISSING:
            ns[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            items.append(f"{f.name}=_f_{f.name}() if {f.name} is _MISSING else {f.name}")
        else:
            params.append(f.name)
            items.append(f"{f.name}={f.name}")
    exec(f"def __init__(self, {', '.join(params)}):\n"  # noqa: S102 (code made from the fields)
         f"    self.__dict__.update({', '.join(items)})\n", ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
    return cls


class ColdCall(NamedTuple):
    """A plan-stream item: a call made with the kernel's working set out of the CPU caches
    (its caller wrote memory just before it). ``item`` is the call (``MovePlan``, ``Steps``
    or ``MoveRequest``); ``cold_ns`` what the cost profile's ``[cold_cache]`` charges it
    (:meth:`perfsim.cost.profile.CostProfile.cold_cache_ns`), once, at the call's start,
    under ``mmap_lock``, as category ``fixed``. Not a kernel rule: a property of the
    machine's caches (docs/engine.md)."""

    item: object
    cold_ns: int


@fast_init
@dataclass(frozen=True)
class MmSpec:
    """One process: ``cpus`` its threads run on (its cpumask); ``space`` the address space
    requests are planned against (needed only for callers given requests, not plans)."""

    name: str
    cpus: tuple[int, ...]
    space: object | None = None


@fast_init
@dataclass(frozen=True)
class CallerSpec:
    """A thread of ``mm`` on ``cpu`` calling mremap ``repeat`` times over ``plans``.

    ``plans`` items are ``MovePlan``, ``Steps`` or ``MoveRequest`` (planned against the mm's
    current address space when the call holds ``mmap_lock``, the way the kernel decides under
    the lock), or a :class:`ColdCall` of one. A generator is consumed lazily (``repeat``
    must then be 1). ``interval_ns`` is the think time between calls, ``start_ns`` the
    first call's time.
    """

    name: str
    mm: str
    cpu: int
    plans: Iterable = ()
    repeat: int = 1
    interval_ns: int = 0
    start_ns: int = 0


@fast_init
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


@fast_init
@dataclass(frozen=True)
class UserSpec:
    """A thread running user work on ``cpu`` in back-to-back quanta of ``quantum_ns``; IPIs
    that hit its CPU stretch the quantum they land in."""

    name: str
    mm: str
    cpu: int
    quantum_ns: int = 100_000


@fast_init
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
