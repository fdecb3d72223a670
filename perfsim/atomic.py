"""Outputs written whole or not at all: a directory or file is built beside its final place
(same file system) and renamed into it, so a crash, a Ctrl-C or an error never leaves a
half-written result where the user looks for one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from perfsim.errors import PerfsimError

__all__ = ["atomic_dir", "replace_dir", "temp_dir_beside", "write_file_atomically"]


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG,
                          errno.EACCES, errno.EPERM})
"""The errors of a destination rather than of perfsim: full, read-only, failing, refused."""


def cannot_write(final: Path, exc: OSError) -> PerfsimError:
    """The one line for an output that could not be written: the path and the system's
    reason (``No space left on device``, ``Read-only file system``, ...)."""
    return PerfsimError(f"cannot write {str(final)!r}: {exc.strerror or exc}")


def temp_dir_beside(final: Path) -> Path:
    """A fresh hidden directory beside ``final`` (same file system, so it renames into place);
    creates ``final``'s parents. A place that refuses them is one line
    (:func:`cannot_write`)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise cannot_write(final, exc) from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory ``tmp`` to ``final``; an old ``final`` is moved aside first
    and removed after, so that ``final`` is at every moment either the old or the new one."""
    old = None
    try:
        # mkdtemp's 0700 would outlive the rename: the mode a new directory gets here
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():  # put the old one back
            os.replace(old / final.name, final)
            shutil.rmtree(old, ignore_errors=True)
        raise cannot_write(final, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomically(final: Path, write: Callable[[Path], object]):
    """Call ``write(tmp)`` for a temporary file beside ``final``, then rename it to ``final``;
    on any failure (or Ctrl-C) the temporary file is removed and ``final`` is untouched.
    Returns what ``write`` returned. A destination that is full, read-only or refused is
    one line (:func:`cannot_write`)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    except OSError as exc:
        raise cannot_write(final, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would outlive the rename
        result = write(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise cannot_write(final, exc) from None
        raise
    return result


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """``with atomic_dir(out) as tmp:`` write into ``tmp``; on success it becomes ``out``
    (with the mode a new directory gets, replacing an old ``out`` as :func:`replace_dir`
    does), on any failure (or
    Ctrl-C) it is removed and ``out`` is untouched. A destination that is full, read-only
    or refused is one line (:func:`cannot_write`)."""
    final = Path(final)
    tmp = temp_dir_beside(final)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise cannot_write(final, exc) from None
        raise
