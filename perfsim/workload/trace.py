"""Recorded traces: a CSV of calls, and a converter from ``strace`` output.

**CSV format** (header required; one row per call, in issue order)::

    time_ns,op,addr,old_len,new_len,flags,new_addr,result,backing
    0,mmap,0x7f3a00000000,8392704,,,,0x7f3a00000000,anon
    15000,mremap,0x7f3a00000000,8392704,16781312,MREMAP_MAYMOVE,,0x7f39ff000000,
    30000,munmap,0x7f39ff000000,16781312,,,,0,

``op`` is ``mremap``, ``mmap``, ``munmap``, ``truncate``, ``mprotect``, ``madvise`` or
``touch``. ``addr`` is the mapping (mmap: the address it returned). ``flags`` of an mremap
are ``MREMAP_*`` names joined by ``|`` (or a number); of an mmap, its ``MAP_*`` names
(only MAP_SHARED against MAP_PRIVATE is read: :attr:`perfsim.mm.vma.Vma.shared`; empty:
shared). ``result`` is what
the real call returned (an address, ``0`` or ``-ENOMEM``). One use only: a call without
``MREMAP_FIXED`` whose result is another address is replayed as a move to that address
(MAYMOVE|FIXED), because the trace cannot show what blocked growth in place. ``backing``
(mmap only) is ``anon``, ``shmem``, ``file`` or
``hugetlb``. ``time_ns`` may be empty (then the stream's arrival process decides).
``populate`` (optional; empty = the stream's ``populate``) is the fraction of the pages a
row adds that the program has written by its next call: an mmap's mapping, the part a
growing mremap adds. A trace does not record it; the column makes it explicit where it
is known (docs/real-programs.md). The converter always writes the column. A CSV without
it replays as CSVs did before the column existed: mappings take the stream's
``populate``, growths stay unwritten.

Of an mmap row, optional: ``prot`` (``PROT_*`` names, e.g. ``PROT_READ``: a mapping without
``PROT_WRITE`` holds only clean, read-faulted pages; empty: read-write), ``file`` (which
file it maps, e.g. its path: the mappings of one file share its ``i_mmap`` tree, and a
``truncate`` row reaches them; empty: a file of its own) and ``offset`` (its offset in
the file, bytes: the VMA's ``pgoff``). A ``truncate`` row (``ftruncate()``) names a
``file`` and its new size in ``new_len``; the mappings of that file lose their pages past
the new end, page tables kept (:mod:`perfsim.planner.truncate`, docs/kernel-rules.md R25).
An ``mprotect`` row changes the protection of ``[addr, addr + old_len)`` to its ``prot``
(required; ``PROT_NONE`` for none): the VMAs split and merge as the kernel's do
(:mod:`perfsim.planner.mprotect`), and the part it opens to access from ``PROT_NONE`` is
written with the row's ``populate`` (a program opens reserved memory to use it, as it
grows a mapping to fill it). A ``madvise`` row names its advice in ``flags`` (an
``MADV_*`` name or its number): ``MADV_DONTNEED`` and ``MADV_DONTNEED_LOCKED`` zap the
range, page tables kept except the PTE tables ``CONFIG_PT_RECLAIM`` frees
(:mod:`perfsim.planner.madvise`, R27); ``MADV_HUGEPAGE`` and ``MADV_NOHUGEPAGE`` set or
clear the VMAs' ``VM_HUGEPAGE`` (split and merged as mprotect's), so anonymous memory
written after the advice is THP-backed where the VMA covers whole PMDs; advice that
changes nothing a move reads (``MADV_FREE``, ``MADV_WILLNEED``, ...) is replayed as
nothing, and any other advice (``MADV_REMOVE``, ``MADV_MERGEABLE``, ...) is not replayed
and counted
(:attr:`perfsim.workload.generate.StatefulPlanner.not_replayed`). A ``touch`` row is not
a system call and no log has one: it says the program wrote ``[addr, addr + old_len)``
(the fraction ``populate`` of its pages; empty: the stream's) by then, where that is known (a
handed-back block used again); the replay faults those pages in.

**strace**: ``strace -f -tt -T -y -e trace=mremap,mmap,munmap,brk,ftruncate,mprotect,madvise -o app.strace
./app`` (any of ``-t``/``-tt``/``-ttt``/``-r`` or none; ``-T``; ``-X verbose``/``-X raw``;
``-f`` pid prefixes; ``<unfinished ...>``/``resumed`` pairs; ``-y`` paths).
:func:`convert_strace` writes the CSV above;
``perfsim workload convert-strace`` is its command line. Failed mmaps and calls without a
result are dropped and counted. ``brk`` calls become mmap/munmap rows of the heap's
growth and shrinkage (private anonymous, read-write). With ``-y`` an mmap of a file
names it by its path (``/dev/shm`` and memfd files are ``shmem``; ``/dev/zero`` is
``shmem`` shared, ``anon`` private), and each ``ftruncate`` becomes a ``truncate`` row
of that path (whichever descriptor it used: a dup of the mapped one is the same file);
without ``-y`` the ``ftruncate`` calls cannot be tied to a mapping and are dropped
(counted as skipped). Each successful ``mprotect``
and ``madvise`` becomes a row (one that failed with ENOMEM too: the kernel changed the
VMAs before the hole it found). Rows are in start order,
except where two threads' overlapping calls
must have run the other way round (:func:`effect_order`).
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from perfsim.errors import PerfsimError, read_text
from perfsim.planner.madvise import REPLAYED_ADVICE
from perfsim.workload.generate import Entry

CSV_COLUMNS = ("time_ns", "op", "addr", "old_len", "new_len", "flags", "new_addr", "result",
               "backing", "populate", "prot", "file", "offset")
MREMAP_FLAGS = {"MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
OPS = ("mremap", "mmap", "munmap", "truncate", "mprotect", "madvise", "touch")
MADV_NUMBERS = {
    "MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3,
    "MADV_DONTNEED": 4, "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10,
    "MADV_DOFORK": 11, "MADV_MERGEABLE": 12, "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14,
    "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16, "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18,
    "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21, "MADV_POPULATE_READ": 22,
    "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25,
    "MADV_HWPOISON": 100, "MADV_SOFT_OFFLINE": 101, "MADV_GUARD_INSTALL": 102,
    "MADV_GUARD_REMOVE": 103,
}
"""The ``madvise`` advice values of the uapi header, by name (a log written with ``-X raw``
prints the number)."""
_MADV_NAMES = {v: k for k, v in MADV_NUMBERS.items()}
PROT_LETTERS = {"PROT_READ": "r", "PROT_WRITE": "w", "PROT_EXEC": "x"}
"""An mmap row's ``prot`` names and the letters of :attr:`perfsim.mm.vma.Vma.prot`."""
PROT_NAMES = ("PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC", "PROT_SEM",
              "PROT_GROWSDOWN", "PROT_GROWSUP", "PROT_BTI", "PROT_MTE")
"""The ``PROT_*`` names a ``prot`` column takes (the uapi headers'; only read, write and
exec change what the replay models)."""


def _int(text: str, what: str, origin: str, line: int) -> int | None:
    t = (text or "").strip()
    if t == "" or t.upper() == "NULL":
        return None
    try:
        return int(t, 0)
    except ValueError:
        raise PerfsimError(f"{origin}:{line}: column {what!r}: cannot parse {text!r}; allowed: "
                           "a decimal or 0x-hex integer") from None


def parse_flags(text: str, origin: str = "", line: int = 0) -> int:
    t = (text or "").strip()
    if not t or t == "0":
        return 0
    if t[0].isdigit():
        return int(t, 0)
    v = 0
    for part in t.split("|"):
        part = part.strip()
        if part not in MREMAP_FLAGS:
            raise PerfsimError(f"{origin}:{line}: column 'flags': unknown flag {part!r}; "
                               f"allowed: {', '.join(MREMAP_FLAGS)}")
        v |= MREMAP_FLAGS[part]
    return v


def kernel_placed(flags: int, addr: int, result: str) -> bool:
    """Did the kernel move this logged mremap to an address it chose? No MREMAP_FIXED, and
    the result an address other than the old one."""
    result = result.strip()
    return (not flags & MREMAP_FLAGS["MREMAP_FIXED"] and result.lower().startswith("0x")
            and int(result, 16) != addr)


def read_trace_csv(path: str | Path) -> list[Entry]:
    """Read a trace CSV into entries; errors name the file, the line and the column."""
    return parse_trace_csv(read_text(path, "trace"), str(path))


def parse_map_flags(text: str, origin: str = "", line: int = 0) -> bool:
    """An mmap row's ``flags`` (``MAP_*`` names joined by ``|``, or a number): is the mapping
    MAP_SHARED (:attr:`perfsim.mm.vma.Vma.shared`)? The other names (MAP_ANONYMOUS,
    MAP_FIXED, MAP_DENYWRITE, ...) are what ``backing`` and ``addr`` already say, and are
    accepted as strace prints them. Empty: shared, as an mmap row before the column was
    written replayed."""
    t = (text or "").strip()
    if not t:
        return True
    shared = False
    for part in t.split("|"):
        part = part.strip()
        if part[:1].isdigit() and _is_int(part):  # (its bits, as strace -X raw prints them)
            shared |= _shared(_map_names(part))
            continue
        if not part.startswith("MAP_"):
            raise PerfsimError(f"{origin}:{line}: column 'flags': {part!r} is not an mmap "
                               "flag; allowed on an mmap row: MAP_* names joined by |, e.g. "
                               "MAP_SHARED or MAP_PRIVATE|MAP_ANONYMOUS")
        shared |= _shared([part])
    return shared


def map_noreserve(text: str) -> bool:
    """Does an mmap row's ``flags`` (as :func:`parse_map_flags` reads them) hold
    ``MAP_NORESERVE``? The kernel honours it (``VM_NORESERVE``) under the default
    overcommit policy; perfsim takes that policy (``vm.overcommit_memory`` 0 or 1)."""
    names = []
    for part in (text or "").split("|"):
        part = part.strip()
        names += _map_names(part) if part[:1].isdigit() and _is_int(part) else [part]
    return "MAP_NORESERVE" in names


def parse_prot(text: str, origin: str = "", line: int = 0) -> str:
    """An mmap row's ``prot`` (``PROT_*`` names joined by ``|``, or a number) as the letters
    of :attr:`perfsim.mm.vma.Vma.prot`: ``PROT_READ|PROT_WRITE`` is ``"rw"``,
    ``PROT_NONE`` is ``""``. Empty: ``"rw"`` (what a row before the column replayed as)."""
    t = (text or "").strip()
    if not t:
        return "rw"
    if t[:1].isdigit():
        if not _is_int(t):
            raise PerfsimError(f"{origin}:{line}: column 'prot': cannot parse {text!r}; "
                               "allowed: PROT_* names joined by |, or a number")
        names = _prot_names(t)
    else:
        names = [part.strip() for part in t.split("|")]
        for part in names:
            if part not in PROT_NAMES:
                raise PerfsimError(f"{origin}:{line}: column 'prot': {part!r}; allowed: "
                                   f"{', '.join(PROT_NAMES)} joined by |, e.g. "
                                   "PROT_READ|PROT_WRITE")
    got = {PROT_LETTERS.get(n, "") for n in names}
    return "".join(c for c in "rwx" if c in got)


def parse_advice(text: str, origin: str = "", line: int = 0) -> str:
    """A madvise row's ``flags``: its advice, an ``MADV_*`` name or the number strace ``-X
    raw`` prints, as the name."""
    t = _uncommented(text or "")
    if t in MADV_NUMBERS:
        return t
    if _is_int(t) and int(t, 0) in _MADV_NAMES:
        return _MADV_NAMES[int(t, 0)]
    raise PerfsimError(f"{origin}:{line}: column 'flags': {text!r} is not a madvise advice; "
                       "allowed on a madvise row: an MADV_* name (e.g. MADV_DONTNEED) or "
                       "its number")


def _is_int(text: str) -> bool:
    try:
        int(text, 0)
    except ValueError:
        return False
    return True


def parse_trace_csv(text: str, origin: str = "<trace>") -> list[Entry]:
    rows = csv.DictReader(io.StringIO(text))
    cols = rows.fieldnames or []
    missing = [c for c in ("op", "addr", "old_len") if c not in cols]
    unknown = [c for c in cols if c not in CSV_COLUMNS]
    if missing or unknown:
        raise PerfsimError(f"{origin}: header: missing {missing} / unknown {unknown}; "
                           f"allowed columns: {', '.join(CSV_COLUMNS)}")
    out = []
    for n, r in enumerate(rows, start=2):
        op = (r.get("op") or "").strip()
        if op not in OPS:
            raise PerfsimError(f"{origin}:{n}: column 'op': {op!r}; allowed: {', '.join(OPS)}")
        file = (r.get("file") or "").strip() or None
        if op == "truncate":
            size = _int(r.get("new_len"), "new_len", origin, n)
            if file is None or size is None or size < 0:
                raise PerfsimError(f"{origin}:{n}: a truncate row needs 'file' (the file, as "
                                   "its mmap rows name it) and 'new_len' (its new size, bytes)")
            out.append(Entry(op=op, old_addr=0, old_len=0, new_len=size, populate=None,
                             at_ns=_int(r.get("time_ns"), "time_ns", origin, n), file=file))
            continue
        addr = _int(r.get("addr"), "addr", origin, n)
        old_len = _int(r.get("old_len"), "old_len", origin, n)
        if addr is None or old_len is None:
            raise PerfsimError(f"{origin}:{n}: columns 'addr' and 'old_len' are required")
        if op in ("mprotect", "madvise", "touch"):
            if addr % 4096 or old_len < 0:
                raise PerfsimError(f"{origin}:{n}: a {op} row needs a page-aligned 'addr' "
                                   f"and an 'old_len' of 0 or more (got {addr:#x}, {old_len})")
            if op == "mprotect" and not (r.get("prot") or "").strip():
                raise PerfsimError(f"{origin}:{n}: an mprotect row needs 'prot' (PROT_* "
                                   "names joined by |, or PROT_NONE)")
            out.append(Entry(
                op=op, old_addr=addr, old_len=old_len,
                at_ns=_int(r.get("time_ns"), "time_ns", origin, n),
                populate=_populate_of(r, cols, op, origin, n),
                prot=parse_prot(r.get("prot", ""), origin, n) if op == "mprotect" else "rw",
                advice=parse_advice(r.get("flags", ""), origin, n) if op == "madvise" else ""))
            continue
        shared, prot, offset, noreserve = True, "rw", 0, False
        if op == "mmap":
            shared = parse_map_flags(r.get("flags", ""), origin, n)
            noreserve = map_noreserve(r.get("flags", ""))
            prot = parse_prot(r.get("prot", ""), origin, n)
            offset = _int(r.get("offset"), "offset", origin, n) or 0
            if offset < 0:
                raise PerfsimError(f"{origin}:{n}: column 'offset': {offset}; allowed: the "
                                   "mapping's offset in its file, bytes, 0 or more")
            flags = 0
        else:
            flags = parse_flags(r.get("flags", ""), origin, n)
        new_addr = _int(r.get("new_addr"), "new_addr", origin, n)
        result = (r.get("result") or "").strip()
        if op == "mremap" and kernel_placed(flags, addr, result):
            # Not MREMAP_FIXED, and the kernel moved the mapping to an address it chose
            # (something the trace does not show blocked growth in place). Replay it as a
            # move to the recorded address (MAYMOVE|FIXED: the same move_vma path, and the
            # destination is free), so later calls find the mapping where the app did.
            new_addr = int(result, 16)
            flags |= 3
        pop = _populate_of(r, cols, op, origin, n)
        backing = (r.get("backing") or "anon").strip() or "anon"
        if backing not in ("anon", "shmem", "file", "hugetlb"):
            raise PerfsimError(f"{origin}:{n}: column 'backing': {backing!r}; allowed: anon, "
                               "shmem, file, hugetlb")
        out.append(Entry(
            op=op, old_addr=addr, old_len=old_len,
            new_len=_int(r.get("new_len"), "new_len", origin, n),
            new_addr=new_addr,
            fixed=bool(flags & 2), maymove=bool(flags & 1), dontunmap=bool(flags & 4),
            backing=backing, at_ns=_int(r.get("time_ns"), "time_ns", origin, n),
            populate=pop, shared=shared, prot=prot, noreserve=noreserve,
            file=file if op == "mmap" and backing != "anon" else None, offset=offset))
    return out


def _populate_of(r: dict, cols, op: str, origin: str, n: int) -> float | None:
    """A row's ``populate``: its own fraction, or None for the stream's; 0.0 for an
    mremap of a CSV without the column (its growths replay unwritten, as before it)."""
    populate = (r.get("populate") or "").strip()
    if populate:
        try:
            pop = float(populate)
        except ValueError:
            pop = -1.0
        if not 0.0 <= pop <= 1.0:
            raise PerfsimError(f"{origin}:{n}: column 'populate': {populate!r}; allowed: "
                               "a fraction 0.0 .. 1.0, or empty (the stream's populate)")
        return pop
    if "populate" in cols or op != "mremap":
        return None  # the stream's
    return 0.0


def write_trace_csv(rows: list[dict], out) -> None:
    w = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in CSV_COLUMNS})


# --------------------------------------------------------------------------- strace
_LINE = re.compile(
    r"^(?:\[pid\s+(?P<pid1>\d+)\]\s+|(?P<pid2>\d+)\s+)?"
    r"(?:(?P<ts>\d+:\d+:\d+(?:\.\d+)?|\d+\.\d+|\d+)\s+)?"
    r"(?P<rest>.*)$")
_NAMES = r"(?P<name>mremap|mmap2?|munmap|brk|ftruncate(?:64)?|mprotect|madvise)"
_CALL = re.compile(r"^" + _NAMES + r"\((?P<args>.*)\)\s*=\s*(?P<ret>.*)$")
_UNFIN = re.compile(r"^" + _NAMES + r"\((?P<args>.*?)\s*<unfinished \.\.\.>$")
_RESUM = re.compile(r"^<\.\.\. " + _NAMES + r" resumed>\s*(?P<args>.*)\)\s*=\s*(?P<ret>.*)$")
_SPENT = re.compile(r"<(?P<s>\d+\.\d+)>\s*$")


RELATIVE_BELOW_NS = 10**17
"""A bare seconds timestamp below this (about three years) is ``-r``'s time since the
previous line; ``-ttt`` prints seconds since 1970."""


def _ts_ns(ts: str | None) -> int | None:
    """Nanoseconds of an strace timestamp (``H:M:S[.frac]`` or seconds ``S[.frac]``),
    exactly: as a float, ``-ttt``'s seconds since 1970 keep only ~0.2 µs."""
    if not ts:
        return None
    if ":" in ts:
        h, m, s = ts.split(":")
        return (int(h) * 3600 + int(m) * 60) * 10**9 + _seconds_ns(s)
    return _seconds_ns(ts)


def _seconds_ns(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10**9 + int((frac + "000000000")[:9])


def _split_args(args: str) -> list[str]:
    """A call's arguments, split at the commas outside brackets (a ``-y`` file
    descriptor's ``<path>`` counts as one: a path may hold commas)."""
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


@dataclass
class StraceStats:
    lines: int = 0
    calls: int = 0
    failed: int = 0
    skipped: int = 0
    untied: int = 0
    """Of ``skipped``: ``ftruncate`` calls without a path (a log recorded without ``-y``)."""
    not_replayed: dict = field(default_factory=dict)
    """Advice of the ``madvise`` calls the replay does not model, and how many of each
    (written to the CSV all the same, but for advice this converter does not know, which
    is left out)."""


def strace_rows(text: str, origin: str = "<strace>", stats: StraceStats | None = None) -> list[dict]:
    """Rows (CSV dicts) from strace output (see module docstring)."""
    stats = stats if stats is not None else StraceStats()
    pending: dict[str, tuple[str, str, int | None]] = {}
    brk_end: int | None = None  # the program break as the last brk() left it
    relative: bool | None = None  # -r timestamps (decided at the first one)
    clock_ns = 0
    rows = []
    t0 = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        stats.lines += 1
        m = _LINE.match(line)
        pid = m.group("pid1") or m.group("pid2") or ""
        ts = _ts_ns(m.group("ts"))
        if ts is not None:
            if relative is None:  # -r prints the time since the previous line, not a clock
                relative = ":" not in m.group("ts") and ts < RELATIVE_BELOW_NS
            if relative:
                clock_ns += ts
                ts = clock_ns
        rest = m.group("rest")
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        u = _UNFIN.match(rest)
        if u:
            pending[pid] = (u.group("name"), u.group("args"), ts)
            continue
        r = _RESUM.match(rest)
        if r:
            if pid not in pending:
                stats.skipped += 1
                continue
            name, head, ts0 = pending.pop(pid)
            name, args, ret, ts, end = name, (head + " " + r.group("args")).strip(), \
                r.group("ret"), ts0, ts
        else:
            c = _CALL.match(rest)
            if not c:
                stats.skipped += 1
                continue
            name, args, ret = c.group("name"), c.group("args"), c.group("ret")
            end = ts
        stats.calls += 1
        ret = ret.strip()
        if ret.startswith("?"):
            stats.skipped += 1
            continue
        a = _split_args(args)
        failed = ret.startswith("-")
        words = ret.split()
        result = words[0] if not failed else "-" + (words[1] if len(words) > 1 else "1")
        if ts is not None and t0 is None:
            t0 = ts
        rel = "" if ts is None else str(ts - t0)
        spent = _SPENT.search(ret)
        if ts is not None and spent:  # -T: the time the call took, from its start
            end = ts + int(round(float(spent["s"]) * 1e9))
        # not CSV columns: who made the call and when it returned (effect_order)
        who = {"_pid": pid, "_end": None if end is None or t0 is None else end - t0, "_line": n}
        try:
            if name == "brk":
                # The heap: brk(NULL) tells where it ends; a brk that moved the break maps
                # (or unmaps) the anonymous range between the old and the new break.
                new = _num(result)
                if failed or new is None:
                    stats.failed += failed
                    continue
                asked = _uncommented(a[0]) if a else "NULL"
                if brk_end is not None and asked in ("NULL", "0") and new != brk_end:
                    # one mm has one break: this is another program's (an exec)
                    raise PerfsimError(
                        f"{origin}:{n}: brk(NULL) returned {hex(new)} but the program break "
                        f"is {hex(brk_end)}: the log is of more than one address space (a "
                        "fork or an exec); record one process, or split the log by process")
                if brk_end is not None and new > brk_end:
                    # (the heap is private anonymous read-write memory: do_brk_flags
                    # maps it VM_DATA_DEFAULT_FLAGS, never VM_SHARED)
                    rows.append({"time_ns": rel, "op": "mmap", "addr": hex(brk_end),
                                 "old_len": new - brk_end, "result": hex(brk_end),
                                 "backing": "anon", "flags": "MAP_PRIVATE|MAP_ANONYMOUS",
                                 "prot": "PROT_READ|PROT_WRITE", **who})
                elif brk_end is not None and new < brk_end:
                    rows.append({"time_ns": rel, "op": "munmap", "addr": hex(new),
                                 "old_len": brk_end - new, "result": "0", **who})
                brk_end = new
            elif name.startswith("ftruncate"):
                # ftruncate(fd, length): with -y the fd shows its file's path, the one
                # thing that ties it to that file's mappings (the fd itself may be a dup
                # of the one mapped: CPython's mmap objects keep their own)
                if failed:
                    stats.failed += 1
                    continue
                _, path = _fd_and_path(a[0])
                if path is None:  # (no -y: which file is not known)
                    stats.skipped += 1
                    stats.untied += 1
                    continue
                rows.append({"time_ns": rel, "op": "truncate", "new_len": int(_uncommented(
                    a[-1]), 0), "result": result, "file": path, **who})
            elif name.startswith("mmap"):
                if failed:
                    stats.failed += 1
                    continue
                names = _map_names(a[3] if len(a) > 3 else "")
                fd, path = _fd_and_path(a[4] if len(a) > 4 else "-1")
                if "MAP_HUGETLB" in names:
                    backing = "hugetlb"
                elif "MAP_ANONYMOUS" in names:
                    backing = "shmem" if _shared(names) else "anon"
                elif fd == -1:
                    backing = "anon"
                elif path == "/dev/zero":  # mmap_zero: shmem_zero_setup when shared
                    backing = "shmem" if _shared(names) else "anon"
                else:  # a file; /dev/shm and memfd files are shmem (tmpfs)
                    shm = path is not None and path.startswith(("/dev/shm/", "/memfd:"))
                    backing = "shmem" if shm else "file"
                file, offset = "", ""
                if backing != "anon":
                    file = path or ""
                    if len(a) > 5:  # (mmap2's last argument is in 4096-byte units)
                        offset = int(_uncommented(a[-1]), 0) * (4096 if name == "mmap2" else 1)
                rows.append({"time_ns": rel, "op": "mmap", "addr": result, "old_len": int(a[1], 0),
                             "result": result, "backing": backing,
                             "flags": "|".join(names), "prot": "|".join(_prot_names(a[2])),
                             "file": file, "offset": offset,
                             "_fixed": "MAP_FIXED" in names, **who})
            elif name == "munmap":
                rows.append({"time_ns": rel, "op": "munmap", "addr": a[0], "old_len": int(a[1], 0),
                             "result": result, **who})
            elif name in ("mprotect", "madvise"):
                # kept when it succeeded, or failed with ENOMEM (the VMAs before the hole
                # it found were changed); any other failure changed nothing
                if failed and result != "-ENOMEM":
                    stats.failed += 1
                    continue
                row = {"time_ns": rel, "op": name, "addr": hex(int(_uncommented(a[0]), 0)),
                       "old_len": int(_uncommented(a[1]), 0), "result": result, **who}
                if name == "mprotect":
                    row["prot"] = "|".join(_prot_names(a[2])) or "PROT_NONE"
                else:
                    try:
                        advice = parse_advice(a[2], origin, n)
                    except PerfsimError:  # advice newer than this table: not written
                        advice = f"{_uncommented(a[2])} (unknown advice)"
                    if advice not in REPLAYED_ADVICE:
                        stats.not_replayed[advice] = stats.not_replayed.get(advice, 0) + 1
                    if advice not in MADV_NUMBERS:
                        continue
                    row["flags"] = advice
                rows.append(row)
                stats.failed += failed
            else:
                flags = _uncommented(a[3] if len(a) > 3 else "0")
                parse_flags(flags, origin, n)
                rows.append({"time_ns": rel, "op": "mremap", "addr": _uncommented(a[0]),
                             "old_len": int(_uncommented(a[1]), 0),
                             "new_len": int(_uncommented(a[2]), 0), "flags": flags,
                             "new_addr": _uncommented(a[4]) if len(a) > 4 else "",
                             "result": result, **who})
                if failed:
                    stats.failed += 1
        except (IndexError, ValueError) as exc:
            raise PerfsimError(
                f"{origin}:{n}: cannot read {name} arguments {args!r}: {exc}") from None
    # a call whose thread never came back (killed mid-call): started, no result
    stats.skipped += len(pending)
    return rows


_COMMENT = re.compile(r"/\*.*?\*/")
_MAP_RAW = {"MAP_SHARED_VALIDATE": 0x03, "MAP_SHARED": 0x01, "MAP_PRIVATE": 0x02,
            "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x20, "MAP_HUGETLB": 0x40000,
            "MAP_FIXED_NOREPLACE": 0x100000, "MAP_NORESERVE": 0x4000}
"""The mmap flag bits a row's replay reads, for a log strace wrote with ``-X raw``."""


def _uncommented(arg: str) -> str:
    """An argument without the ``/* NAME */`` strace -X verbose adds to a number."""
    return _COMMENT.sub("", arg).strip()


_NAME = re.compile(r"\b(MAP|PROT)_[A-Z0-9_]+")
_FD = re.compile(r"^(?P<fd>-?\d+|0x[0-9a-fA-F]+)(?:<(?P<path>.*)>)?$")


def _names(arg: str, bits: dict[str, int]) -> list[str]:
    """The ``MAP_*``/``PROT_*`` names of a flags argument, as strace prints it (names,
    ``-X verbose``: a number with the names in a comment, ``-X raw``: the number alone, whose
    names are those of ``bits`` it has set), in their order, each once."""
    found = [m.group(0) for m in _NAME.finditer(arg)]
    bare = _uncommented(arg)
    if not found and bare[:1].isdigit():
        v = int(bare, 0)
        found = [k for k, b in bits.items() if (v & b == b if b else v == 0)]
    return list(dict.fromkeys(found))


def _map_names(arg: str) -> list[str]:
    """mmap's flags as names (:func:`_names`)."""
    names = _names(arg, _MAP_RAW)
    if "MAP_SHARED_VALIDATE" in names:  # (0x03: both bits)
        names = [n for n in names if n not in ("MAP_SHARED", "MAP_PRIVATE")]
    return names


def _prot_names(arg: str) -> list[str]:
    """mmap's prot as names (:func:`_names`)."""
    return _names(arg, {"PROT_NONE": 0, "PROT_READ": 1, "PROT_WRITE": 2, "PROT_EXEC": 4})


def _shared(names: list[str]) -> bool:
    return "MAP_SHARED" in names or "MAP_SHARED_VALIDATE" in names


def _fd_and_path(arg: str) -> tuple[int, str | None]:
    """A file-descriptor argument: its number (``-1`` for none, also as ``-X raw`` prints
    it) and, with ``strace -y``, the path of its file (else ``None``; without the
    `` (deleted)`` strace adds once the file is unlinked: still the same file)."""
    m = _FD.match(_uncommented(arg))
    if not m:
        raise ValueError(f"not a file descriptor: {arg!r}")
    fd = int(m.group("fd"), 0)
    if fd in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        fd = -1
    path = m.group("path")
    if path is not None and path.endswith(" (deleted)"):
        path = path[:-len(" (deleted)")]  # (the same file, unlinked since it was opened)
    return fd, path


def convert_strace(text: str, out, origin: str = "<strace>") -> StraceStats:
    """Write the CSV trace of strace output ``text`` to the file object ``out``, ordered by
    the calls' start times (a call strace shows as unfinished/resumed starts at the first)."""
    stats = StraceStats()
    rows = strace_rows(text, origin, stats)
    if rows and all(r["time_ns"] != "" for r in rows):
        rows.sort(key=lambda r: int(r["time_ns"]))
        rows = effect_order(rows)
    check_one_address_space(rows, origin)
    write_trace_csv(rows, out)
    return stats


class _Ranges:
    """Disjoint ``[start, end)`` ranges, sorted, each with the log line that mapped it:
    what the log has mapped so far."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int, int]] = []  # (start, end, line)

    def overlap(self, lo: int, hi: int) -> tuple[int, int, int] | None:
        i = bisect.bisect_right(self.spans, (lo, float("inf"), 0)) - 1
        for k in (i, i + 1):
            if 0 <= k < len(self.spans) and self.spans[k][0] < hi and lo < self.spans[k][1]:
                return self.spans[k]
        return None

    def remove(self, lo: int, hi: int) -> None:
        i = max(bisect.bisect_right(self.spans, (lo, float("inf"), 0)) - 1, 0)
        j = bisect.bisect_left(self.spans, (hi, 0, 0))
        pieces = []
        for a, b, line in self.spans[i:j]:
            if b <= lo or a >= hi:
                pieces.append((a, b, line))
                continue
            if a < lo:
                pieces.append((a, lo, line))
            if b > hi:
                pieces.append((hi, b, line))
        self.spans[i:j] = pieces

    def add(self, lo: int, hi: int, line: int) -> None:
        self.remove(lo, hi)
        bisect.insort(self.spans, (lo, hi, line))


def _found_free_and_mapped(r: dict, page: int) -> tuple[tuple | None, list, list]:
    """For one successful row: the range the kernel chose or found free (or None), the
    ranges the row unmaps and those it maps, page-rounded."""
    res = _num(r.get("result", ""))
    old = -(-int(r["old_len"]) // page) * page
    if r["op"] == "munmap":
        addr = int(r["addr"], 0)
        return None, [(addr, addr + old)], []
    if r["op"] == "mmap":
        got = (res, res + old)
        return (None if r.get("_fixed") else got), [], [got]
    addr, new = int(r["addr"], 0), -(-int(r["new_len"]) // page) * page
    flags = parse_flags(_uncommented(str(r.get("flags", ""))))
    if res == addr:  # in place
        if new > old:
            return (addr + old, addr + new), [], [(addr + old, addr + new)]
        return None, [(addr + new, addr + old)] if new < old else [], []
    dst = (res, res + new)
    gone = [] if flags & MREMAP_FLAGS["MREMAP_DONTUNMAP"] else [(addr, addr + old)]
    return (None if flags & MREMAP_FLAGS["MREMAP_FIXED"] else dst), gone, [dst]


def check_one_address_space(rows: list[dict], origin: str, page: int = 4096) -> None:
    """Refuse, in one line, a log whose calls cannot all be of one address space: a range
    the kernel chose or found free (an mmap without MAP_FIXED, a heap growth, a moved
    mremap's destination without MREMAP_FIXED, an in-place growth) that the log still has
    mapped. That is what a log of several processes shows (``strace -f`` of a shell that
    forks and execs programs, with address-space randomisation off), and one replayed mm
    cannot express it."""
    live = _Ranges()
    for r in rows:
        if _num(r.get("result", "")) is None or r["op"] in _MAPS_NOTHING:
            continue  # (a truncation, an mprotect, a madvise map and unmap nothing)
        free, gone, mapped = _found_free_and_mapped(r, page)
        if r["op"] == "mremap":  # a move's own source is not what the check is about
            for lo, hi in gone:
                live.remove(lo, hi)
        hit = live.overlap(*free) if free else None
        if hit is not None:
            raise PerfsimError(
                f"{origin}:{r.get('_line', '?')}: {r['op']} found {hex(free[0])}-{hex(free[1])} "
                f"free, but line {hit[2]} mapped {hex(hit[0])}-{hex(hit[1])} and nothing "
                "unmapped it: the log is of more than one address space (a fork or an "
                "exec); record one process, or split the log by process")
        for lo, hi in gone:
            live.remove(lo, hi)
        for lo, hi in mapped:
            live.add(lo, hi, r.get("_line", 0))


_MAPS_NOTHING = ("truncate", "mprotect", "madvise")


def _num(v) -> int | None:
    t = str(v).strip()
    if t[:2].lower() == "0x" or t.isdigit():
        return int(t, 0)
    return None


def _taken(r: dict) -> tuple[int, int] | None:
    """The range a successful call of row ``r`` made the kernel find free: an mmap's
    mapping, a moved mremap's destination, an in-place growth's added part."""
    res = _num(r.get("result", ""))
    if res is None:
        return None
    if r["op"] == "mmap":
        return res, res + int(r["old_len"])
    if r["op"] == "mremap":
        addr, old, new = int(r["addr"], 0), int(r["old_len"]), int(r["new_len"])
        if res != addr:
            return res, res + new
        if new > old:
            return addr + old, addr + new
    return None


def _freed(r: dict) -> tuple[int, int] | None:
    """The range a successful call of row ``r`` left free: a munmap's range, a moved
    mremap's source (not with MREMAP_DONTUNMAP), a shrink's cut-off tail."""
    res = _num(r.get("result", ""))
    if res is None or r["op"] in _MAPS_NOTHING:
        return None
    addr, old = int(r["addr"], 0), int(r["old_len"])
    if r["op"] == "munmap" and res == 0:
        return addr, addr + old
    if r["op"] == "mremap":
        new = int(r["new_len"])
        if res != addr and "DONTUNMAP" not in str(r.get("flags", "")):
            return addr, addr + old
        if new < old:
            return addr + new, addr + old
    return None


def effect_order(rows: list[dict]) -> list[dict]:
    """``rows`` (in start order) in the order their effects must have taken place.

    strace shows when a call started and when it returned, not when it held ``mmap_lock``.
    Calls of one thread never overlap, so start order is their order. Two threads' calls
    that overlap in time are ordered by the kernel, and the recorded results tell how where
    it matters: a call that found free a range (an mmap's or a moved mremap's destination,
    an in-place growth) which a concurrent call of another thread, started later, freed
    (a munmap, a moved source, a shrink) ran after that call. Such a call is placed right
    after it (with that thread's calls before it, so no thread's calls change order);
    every other call stays at its start time."""
    out = list(rows)
    budget = len(out)  # moves allowed: a pair that each freed what the other took stops
    i = 0
    while i < len(out):
        r = out[i]
        want, end = _taken(r), r.get("_end")
        j = None
        if want is not None and end is not None and budget > 0:
            for k in range(i + 1, len(out)):
                q = out[k]
                if int(q["time_ns"]) > end:
                    break
                if q.get("_pid") == r.get("_pid"):
                    continue
                got = _freed(q)
                if got and got[0] < want[1] and want[0] < got[1]:
                    j = k
                    break
        if j is None:
            i += 1
            continue
        # q goes before r with the calls its thread made since r started (in their order):
        # a thread's calls never change order. The moved calls are looked at next.
        pid = out[j].get("_pid")
        block = [x for x in out[i + 1:j + 1] if x.get("_pid") == pid]
        rest = [x for x in out[i + 1:j + 1] if x.get("_pid") != pid]
        out[i:j + 1] = block + [r] + rest
        budget -= 1
    return out


def strace_to_entries(text: str, origin: str = "<strace>") -> list[Entry]:
    buf = io.StringIO()
    convert_strace(text, buf, origin)
    return parse_trace_csv(buf.getvalue(), origin)
