"""Distributions a workload draws its values from: sizes, fractions, times, categories.

Every distribution is a small validated model with a ``dist`` tag::

    size = "2M"                                         # shorthand for fixed
    size = ["1M", "2M", "4M"]                           # shorthand for choice (uniform)
    size = { dist = "fixed", value = "2M" }
    size = { dist = "choice", values = ["1M", "2M"], weights = [3, 1] }
    size = { dist = "cycle", values = ["1M", "2M"] }    # in order, round and round
    size = { dist = "uniform", min = "1M", max = "8M", align = "4K" }
    size = { dist = "loguniform", min = "4K", max = "1G", align = "4K" }
    size = { dist = "empirical", values = ["4K", "2M"], weights = [0.9, 0.1] }
    think_ns = { dist = "exponential", mean = 20000 }

``align`` rounds every draw *up* to a multiple (sizes: to whole pages). Size values may be
strings such as ``"1G+4K"`` (:data:`perfsim.schema.SizeBytes`), durations strings such as
``"20us"`` (:data:`perfsim.schema.DurationNs`).

Draws come only from the ``numpy.random.Generator`` passed in (one per stream, spawned from
the run's ``SeedSequence``), vectorised: ``sample(rng, n)`` returns ``n`` values. A fixed or a
cycle distribution consumes no randomness, so adding one never shifts another stream.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, model_validator

from perfsim.schema import StrictModel, to_duration_ns, to_size_bytes

Number = int | float


class _Dist(StrictModel):

    @model_validator(mode="after")
    def _finite(self) -> _Dist:
        """Every number of a distribution (``value``, ``values``, ``weights``, ``min``,
        ``max``, ``align``, ``mean``) is finite: TOML's ``nan`` and ``inf`` drew NaN or
        infinite values (NaN weights passed the weight check, which NaN compares false to)."""
        for name in ("value", "values", "weights", "min", "max", "align", "mean"):
            v = getattr(self, name, None)
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"{name}: {x!r} is not a finite number")
        align = getattr(self, "align", None)
        if align is not None and not align > 0:
            raise ValueError(f"align: {align!r}; allowed: a multiple > 0 (or no align)")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def lo(self) -> float:
        """Smallest value the distribution can produce (for validation)."""
        return float(min(self.support()))

    @property
    def hi(self) -> float:
        return float(max(self.support()))

    def support(self) -> list:  # pragma: no cover
        raise NotImplementedError


def _align_up(v: np.ndarray, align: Number | None) -> np.ndarray:
    if not align:
        return v
    if isinstance(align, int):
        v = np.asarray(v)
        if v.dtype.kind == "f":
            v = np.ceil(v).astype(np.int64)
        return -(-v // align) * align
    return np.ceil(np.asarray(v) / align) * align


class Fixed(_Dist):
    dist: Literal["fixed"] = "fixed"
    value: Any

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=object if isinstance(self.value, str) else None)

    def support(self):
        return [self.value]


class Choice(_Dist):
    """A random pick among ``values`` (``weights`` relative, default equal)."""

    dist: Literal["choice", "empirical"] = "choice"
    values: list[Any] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries but values has "
                                 f"{len(self.values)}; give one weight per value")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        return self

    def sample(self, rng, n):
        p = None
        if self.weights is not None:
            w = np.asarray(self.weights, float)
            p = w / w.sum()
        idx = rng.choice(len(self.values), size=n, p=p)
        vals = np.array(self.values, dtype=object)
        out = vals[idx]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.values):
            return out.astype(np.int64)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            return out.astype(float)
        return out

    def support(self):
        return list(self.values)


class Cycle(_Dist):
    """``values`` in order, wrapping around (deterministic; consumes no randomness)."""

    dist: Literal["cycle"] = "cycle"
    values: list[Any] = Field(min_length=1)

    def sample(self, rng, n):
        vals = np.array(self.values, dtype=object)
        out = vals[np.arange(n) % len(vals)]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            return out.astype(np.int64 if all(isinstance(v, int) for v in self.values) else float)
        return out

    def support(self):
        return list(self.values)


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    min: Number
    max: Number
    align: Number | None = None

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def sample(self, rng, n):
        return _align_up(rng.uniform(self.min, self.max, n), self.align)

    def support(self):
        return [self.min, self.max]


class LogUniform(_Dist):
    dist: Literal["loguniform"] = "loguniform"
    min: Number = Field(gt=0)
    max: Number = Field(gt=0)
    align: Number | None = None

    @model_validator(mode="after")
    def _order(self) -> LogUniform:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def sample(self, rng, n):
        v = np.exp(rng.uniform(np.log(self.min), np.log(self.max), n))
        return _align_up(v, self.align)

    def support(self):
        return [self.min, self.max]


class Exponential(_Dist):
    dist: Literal["exponential"] = "exponential"
    mean: Number = Field(gt=0)

    def sample(self, rng, n):
        return rng.exponential(self.mean, n)

    def support(self):
        return [0, float("inf")]


Dist = Annotated[Fixed | Choice | Cycle | Uniform | LogUniform | Exponential,
                 Field(discriminator="dist")]

DIST_KINDS = ("fixed", "choice", "cycle", "uniform", "loguniform", "empirical", "exponential")


def _shorthand(v: Any) -> Any:
    """A bare scalar is ``fixed``, a bare list is ``choice``."""
    if isinstance(v, list):
        return {"dist": "choice", "values": v}
    if not isinstance(v, dict):
        return {"dist": "fixed", "value": v}
    if "dist" not in v:
        raise ValueError(f"a distribution table needs a 'dist' key, one of {', '.join(DIST_KINDS)}")
    if v["dist"] not in DIST_KINDS:
        raise ValueError(f"unknown dist {v['dist']!r}; allowed: {', '.join(DIST_KINDS)}")
    return v


def _converted(v: Any, convert) -> Any:
    v = dict(_shorthand(v))
    for k in ("value", "min", "max", "align", "mean"):
        if k in v:
            v[k] = convert(v[k])
    if "values" in v and isinstance(v["values"], list):
        v["values"] = [convert(x) for x in v["values"]]
    return v


def _sizes(v: Any) -> Any:
    v = _converted(v, to_size_bytes)
    align = v.get("align")
    if isinstance(align, int) and align and align % 4096:
        raise ValueError(f"align: {align:#x} is not a whole number of pages; allowed: a "
                         "multiple of 4K (e.g. \"4K\", \"2M\")")
    return v


def _durations(v: Any) -> Any:
    return _converted(v, to_duration_ns)


def _numbers(v: Any) -> Any:
    v = _shorthand(v)
    for k in ("value",):
        if k in v and (isinstance(v[k], bool) or not isinstance(v[k], (int, float))):
            raise ValueError(f"expected a number, got {v[k]!r}")
    for x in v.get("values", []) or []:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"expected numbers in values, got {x!r}")
    return v


def _categories(allowed: tuple[str, ...]):
    def check(v: Any) -> Any:
        v = _shorthand(v)
        vals = [v["value"]] if "value" in v else v.get("values", [])
        if v["dist"] not in ("fixed", "choice", "cycle", "empirical"):
            raise ValueError(f"a category takes a fixed value, a list or a choice, not {v['dist']!r}")
        for x in vals:
            if x not in allowed:
                raise ValueError(f"{x!r} is not allowed; allowed: {', '.join(allowed)}")
        return v
    return check


SizeDist = Annotated[Dist, BeforeValidator(_sizes)]
"""A distribution of byte sizes (strings like ``"2M"`` accepted)."""
DurationDist = Annotated[Dist, BeforeValidator(_durations)]
"""A distribution of integer nanoseconds (strings like ``"20us"`` accepted)."""
NumDist = Annotated[Dist, BeforeValidator(_numbers)]
"""A distribution of plain numbers (fractions, factors)."""


def CategoryDist(*allowed: str):  # noqa: N802 - a type factory
    """A distribution over the strings ``allowed``."""
    return Annotated[Dist, BeforeValidator(_categories(allowed))]


def as_bool(draws: np.ndarray) -> np.ndarray:
    return np.asarray(draws, dtype=bool)
