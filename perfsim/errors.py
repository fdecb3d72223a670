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
    models = model_at_union(root, loc)
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
    was validated, minus ``hide``); ``Value error,`` prefixes are dropped; the tags of
    discriminated unions (``synthetic``, ``loguniform``) are left out of field names; a
    wrong type says what was given and what is allowed; a model-level check whose message
    names its own field and allowed values is shown as it is; ``hint(err)`` may add a
    model-specific explanation to a message."""
    parts, seen = [], set()
    for err in _without_union_labels(exc.errors()):
        loc = tuple(err["loc"])
        field = format_loc(_without_tags(root, loc)) if root is not None else format_loc(loc)
        if field in seen:  # a union reports one error per alternative: keep the first
            continue
        seen.add(field)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and root is not None and loc:
            m = model_at(root, loc[:-1])
            if m is not None:
                allowed = ", ".join(f.alias or n for n, f in m.model_fields.items() if n not in hide)
                msg = f"unknown key {loc[-1]!r}; allowed keys: {allowed}"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed:")
        elif err["type"] in _TYPE_HINTS:
            msg = f"{msg}; got {err.get('input')!r}; allowed: {_TYPE_HINTS[err['type']]}"
        if hint is not None:
            msg += hint(err)
        if not loc and "allowed:" in msg:
            parts.append(msg)
        else:
            parts.append(f"{field}: {msg}")
    text = "; ".join(parts)
    return f"{origin}: {text}" if origin else text


_TYPE_HINTS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "list_type": "a list", "dict_type": "a table",
}


def _without_tags(root, loc: tuple) -> tuple:
    """``loc`` without the tags pydantic inserts for members of discriminated unions
    (``streams[0].synthetic.size`` → ``streams[0].size``)."""
    out, prefix = [], ()
    for part in loc:
        prefix += (part,)
        if isinstance(part, str) and _is_tag(root, prefix):
            continue
        out.append(part)
    return tuple(out)


def _is_tag(root, prefix: tuple) -> bool:
    import typing

    parent = model_at_union(root, prefix[:-1])
    for m in parent:
        if prefix[-1] in m.model_fields:
            return False
    for m in parent:
        tag = m.model_fields.get("kind") or m.model_fields.get("dist")
        if tag is not None and prefix[-1] in typing.get_args(tag.annotation):
            return True
    return False


def model_at_union(root, loc: tuple) -> list:
    """The model classes a location may point into (all members of a union)."""
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
            return []
        cls = nxt
    return _models_in(cls)


def _union_label(part) -> bool:
    """A location part pydantic inserts for a member of a plain union (``SizeRange``,
    ``list[int]``, ``function-before[...]``); perfsim's keys are lower-case names."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


def _without_union_labels(errors: list[dict]) -> list[dict]:
    """Errors with union-member labels dropped from their locations; where the value
    matched no member, the members of the wrong type (``list_type``, ``model_type``, ...) are
    left out when another member says what is wrong inside it (an unknown key, a bad value)."""
    out, from_union = [], []
    for err in errors:
        loc = tuple(err["loc"])
        clean = tuple(p for p in loc if not _union_label(p))
        out.append(dict(err, loc=clean))
        from_union.append(clean != loc)
    keep = []
    for err, union in zip(out, from_union, strict=True):
        if union and err["type"].endswith("_type") and any(
                u and not o["type"].endswith("_type") and o["loc"][:len(err["loc"])] == err["loc"]
                for o, u in zip(out, from_union, strict=True)):
            continue
        keep.append(err)
    return keep


def check_dir_name(value: str, what: str) -> str:
    """A name that becomes a directory name: letters, digits, ``_ . -`` only."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value) or value in (".", ".."):
        raise ValueError(f"a {what} name is used as a directory name: letters, digits, _ . - "
                         "(not '.' or '..')")
    return value


def parse_toml(text: str, origin: str) -> dict:
    """TOML text as a dict; invalid TOML is a one-line :class:`PerfsimError` naming ``origin``."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PerfsimError(f"{origin}: not valid TOML: {exc}") from None


def read_text(path, what: str, *, errors: str = "strict") -> str:
    """The UTF-8 text of a user's input file; every way that can fail is one line naming the
    file: missing, a directory, unreadable, or not UTF-8 text (``what``: "sweep", ...).
    ``errors="replace"`` takes stray bytes of a text log as U+FFFD instead."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise PerfsimError(f"{what} file {str(p)!r} is a directory, not a file")
    if not p.exists():
        raise PerfsimError(f"{what} file {str(p)!r} does not exist")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PerfsimError(f"{what} file {str(p)!r} cannot be read: {exc.strerror}") from None
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise PerfsimError(f"{what} file {str(p)!r} is not UTF-8 text (byte {exc.start}: "
                           f"{data[exc.start:exc.start + 1]!r})") from None


def read_toml(path, what: str) -> dict:
    """Read a TOML file; a missing, unreadable or non-UTF-8 file or invalid TOML is a
    one-line :class:`PerfsimError` (``what`` names the kind of file: "sweep", "study", ...)."""
    return parse_toml(read_text(path, what), str(path))


def check_output_dir(path, what: str):
    """Fail now, in one line, if ``path`` cannot become a directory perfsim writes into:
    a file is in the way, a parent is a file, or the nearest existing ancestor is not
    writable or does not take new entries (tried: a probe directory is made there and removed
    at once, so a read-only mount or ``/proc`` is caught even for root). Leaves nothing
    behind. Call before long work starts; returns the path."""
    from pathlib import Path

    p = Path(path)
    _check_link(p, what)
    if p.exists() and not p.is_dir():
        raise PerfsimError(f"{what} {str(p)!r} is a file, not a directory")
    return _check_ancestors(p if p.exists() else p.parent, p, what)


def check_output_file(path, what: str):
    """Fail now, in one line, if a file cannot be written at ``path``: it is a directory,
    a parent is a file, or the directory is not writable (tried, as for
    :func:`check_output_dir`). Leaves nothing behind."""
    from pathlib import Path

    p = Path(path)
    _check_link(p, what)
    if p.is_dir():
        raise PerfsimError(f"{what} {str(p)!r} is a directory, not a file")
    if p.exists() and not p.is_file():
        # A result is written beside its place and renamed over it: over /dev/null or
        # /dev/full (with --force) that replaced the device with a regular file.
        raise PerfsimError(f"{what} {str(p)!r} is {_kind_of(p)}, not a regular file; perfsim "
                           "writes its results to files (use '-' for stdout where offered)")
    return _check_ancestors(p.parent, p, what)


def _check_link(p, what: str) -> None:
    """A dangling symbolic link at an output place: refused before work (the rename at the
    end failed with 'Not a directory' after the whole run)."""
    import os

    if p.is_symlink() and not p.exists():
        raise PerfsimError(f"{what} {str(p)!r} is a symbolic link to {os.readlink(p)!r}, which "
                           "does not exist; remove the link or give another path")


def _kind_of(p) -> str:
    import stat

    mode = p.stat().st_mode
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_ancestors(start, p, what: str):
    import os
    import tempfile
    from pathlib import Path

    d = Path(start) if str(start) else Path(".")
    while not d.exists():
        d = d.parent
    if not d.is_dir():
        raise PerfsimError(f"{what} {str(p)!r}: {str(d)!r} is a file, not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise PerfsimError(f"{what} {str(p)!r}: directory {str(d)!r} is not writable")
    try:  # access() trusts the mode bits; root, read-only mounts and /proc need a real try
        os.rmdir(tempfile.mkdtemp(prefix=".perfsim-probe.", dir=d))
    except OSError as exc:
        raise PerfsimError(f"{what} {str(p)!r}: directory {str(d)!r} does not take new "
                           f"entries: {exc.strerror or exc}") from None
    return p


def parse_value(text: str):
    """A command-line value read as a TOML value (``64``, ``true``, ``"x"``, ``[1, 2]``),
    or the text itself when it is not one (``6.18``-style names stay strings)."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
