"""Concurrent scenarios as TOML, validated, turned into a :class:`~perfsim.engine.spec.SimSpec`.

A scenario speaks the workload file's vocabulary (:mod:`perfsim.workload.schema`, listed in
docs/inputs.md): ``processes`` with ``vmas`` (``start``, ``size``), requests with ``old_addr``,
``old_len``, ``new_len``, ``new_addr``, durations as ``*_ns`` keys. Schema (every field
checked; unknown fields are errors that name the allowed ones)::

    name = "gc-compaction"            # free text
    seed = 1                          # run seed (overridable by --seed)
    cpus = 2                          # CPUs of the machine
    kernel = "6.18"                   # kernel profile (name or path)
    arch = "x86_64"                   # architecture (name or path)
    cost_profile = "kvm-host"         # cost profile (name or path)
    duration_ns = "20ms"              # optional; default: until every caller is done

    [[processes]]                     # a process (an mm)
    name = "app"
    cpus = [0, 1]                     # CPUs its threads run on (its mm_cpumask)
      [[processes.vmas]]
      name = "heap"                   # also names its anon_vma / file lock unless given
      start = "0x7f0000200000+4K"     # sizes and addresses as in perfsim plan
      size = "64M"
      backing = "anon"                # anon | shmem | file
      file = "db"                     # optional file id (shared i_mmap_rwsem across mms)
      populate = 1.0                  # fraction of pages faulted in (seeded)
      every = 1                       # or: every k-th page
      thp = false

    [[callers]]                       # an mremap caller: requests planned in order, repeated
    name = "gc"; process = "app"; cpu = 0; repeat = 10; interval_ns = "100us"; start_ns = 0
      [[callers.requests]]
      old_addr = "0x7f0000200000+4K"; old_len = "64M"; new_addr = "0x7f4000600000+8K"

    [[walkers]]                       # an rmap walker (read side)
    name = "kswapd"; process = "app"; vma = "heap"; lock = "anon"; cpu = 1
    interval_ns = "20us"; hold_ns = "3us"; hold_sigma = 0.0; poisson = true; ptl_hold_ns = 0

    [[users]]                         # user work that IPIs interrupt
    name = "worker"; process = "app"; cpu = 1; quantum_ns = "100us"

Durations (:data:`~perfsim.schema.DurationNs`) are integer nanoseconds or strings with
``ns``/``us``/``ms``/``s``; sizes and addresses as :data:`~perfsim.schema.SizeBytes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from perfsim.errors import PerfsimError
from perfsim.schema import Address, DurationNs, SizeBytes, StrictModel, load_model
from perfsim.units import parse_duration
from perfsim.workload.schema import VmaBase

__all__ = ["CallerCfg", "MmCfg", "RequestCfg", "Scenario", "UserCfg", "VmaCfg", "WalkerCfg",
           "build_spec", "load_scenario", "parse_duration"]


class VmaCfg(VmaBase):
    """One VMA ``[start, start + size)``: the workload's VMA keys
    (:class:`~perfsim.workload.schema.VmaBase`), no hugetlb, plus ``every``."""

    backing: Literal["anon", "shmem", "file"] = "anon"
    every: int = Field(1, ge=1)
    """Populate every k-th page (then ``populate`` of those)."""


class MmCfg(StrictModel):
    """One process (an mm) and the CPUs its threads run on."""

    name: str = Field(min_length=1)
    cpus: list[int] = Field(min_length=1)
    vmas: list[VmaCfg] = Field(default_factory=list)


class RequestCfg(StrictModel):
    """One mremap request, keys as the syscall's (and a workload's explicit calls)."""

    old_addr: Address
    old_len: SizeBytes = Field(gt=0)
    new_len: SizeBytes | None = None
    new_addr: Address | None = None
    fixed: bool = True
    dontunmap: bool = False


class CallerCfg(StrictModel):
    name: str = Field(min_length=1)
    process: str
    cpu: int = Field(ge=0)
    repeat: int = Field(1, ge=1)
    interval_ns: DurationNs = 0
    start_ns: DurationNs = 0
    requests: list[RequestCfg] = Field(min_length=1)


class WalkerCfg(StrictModel):
    name: str = Field(min_length=1)
    process: str
    vma: str
    lock: str = "anon"
    cpu: int = Field(ge=0)
    interval_ns: DurationNs = Field(gt=0)
    hold_ns: DurationNs = Field(ge=0)
    hold_sigma: float = Field(0.0, ge=0.0, le=3.0)
    poisson: bool = True
    start_ns: DurationNs = 0
    ptl_hold_ns: DurationNs = 0


class UserCfg(StrictModel):
    name: str = Field(min_length=1)
    process: str
    cpu: int = Field(ge=0)
    quantum_ns: DurationNs = Field(100_000, gt=0)


class Scenario(StrictModel):
    """A validated scenario file (see module docstring)."""

    name: str = "scenario"
    description: str = ""
    seed: int = 0
    cpus: int = Field(ge=1, le=4096)
    kernel: str = "6.18"
    arch: str = "x86_64"
    cost_profile: str
    """Name or path; if not given, the arch's own (:func:`perfsim.cost.default_cost_profile`)."""
    duration_ns: DurationNs | None = Field(None, gt=0)
    processes: list[MmCfg] = Field(min_length=1)
    callers: list[CallerCfg] = Field(default_factory=list)
    walkers: list[WalkerCfg] = Field(default_factory=list)
    users: list[UserCfg] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_cost_profile(cls, data):
        from perfsim.cost.profile import default_cost_profile_of

        return default_cost_profile_of(data)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; errors are one-line :class:`PerfsimError`."""
    return load_model(Path(path), Scenario, "scenario")


def _vma(cfg: VmaCfg):
    from perfsim.mm import Vma

    end = cfg.end
    if cfg.backing == "anon":
        return Vma(cfg.start, end, backing="anon", thp=cfg.thp, name=cfg.name, anon_id=cfg.name)
    return Vma(cfg.start, end, backing=cfg.backing, thp=cfg.thp, name=cfg.name,
               file_id=cfg.file or cfg.name, anon_vma=False)


def _check_unique(what: str, names: list[str]) -> None:
    """One line naming the first name given twice (a later one would silently replace it)."""
    seen = set()
    for n in names:
        if n in seen:
            raise PerfsimError(f"{what} name {n!r} is given twice; names must be distinct")
        seen.add(n)


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
    _check_unique("process", [m.name for m in sc.processes])
    _check_unique("caller", [c.name for c in sc.callers])
    _check_unique("walker", [w.name for w in sc.walkers])
    for i, m in enumerate(sc.processes):
        _check_unique(f"process {m.name!r}: vma", [v.name for v in m.vmas])
        vmas = [_vma(v) for v in m.vmas]
        pt = PageTables.empty(target.arch)
        for v in m.vmas:
            if v.populate > 0:
                pt = pt.populate(v.start, v.start + v.size, every=v.every,
                                 fraction=v.populate, seed=sc.seed + i, thp=v.thp)
        try:
            space = AddressSpace(tuple(vmas), pt, cpus=len(m.cpus))
        except ValueError as e:
            raise PerfsimError(f"process {m.name!r}: {e}") from None
        mms.append(MmSpec(m.name, tuple(m.cpus), space))
        vmas_by_mm[m.name] = {v.name: v for v in vmas}
    names = sorted(vmas_by_mm)
    callers = []
    for c in sc.callers:
        if c.process not in vmas_by_mm:
            raise PerfsimError(f"caller {c.name!r}: unknown process {c.process!r}; known: {', '.join(names)}")
        reqs = tuple(MoveRequest(old_addr=r.old_addr, old_len=r.old_len, new_len=r.new_len,
                                 new_addr=r.new_addr, fixed=r.fixed and r.new_addr is not None,
                                 dontunmap=r.dontunmap) for r in c.requests)
        callers.append(CallerSpec(c.name, c.process, c.cpu, reqs, c.repeat, c.interval_ns, c.start_ns))
    walkers = []
    for w in sc.walkers:
        if w.process not in vmas_by_mm:
            raise PerfsimError(f"walker {w.name!r}: unknown process {w.process!r}; known: {', '.join(names)}")
        vma = vmas_by_mm[w.process].get(w.vma)
        if vma is None:
            raise PerfsimError(f"walker {w.name!r}: unknown vma {w.vma!r} in process {w.process!r}; "
                               f"known: {', '.join(sorted(vmas_by_mm[w.process]))}")
        locks = vma.rmap_locks()
        prefix = {"anon": "anon_vma:", "file": "i_mmap:"}.get(w.lock)
        if prefix:
            match = [lk for lk in locks if lk.startswith(prefix)]
            if not match:
                raise PerfsimError(f"walker {w.name!r}: vma {w.vma!r} has no {w.lock} rmap lock; "
                                   f"it has: {', '.join(locks) or 'none'}")
            lock = match[0]
        else:
            # a lock by its name: one some VMA of the scenario takes (a walker of another
            # lock would contend with nothing, a silently wrong answer)
            known = sorted({lk for vs in vmas_by_mm.values() for v in vs.values()
                            for lk in v.rmap_locks()})
            if w.lock not in known:
                raise PerfsimError(f"walker {w.name!r}: lock {w.lock!r} is no rmap lock of this "
                                   f"scenario; allowed: anon, file or one of "
                                   f"{', '.join(known) or 'none'}")
            lock = w.lock
        ptl = (vma.start, vma.end) if w.ptl_hold_ns else None
        walkers.append(WalkerSpec(w.name, lock, w.cpu, w.interval_ns, w.hold_ns, w.hold_sigma,
                                  w.poisson, w.start_ns, w.process if ptl else None, ptl, w.ptl_hold_ns))
    users = [UserSpec(u.name, u.process, u.cpu, u.quantum_ns) for u in sc.users]
    return SimSpec(cpus=sc.cpus, target=target, profile=profile, mms=tuple(mms),
                   callers=tuple(callers), walkers=tuple(walkers), users=tuple(users),
                   duration_ns=sc.duration_ns, seed=sc.seed,
                   meta={"scenario": sc.name, "scenario_config": sc.model_dump(mode="json"),
                         "kernel": sc.kernel, "arch": sc.arch})
