"""A recorded ground-truth call as a ``perfsim plan`` request file (issue 10 item 7).

:func:`request_toml` turns one probe record (:mod:`perfsim.groundtruth.records`) into the
text of a request file: one ``[[vma]]`` table for every user VMA the probe saw in
``/proc/self/maps`` before the call (backing, protection, file and page offset read as
:func:`perfsim.groundtruth.model.vma_of` reads them), the call's keys, the kernel profile,
the platform and the number of CPUs. Each VMA's population is said in the request
vocabulary, chosen by :func:`population_of` from the present pages the probe recorded:
``touched = false``, ``"full"``, ``"first:SIZE"`` or ``"every:K"``.

The probe records present pages only for the VMAs in a window of PMDs around the source
and the destination; the other VMAs get ``populate = "none"`` (nothing recorded, nothing
assumed). :func:`fidelity` checks the result against the exact rebuild of
:func:`perfsim.groundtruth.model.space_for_record`: ``exact`` (the same VMAs and the same
page tables everywhere), ``call-pmds`` (the same in every PMD the source and destination
ranges touch, which is all the call reads or writes; a library VMA further away has a
present-page set no loop makes) or ``inexact`` (the request cannot say it: the test falls
back to the exact construction). The file's comment header says which, and why.

Everything here is a pure function of the record; the text is the same byte for byte
whenever it is regenerated (``perfsim groundtruth --requests DIR RECORDS.jsonl``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from perfsim.groundtruth.model import destination, kernel_picks, space_for_record, vma_of
from perfsim.host.model import PHASES
from perfsim.planner.unmapped_area import x86_mmap_base
from perfsim.profiles import load_arch
from perfsim.units import fmt_size

PAGE_SHIFT = 12
"""The probe measures x86-64 kernels: 4 KiB pages, 2 MiB PMDs."""
PMD_SHIFT = 21
FIDELITY = ("exact", "call-pmds", "inexact")


@dataclass(frozen=True)
class Choice:
    """How one VMA's population is written: ``key``/``value`` (``populate`` or
    ``touched``), and ``how`` it matches the recorded pages: ``exact``, ``window`` (exact
    inside the recorded window, pages assumed beyond it), ``approx`` (the closest pattern;
    ``note`` says what differs) or ``unrecorded``."""

    key: str
    value: str | bool
    how: str
    note: str = ""


def safe_name(case_id: str) -> str:
    """A case id as a file name: runs of anything but letters, digits, ``.`` and ``-``
    become one ``_`` (``ordinary-4K-4K/64M/1t`` -> ``ordinary-4K-4K_64M_1t``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", case_id).strip("_") or "case"


def file_names(records: list[dict]) -> list[str]:
    """One ``.toml`` name per record, from its id; an id recorded more than once (two
    platforms, repetitions) gets the platform and then the repetition appended."""
    def base(r: dict, level: int) -> str:
        parts = [r["id"]] + ([r.get("platform", "")] if level >= 1 else []) + \
            ([f"rep{r.get('rep', 0)}"] if level >= 2 else [])
        return safe_name("/".join(str(p) for p in parts))

    names = [base(r, 0) for r in records]
    for level in (1, 2):
        dup = {n for n in names if names.count(n) > 1}
        names = [base(r, level) if n in dup else n for r, n in zip(records, names)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return [f"{n}.toml" for n in out]


def _pages(intervals: Iterable, start: int) -> set[int]:
    out: set[int] = set()
    for lo, hi in intervals:
        out.update(range((int(lo) - start) >> PAGE_SHIFT, (int(hi) - start) >> PAGE_SHIFT))
    return out


def _candidates(present: list[int], npages: int) -> list[tuple[str, range]]:
    """Population texts worth trying, simplest first, with the pages each touches."""
    out: list[tuple[str, range]] = [("full", range(npages))]
    if present:
        last = present[-1] + 1
        if last < npages:
            out.append((f"first:{fmt_size(last << PAGE_SHIFT)}", range(last)))
        if present[0] == 0 and len(present) > 1:
            k = present[1]
            out.append((f"every:{k}", range(0, npages, k)))
    return out


def population_of(v: dict) -> Choice:
    """The request vocabulary's word for the pages the probe found present in VMA ``v``:
    within the recorded window (``present_window``) the pattern must give exactly the
    recorded pages; a pattern that also gives nothing outside the window is preferred."""
    if "present" not in v:
        return Choice("populate", "none", "unrecorded",
                      "pages not recorded (outside the probe's window)")
    start, end = int(v["start"]), int(v["end"])
    npages = (end - start) >> PAGE_SHIFT
    win = v.get("present_window") or [start, end]
    wlo, whi = (int(win[0]) - start) >> PAGE_SHIFT, (int(win[1]) - start) >> PAGE_SHIFT
    whole_window = (wlo, whi) == (0, npages)
    present = sorted(_pages(v["present"], start))
    pset = set(present)
    if not present:
        if whole_window:
            return Choice("touched", False, "exact")
        return Choice("populate", "none", "exact",
                      f"no page present in the recorded window {_span(v, wlo, whi)}")
    best: tuple | None = None
    for text, pages in _candidates(present, npages):
        inside = {p for p in pages if wlo <= p < whi}
        outside = len(pages) - len(inside)
        miss = len(inside ^ pset)
        rank = (miss, outside > 0)
        if best is None or rank < best[0]:
            best = (rank, text, outside, inside)
    (miss, beyond), text, outside, inside = best
    if miss:
        extra, lost = len(inside - pset), len(pset - inside)
        return Choice("populate", text, "approx",
                      f"recorded pages {_ranges(present)} of {npages} are no loop pattern; "
                      f"{text} gives {extra} more and {lost} fewer")
    if beyond:
        return Choice("populate", text, "window",
                      f"exact in the recorded window {_span(v, wlo, whi)}; {outside} pages "
                      "beyond it assumed")
    return Choice("populate", text, "exact")


def _span(v: dict, lo: int, hi: int) -> str:
    return f"pages {lo}-{hi - 1}" if hi > lo else "(empty)"


def _ranges(pages: list[int], limit: int = 4) -> str:
    runs: list[list[int]] = []
    for p in pages:
        if runs and runs[-1][1] + 1 == p:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    txt = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    return ",".join(txt) + (",..." if len(runs) > limit else "")


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def user_vmas(rec: dict, user_va_top: int = 1 << 47) -> list[dict]:
    """The record's VMAs below TASK_SIZE ([vsyscall] is above it), as the model takes them."""
    return [v for v in rec["vmas"] if int(v["end"]) <= user_va_top]


def call_slots(rec: dict) -> set[int]:
    """The PMD slots the source and destination ranges touch."""
    size = int(rec["size"])
    new_size = int(rec.get("new_size") or size)
    out: set[int] = set()
    for addr, n in ((int(rec["src"]), size), (destination(rec), new_size)):
        if n:
            out.update(range(addr >> PMD_SHIFT, ((addr + n - 1) >> PMD_SHIFT) + 1))
    return out


def call_keys(rec: dict) -> list[tuple[str, str]]:
    """The top-level keys: the target and the call (the record's ``src``, ``size``,
    ``new_size`` and ``dst`` as the request's ``old_addr``, ``old_len``, ``new_len`` and
    ``new_addr``), as TOML ``key = value`` pairs."""
    size = int(rec["size"])
    new_size = int(rec.get("new_size") or size)
    keys = [("description", _toml_str(f"ground truth: {rec['id']} on {rec['kernel']} "
                                      f"({rec['platform']})")),
            ("arch", '"x86_64"'), ("kernel", _toml_str(str(rec["kernel_version"]))),
            ("platform", _toml_str(str(rec["platform"]))), ("cpus", str(int(rec["threads"]))),
            ("old_addr", f"{int(rec['src']):#x}"), ("old_len", _toml_str(fmt_size(size)))]
    if new_size != size:
        keys.append(("new_len", _toml_str(fmt_size(new_size))))
    if kernel_picks(rec) and not rec.get("randomized", True):
        # the kernel chose the destination: no address, the process's mmap_base instead
        base = x86_mmap_base(load_arch("x86_64").user_va_top, int(rec["stack_rlimit"]))
        keys += [("maymove", "true"), ("fixed", "false"),
                 ("dontunmap", "true" if rec["flags"] == "dontunmap-any" else "false"),
                 ("mmap_base", f'"{base:#x}"')]
        return keys
    keys += [("new_addr", f"{destination(rec):#x}"), ("maymove", "true"), ("fixed", "true"),
             ("dontunmap", "true" if rec.get("flags") == "dontunmap" else "false")]
    return keys


def vma_table(v: dict, rec: dict, *, thp_off: bool = False) -> tuple[list[str], Choice]:
    """One ``[[vma]]`` table (its lines, a comment first) and its population choice.
    ``thp_off``: the call asked for THP (``MADV_HUGEPAGE``) but the kernel mapped no PMD
    of this VMA huge, so the table says ``thp = false`` (and why)."""
    m = vma_of(v, rec, PAGE_SHIFT)
    choice = population_of(v)
    thp = m.thp and not thp_off
    if m.thp and thp_off:
        choice = Choice(choice.key, choice.value, choice.how, "; ".join(filter(None, [
            choice.note, f"MADV_HUGEPAGE, but smaps shows {int(v.get('huge_kb', 0))} kB "
            "PMD-mapped (THP off for this backing on that kernel): thp = false"])))
    start, end = int(v["start"]), int(v["end"])
    what = v.get("path") or "anonymous"
    role = ""
    if start == int(rec["src"]):
        role = "the source; "
    elif start == int(rec.get("guard_src_addr") or -1):
        role = f"guard below the source ({rec.get('guard_src')}); "
    elif start == int(rec.get("guard_dst_addr") or -1):
        role = f"guard below the destination ({rec.get('guard_dst')}); "
    elif start == destination(rec):
        role = f"the destination ({rec.get('dst_mode')}); "
    lines = [f"# {role}{what} {v['perms']} offset {int(v.get('offset', 0)):#x}"
             + (f"; {choice.note}" if choice.note else ""),
             "[[vma]]", f"start = {start:#x}", f"size = {_toml_str(fmt_size(end - start))}",
             f"backing = {_toml_str(m.backing)}", f"prot = {_toml_str(m.prot)}"]
    if m.backing != "anon":
        lines.append(f"file = {_toml_str(m.file_id or '')}")
        lines.append(f"pgoff = {m.pgoff}")
        if not m.shared:
            lines.append("shared = false")
    if m.thp:
        lines.append(f"thp = {'true' if thp else 'false'}")
    if choice.key == "touched":
        lines.append(f"touched = {'true' if choice.value else 'false'}")
    else:
        lines.append(f"populate = {_toml_str(str(choice.value))}")
    return lines, choice


def measured_lines(rec: dict) -> list[str]:
    sm = rec.get("summary") or {}
    out = [f"# Measured: whole call {int(sm.get('flush_calls', 0))} flush calls, "
           f"{int(sm.get('full_flushes', 0))} full flushes, {int(sm.get('ipi_rounds', 0))} "
           f"IPI rounds; errno {int(rec.get('errno', 0))}."]
    if rec.get("phases_known"):
        by = rec.get("summary_by_phase") or {}
        parts = [f"{ph} {int((by.get(ph) or {}).get('flush_calls', 0))}/"
                 f"{int((by.get(ph) or {}).get('full_flushes', 0))}" for ph in PHASES]
        out.append("# Per phase (flush calls/full flushes): " + ", ".join(parts) + ".")
    else:
        out.append("# The trace did not mark the phases: whole-call counts only.")
    return out


def request_toml(rec: dict, *, records_name: str, line: int) -> str:
    """The request file for record ``rec`` (line ``line`` of ``records_name``)."""
    from perfsim.profiles import resolve_target

    target = resolve_target(str(rec["kernel_version"])).with_changes(platform=rec["platform"])
    text_body = _body(rec, target, thp_off=False)
    fid, why = fidelity(rec, text_body, target)
    if fid == "inexact" and _thp_unmapped(rec):
        text_body = _body(rec, target, thp_off=True)
        fid, why = fidelity(rec, text_body, target)
    stem = records_name.removesuffix(".jsonl")
    head = [
        "# A recorded mremap() call as a perfsim plan request (issue 10 item 7). Generated, do",
        "# not edit: perfsim groundtruth --requests tests/data/groundtruth/requests/"
        f"{stem} tests/data/groundtruth/{records_name}",
        f"# Record: {records_name} line {line}, id {rec['id']!r}",
        f"# Kernel: {rec['kernel']} ({rec['platform']}, {rec.get('source')}), "
        f"{int(rec['threads'])} thread(s); layout {rec.get('layout')}.",
        *measured_lines(rec),
        f"# Population: {fid}: {why}",
        "#   perfsim plan --file THIS_FILE --json",
    ]
    return "\n".join(head) + "\n" + text_body


def _body(rec: dict, target, *, thp_off: bool) -> str:
    tables = []
    for v in user_vmas(rec, target.arch.user_va_top):
        off = thp_off and int(v["start"]) == int(rec["src"])
        tables.append("\n".join(vma_table(v, rec, thp_off=off)[0]))
    return "\n".join(f"{k} = {val}" for k, val in call_keys(rec)) + "\n\n" + \
        "\n\n".join(tables) + "\n"


def _thp_unmapped(rec: dict) -> bool:
    """The call asked for THP on the source, and the kernel mapped none of it huge."""
    src = next((v for v in rec["vmas"] if int(v["start"]) == int(rec["src"])), {})
    return rec.get("thp") == "on" and int(src.get("huge_kb", 0)) == 0


def fidelity_of(text: str) -> str:
    """The fidelity a generated file states in its header (``exact``, ``call-pmds`` or
    ``inexact``)."""
    m = re.search(r"^# Population: ([a-z-]+):", text, re.M)
    return m[1] if m else ""


def fidelity(rec: dict, body: str, target) -> tuple[str, str]:
    """``(fidelity, why)``: the request ``body`` resolved as ``perfsim plan`` resolves it,
    held against the exact rebuild of the record (VMAs: start, end, backing, protection,
    page offset; page tables: every PMD entry)."""
    from perfsim.planner.request import labeller, resolve
    from perfsim.request_file import DEFAULTS, parse_request

    if int(rec.get("truncate", -1)) >= 0:
        return "inexact", ("the call follows an ftruncate of the source's file, which a "
                           "request cannot say (the test uses the exact rebuild)")
    req = parse_request(body, "<generated>").given()
    values = dict(DEFAULTS, **req)
    origin = {k: ("<generated>" if k in req else "default") for k in DEFAULTS}
    got = resolve(values, origin, labeller(origin)).space
    want, _ = space_for_record(rec, target)

    def shape(space):  # Vma.thp only steers population, which the page tables show
        return [(v.start, v.end, v.backing, v.prot, v.pgoff) for v in space.vmas]

    if shape(got) != shape(want):
        return "inexact", "the VMAs differ from the recorded ones"
    slots = set(got.pt.pmd_idx.tolist()) | set(want.pt.pmd_idx.tolist())
    differ = {s for s in slots if got.pt.pmd_entry(s) != want.pt.pmd_entry(s)}
    unrecorded = sum("present" not in v for v in user_vmas(rec, target.arch.user_va_top))
    tail = (f"; {unrecorded} VMAs outside the probe's window have no recorded pages "
            "(populate = \"none\")" if unrecorded else "")
    if not differ:
        return "exact", "every recorded VMA and present page, in the request vocabulary" + tail
    bad = differ & call_slots(rec)
    if bad:
        return "inexact", (f"{len(bad)} PMD(s) the call touches differ from the recorded "
                           "pages (the test uses the exact rebuild)")
    n = len(differ)
    return "call-pmds", (f"exact in every PMD the call touches; {n} PMD{'s' * (n != 1)} "
                         f"elsewhere differ{'s' * (n == 1)} (see the VMA comments)" + tail)

