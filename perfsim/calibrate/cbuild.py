"""Compile perfsim's small C programs (the latency probe, the calibration timer) with the
system C compiler into perfsim's cache directory (``$PERFSIM_CACHE_DIR``, else
``$XDG_CACHE_HOME/perfsim``, else ``~/.cache/perfsim``), once per source version: the
executable is named after the hash of its source and never committed.

Only the building is shared; the programs themselves share no code (the probe must stay
independent of perfsim's measuring code).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from perfsim.errors import PerfsimError


def cache_dir() -> Path:
    env = os.environ.get("PERFSIM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "perfsim"


def c_compiler() -> str | None:
    """The system C compiler (gcc, else cc) on PATH, or None."""
    return shutil.which("gcc") or shutil.which("cc")


def build_c_program(source: Path, stem: str, what: str, *, libs: tuple[str, ...] = ()
                    ) -> Path:
    """Compile ``source`` (once per content hash) to ``<cache>/<stem>-<hash12>`` and return
    the executable's path. ``what`` names the program in the one-line errors."""
    text = source.read_bytes()
    exe = cache_dir() / f"{stem}-{hashlib.sha256(text).hexdigest()[:12]}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    cc = c_compiler()
    if cc is None:
        raise PerfsimError(f"building {what} needs a C compiler (gcc or cc); none found on "
                           "PATH")
    try:
        exe.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", dir=exe.parent)
    except OSError as e:
        raise PerfsimError(f"building {what}: cache directory {exe.parent}: "
                           f"{e.strerror or e}") from None
    os.close(fd)
    try:
        r = subprocess.run([cc, "-O2", "-Wall", "-o", tmp, str(source), *libs],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            first = (r.stderr.strip().splitlines() or ["?"])[0]
            raise PerfsimError(f"building {what} with {cc} failed: {first}")
        os.replace(tmp, exe)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return exe
