"""Sweep files and sweep planning.

A sweep file (``sweeps/*.toml``) names a base configuration, a grid of axes, a number of
replications and optional paired comparisons::

    name = "gc-realign"
    seed = 7
    replications = 10
    [base]
    workload = "gc_compaction"          # shipped name or path (relative to this file)
    kernel = "6.18"                     # optional: default is the workload's own
    cost_profile = "x86_64-generic"
    [grid]
    "kernel.realign_pmd" = [true, false]                 # Target.with_changes key
    "workload.streams.gc.src_align" = ["pmd", "page"]    # any workload field
    "cost.ipi_round_trip_ns" = [1000, 3000]              # any cost parameter (ns)
    [[paired]]
    axis = "kernel.realign_pmd"
    a = true
    b = false
    metric = "lat_mean_ns"

Axis keys:

* ``workload``, ``kernel``, ``arch``, ``cost_profile``: whole inputs by name or path;
* ``workload.<path>``: a field of the workload file; path parts are keys, list indexes
  (``streams.0``, ``streams[0]``) or list items by ``name`` (``streams.gc``);
* ``kernel.<f>``, ``arch.<f>``, ``arch.tlb.<f>``: a profile field
  (:meth:`perfsim.profiles.Target.with_changes`);
* ``cost.<param>``: a cost parameter's ``ns`` (:meth:`CostProfile.with_values`).

:func:`plan_sweep` is pure: the same :class:`Sweep` always gives the same list of
:class:`Point`\\ s, each with its content key. Running is :mod:`perfsim.batch.api`'s job.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

import perfsim
from perfsim.cost import load_cost_profile
from perfsim.cost.profile import CostProfile
from perfsim.errors import PerfsimError, check_dir_name, describe_validation, read_toml
from perfsim.profiles import Target, resolve_target
from perfsim.schema import StrictModel, load_model
from perfsim.workload.run import METRICS, resolve_workload
from perfsim.workload.schema import Workload, parse_workload, read_workload_dict, resolve_paths

WHOLE_AXES = ("workload", "kernel", "arch", "cost_profile")


_M = StrictModel


class Base(_M):
    workload: str
    kernel: str | None = None
    arch: str | None = None
    cost_profile: str | None = None


class Paired(_M):
    """Compare arm ``a`` with arm ``b`` of ``axis``; everything else (and the random
    numbers) equal."""

    axis: str
    a: Any
    b: Any
    metric: str = "lat_mean_ns"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    precision: float = Field(0.05, gt=0.0)
    """Wanted CI half-width of the paired difference, as a fraction of arm b's mean."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _two_arms(self) -> Paired:
        if _canonical(self.a) == _canonical(self.b):
            raise ValueError(f"a and b are both {self.a!r}: a paired comparison needs two "
                             "different arms of the axis")
        return self


def _canonical(value: Any) -> str:
    """One spelling of a grid value, to tell repeated values apart (``1`` and ``1.0`` are
    different TOML values, and so different grid cells)."""
    return json.dumps(value, sort_keys=True, default=str)


class SweepFile(_M):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0)
    replications: int = Field(1, ge=1, le=100_000)
    base: Base
    grid: dict[str, list[Any]] = {}
    paired: list[Paired] = []
    batch_size: int | None = Field(None, ge=1)
    max_rows: int = Field(1_000_000, ge=1000)
    """Engine record bound per table per run."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dir_name(v, "sweep")

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict) -> dict:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"axis {k!r} has no values; give at least one")
            seen = [_canonical(x) for x in vals]
            for i, x in enumerate(seen):
                if x in seen[:i]:
                    raise ValueError(f"axis {k!r} lists the value {vals[i]!r} twice; allowed: "
                                     "distinct values (each is one grid cell)")
        return v


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the file's content plus the inputs it names, read once."""

    spec: SweepFile
    base_dir: Path
    workloads: dict[str, tuple[dict, str]] = field(default_factory=dict)
    """workload reference → (raw dict with absolute trace paths, origin path)."""
    origin: str = "<sweep>"


def _one_line(exc: ValidationError, origin: str) -> str:
    return describe_validation(exc, SweepFile, origin=origin)


def parse_sweep(data: dict, base_dir: Path, origin: str = "<sweep>",
                read: dict[str, tuple[dict, str]] | None = None) -> Sweep:
    """Validate a sweep's table and read the workload files it names. ``read``: workloads
    already read from ``base_dir`` (reference → what :attr:`Sweep.workloads` holds), reused
    instead of reading their file again (a tuning parses one sweep per setting)."""
    spec = load_model(data, SweepFile, "sweep", origin=origin, describe=_one_line)
    refs = [spec.base.workload] + [str(v) for v in spec.grid.get("workload", [])]
    loaded = {}
    for ref in refs:
        if read is not None and ref in read:
            loaded[ref] = read[ref]
            continue
        path = resolve_workload(ref, base_dir)
        raw, p = read_workload_dict(path)
        loaded[ref] = (resolve_paths(raw, p.parent), str(p))
    return Sweep(spec, base_dir, loaded, origin)


def load_sweep(path: str | Path) -> Sweep:
    p = Path(path)
    data = read_toml(p, "sweep")
    return parse_sweep(data, p.parent.resolve(), str(p))


# --------------------------------------------------------------------------- points
@dataclass(frozen=True)
class Point:
    """One simulation to run: a grid cell and a replication, fully resolved."""

    key: str
    index: int
    replication: int
    params: dict
    workload: Workload
    target: Target
    profile: CostProfile
    seed_entropy: tuple[int, ...]
    max_rows: int

    @property
    def identity(self) -> dict:
        return {"workload": self.workload.name, "workload_digest": self.workload.digest,
                "target_digest": self.target.digest, "kernel": self.target.kernel.name,
                "arch": self.target.arch.name, "cost_profile": self.profile.name,
                "cost_digest": self.profile.digest,
                "seed": "-".join(str(x) for x in self.seed_entropy),
                "replication": self.replication}


def _set_path(data: dict, path: str, value: Any, axis: str) -> None:
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if part.isdigit() and int(part) < len(cur):
                idx = int(part)
            else:
                names = [x.get("name") for x in cur if isinstance(x, dict)]
                if part not in names:
                    raise PerfsimError(f"grid axis {axis!r}: no list item {part!r}; allowed: "
                                       f"0..{len(cur) - 1} or a name among {names}")
                idx = names.index(part)
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
        elif isinstance(cur, dict):
            if last:
                cur[part] = value
            else:
                if part not in cur:
                    cur[part] = {}
                cur = cur[part]
        else:
            raise PerfsimError(f"grid axis {axis!r}: {part!r} goes into a scalar value")


def _sweep_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class Inputs:
    """The validated inputs of one planning pass, each parsed once: workloads by their
    content, targets by kernel and arch reference, cost profiles by reference. Every value
    is an immutable model and a pure function of its key (a workload's origin only names it
    in an error, and an input that fails is not kept), so cells that name the same input
    share one object, the same as parsing it again. Keep one for a pass only: a file edited
    later is read afresh by the next pass."""

    def __init__(self) -> None:
        self._workloads: dict[str, Workload] = {}
        self._targets: dict[tuple[str, str], Target] = {}
        self._profiles: dict[str, CostProfile] = {}

    def workload(self, raw: dict, where: str) -> Workload:
        """``raw`` validated (``where`` names it in an error)."""
        key = json.dumps(raw, sort_keys=True, default=repr)
        if key not in self._workloads:
            self._workloads[key] = parse_workload(raw, where)
        return self._workloads[key]

    def target(self, kernel: str, arch: str) -> Target:
        if (kernel, arch) not in self._targets:
            self._targets[kernel, arch] = resolve_target(kernel, arch)
        return self._targets[kernel, arch]

    def profile(self, ref: str) -> CostProfile:
        if ref not in self._profiles:
            self._profiles[ref] = load_cost_profile(ref)
        return self._profiles[ref]


def _resolve_cell(sweep: Sweep, cell: dict, inputs: Inputs | None = None
                  ) -> tuple[Workload, Target, CostProfile]:
    s = sweep.spec
    inputs = inputs or Inputs()
    wref = str(cell.get("workload", s.base.workload))
    raw, origin = sweep.workloads[wref]
    raw = copy.deepcopy(raw)
    for axis, v in cell.items():
        if axis.startswith("workload."):
            _set_path(raw, axis[len("workload."):], v, axis)
    where = origin + (f" (sweep cell {json.dumps(cell, default=str)})" if cell else "")
    w = inputs.workload(raw, where)
    kernel = str(cell.get("kernel", s.base.kernel or w.kernel))
    arch = str(cell.get("arch", s.base.arch or w.arch))
    target = inputs.target(_rel(kernel, sweep.base_dir), _rel(arch, sweep.base_dir))
    changes = {k: v for k, v in cell.items()
               if k.split(".")[0] in ("kernel", "arch") and "." in k}
    if changes:
        target = target.with_changes(**changes)
    cp = str(cell.get("cost_profile", s.base.cost_profile or w.cost_profile))
    profile = inputs.profile(_rel(cp, sweep.base_dir))
    costs = {k[len("cost."):]: v for k, v in cell.items() if k.startswith("cost.")}
    if costs:
        profile = profile.with_values(**costs)
    return w, target, profile


def _rel(ref: str, base: Path) -> str:
    p = base / ref
    return str(p) if ref.endswith(".toml") and p.is_file() else ref


def _check_axes(sweep: Sweep) -> None:
    for axis in sweep.spec.grid:
        head = axis.split(".")[0]
        if axis in WHOLE_AXES or head in ("workload", "kernel", "arch", "cost"):
            if head in ("workload", "kernel", "arch", "cost") and axis not in WHOLE_AXES \
                    and "." not in axis:
                raise PerfsimError(f"{sweep.origin}: grid axis {axis!r}: unknown")
            continue
        raise PerfsimError(f"{sweep.origin}: grid axis {axis!r}: unknown; allowed: "
                           f"{', '.join(WHOLE_AXES)}, workload.<field path>, kernel.<field>, "
                           "arch.<field>, arch.tlb.<field>, cost.<parameter>")
    for pr in sweep.spec.paired:
        vals = sweep.spec.grid.get(pr.axis)
        if vals is None:
            raise PerfsimError(f"{sweep.origin}: paired.axis {pr.axis!r} is not a grid axis; "
                               f"allowed: {', '.join(sweep.spec.grid) or '(no grid axes)'}")
        for arm in ("a", "b"):
            if getattr(pr, arm) not in vals:
                raise PerfsimError(f"{sweep.origin}: paired.{arm} = {getattr(pr, arm)!r} is not "
                                   f"a value of axis {pr.axis!r}; allowed: {vals}")


def cells(sweep: Sweep) -> list[dict]:
    """The grid's cells (Cartesian product, axes in file order, values in file order)."""
    axes = list(sweep.spec.grid)
    return [dict(zip(axes, combo, strict=True)) for combo in
            itertools.product(*(sweep.spec.grid[a] for a in axes))]


def plan_sweep(sweep: Sweep, inputs: Inputs | None = None) -> list[Point]:
    """Every point of the sweep: grid cells × replications, resolved and keyed (pure).
    ``inputs``: an :class:`Inputs` shared with other sweeps of the same pass (default: one
    for this sweep)."""
    _check_axes(sweep)
    s = sweep.spec
    inputs = inputs or Inputs()
    out = []
    for ci, cell in enumerate(cells(sweep)):
        w, target, profile = _resolve_cell(sweep, cell, inputs)
        for r in range(s.replications):
            entropy = (s.seed, w.seed, r)
            key = _sweep_key(w.digest, target.digest, profile.digest, entropy, s.max_rows,
                             perfsim.__version__, sorted((k, repr(v)) for k, v in cell.items()))
            out.append(Point(key, ci, r, dict(cell), w, target, profile, entropy, s.max_rows))
    return out
