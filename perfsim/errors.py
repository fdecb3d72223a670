"""Exceptions perfsim raises for user mistakes.

A :class:`PerfsimError` is a problem with what the user asked for (an unknown profile, an
unparsable size, a malformed file). The CLI prints its message on one line and exits with
status 2; it never shows a traceback for one. Requests the *kernel* would reject are not
errors here: the planner returns them as a result with an ``errno`` name, like the syscall.
"""


class PerfsimError(Exception):
    """A user-facing error: bad input, unknown name, invalid file."""


def model_at(root, loc: tuple):
    """The pydantic model class that an error location ``loc`` points into, starting from
    ``root``: follows fields, list/dict items, optionals and discriminated unions (a union
    member is picked by a ``kind``/``dist`` tag in the location). None if ambiguous."""
    import typing

    cls = root
    for part in loc:
        if isinstance(part, int):
            continue
        nxt = None
        for m in _models_in(cls):
            if part in m.model_fields:
                nxt = m.model_fields[part].annotation
                break
            tag = m.model_fields.get("kind") or m.model_fields.get("dist")
            if tag is not None and part in typing.get_args(tag.annotation):
                nxt = m
                break
        if nxt is None:
            return None
        cls = nxt
    models = _models_in(cls)
    return models[0] if len(models) == 1 else None


def _models_in(ann) -> list:
    import typing

    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list = []
    for a in typing.get_args(ann):
        out += _models_in(a)
    return out


def format_loc(loc: tuple) -> str:
    """``a.b[2].c`` for a pydantic error location (``(top level)`` when empty)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation(exc, root=None, *, origin: str | None = None, hide=(), hint=None) -> str:
    """One line for a pydantic ``ValidationError``: ``origin: field: problem; ...``.

    Unknown keys name the keys allowed at that place (found from ``root``, the model that
    was validated, minus ``hide``); ``Value error,`` prefixes are dropped; ``hint(err)`` may
    add a model-specific explanation to a message."""
    parts = []
    for err in exc.errors():
        loc = err["loc"]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and root is not None and loc:
            m = model_at(root, loc[:-1])
            if m is not None:
                allowed = ", ".join(f.alias or n for n, f in m.model_fields.items() if n not in hide)
                msg = f"unknown key {loc[-1]!r}; allowed keys: {allowed}"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed:")
        if hint is not None:
            msg += hint(err)
        parts.append(f"{format_loc(loc)}: {msg}")
    text = "; ".join(parts)
    return f"{origin}: {text}" if origin else text


def check_dir_name(value: str, what: str) -> str:
    """A name that becomes a directory name: letters, digits, ``_ . -`` only."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"a {what} name is used as a directory name: letters, digits, _ . -")
    return value


def parse_toml(text: str, origin: str) -> dict:
    """TOML text as a dict; invalid TOML is a one-line :class:`PerfsimError` naming ``origin``."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PerfsimError(f"{origin}: not valid TOML: {exc}") from None


def read_toml(path, what: str) -> dict:
    """Read a TOML file; a missing file or invalid TOML is a one-line :class:`PerfsimError`
    (``what`` names the kind of file: "sweep", "study", ...)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise PerfsimError(f"{what} file {str(p)!r} does not exist")
    return parse_toml(p.read_text(encoding="utf-8"), str(p))


def parse_value(text: str):
    """A command-line value read as a TOML value (``64``, ``true``, ``"x"``, ``[1, 2]``),
    or the text itself when it is not one (``6.18``-style names stay strings)."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
