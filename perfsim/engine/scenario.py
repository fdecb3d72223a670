"""Concurrent scenarios as TOML, validated, turned into a :class:`~perfsim.engine.spec.SimSpec`.

Schema (every field checked; unknown fields are errors that name them)::

    name = "gc-compaction"            # free text
    seed = 1                          # run seed (overridable by --seed)
    cpus = 2                          # CPUs of the machine
    kernel = "6.18"                   # kernel profile (name or path)
    arch = "x86_64"                   # architecture (name or path)
    cost_profile = "kvm-host"         # cost profile (name or path)
    duration = "20ms"                 # optional; default: until every caller is done

    [[mm]]                            # a process
    name = "app"
    cpus = [0, 1]                     # CPUs its threads run on (its mm_cpumask)
      [[mm.vma]]
      name = "heap"                   # also names its anon_vma / file lock unless given
      start = "0x7f0000200000+4K"     # sizes and addresses as in perfsim plan
      length = "64M"
      backing = "anon"                # anon | shmem | file
      file = "db"                     # optional file id (shared i_mmap_rwsem across mms)
      populate = 1.0                  # fraction of pages faulted in (seeded)
      every = 1                       # or: every k-th page
      thp = false

    [[caller]]                        # an mremap caller: requests planned in order, repeated
    name = "gc"; mm = "app"; cpu = 0; repeat = 10; interval = "100us"; start = "0"
      [[caller.request]]
      old_addr = "0x7f0000200000+4K"; length = "64M"; new_addr = "0x7f4000600000+8K"

    [[walker]]                        # an rmap walker (read side)
    name = "kswapd"; mm = "app"; vma = "heap"; lock = "anon"; cpu = 1
    interval = "20us"; hold = "3us"; hold_sigma = 0.0; poisson = true; ptl_hold = "0"

    [[user]]                          # user work that IPIs interrupt
    name = "worker"; mm = "app"; cpu = 1; quantum = "100us"

Durations are integer nanoseconds or strings with ``ns``/``us``/``ms``/``s``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from perfsim.errors import PerfsimError, describe_validation, read_toml
from perfsim.units import parse_size

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*$")
_UNIT = {None: 1, "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def parse_duration(text: str | int, *, what: str = "duration") -> int:
    """``"20ms"`` → 20000000 (integer ns).

    >>> parse_duration("1.5us")
    1500
    """
    if isinstance(text, bool):
        raise PerfsimError(f"{what}: expected a duration like 100us, 2ms; got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise PerfsimError(f"{what}: must not be negative")
        return text
    m = _DUR.match(str(text))
    if not m:
        raise PerfsimError(f"{what}: cannot parse {text!r}; expected e.g. 500ns, 100us, 2ms, 1s")
    return int(round(float(m.group(1)) * _UNIT[m.group(2)]))


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _size(v, info) -> int:
    try:
        return parse_size(v, what=info.field_name)
    except PerfsimError as e:
        raise ValueError(str(e)) from None


def _dur(v, info) -> int:
    try:
        return parse_duration(v, what=info.field_name)
    except PerfsimError as e:
        raise ValueError(str(e)) from None


class VmaCfg(_M):
    name: str = Field(min_length=1)
    start: int
    length: int = Field(gt=0)
    backing: Literal["anon", "shmem", "file"] = "anon"
    file: str | None = None
    populate: float = Field(1.0, ge=0.0, le=1.0)
    every: int = Field(1, ge=1)
    thp: bool = False

    _sz = field_validator("start", "length", mode="before")(_size)


class MmCfg(_M):
    name: str = Field(min_length=1)
    cpus: list[int] = Field(min_length=1)
    vma: list[VmaCfg] = Field(default_factory=list)


class RequestCfg(_M):
    old_addr: int
    length: int = Field(gt=0)
    new_length: int | None = None
    new_addr: int | None = None
    fixed: bool = True
    dontunmap: bool = False

    _sz = field_validator("old_addr", "length", "new_length", "new_addr", mode="before")(_size)


class CallerCfg(_M):
    name: str = Field(min_length=1)
    mm: str
    cpu: int = Field(ge=0)
    repeat: int = Field(1, ge=1)
    interval: int = 0
    start: int = 0
    request: list[RequestCfg] = Field(min_length=1)

    _d = field_validator("interval", "start", mode="before")(_dur)


class WalkerCfg(_M):
    name: str = Field(min_length=1)
    mm: str
    vma: str
    lock: str = "anon"
    cpu: int = Field(ge=0)
    interval: int = Field(gt=0)
    hold: int = Field(ge=0)
    hold_sigma: float = Field(0.0, ge=0.0, le=3.0)
    poisson: bool = True
    start: int = 0
    ptl_hold: int = 0

    _d = field_validator("interval", "hold", "start", "ptl_hold", mode="before")(_dur)


class UserCfg(_M):
    name: str = Field(min_length=1)
    mm: str
    cpu: int = Field(ge=0)
    quantum: int = Field(100_000, gt=0)

    _d = field_validator("quantum", mode="before")(_dur)


class Scenario(_M):
    """A validated scenario file (see module docstring)."""

    name: str = "scenario"
    description: str = ""
    seed: int = 0
    cpus: int = Field(ge=1, le=4096)
    kernel: str = "6.18"
    arch: str = "x86_64"
    cost_profile: str = "x86_64-generic"
    duration: int | None = None
    mm: list[MmCfg] = Field(min_length=1)
    caller: list[CallerCfg] = Field(default_factory=list)
    walker: list[WalkerCfg] = Field(default_factory=list)
    user: list[UserCfg] = Field(default_factory=list)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v):
        return None if v is None else parse_duration(v, what="duration")


def _one_line(exc: ValidationError) -> str:
    return describe_validation(exc, Scenario)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; errors are one-line :class:`PerfsimError`."""
    p = Path(path)
    data = read_toml(p, "scenario")
    try:
        return Scenario(**data)
    except ValidationError as exc:
        raise PerfsimError(f"{p}: {_one_line(exc)}") from None


def _vma(cfg: VmaCfg):
    from perfsim.mm import Vma

    end = cfg.start + cfg.length
    if cfg.backing == "anon":
        return Vma(cfg.start, end, backing="anon", thp=cfg.thp, name=cfg.name, anon_id=cfg.name)
    return Vma(cfg.start, end, backing=cfg.backing, thp=cfg.thp, name=cfg.name,
               file_id=cfg.file or cfg.name, anon_vma=False)


def build_spec(sc: Scenario):
    """Turn a validated scenario into a :class:`SimSpec` (builds and populates the mms)."""
    from perfsim.cost.profile import load_cost_profile
    from perfsim.engine.spec import CallerSpec, MmSpec, SimSpec, UserSpec, WalkerSpec
    from perfsim.mm import AddressSpace, PageTables
    from perfsim.planner import MoveRequest
    from perfsim.profiles import resolve_target

    target = resolve_target(sc.kernel, sc.arch)
    profile = load_cost_profile(sc.cost_profile)
    mms, vmas_by_mm = [], {}
    for i, m in enumerate(sc.mm):
        vmas = [_vma(v) for v in m.vma]
        pt = PageTables.empty(target.arch)
        for v in m.vma:
            if v.populate > 0:
                pt = pt.populate(v.start, v.start + v.length, every=v.every,
                                 fraction=v.populate, seed=sc.seed + i, thp=v.thp)
        try:
            space = AddressSpace(tuple(vmas), pt, cpus=len(m.cpus))
        except ValueError as e:
            raise PerfsimError(f"mm {m.name!r}: {e}") from None
        mms.append(MmSpec(m.name, tuple(m.cpus), space))
        vmas_by_mm[m.name] = {v.name: v for v in vmas}
    names = sorted(vmas_by_mm)
    callers = []
    for c in sc.caller:
        if c.mm not in vmas_by_mm:
            raise PerfsimError(f"caller {c.name!r}: unknown mm {c.mm!r}; known: {', '.join(names)}")
        reqs = tuple(MoveRequest(old_addr=r.old_addr, old_len=r.length, new_len=r.new_length,
                                 new_addr=r.new_addr, fixed=r.fixed and r.new_addr is not None,
                                 dontunmap=r.dontunmap) for r in c.request)
        callers.append(CallerSpec(c.name, c.mm, c.cpu, reqs, c.repeat, c.interval, c.start))
    walkers = []
    for w in sc.walker:
        if w.mm not in vmas_by_mm:
            raise PerfsimError(f"walker {w.name!r}: unknown mm {w.mm!r}; known: {', '.join(names)}")
        vma = vmas_by_mm[w.mm].get(w.vma)
        if vma is None:
            raise PerfsimError(f"walker {w.name!r}: unknown vma {w.vma!r} in mm {w.mm!r}; "
                               f"known: {', '.join(sorted(vmas_by_mm[w.mm]))}")
        locks = vma.rmap_locks()
        prefix = {"anon": "anon_vma:", "file": "i_mmap:"}.get(w.lock)
        if prefix:
            match = [lk for lk in locks if lk.startswith(prefix)]
            if not match:
                raise PerfsimError(f"walker {w.name!r}: vma {w.vma!r} has no {w.lock} rmap lock; "
                                   f"it has: {', '.join(locks) or 'none'}")
            lock = match[0]
        else:
            lock = w.lock
        ptl = (vma.start, vma.end) if w.ptl_hold else None
        walkers.append(WalkerSpec(w.name, lock, w.cpu, w.interval, w.hold, w.hold_sigma,
                                  w.poisson, w.start, w.mm if ptl else None, ptl, w.ptl_hold))
    users = [UserSpec(u.name, u.mm, u.cpu, u.quantum) for u in sc.user]
    return SimSpec(cpus=sc.cpus, target=target, profile=profile, mms=tuple(mms),
                   callers=tuple(callers), walkers=tuple(walkers), users=tuple(users),
                   duration_ns=sc.duration, seed=sc.seed,
                   meta={"scenario": sc.name, "scenario_config": sc.model_dump(mode="json"),
                         "kernel": sc.kernel, "arch": sc.arch})
