"""The ``perfsim`` command line.

:func:`perfsim.cli.main.main` builds an argparse parser whose subcommands live in modules
``perfsim.cli.<name>`` (``plan``, ``run``, ``sweep``, ...). Each such module exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit status, or None for 0) with ``set_defaults``;
:data:`perfsim.cli.main.SUBCOMMANDS` lists them.

This module holds what the commands share: integer flags with bounds (:func:`int_range`),
the check of every output location before work starts, with one policy for outputs that
exist already (:func:`output_dir`, :func:`output_file`: replaced only with ``--force``),
and atomic writes (in :mod:`perfsim.atomic`).

(The entry point is imported from ``perfsim.cli.main`` on purpose and not re-exported here:
a function ``main`` on the package would shadow the submodule ``perfsim.cli.main``.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from perfsim.errors import PerfsimError, check_output_dir, check_output_file, read_text


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[lo, hi]``: anything else is a one-line usage
    error naming the flag ("argument --trials: must be an integer >= 1, got '0'")."""
    want = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a time limit in seconds: a finite number > 0 (``--timeout 0``,
    ``-1``, ``nan`` or ``inf`` would end every wait at once, or never)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


positive_seconds.__name__ = "seconds"


def check_named_file(value: str, what: str) -> None:
    """For a value that is a shipped name or a path (``--workload NAME|PATH``): when it names
    something on disk, it must be a readable UTF-8 file (a directory, an unreadable or a
    binary file is one line naming it, not "unknown workload")."""
    if Path(value).exists():
        read_text(value, what)


def check_trace_files(workload_name: str, streams) -> None:
    """Every recorded trace a workload replays (its ``kind = "trace"`` streams, given as
    models or as dicts with absolute paths) must be a readable UTF-8 file: checked before
    any run, one line naming the trace and the workload."""
    for s in streams or []:
        kind, path = ((s.get("kind"), s.get("path")) if isinstance(s, dict)
                      else (getattr(s, "kind", None), getattr(s, "path", None)))
        if kind == "trace" and isinstance(path, str):
            read_text(path, f"workload {workload_name!r}: trace")


def output_dir(path, flag: str, force: bool, inputs=()) -> Path:
    """Check, before any work, that perfsim may write the directory ``path`` (given by
    ``flag``): nothing in the way, writable, and not already there unless ``force``; and not
    one of the command's ``inputs`` nor a directory holding one (``--force`` would replace
    the input with the result). Creates nothing. The one policy for every output: an
    existing one is replaced only with --force."""
    p = _refuse_inputs(Path(path), flag, inputs)
    return _refuse_existing(check_output_dir(p, flag), flag, force)


def output_file(path, flag: str, force: bool, inputs=()) -> Path:
    """:func:`output_dir` for a file."""
    p = _refuse_inputs(Path(path), flag, inputs)
    return _refuse_existing(check_output_file(p, flag), flag, force)


def _refuse_inputs(p: Path, flag: str, inputs) -> Path:
    """``p`` must not be an input of the command nor contain one: the result replaces
    what is at ``p`` whole."""
    where = p.resolve()
    for i in inputs:
        if i is None or not Path(i).exists():
            continue
        src = Path(i).resolve()
        if where == src or where in src.parents:
            what = "is" if where == src else "holds"
            raise PerfsimError(f"{flag} {str(p)!r} {what} the input {str(i)!r}; the result "
                               "would replace it: write the output somewhere else")
    return p


def _refuse_existing(p: Path, flag: str, force: bool) -> Path:
    if p.exists() and not force:
        raise PerfsimError(f"{flag} {str(p)!r} already exists; choose another or pass --force "
                           "to replace it")
    return p


