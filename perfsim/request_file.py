"""One ``mremap()`` request written as a TOML file (``perfsim plan --file REQUEST.toml``).

The keys are the long options of ``perfsim plan`` with ``-`` or ``_`` between words, so a
file and a command line say the same thing::

    # examples/plan/e2.toml: kernel-model.md §4 E2 (realignment possible)
    description = "E2: 1 GiB, src = A+4K, dst = B+4K"
    len = "1G"
    src = "2M+4K"          # offset from the default source base 0x7f0000000000
    dst = "6M+4K"          # offset from the default destination base 0x7f4000000000
    arch = "x86_64"
    kernel = "6.18"

Sizes and addresses may be strings (``"1G+4K"``, ``"0x7f0000201000"``) or integers.
``thp`` is a boolean or ``"on"``/``"off"``; ``populate`` is ``"full"``, ``"none"``, a
fraction (``0.5``) or ``"every:K"``; ``fixed = false`` is ``--no-fixed``.

Only the *shape* of the file is checked here (unknown keys, wrong types); the values are
resolved and range-checked by the CLI together with the command-line options, so both give
the same messages. Every problem is a :class:`~perfsim.errors.PerfsimError` whose one-line
message names the file, the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from perfsim.errors import PerfsimError, parse_toml

SizeLike = str | int
"""``"1G+4K"``, ``"0x200000"`` or a non-negative integer number of bytes."""


class RequestFile(BaseModel):
    """The keys a request file may hold. Every key is optional; an unset key falls back to
    the command line, then to the ``perfsim plan`` default."""

    model_config = ConfigDict(extra="forbid", strict=False)

    description: str | None = None
    """Free text, shown nowhere but kept in the JSON ``request``."""
    len: SizeLike | None = None
    src: SizeLike | None = None
    dst: SizeLike | None = None
    new_len: SizeLike | None = None
    arch: str | None = None
    kernel: str | None = None
    backing: Literal["anon", "shmem", "file", "hugetlb"] | None = None
    thp: bool | Literal["on", "off"] | None = None
    hugepage_size: SizeLike | None = None
    populate: str | float | None = None
    seed: int | None = None
    guard_below_src: bool | None = None
    guard_below_dst: bool | None = None
    for_stack: bool | None = None
    cpus: int | None = Field(None, ge=1)
    fixed: bool | None = None
    dontunmap: bool | None = None
    fail_alloc_at: int | None = Field(None, ge=1)
    cost_profile: str | None = None

    @field_validator("len", "src", "dst", "new_len", "hugepage_size", mode="before")
    @classmethod
    def _no_bool_sizes(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError("expected a size such as \"1G+4K\" or an integer number of bytes")
        return v

    @field_validator("seed", "cpus", "fail_alloc_at", mode="before")
    @classmethod
    def _strict_int(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("expected an integer")
        return v

    @field_validator("thp", mode="before")
    @classmethod
    def _thp(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
        return v

    @field_validator("populate", mode="before")
    @classmethod
    def _populate(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError('expected "full", "none", a fraction such as 0.5, or "every:K"')
        return v

    def given(self) -> dict[str, Any]:
        """The keys the file actually sets, with ``thp`` normalised to a bool."""
        out = self.model_dump(exclude_unset=True, exclude_none=True)
        if isinstance(out.get("thp"), str):
            out["thp"] = out["thp"] == "on"
        return out


KEYS: tuple[str, ...] = tuple(RequestFile.model_fields)

_ALLOWED_HINTS = {
    "backing": "one of anon, shmem, file, hugetlb",
    "thp": 'true/false or "on"/"off"',
    "populate": 'full, none, a fraction in (0, 1) or "every:K"',
    "cpus": "an integer >= 1",
    "fail_alloc_at": "an integer >= 1",
    "seed": "an integer",
    "len": 'a size such as "1G+4K" or an integer',
    "new_len": 'a size such as "1G+4K" or an integer',
    "hugepage_size": 'a size such as "2M" or an integer',
    "src": 'an address such as "0x7f0000201000" or an offset such as "2M+4K"',
    "dst": 'an address such as "0x7f4000601000" or an offset such as "6M+4K"',
}


def _describe(exc: ValidationError, origin: str) -> str:
    parts: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        if key in seen:  # a union reports one error per alternative: keep the first
            continue
        seen.add(key)
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r}; allowed keys: {', '.join(KEYS)}")
            continue
        hint = _ALLOWED_HINTS.get(key)
        if hint is None:
            hint = err["msg"]
        elif err["type"] in ("greater_than_equal", "value_error"):
            hint = f"{err['msg'].removeprefix('Value error, ')}; allowed: {hint}"
        else:
            hint = f"allowed: {hint}"
        parts.append(f"key {key!r}: got {err.get('input')!r}; {hint}")
    return f"{origin}: " + "; ".join(parts)


def parse_request(text: str, origin: str = "<string>") -> RequestFile:
    """Parse request TOML text; ``origin`` names it in error messages."""
    data = parse_toml(text, origin)
    if isinstance(data.get("request"), dict) and len(data) == 1:
        data = data["request"]  # a single [request] table is accepted too
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        return RequestFile(**data)
    except ValidationError as exc:
        raise PerfsimError(_describe(exc, origin)) from None


def load_request(path: str | Path) -> RequestFile:
    """Read and validate a request file; a missing or unreadable file is a PerfsimError."""
    p = Path(path)
    if not p.exists():
        raise PerfsimError(f"request file {str(p)!r} does not exist")
    if p.is_dir():
        raise PerfsimError(f"request file {str(p)!r} is a directory")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PerfsimError(f"cannot read request file {str(p)!r}: {exc}") from None
    return parse_request(text, str(p))
