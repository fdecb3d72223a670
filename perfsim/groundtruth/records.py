"""The probe's output, turned into one JSON record per measured mremap() call.

The probe prints, per call, its ``@@REC`` line (the case, the addresses, the VMAs and
present pages before the call, the return value) followed by the raw lines of the tracefs
``trace`` file recorded around the call. The trace is read with
:func:`perfsim.host.trace.parse_trace` and :func:`~perfsim.host.trace.extract_call`, so the
flushes are counted and split into phases exactly as :mod:`perfsim.host` counts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace

from perfsim.errors import PerfsimError
from perfsim.groundtruth.model import destination
from perfsim.host.syscalls import SYS_mremap
from perfsim.host.trace import (
    _ENTER_RE,
    _EXIT_RE,
    _LINE_RE,
    _MA_RE,
    RawEvent,
    extract_call,
    parse_trace,
)

BEGIN = "@@PERFSIM-GRID-BEGIN"
END = "@@PERFSIM-GRID-END"
CASE_BEGIN = "@@PERFSIM-CASE-BEGIN"
CASE_END = "@@PERFSIM-CASE-END"
REC = "@@REC "
ERROR = "@@PERFSIM-ERROR"
NOTRACE = "@@PERFSIM-NOTRACE"

#: the fields every stored record has (the rest are optional)
SUMMARY_KEYS = ("flush_calls", "full_flushes", "ipi_rounds")


class ProbeOutputError(PerfsimError):
    """The probe's output is cut short or malformed."""


def _strip_console(line: str) -> str:
    # A serial console ends lines with CR LF; the kernel may prefix nothing else as long as
    # it prints at a quiet log level.
    return line.rstrip("\r\n").rstrip("\r")


def parse_probe_output(lines: Iterable[str], *, platform: str, source: str) -> tuple[dict, list[dict]]:
    """``(grid header, records)`` from the probe's stdout (or a console log holding it).

    ``platform`` (``bare-metal`` or ``kvm-guest``) and ``source`` (``native`` or
    ``qemu-tcg``) are stored in every record."""
    header: dict | None = None
    records: list[dict] = []
    cur: dict | None = None
    trace: list[str] = []
    ended = False
    notrace = None
    for raw in lines:
        line = _strip_console(raw)
        pos = line.find("@@PERFSIM")
        if pos > 0:  # console noise before the marker on the same line
            line = line[pos:]
        if line.startswith(BEGIN):
            header = json.loads(line[len(BEGIN):].strip())
            continue
        if header is None:
            continue
        if line.startswith(ERROR):
            raise ProbeOutputError(f"probe failed: {line[len(ERROR):].strip()}")
        if line.startswith(NOTRACE):
            notrace = line[len(NOTRACE):].strip()
        elif line.startswith(CASE_BEGIN):
            cur, trace = {}, []
        elif line.startswith(REC) and cur is not None:
            cur = json.loads(line[len(REC):])
        elif line.startswith(CASE_END) and cur is not None:
            records.append(finish_record(cur, trace, header, platform=platform, source=source,
                                         notrace=notrace))
            cur = None
        elif line.startswith(END):
            ended = True
            break
        elif cur is not None:
            trace.append(line)
    if header is None:
        raise ProbeOutputError("probe output has no grid header (did the probe start?)")
    if not ended:
        raise ProbeOutputError(f"probe output ends after {len(records)} calls without the "
                               "grid's end marker")
    return header, records


def finish_record(rec: dict, trace_lines: list[str], header: dict, *, platform: str,
                  source: str, notrace: str | None) -> dict:
    """Add the counts of the trace to the probe's record."""
    out = dict(rec)
    out["kernel"] = header["release"]
    out["kernel_version"] = kernel_version(header["release"])
    out["ncpus"] = header.get("ncpus")
    # (headers before 2026-12-03 have no randomized/stack_rlimit; thp_shmem_enabled was not
    # copied into the records before then)
    for key in ("randomized", "stack_rlimit", "thp_shmem_enabled"):
        if key in header:
            out[key] = header[key]
    out["platform"] = platform
    out["source"] = source
    if notrace is not None:
        out.update(traced=False, trace_skipped=notrace)
        return out
    peers = {int(rec["tid"])} | ({int(rec["spinner_tid"])} if rec.get("spinner_tid") else set())
    new_len = int(rec.get("new_size") or rec["size"])
    raw = without_detach_tree_stores(parse_trace("\n".join(trace_lines)), int(rec["tid"]),
                                     destination(rec), new_len)
    res = extract_call(raw, int(rec["tid"]), peers)
    out["traced"] = res.available
    if not res.available:
        out["trace_skipped"] = res.skipped
        return out
    out["summary"] = res.summary()
    out["summary_by_phase"] = res.summary_by_phase()
    out["phases_known"] = res.phases_known
    out["counts"] = res.counts_by_reason()
    out["kernel_us"] = res.kernel_us
    out["foreign_events"] = res.foreign_events
    out["need_resched_flushes"] = need_resched_flushes(trace_lines, int(rec["tid"]))
    sm = out["summary"]
    out["ipi_coverage"] = (round(sm["ipi_rounds"] / sm["flush_calls"], 4)
                           if sm["flush_calls"] else None)
    return out


#: the trace's need-resched column with TIF_NEED_RESCHED set (``N``: and PREEMPT_NEED_RESCHED;
#: ``n``: alone; ``B``/``b``: the same with TIF_NEED_RESCHED_LAZY, 6.13+)
NEED_RESCHED_MARKS = frozenset("NnBb")


def need_resched_flushes(trace_lines: list[str], tid: int) -> int:
    """The ``tlb_flush`` events of thread ``tid`` inside its first mremap() that the trace
    shows with TIF_NEED_RESCHED set (the second character of the flags column). A zap that
    sees ``need_resched()`` leaves its PTE table midway (``zap_pte_range``) and, with dirty
    shared PTEs gathered, flushes them then, with the flag still set: each such break is one
    flush more than the plan (docs/kernel-rules.md, *mmu_gather zap flushes*)."""
    inside, n = False, 0
    for line in trace_lines:
        m = _LINE_RE.match(line)
        if not m or int(m["pid"]) != tid:
            continue
        ev = m["event"]
        if not inside:
            e = _ENTER_RE.match(m["rest"]) if ev == "sys_enter" else None
            inside = bool(e and int(e["nr"]) == SYS_mremap)
        elif ev == "sys_exit":
            e = _EXIT_RE.match(m["rest"])
            if e and int(e["nr"]) == SYS_mremap:
                break
        elif ev == "tlb_flush" and len(m["flags"] or "") > 1 \
                and m["flags"][1] in NEED_RESCHED_MARKS:
            n += 1
    return n


def without_detach_tree_stores(raw: list[RawEvent], tid: int, new_addr: int,
                               new_len: int) -> list[RawEvent]:
    """The events without 6.1's stores into the detached-VMA tree over the destination.

    6.1's ``do_mas_align_munmap`` first stores each VMA it unmaps in a maple tree of its own
    (``mas_detach``) and then stores NULL over it in the mm's tree. ``ma_write`` does not
    say which tree it writes, so when MREMAP_FIXED unmaps a mapping at exactly
    ``[new_addr, new_addr + new_len)`` the detached copy looks like ``copy_vma``'s insert of
    the new VMA, which is where :func:`perfsim.host.trace.extract_call` starts the ``move``
    phase (the destination's unmap would be counted in it). Such a store is a non-NULL one
    of that range whose next ``ma_write`` (same thread) is a NULL store of the same range;
    6.12 and later do not trace the detached tree's stores. Recorded under QEMU TCG on
    6.1.0-50 (the ``written`` cases of the ``zap`` grid)."""
    writes = [e for e in raw if e.event == "ma_write" and e.pid == tid]
    drop = set()
    want = (new_addr, new_addr + new_len - 1)
    for a, b in zip(writes, writes[1:]):
        ma, mb = _MA_RE.search(a.rest), _MA_RE.search(b.rest)
        if not (ma and mb):
            continue
        if ((int(ma["lo"]), int(ma["hi"])) == want == (int(mb["lo"]), int(mb["hi"]))
                and not _null(ma["val"]) and _null(mb["val"])):
            drop.add(a.idx)
    if not drop:
        return raw
    return [replace(e, idx=i) for i, e in enumerate(e for e in raw if e.idx not in drop)]


def _null(val: str) -> bool:
    return set(val) <= {"0"} or val == "(null)"


def kernel_version(release: str) -> str:
    """``"6.12.38+deb13-amd64"`` -> ``"6.12"``."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise PerfsimError(f"kernel release {release!r} has no MAJOR.MINOR")
    return f"{m[1]}.{m[2]}"


def whole_call(rec: dict) -> dict:
    """Whole-call flush calls, full flushes and IPI rounds of a traced record."""
    sm = rec.get("summary") or {}
    return {k: int(sm.get(k, 0)) for k in SUMMARY_KEYS}


def by_phase(rec: dict) -> dict:
    from perfsim.host.model import PHASES

    by = rec.get("summary_by_phase") or {}
    return {ph: {k: int((by.get(ph) or {}).get(k, 0)) for k in SUMMARY_KEYS}
            for ph in PHASES}


def read_jsonl(path) -> list[dict]:
    from perfsim.errors import read_text

    out = []
    for n, line in enumerate(read_text(path, "ground-truth records").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PerfsimError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise PerfsimError(f"{path}:{n}: not a ground-truth call record (no 'id'); "
                               "perfsim groundtruth --out writes one record per call")
        out.append(rec)
    return out


def write_jsonl(path, records: list[dict]) -> None:
    """Write atomically (a temp file renamed into place; on a failure, or a destination that
    is full or refused, nothing is left and the error is one line:
    :func:`perfsim.atomic.write_file_atomically`)."""
    from pathlib import Path

    from perfsim.atomic import write_file_atomically

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r, sort_keys=True) + "\n")

    write_file_atomically(Path(path), write)
