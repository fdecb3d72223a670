"""The tune file (``studies/tune_*.toml`` or a ``[[tune]]`` table of a study), validated.

::

    name = "flush_ceiling"
    workload = "ipi_storm"                 # shipped name or path (relative to this file)
    kernel = "6.18"                        # optional; default: the workload's own
    cost_profile = "x86_64-generic"        # optional
    seed = 3
    replications = 3                       # per setting, common random numbers across settings
    [set]                                  # fixed overrides applied to every setting
    "workload.streams.mover-0.count" = 25
    [knobs]                                # what-if knobs: a list = these values,
    "arch.tlb.single_page_flush_ceiling" = [0, 8, 33, 128, 512]
    "cost.ipi_round_trip_ns" = { min = 500, max = 5000, log = true, type = "int" }   # a range
    [objective]
    metric = "mean"                        # or a weighted mix: weights = { p99 = 1, ipis_per_call = 2000 }
    direction = "minimize"
    [[constraints]]
    metric = "walker_wait_p99"
    max = 20000
    [search]
    method = "auto"                        # grid if every knob is a list and the grid is small
    trials = 30                            # optuna trials (seeded TPE, resumable on disk)

Knob keys are the sweep axes of docs/batch.md: ``kernel.<field>``, ``arch.<field>``,
``arch.tlb.<field>`` (:meth:`perfsim.profiles.Target.with_changes`), ``cost.<parameter>``
(a cost parameter's ns) and ``workload.<field path>``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from perfsim.errors import PerfsimError, check_dir_name, describe_validation, read_toml
from perfsim.schema import StrictModel, load_model

#: Objective and constraint metric names → the per-run metric column they read.
METRIC_ALIASES: dict[str, str] = {
    "mean": "lat_mean_ns", "p50": "lat_p50_ns", "p90": "lat_p90_ns", "p99": "lat_p99_ns",
    "max": "lat_max_ns",
    "rmap_hold_p99": "rmap_hold_p99_ns", "walker_wait_p99": "walker_wait_p99_ns",
    "ipis_per_call": "ipis_per_call", "flushes_per_call": "flushes_per_call",
    "stolen_per_call": "user_stolen_per_call_ns",
}
EXTRA_METRICS = ("rmap_hold_p50_ns", "rmap_hold_p99_ns", "walker_wait_p50_ns",
                 "walker_wait_p99_ns", "ipis_per_call", "flushes_per_call",
                 "user_stolen_per_call_ns")


def metric_column(name: str) -> str:
    """The metric column an objective/constraint name reads; PerfsimError if unknown."""
    from perfsim.workload.run import METRICS

    if name in METRIC_ALIASES:
        return METRIC_ALIASES[name]
    if name in METRICS or name in EXTRA_METRICS:
        return name
    raise PerfsimError(f"unknown metric {name!r}; allowed: {', '.join(METRIC_ALIASES)} "
                       f"or a run metric ({', '.join(list(METRICS) + list(EXTRA_METRICS))})")


_M = StrictModel


class KnobRange(_M):
    """A continuous or integer knob for the optuna search."""

    min: float
    max: float
    log: bool = False
    type: Literal["int", "float"] = "float"

    @model_validator(mode="after")
    def _order(self) -> KnobRange:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError(f"min and max must be finite numbers, got {self.min!r} and "
                             f"{self.max!r}")
        if not self.min < self.max:
            raise ValueError("need min < max")
        if self.log and self.min <= 0:
            raise ValueError("log = true needs min > 0")
        return self


class Objective(_M):
    metric: str = "mean"
    weights: dict[str, float] = {}
    """A weighted mix (``{metric: weight}``); when given, ``metric`` is ignored."""
    direction: Literal["minimize", "maximize"] = "minimize"

    @model_validator(mode="after")
    def _known(self) -> Objective:
        for m, w in self.weights.items():
            if not (math.isfinite(w) and w > 0):
                raise ValueError(f"weights.{m} = {w!r}: a weight must be a finite number > 0 "
                                 "(to prefer larger values use direction = \"maximize\")")
        for m in (self.weights or {self.metric: 1.0}):
            try:
                metric_column(m)
            except PerfsimError as exc:
                raise ValueError(str(exc)) from None
        return self

    def terms(self) -> dict[str, float]:
        """``{metric column: weight}``."""
        return {metric_column(m): w for m, w in (self.weights or {self.metric: 1.0}).items()}

    @property
    def label(self) -> str:
        if not self.weights:
            return self.metric
        return " + ".join(f"{w:g}·{m}" for m, w in self.weights.items())


class Constraint(_M):
    metric: str
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> Constraint:
        try:
            metric_column(self.metric)
        except PerfsimError as exc:
            raise ValueError(str(exc)) from None
        if self.max is None and self.min is None:
            raise ValueError("give max, min or both")
        for k in ("min", "max"):
            v = getattr(self, k)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{k} = {v!r}: a bound must be a finite number")
        return self

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (<= 0: satisfied)."""
        v = 0.0
        if self.max is not None:
            v = max(v, value - self.max)
        if self.min is not None:
            v = max(v, self.min - value)
        return v

    @property
    def label(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{self.metric} >= {self.min:g}")
        if self.max is not None:
            parts.append(f"{self.metric} <= {self.max:g}")
        return " and ".join(parts)


class Search(_M):
    method: Literal["auto", "grid", "optuna"] = "auto"
    trials: int = Field(30, ge=1, le=100_000)
    max_grid: int = Field(64, ge=1)
    """``auto`` takes the grid when every knob is a list and the grid has at most this many
    settings; otherwise optuna."""
    batch: int = Field(4, ge=1, le=256)
    """Optuna trials asked at once (evaluated in parallel); fixed, so results do not depend
    on the number of workers."""


class TuneSpec(_M):
    name: str = "tune"
    description: str = ""
    workload: str
    kernel: str | None = None
    arch: str | None = None
    cost_profile: str | None = None
    seed: int = Field(0, ge=0)
    replications: int = Field(3, ge=2, le=10_000)
    set: dict[str, Any] = {}
    knobs: dict[str, list[Any] | KnobRange]
    objective: Objective = Objective()
    constraints: list[Constraint] = []
    search: Search = Search()
    max_rows: int = Field(200_000, ge=1000)
    base_dir: str = ""
    """Where relative workload paths are looked up (set from the file's directory)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dir_name(v, "tune")

    @field_validator("knobs")
    @classmethod
    def _knobs(cls, v: dict) -> dict:
        if not v:
            raise ValueError("give at least one knob")
        for k, vals in v.items():
            if isinstance(vals, list) and not vals:
                raise ValueError(f"knob {k!r} has no values")
            if isinstance(vals, list):
                seen = [json.dumps(x, sort_keys=True, default=str) for x in vals]
                dup = next((x for i, x in enumerate(vals) if seen[i] in seen[:i]), None)
                if dup is not None or len(set(seen)) < len(seen):
                    raise ValueError(f"knob {k!r} lists the value {dup!r} twice; allowed: "
                                     "distinct values")
        return v

    @model_validator(mode="after")
    def _set_is_not_a_knob(self) -> TuneSpec:
        both = sorted(set(self.set) & set(self.knobs))
        if both:
            raise ValueError(f"{both[0]!r} is both in set (one value) and in knobs (values to "
                             "search); give it in one of them")
        return self

    @property
    def is_grid(self) -> bool:
        return all(isinstance(v, list) for v in self.knobs.values())

    def grid_size(self) -> int:
        n = 1
        for v in self.knobs.values():
            n *= len(v) if isinstance(v, list) else 10**9
        return n

    def method(self) -> str:
        if self.search.method != "auto":
            if self.search.method == "grid" and not self.is_grid:
                raise PerfsimError(f"tune {self.name!r}: search.method = 'grid' needs every knob "
                                   "to be a list of values; ranges need 'optuna'")
            return self.search.method
        return "grid" if self.is_grid and self.grid_size() <= self.search.max_grid else "optuna"

    @property
    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", exclude={"base_dir"}), sort_keys=True,
                          default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def describe(exc: ValidationError) -> str:
    return describe_validation(exc, TuneSpec, hide=("base_dir",))


def parse_tune(data: dict, origin: str = "<tune>", base_dir: Path | None = None) -> TuneSpec:
    d = dict(data)
    if base_dir is not None and "base_dir" not in d:
        d["base_dir"] = str(base_dir)
    return load_model(d, TuneSpec, "tune", origin=origin,
                      describe=lambda exc, o: f"{o}: {describe(exc)}")


def read_tune_dict(path: str | Path) -> tuple[dict, Path]:
    p = Path(path)
    data = read_toml(p, "tune")
    data.setdefault("base_dir", str(p.parent.resolve()))
    return data, p


def load_tune(path: str | Path) -> TuneSpec:
    data, p = read_tune_dict(path)
    return parse_tune(data, str(p))


def default_tune() -> TuneSpec:
    """The what-if of the default report: x86's ``tlb_single_page_flush_ceiling`` (33) on
    the IPI-heavy scenario, shortened to 25 calls per mover."""
    return TuneSpec(
        name="flush_ceiling",
        description="x86 tlb_single_page_flush_ceiling on ipi_storm (small page-aligned moves, "
                    "64 threads on 32 CPUs): per-page INVLPGs vs one full flush per call",
        workload="ipi_storm", seed=3, replications=3,
        set={f"workload.streams.mover-{i}.count": 25 for i in range(4)},
        knobs={"arch.tlb.single_page_flush_ceiling": [0, 8, 33, 64, 128, 512]},
        objective=Objective(metric="mean"),
    )
