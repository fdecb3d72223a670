"""Explanations of results that look wrong, written next to the figure or table that shows
them and computed from the data and the planner, never typed in.

Each function looks for one pattern in a study's results (a latency that falls as the move
grows, a blocked move cheaper than a realignable one, a shmem THP move cheaper than a plain
one), re-plans the calls involved with :func:`perfsim.report.shapes.plan_call` to read what
the kernel does differently, and returns the sentence (or nothing, when the pattern is
absent). The kernel reasons they name are in ``docs/kernel-rules.md``.
"""

from __future__ import annotations

from perfsim.report.runner import StudyResults
from perfsim.report.shapes import plan_call, target_for
from perfsim.report.tables import _primary, _profile_name, _ref_size, fmt_ns
from perfsim.units import fmt_size


def _sz(n) -> str:
    return fmt_size(int(n)).replace(" ", "")


def _list(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _drop_reason(r: StudyResults, kernel: str, cls: str, a: int, b: int, backing: str,
                 thp: bool) -> tuple[str, str] | None:
    """Why a ``b``-byte move of ``cls`` costs less than an ``a``-byte one: (kind, text)."""
    t = target_for(kernel, r.study.arch)
    pa = plan_call(t, cls, a, backing=backing, thp=thp, populate=r.study.calls.populate)
    pb = plan_call(t, cls, b, backing=backing, thp=thp, populate=r.study.calls.populate)
    ma, mb = pa.move, pb.move
    if mb.pud_moves > ma.pud_moves:
        return ("pud", f"at {_sz(b)} both ends sit on 1 GiB boundaries and the whole range is "
                       f"{mb.pud_moves} PUD move{'s' * (mb.pud_moves != 1)} "
                       f"(move_normal_pud), where {_sz(a)} needed {ma.pmd_moves:,} PMD moves, "
                       "one flush each")
    if mb.pmd_moves > ma.pmd_moves and mb.ptes_moved < ma.ptes_moved:
        what = "realigned, " if pb.realigned and not pa.realigned else ""
        return ("pmd", f"at {_sz(b)} the range covers a whole PMD, so {what}"
                       f"{mb.pmd_moves:,} PMD move{'s' * (mb.pmd_moves != 1)} "
                       f"(move_normal_pmd: one entry, one flush) replace{'s' * (mb.pmd_moves == 1)}"
                       f" the {ma.ptes_moved:,} PTE copies of {_sz(a)}")
    if mb.tlb_full_flushes > ma.tlb_full_flushes and \
            mb.tlb_pages_invalidated < ma.tlb_pages_invalidated:
        tlb = t.arch.tlb
        ceiling = getattr(tlb, "single_page_flush_ceiling", None)
        where = (f" (x86 tlb_single_page_flush_ceiling = {ceiling})"
                 if ceiling is not None else "")
        return ("ceiling", f"the {_sz(a)} move's flush invalidates {ma.tlb_pages_invalidated:,} "
                           f"pages one by one (INVLPG), while at {_sz(b)} the extent passes the "
                           f"flush ceiling{where} and flush_tlb_mm_range does one full flush "
                           "instead, which the mremap caller pays less for (the TLB refill it "
                           "causes is paid later by user code and is not modelled)")
    return None


def latency_drops(r: StudyResults) -> list[str]:
    """Every place in the latency figure where a larger move is cheaper, with the reason."""
    s = r.study
    p = _primary(r)
    backing = s.calls.backings[0]
    thp = False if False in s.calls.thp else s.calls.thp[0]
    found: dict[tuple, dict] = {}
    for k in (s.new, s.baseline):
        for cls in s.calls.classes:
            g = p[(p["kernel"] == k) & (p["class"] == cls)].sort_values("size")
            sizes, lat = g["size"].tolist(), g["latency_ns"].tolist()
            for i in range(1, len(sizes)):
                if lat[i] < lat[i - 1]:
                    why = _drop_reason(r, k, cls, sizes[i - 1], sizes[i], backing, thp)
                    if why is None:
                        continue
                    key = (sizes[i - 1], sizes[i], why[0])
                    e = found.setdefault(key, {"classes": [], "text": why[1], "example": None})
                    label = f"{cls} on {k}"
                    if label not in e["classes"]:
                        e["classes"].append(label)
                    if e["example"] is None:
                        e["example"] = (label, lat[i - 1], lat[i])
    out = []
    prof = _profile_name(r, s.cost_profiles[0])
    for (a, b, _kind), e in sorted(found.items()):
        lab, la, lb = e["example"]
        out.append(f"Why a {_sz(b)} move is cheaper than a {_sz(a)} one "
                   f"({_who(e['classes'], s)}; e.g. {lab}, {prof}: {fmt_ns(la)} → "
                   f"{fmt_ns(lb)}): {e['text']}.")
    return out


def _who(labels: list[str], s) -> str:
    """'pud and pmd on both kernels', 'every class on 6.18', ..."""
    per: dict[str, list[str]] = {}
    for lab in labels:
        cls, k = lab.split(" on ")
        per.setdefault(k, []).append(cls)

    def classes(cs):
        return "every class" if set(cs) == set(s.calls.classes) else _list(cs)

    if len(per) == 2 and sorted(per[s.new]) == sorted(per[s.baseline]):
        return f"{classes(per[s.new])}, on both kernels"
    return "; ".join(f"{classes(cs)} on {k}" for k, cs in per.items())


def blocked_cheaper(r: StudyResults) -> list[str]:
    """Blocked moves below realignable ones: the guard VMA keeps the source's page tables."""
    s = r.study
    if not {"blocked", "realignable"} <= set(s.calls.classes):
        return []
    p = _primary(r)
    k = s.new
    bl = p[(p["kernel"] == k) & (p["class"] == "blocked")].set_index("size")
    re_ = p[(p["kernel"] == k) & (p["class"] == "realignable")].set_index("size")
    sizes = [z for z in sorted(bl.index.intersection(re_.index))
             if bl.loc[z, "latency_ns"] < re_.loc[z, "latency_ns"]]
    if not sizes:
        return []
    z = sizes[0]
    t = target_for(k, s.arch)
    pr = plan_call(t, "realignable", z, backing=s.calls.backings[0],
                   populate=s.calls.populate)
    pb = plan_call(t, "blocked", z, backing=s.calls.backings[0], populate=s.calls.populate,
                   thp=False)
    if pr.realigned:
        return []
    run = _runs(sizes, sorted(bl.index))
    return [f"Why blocked is cheaper than realignable at {run} ({k}, e.g. {_sz(z)}: "
            f"{fmt_ns(bl.loc[z, 'latency_ns'])} vs {fmt_ns(re_.loc[z, 'latency_ns'])}): a move "
            "that ends before the next PMD boundary is not realigned (rule R4a), so both copy "
            f"the same {pr.move.ptes_moved:,} PTE{'s' * (pr.move.ptes_moved != 1)}; the "
            "difference is the source unmap. "
            "free_pgtables frees a page-table page only if no VMA is left in its span, and the "
            "one-page VMA below the blocked source keeps its PTE table (and the PMD table above "
            f"it): the whole call frees {pb.syscall.tables_freed} page-table pages with "
            f"{pb.syscall.tlb_flushes} TLB flush{'es' * (pb.syscall.tlb_flushes != 1)}, "
            f"against {pr.syscall.tables_freed} with {pr.syscall.tlb_flushes} for realignable."]


def _runs(hits: list[int], all_sizes: list[int]) -> str:
    """``4K–1M`` for a contiguous run of sizes, else a list."""
    idx = [all_sizes.index(h) for h in hits]
    if idx == list(range(idx[0], idx[0] + len(idx))) and len(idx) > 1:
        return f"{_sz(hits[0])}–{_sz(hits[-1])}"
    return _list([_sz(h) for h in hits])


def thp_cheaper(r: StudyResults) -> list[str]:
    """A THP column cheaper than the same backing without THP, with the reason."""
    s = r.study
    if True not in s.calls.thp or False not in s.calls.thp:
        return []
    c = r.calls
    size = _ref_size(r)
    prof = _profile_name(r, s.cost_profiles[0])
    sub = c[(c["kernel"] == s.new) & (c["size"] == size) & (c["cost_profile"] == prof)
            & (c["threads"] == s.calls.threads[0])]
    out = []
    t = target_for(s.new, s.arch)
    for b in s.calls.backings:
        for cls in s.calls.classes:
            on = sub[(sub["backing"] == b) & (sub["thp"]) & (sub["class"] == cls)]
            off = sub[(sub["backing"] == b) & (~sub["thp"]) & (sub["class"] == cls)]
            if not len(on) or not len(off):
                continue
            lon, loff = int(on.iloc[0]["latency_ns"]), int(off.iloc[0]["latency_ns"])
            if lon >= loff:
                continue
            pon = plan_call(t, cls, size, backing=b, thp=True, populate=s.calls.populate)
            poff = plan_call(t, cls, size, backing=b, thp=False, populate=s.calls.populate)
            if pon.move.thp_splits == 0:
                continue
            anon = b == "anon"
            text = (f"Why {b} with THP is cheaper than without for {cls} at {_sz(size)} "
                    f"({fmt_ns(lon)} vs {fmt_ns(loff)}): the huge PMDs cannot move whole (the "
                    f"move is not PMD-aligned on both sides), so split_huge_pmd runs "
                    f"{pon.move.thp_splits:,} times; ")
            if anon:
                text += "for anonymous memory a split writes a PTE table of the same pages. "
            else:
                text += ("for a shmem or file THP it writes no PTE table at all, it only clears "
                         "the PMD and the pages refault on their next access. ")
            text += (f"The move then copies {pon.move.ptes_moved:,} PTEs instead of "
                     f"{poff.move.ptes_moved:,} and allocates "
                     f"{sum(pon.move.tables_allocated.values()):,} page-table pages instead of "
                     f"{sum(poff.move.tables_allocated.values()):,}; the refaults are paid "
                     "later, by user code, and are not part of this call.")
            out.append(text)
    return out


def backing_columns_note(r: StudyResults) -> str:
    return ("Column names: '<backing> THP' is the latency with THP on; '… huge PMDs split' "
            "counts split_huge_pmd calls and '… huge PMDs moved' counts huge PMDs moved whole "
            "(move_huge_pmd).")


def all_notes(r: StudyResults) -> dict[str, list[str]]:
    """Section id → explanations for that section."""
    out: dict[str, list[str]] = {}
    for sec, fn in (("latency", latency_drops), ("latency", blocked_cheaper),
                    ("speedup", blocked_cheaper), ("backing", thp_cheaper)):
        try:
            notes = fn(r)
        except (KeyError, IndexError, ValueError):
            notes = []
        out.setdefault(sec, []).extend(notes)
    return out


__all__ = ["all_notes", "blocked_cheaper", "latency_drops", "thp_cheaper"]
