"""The input vocabulary every TOML kind shares: one strict model base, one set of unit
types, one loader.

Every file perfsim reads (kernel / arch / cost profiles, workloads, scenarios, sweeps,
studies, tune specs, plan requests) is a :class:`StrictModel` read by :func:`load_model`:

- an unknown key is an error naming the keys allowed at that place;
- a size is :data:`SizeBytes` (``"2M"``, ``"1G+4K"``, ``0x200000``, ``4096``), an address
  :data:`Address` (``"0x7f0000200000+4K"``), a duration :data:`DurationNs` (``"20us"``,
  ``"1.5ms"``, an integer number of nanoseconds); booleans and floats are not sizes;
- keys carry their unit in the name the way the Python API does (``interval_ns``,
  ``hold_ns``); a key without a suffix that holds bytes is a size (``size``, ``old_len``).

``docs/inputs.md`` lists every key name, its type and the kinds that use it.

>>> class Gap(StrictModel):
...     size: SizeBytes
...     interval_ns: DurationNs = 0
>>> load_model('size = "1G+4K"', Gap, "example").size
1073745920
>>> load_model({"size": 4096, "interval_ns": "1.5us"}, Gap, "example").interval_ns
1500
>>> load_model({"size": 4096, "hold": 3}, Gap, "example", origin="gap.toml")
Traceback (most recent call last):
perfsim.errors.PerfsimError: gap.toml: hold: unknown key 'hold'; allowed keys: size, interval_ns
>>> try:
...     load_model({"size": 1.5}, Gap, "example", origin="gap.toml")
... except PerfsimError as exc:
...     print(str(exc).split(";")[0])
gap.toml: size: expected a size such as "4K", "2M", "1G+4K", "0x200000" or an integer number of bytes
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from perfsim.errors import PerfsimError, describe_validation, parse_toml, read_toml
from perfsim.units import parse_duration, parse_size

SIZE_FORMS = 'a size such as "4K", "2M", "1G+4K", "0x200000" or an integer number of bytes'
ADDRESS_FORMS = 'an address such as "0x7f0000200000", "0x7f0000200000+4K" or an integer'
DURATION_FORMS = 'a duration such as "500ns", "20us", "1.5ms", "1s" or integer nanoseconds'


class StrictModel(BaseModel):
    """The base of every input model: unknown keys are errors, values are frozen once
    validated, defaults are validated like given values.

    ``defer_build``: pydantic builds a model's validator and serializer when the model is
    first used (validated, built, dumped), not when its class is defined. perfsim defines
    some sixty models; a command uses a few (``perfsim tune``: its tune file, one sweep
    cell, a workload, the profiles), and building them all at import took about 0.08 CPU-s
    of ``perfsim tune``'s start-up on this machine (2026-12-01). What a model accepts and
    the errors it gives do not change."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              defer_build=True)


def _integral(v: Any) -> Any:
    """numpy and other integer types as a plain ``int`` (bool stays bool)."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool | int):
        return int(v)
    return v


def _converter(name: str, parse, forms: str, what: str, doc: str):
    """A pydantic before-validator: ``v`` as the user writes it (``forms``) through ``parse``;
    ``ValueError`` naming the accepted forms otherwise."""
    def convert(v: Any) -> int:
        v = _integral(v)
        if isinstance(v, bool | float) or not isinstance(v, int | str):
            raise ValueError(f"expected {forms}; got {v!r}")
        try:
            return parse(v, what=what)
        except PerfsimError as exc:
            raise ValueError(str(exc).removeprefix(f"{what}: ")) from None

    convert.__name__ = convert.__qualname__ = name
    convert.__doc__ = doc
    return convert


to_size_bytes = _converter("to_size_bytes", parse_size, SIZE_FORMS, "size",
                           "A size as the user writes it, in bytes; ``ValueError`` otherwise.")
to_address = _converter("to_address", parse_size, ADDRESS_FORMS, "address",
                        "An absolute address as the user writes it; ``ValueError`` otherwise.")
to_duration_ns = _converter("to_duration_ns", parse_duration, DURATION_FORMS, "duration",
                            "A duration as the user writes it, in integer nanoseconds; "
                            "``ValueError`` otherwise.")


SizeBytes = Annotated[int, BeforeValidator(to_size_bytes)]
"""Bytes: ``"2M"``, ``"1G+4K"``, ``"0x200000"`` or a non-negative integer."""
Address = Annotated[int, BeforeValidator(to_address)]
"""A virtual address: ``"0x7f0000200000"``, ``"0x7f0000200000+4K"`` or an integer."""
DurationNs = Annotated[int, BeforeValidator(to_duration_ns)]
"""Integer nanoseconds: ``"20us"``, ``"1.5ms"``, ``"300ns"`` or an integer."""

M = TypeVar("M", bound=BaseModel)


def load_model(source: str | Path | dict, model: type[M], what: str, *,
               origin: str | None = None,
               prepare: Callable[[dict], dict] | None = None,
               describe: Callable[[ValidationError, str], str] | None = None) -> M:
    """Read one input of kind ``what`` ("workload", "sweep", ...) into ``model``.

    ``source`` is a :class:`~pathlib.Path` (read as a TOML file), a ``str`` (TOML text) or a
    ``dict`` (already parsed). ``origin`` names it in messages (default: the path, or
    ``<what>``). ``prepare`` may rewrite the parsed dict first (relative paths, aliases).
    Every problem is one :class:`PerfsimError` line naming the file, the table, the key and
    what is allowed (``describe(exc, origin)`` when a kind words it its own way)."""
    if isinstance(source, Path):
        origin = origin or str(source)
        data = read_toml(source, what)
    elif isinstance(source, str):
        origin = origin or f"<{what}>"
        data = parse_toml(source, origin)
    elif isinstance(source, dict):
        origin = origin or f"<{what}>"
        data = source
    else:
        raise TypeError(f"load_model: source must be a Path, TOML text or a dict, not "
                        f"{type(source).__name__}")
    if prepare is not None:
        data = prepare(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        if describe is not None:
            raise PerfsimError(describe(exc, origin)) from None
        raise PerfsimError(describe_validation(exc, model, origin=origin)) from None
