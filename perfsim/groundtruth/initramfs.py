"""A busybox-static initramfs holding the probe, its grid and an init script.

The init script mounts proc, sysfs and tracefs, sets THP to ``madvise`` (as on the host
this project is measured on) and shmem THP to ``advise`` (so that a memfd the probe
advises with MADV_HUGEPAGE can get PMD mappings), prints the probe's output between the probe's markers on
the serial console, and powers the VM off. The archive is a gzip'd cpio in the kernel's
``newc`` format, written by :func:`write_cpio` (no cpio tool needed); images are cached
in ``<cache>/initramfs`` under the hash of their contents.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

from perfsim.errors import PerfsimError
from perfsim.groundtruth.cache import cache_dir

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "mount", "mkdir", "cat", "echo", "poweroff", "sleep", "sync")

INIT = """#!/bin/sh
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
T=/sys/kernel/tracing
mount -t tracefs nodev $T 2>/dev/null
if [ ! -d $T/events ]; then
    mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
    T=/sys/kernel/debug/tracing
fi
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null
echo 0 > /proc/sys/kernel/printk 2>/dev/null
/probe -R -T $T /grid.txt
echo "@@PERFSIM-INIT-DONE $?"
sync
poweroff -f
"""


def busybox_path() -> str:
    for p in BUSYBOX_CANDIDATES:
        if os.path.isfile(p):
            with open(p, "rb") as f:
                head = f.read(4096)
            # a static busybox has no PT_INTERP program header naming ld-linux
            if b"ld-linux" not in head:
                return p
    raise PerfsimError("a static busybox is needed for the initramfs: apt-get install "
                       "busybox-static")


def _newc_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    nb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
    hdr = b"070701" + b"".join(f"{x:08x}".encode() for x in fields)
    out = hdr + nb
    out += b"\0" * ((4 - len(out) % 4) % 4)
    out += data
    out += b"\0" * ((4 - len(out) % 4) % 4)
    return out


def write_cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of ``(path, mode, data)`` entries (a symlink's data is its target)."""
    blob = b"".join(_newc_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    return blob + _newc_entry("TRAILER!!!", 0, b"", 0)


DIR, FILE, LINK = 0o040755, 0o100755, 0o120777


def build_initramfs(probe: Path, grid_text: str) -> Path:
    """The initramfs for one probe binary and grid (cached by content)."""
    bb = Path(busybox_path()).read_bytes()
    probe_bytes = probe.read_bytes()
    entries: list[tuple[str, int, bytes]] = [(d, DIR, b"") for d in
                                             ("bin", "proc", "sys", "dev", "tmp")]
    entries.append(("bin/busybox", FILE, bb))
    entries += [(f"bin/{a}", LINK, b"busybox") for a in APPLETS]
    entries += [("init", FILE, INIT.encode()), ("probe", FILE, probe_bytes),
                ("grid.txt", 0o100644, grid_text.encode())]
    digest = hashlib.sha256()
    for n, m, d in entries:
        digest.update(n.encode() + m.to_bytes(4, "little") + hashlib.sha256(d).digest())
    out = cache_dir("initramfs") / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if out.is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(gzip.compress(write_cpio(entries), compresslevel=6))
    os.replace(tmp, out)
    return out


def have_busybox() -> bool:
    try:
        busybox_path()
        return True
    except PerfsimError:
        return False


def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None
