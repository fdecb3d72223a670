"""Build the ground-truth probe from ``probes/groundtruth/probe.c`` with gcc.

Binaries go to ``<cache>/probe/`` named after the hash of the source and the link mode, so
an edited source is rebuilt and an unchanged one is not. ``static`` is for initramfs images
(no C library there); ``dynamic`` links the C library like an ordinary program, so its
buffers land in the mmap area next to the library's mappings.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from perfsim.errors import PerfsimError
from perfsim.groundtruth.cache import cache_dir
from perfsim.shipped import data_dir

SOURCE = data_dir("probes") / "groundtruth" / "probe.c"
LINK_MODES = ("static", "dynamic")


def source_path() -> Path:
    if not SOURCE.is_file():
        raise PerfsimError(f"probe source {SOURCE} not found (a broken install: reinstall "
                           "perfsim)")
    return SOURCE


def compiler() -> str:
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if not cc:
        raise PerfsimError("gcc not found: install it (apt-get install gcc libc6-dev) or set CC")
    return cc


def build_probe(link: str = "static", *, out_dir: Path | None = None) -> Path:
    """Compile the probe (``gcc -O2``, ``-static`` for ``link='static'``); return the binary.
    Reuses a binary built from the same source."""
    if link not in LINK_MODES:
        raise PerfsimError(f"probe link mode {link!r}: allowed values: {', '.join(LINK_MODES)}")
    src = source_path()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out_dir = out_dir or cache_dir("probe")
    out = out_dir / f"probe-{link}-{digest}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    cmd = [compiler(), "-O2", "-Wall", "-pthread", "-o", str(tmp), str(src)]
    if link == "static":
        cmd.insert(1, "-static")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        tmp.unlink(missing_ok=True)
        raise PerfsimError(f"building the probe failed: {' '.join(cmd)}: {last}")
    os.replace(tmp, out)
    return out
