"""Where the files perfsim ships with it live: the named workloads (and their scenarios and
traces), the studies and the sweeps.

In a source checkout (and an editable install) they are the top-level directories
``workloads/``, ``studies/`` and ``sweeps/`` beside the ``perfsim`` package. A wheel (``pip
install .``) carries the same files inside the package as ``perfsim/_shipped/<kind>/``
(pyproject.toml maps the top-level directories there). :func:`data_dir` returns whichever
exists, checkout first.
"""

from __future__ import annotations

from pathlib import Path

KINDS: tuple[str, ...] = ("workloads", "studies", "sweeps", "probes")
"""The kinds of shipped files, each a directory name."""

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """The directory of the shipped files of ``kind`` (one of :data:`KINDS`): the checkout's
    top-level ``<kind>/`` when perfsim runs from a source tree, else the installed package's
    ``perfsim/_shipped/<kind>/``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of shipped files {kind!r}; allowed: {', '.join(KINDS)}")
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / kind).is_dir():
        return root / kind
    return _PACKAGE / "_shipped" / kind


def names(kind: str) -> list[str]:
    """The names (file stems) of the shipped ``*.toml`` files of ``kind``, sorted."""
    d = data_dir(kind)
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A file given by path, or by the name of a shipped file of ``kind`` (``quick`` for
    ``studies/quick.toml``): an existing file wins, then a bare name (no suffix, no
    directory) that is shipped. Anything else is returned as it is, so that the reader names
    it in its one-line error (does not exist, is a directory, ...)."""
    p = Path(name_or_path)
    if p.is_file() or p.suffix or len(p.parts) > 1:
        return p
    named = data_dir(kind) / f"{p.name}.toml"
    return named if named.is_file() else p
