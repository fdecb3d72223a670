"""Thin ctypes wrappers around the libc memory-management calls the host measurements need.

Only libc is used (no compiler at run time).  Every wrapper raises :class:`OSError` carrying the
errno and its symbolic name when the call fails.

All addresses and sizes are plain Python ``int``s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import mmap as _mmap
import os
import threading
import time

__all__ = [
    "PAGE_SIZE",
    "PMD_SIZE",
    "PUD_SIZE",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "MAP_SHARED",
    "MAP_PRIVATE",
    "MAP_FIXED",
    "MAP_ANONYMOUS",
    "MAP_NORESERVE",
    "MAP_FIXED_NOREPLACE",
    "MREMAP_MAYMOVE",
    "MREMAP_FIXED",
    "MREMAP_DONTUNMAP",
    "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE",
    "MADV_POPULATE_READ",
    "MADV_POPULATE_WRITE",
    "SYS_mremap",
    "libc",
    "mmap",
    "munmap",
    "mremap",
    "mremap_raw",
    "madvise",
    "mprotect",
    "memfd_create",
    "gettid",
    "pin_current_thread",
    "monotonic_ns",
    "populate",
    "AddressWindow",
]

PAGE_SIZE = _mmap.PAGESIZE
PMD_SIZE = 2 << 20  # x86-64, 4 KiB pages
PUD_SIZE = 1 << 30

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23

SYS_mremap = 25  # x86-64 syscall number

MAP_FAILED = ctypes.c_void_p(-1).value

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_mmap_fn = libc.mmap
_mmap_fn.restype = ctypes.c_void_p
_mmap_fn.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]

_munmap_fn = libc.munmap
_munmap_fn.restype = ctypes.c_int
_munmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

# glibc declares mremap as variadic; on x86-64 calling it with five fixed integer/pointer
# arguments is ABI-compatible (no vector registers are involved).
_mremap_fn = libc.mremap
_mremap_fn.restype = ctypes.c_void_p
_mremap_fn.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_void_p,
]

_madvise_fn = libc.madvise
_madvise_fn.restype = ctypes.c_int
_madvise_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

_mprotect_fn = libc.mprotect
_mprotect_fn.restype = ctypes.c_int
_mprotect_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

_memset_fn = libc.memset
_memset_fn.restype = ctypes.c_void_p
_memset_fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]


def _raise(what: str, *args: object) -> None:
    err = ctypes.get_errno()
    name = _errno.errorcode.get(err, f"E?{err}")
    raise OSError(err, f"{what}{args!r} failed: {name} ({os.strerror(err)})")


def mmap(addr: int | None, length: int, prot: int, flags: int, fd: int = -1,
         offset: int = 0) -> int:
    """mmap(2); returns the mapped address."""
    r = _mmap_fn(addr or None, length, prot, flags, fd, offset)
    if r is None or r == MAP_FAILED:
        _raise("mmap", hex(addr or 0), length, prot, hex(flags))
    if flags & MAP_FIXED_NOREPLACE and addr and r != addr:
        # Pre-4.17 kernels ignore the flag and treat addr as a hint.
        _munmap_fn(r, length)
        raise OSError(_errno.EEXIST, f"mmap at {addr:#x} landed at {r:#x}: EEXIST")
    return int(r)


def munmap(addr: int, length: int) -> None:
    if _munmap_fn(addr, length) != 0:
        _raise("munmap", hex(addr), length)


def mremap(old_addr: int, old_size: int, new_size: int, flags: int, new_addr: int = 0) -> int:
    """mremap(2) with the optional fifth argument; returns the new address."""
    r = _mremap_fn(old_addr, old_size, new_size, flags, new_addr or None)
    if r is None or r == MAP_FAILED:
        _raise("mremap", hex(old_addr), old_size, new_size, flags, hex(new_addr))
    return int(r)


def mremap_raw(old_addr: int, old_size: int, new_size: int, flags: int, new_addr: int = 0) -> int:
    """Like :func:`mremap` but returns MAP_FAILED (as int) instead of raising; the errno is
    left in ``ctypes.get_errno()``.  Used inside timed sections to keep them minimal."""
    r = _mremap_fn(old_addr, old_size, new_size, flags, new_addr or None)
    return MAP_FAILED if r is None else int(r)


def madvise(addr: int, length: int, advice: int) -> None:
    if _madvise_fn(addr, length, advice) != 0:
        _raise("madvise", hex(addr), length, advice)


def mprotect(addr: int, length: int, prot: int) -> None:
    if _mprotect_fn(addr, length, prot) != 0:
        _raise("mprotect", hex(addr), length, prot)


def memfd_create(name: str = "perfsim-host", flags: int = 0) -> int:
    """memfd_create(2) (via :func:`os.memfd_create`); returns an fd."""
    return os.memfd_create(name, flags)


def gettid() -> int:
    """Kernel thread id of the calling thread."""
    return threading.get_native_id()


def pin_current_thread(cpu: int) -> None:
    """Pin the *calling thread* (not the whole process) to one CPU."""
    os.sched_setaffinity(0, {cpu})  # pid 0 = calling thread in the raw syscall


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds."""
    return time.monotonic_ns()


_populate_write_works: bool | None = None


def populate(addr: int, length: int, *, write: bool = True) -> str:
    """Fault in ``[addr, addr+length)``.  Prefers MADV_POPULATE_WRITE/READ (Linux 5.14+), falls
    back to one memset over the whole region (write) .  Returns the method used."""
    global _populate_write_works
    advice = MADV_POPULATE_WRITE if write else MADV_POPULATE_READ
    if _populate_write_works is not False:
        try:
            madvise(addr, length, advice)
            _populate_write_works = True
            return "madv_populate"
        except OSError as e:
            if e.errno not in (_errno.EINVAL, _errno.ENOSYS):
                raise
            _populate_write_works = False
    if not write:
        # Read-touch one byte per page.
        buf = (ctypes.c_char * length).from_address(addr)
        for off in range(0, length, PAGE_SIZE):
            _ = buf[off]
        return "read_touch"
    _memset_fn(addr, 0x5A, length)
    return "memset"


class AddressWindow:
    """A private stretch of address space for building exact layouts.

    The window is first reserved with ``PROT_NONE | MAP_NORESERVE`` (optionally at a preferred
    address with ``MAP_FIXED_NOREPLACE``) so that nothing else in the process lands there.
    :meth:`place` then overlays real mappings with ``MAP_FIXED``; :meth:`release` turns a part
    of the reservation back into a hole (nothing mapped), which is what the realignment rule and
    the MREMAP_FIXED destination need.

    ``close()`` unmaps the whole window, whatever is left in it.
    """

    def __init__(self, size: int, *, align: int = PUD_SIZE, hint: int | None = None) -> None:
        self.size = size
        total = size + align
        base = None
        if hint is not None:
            try:
                base = mmap(hint, total, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE)
            except OSError:
                base = None
        if base is None:
            base = mmap(None, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        start = (base + align - 1) & ~(align - 1)
        # Trim the unaligned head and tail so the window is exactly [start, start+size).
        if start > base:
            munmap(base, start - base)
        tail = base + total - (start + size)
        if tail:
            munmap(start + size, tail)
        self.base = start
        self.closed = False

    @property
    def end(self) -> int:
        return self.base + self.size

    def _check(self, addr: int, length: int) -> None:
        if self.closed:
            raise ValueError("window closed")
        if addr < self.base or addr + length > self.end or addr % PAGE_SIZE or length % PAGE_SIZE:
            raise ValueError(f"[{addr:#x}, +{length:#x}) outside window or not page-aligned")

    def place(self, addr: int, length: int, prot: int = PROT_READ | PROT_WRITE, *,
              shared: bool = False, fd: int = -1, offset: int = 0) -> int:
        """Map ``length`` bytes at exactly ``addr`` (inside the window), replacing the
        reservation there.  ``shared`` with ``fd=-1`` gives MAP_SHARED|MAP_ANONYMOUS (shmem)."""
        self._check(addr, length)
        flags = MAP_FIXED | (MAP_SHARED if shared else MAP_PRIVATE)
        if fd < 0:
            flags |= MAP_ANONYMOUS
        return mmap(addr, length, prot, flags, fd, offset)

    def release(self, addr: int, length: int) -> None:
        """Unmap ``[addr, addr+length)`` inside the window, leaving a hole."""
        self._check(addr, length)
        munmap(addr, length)

    def reserve(self, addr: int, length: int) -> None:
        """Put a PROT_NONE reservation back over ``[addr, addr+length)``."""
        self._check(addr, length)
        mmap(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED)

    def close(self) -> None:
        if not self.closed:
            munmap(self.base, self.size)
            self.closed = True

    def __enter__(self) -> AddressWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
