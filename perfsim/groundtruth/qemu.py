"""Boot a kernel with the probe's initramfs under QEMU's TCG and collect its records.

``qemu-system-x86_64 -accel tcg -smp 2 -m 2G -cpu max -nographic -kernel VMLINUZ -initrd
INITRAMFS -append 'console=ttyS0 quiet loglevel=0 no5lvl panic=-1'``: two emulated CPUs
(so flushes need IPIs when the probe's second thread spins), 4-level paging (``no5lvl``:
``-cpu max`` offers LA57), no KVM. An emulated guest has no paravirtual interfaces, so it
is a bare-metal machine to the kernel: flush counts are exact, times are not.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from perfsim.errors import PerfsimError
from perfsim.groundtruth.cache import cache_dir
from perfsim.groundtruth.grid import probe_input
from perfsim.groundtruth.initramfs import build_initramfs
from perfsim.groundtruth.probe import build_probe
from perfsim.groundtruth.records import ProbeOutputError, parse_probe_output

APPEND = "console=ttyS0 quiet loglevel=0 no5lvl panic=-1 nokaslr"


def qemu_binary() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise PerfsimError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return exe


def qemu_command(vmlinuz: Path, initrd: Path, *, memory: str = "2G", cpus: int = 2) -> list[str]:
    return [qemu_binary(), "-accel", "tcg", "-smp", str(cpus), "-m", memory, "-cpu", "max",
            "-nographic", "-no-reboot", "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", APPEND]


REQUIRED_CONFIG = ("CONFIG_TRACEPOINTS=y", "CONFIG_FTRACE_SYSCALLS=y")


def check_config(vmlinuz: Path) -> None:
    """When the image's kernel config sits next to it (``config-<release>``, as
    :func:`perfsim.groundtruth.debian.fetch_vmlinuz` keeps it), require the tracepoints the
    probe counts with (``tlb:tlb_flush`` needs CONFIG_TRACEPOINTS; ``raw_syscalls`` needs
    CONFIG_FTRACE_SYSCALLS)."""
    name = vmlinuz.name
    if not name.startswith("vmlinuz-"):
        return
    cfg = vmlinuz.with_name("config-" + name[len("vmlinuz-"):])
    if not cfg.is_file():
        return
    text = cfg.read_text(errors="replace")
    missing = [c for c in REQUIRED_CONFIG if c not in text.splitlines()]
    if missing:
        raise PerfsimError(f"{vmlinuz.name}: its config {cfg.name} lacks {', '.join(missing)}: "
                           "the probe cannot count flushes on it")


def run_qemu(vmlinuz: Path, cases: list[dict], *, timeout_s: float = 1800,
             progress: Callable[[str], None] | None = None,
             log_path: Path | None = None) -> tuple[dict, list[dict]]:
    """Boot ``vmlinuz`` with the probe running ``cases``; ``(grid header, records)``.
    The console log is kept in ``log_path`` (default ``<cache>/logs/<image>.log``)."""
    if not vmlinuz.is_file():
        raise PerfsimError(f"kernel image {str(vmlinuz)!r} does not exist")
    check_config(vmlinuz)
    probe = build_probe("static")
    initrd = build_initramfs(probe, probe_input(cases))
    cmd = qemu_command(vmlinuz, initrd)
    log_path = log_path or cache_dir("logs") / f"{vmlinuz.name}.console.log"
    t0 = time.monotonic()
    lines: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            done = 0
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if "@@PERFSIM-CASE-END" in line:
                    done += 1
                    if progress:
                        progress(f"{vmlinuz.name}: {done}/{len(cases)} calls "
                                 f"({time.monotonic() - t0:.0f} s)")
                elif "@@PERFSIM-GRID-BEGIN" in line and progress:
                    progress(f"{vmlinuz.name}: booted in {time.monotonic() - t0:.0f} s")
            rc = proc.wait()
        finally:
            killer.cancel()
    if time.monotonic() - t0 >= timeout_s:
        raise PerfsimError(f"QEMU did not finish within {timeout_s:.0f} s (console log: {log_path})")
    try:
        return parse_probe_output(lines, platform="bare-metal", source="qemu-tcg")
    except ProbeOutputError as exc:
        raise PerfsimError(f"{exc} (QEMU exit status {rc}; console log: {log_path})") from None
