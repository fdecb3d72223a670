"""Findings: sentences generated from the report's tables, every number a cited cell.

A :class:`Finding` is a template with named slots; each slot is a :class:`Cite` of one table
cell (table id, row name, column). Rendering puts the cell's formatted value in the slot and
links it to the cell, so every number a reader sees in a finding can be checked in a table
(``tests/test_report.py`` checks that every cited cell exists and shows that very text).
Rules that find nothing to say produce no sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from perfsim.report.tables import Table
from perfsim.units import fmt_size


@dataclass(frozen=True)
class Cite:
    table: str
    row: str
    col: str


@dataclass
class Finding:
    topic: str
    template: str
    cites: dict[str, Cite]

    def render(self, tables: dict[str, Table], wrap: Callable[[Cite, str, Table], str]) -> str:
        vals = {}
        for name, c in self.cites.items():
            t = tables[c.table]
            vals[name] = wrap(c, t.format(c.col, t.value(c.row, c.col)), t)
        return self.template.format(**vals)

    def plain(self, tables: dict[str, Table]) -> str:
        return self.render(tables, lambda c, text, t: text)


def _fin(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _ci_clause(tid: str, row: str, col: str, t: Table, lo_name: str = "lo",
               hi_name: str = "hi") -> tuple[str, dict]:
    r = t.row(row)
    lo, hi = r[f"{col}_lo"], r[f"{col}_hi"]
    if _fin(lo) and _fin(hi) and t.format(col, lo) != t.format(col, hi):
        return (f" (95% CI {{{lo_name}}} to {{{hi_name}}})",
                {lo_name: Cite(tid, row, f"{col}_lo"), hi_name: Cite(tid, row, f"{col}_hi")})
    return "", {}


def generate(r, tables: dict[str, Table]) -> list[Finding]:
    """Every finding the data supports, in report order."""
    s = r.study
    out: list[Finding] = []
    rules = (_realign_peak, _realign_small, _realign_large, _unaligned, _blocked, _pud,
             _threads, _contention, _thp, _workloads, _tunes)
    for rule in rules:
        try:
            out.extend(rule(r, s, tables))
        except (KeyError, IndexError, ValueError):
            continue  # a smaller study may lack the cells a rule needs
    return out


def headline(r, tables: dict[str, Table]) -> list[Finding]:
    """The short answer the report opens with: unaligned vs realigned at the reference
    size, and what realignment buys (its peak and at the reference size)."""
    s = r.study
    out: list[Finding] = []
    try:
        size = _ref_row(tables)
        prof = _profiles(tables)[0]
        srow = f"{prof} {size}"
        un, re_ = f"unaligned · {s.new}", f"realignable · {s.new}"
        clause, ci = _ci_clause("speedup", srow, "unaligned_vs_realigned", tables["speedup"])
        out.append(Finding(
            "answer",
            f"At {size} on {s.new} (cost profile {prof}, one thread), an unaligned move takes "
            "{lat_un}, {ratio} as long as a realigned one ({lat_re})" + clause + ": the "
            "realigned move is {pmds} PMD moves and {pte} PTE copy, the unaligned one copies "
            "{ptes} PTEs one by one.",
            {"lat_un": Cite("latency", size, un), "lat_re": Cite("latency", size, re_),
             "ratio": Cite("speedup", srow, "unaligned_vs_realigned"),
             "pmds": Cite("opcounts", re_, "pmd_moves"),
             "pte": Cite("opcounts", re_, "ptes_moved"),
             "ptes": Cite("opcounts", un, "ptes_moved"), **ci}))
    except (KeyError, IndexError, ValueError):
        pass
    try:
        prof = _profiles(tables)[0]
        d = _speed_rows(tables, prof)
        best = d.loc[d["realign_gain"].idxmax()]
        size = _ref_row(tables)
        srow = f"{prof} {size}"
        if best["realign_gain"] > 1.0:
            peak = _sz(best["size"])
            out.append(Finding(
                "answer",
                f"What realignment ({s.new} against {s.baseline}) buys: {{gain}} at {peak}, "
                f"where the head of the move is most of it ({{old}} → {{new}}), fading to "
                f"{{gain_ref}} at {size}: it turns only the first, partial PMD of a mutually "
                "aligned move into one PMD move. It cannot help an unaligned move, which stays "
                f"{{un_pmd}} as slow as a PMD-aligned one at {size}: what makes a large move "
                "cheap is source and destination at the same offset in their PMDs.",
                {"gain": Cite("speedup", best["row"], "realign_gain"),
                 "old": Cite("latency", peak, f"realignable · {s.baseline}"),
                 "new": Cite("latency", peak, f"realignable · {s.new}"),
                 "gain_ref": Cite("speedup", srow, "realign_gain"),
                 "un_pmd": Cite("speedup", srow, "unaligned_vs_pmd")}))
    except (KeyError, IndexError, ValueError):
        pass
    return out


def _speed_rows(tables, prof: str) -> pd.DataFrame:
    d = tables["speedup"].df
    return d[d["cost_profile"] == prof].sort_values("size")


def _profiles(tables) -> list[str]:
    return list(dict.fromkeys(tables["speedup"].df["cost_profile"]))


def _sz(size: int) -> str:
    return fmt_size(int(size)).replace(" ", "")


def _realign_peak(r, s, tables):
    out = []
    for prof in _profiles(tables)[:2]:
        d = _speed_rows(tables, prof)
        if "realign_gain" not in d or not len(d):
            continue
        best = d.loc[d["realign_gain"].idxmax()]
        if not best["realign_gain"] > 1.0:
            continue
        row = best["row"]
        clause, ci = _ci_clause("speedup", row, "realign_gain", tables["speedup"])
        size = _sz(best["size"])
        cites = {"gain": Cite("speedup", row, "realign_gain"), **ci}
        text = (f"Realignment matters most just above one PMD: with cost profile {prof}, a "
                f"realignable {size} move is {{gain}} faster on {s.new} than on {s.baseline}"
                f"{clause}")
        if prof == tables["speedup"].df["cost_profile"].iloc[0]:
            cites.update(new=Cite("latency", size, f"realignable · {s.new}"),
                         old=Cite("latency", size, f"realignable · {s.baseline}"))
            text += " ({new} instead of {old})"
        out.append(Finding("realignment", text + ".", cites))
    return out


def _realign_small(r, s, tables):
    prof = _profiles(tables)[0]
    d = _speed_rows(tables, prof)
    tie = d[(d["realign_gain"] - 1.0).abs() < 1e-12]
    if not len(tie):
        return []
    row = tie.iloc[-1]
    return [Finding("realignment",
                    f"Moves shorter than the distance to the next PMD boundary cannot be "
                    f"realigned (rule R4a), so up to {_sz(row['size'])} the two kernels tie "
                    "(gain {gain}).", {"gain": Cite("speedup", row["row"], "realign_gain")})]


def _realign_large(r, s, tables):
    prof = _profiles(tables)[0]
    d = _speed_rows(tables, prof)
    last = d.iloc[-1]
    if not last["realign_gain"] > 1.0:
        return []
    return [Finding("realignment",
                    "The gain fades with size, because realignment only changes the first "
                    f"PMD of the move: at {_sz(last['size'])} it is {{gain}}.",
                    {"gain": Cite("speedup", last["row"], "realign_gain")})]


def _ref_row(tables) -> str:
    bd = tables["breakdown"]
    return bd.title.rsplit(", ", 1)[-1].replace(" move", "").replace(" ", "")


def _unaligned(r, s, tables):
    size = _ref_row(tables)
    prof = _profiles(tables)[0]
    srow = f"{prof} {size}"
    un, re_ = f"unaligned · {s.new}", f"realignable · {s.new}"
    return [Finding("alignment",
                    f"Not mutually aligned moves are the expensive ones: at {size} an unaligned "
                    "move takes {lat_un}, {ratio} the realigned move ({lat_re}); {ptes} PTEs are "
                    "copied one by one in {calls} move_ptes calls, costing {pte_ns}.",
                    {"lat_un": Cite("latency", size, un), "lat_re": Cite("latency", size, re_),
                     "ratio": Cite("speedup", srow, "unaligned_vs_realigned"),
                     "ptes": Cite("opcounts", un, "ptes_moved"),
                     "calls": Cite("opcounts", un, "move_ptes_calls"),
                     "pte_ns": Cite("breakdown", un, "pte_copies")})]


def _blocked(r, s, tables):
    prof = _profiles(tables)[0]
    d = _speed_rows(tables, prof)
    best = d.loc[d["blocked_vs_realigned"].idxmax()]
    if not best["blocked_vs_realigned"] > 1.0:
        return []
    return [Finding("alignment",
                    "A one-page VMA just below the source refuses realignment (blocked, E3): "
                    f"at {_sz(best['size'])} that costs {{ratio}} the realigned move, since the "
                    "first 2 MiB − 4 KiB are copied PTE by PTE.",
                    {"ratio": Cite("speedup", best["row"], "blocked_vs_realigned")})]


def _pud(r, s, tables):
    size = _ref_row(tables)
    pud, pmd = f"pud · {s.new}", f"pmd · {s.new}"
    return [Finding("alignment",
                    f"Both PUD-aligned, {size} moves with {{puds}} PUD move in {{lat}}, against "
                    "{lat_pmd} for {pmds} PMD moves when only PMD-aligned.",
                    {"puds": Cite("opcounts", pud, "pud_moves"), "lat": Cite("latency", size, pud),
                     "lat_pmd": Cite("latency", size, pmd),
                     "pmds": Cite("opcounts", pmd, "pmd_moves")})]


def _threads(r, s, tables):
    t = tables["threads"].df
    out = []
    for prof in list(dict.fromkeys(t["cost_profile"]))[:2]:
        g = t[(t["cost_profile"] == prof) & (t["class"] == "realignable")].sort_values("threads")
        if len(g) < 2:
            continue
        lo, hi = g.iloc[0], g.iloc[-1]
        out.append(Finding(
            "threads",
            f"Threads multiply the cost of every flush (cost profile {prof}): a realigned "
            f"{_ref_row(tables)} move does {{fl}} TLB flushes; with {int(hi['threads'])} "
            f"threads in the mm they send {{ipis}} IPIs and the call takes {{lat_hi}} instead "
            f"of {{lat_lo}} with {int(lo['threads'])} thread(s), while the other CPUs lose "
            f"{{stolen}} in total.",
            {"fl": Cite("threads", hi["row"], "flushes_per_call"),
             "ipis": Cite("threads", hi["row"], "ipis_per_call"),
             "lat_hi": Cite("threads", hi["row"], "latency_ns"),
             "lat_lo": Cite("threads", lo["row"], "latency_ns"),
             "stolen": Cite("threads", hi["row"], "stolen_ns")}))
    return out


def _contention(r, s, tables):
    if "contention" not in tables:
        return []
    c = tables["contention"].df
    th = sorted(c["threads"].unique())
    t0, t1 = th[0], th[-1]
    re_new = f"realignable · {s.new}"
    re_old = f"realignable · {s.baseline}"
    un = f"unaligned · {s.new}"
    out = []
    rows = set(c["row"])
    a, b = f"{re_new} · {t0}t", f"{re_new} · {t1}t"
    if a in rows and b in rows:
        out.append(Finding(
            "rmap",
            f"Realigned moves take the rmap lock {{holds}} times per call; each hold lasts "
            f"{{p99a}} at p99 with {t0} thread(s) but {{p99b}} with {t1}, because the flush "
            f"and its IPI round happen inside the locked section; a reclaim walker then waits "
            f"{{w99}} at p99 ({{waited}} of its visits wait).",
            {"holds": Cite("contention", a, "rmap_holds_per_call"),
             "p99a": Cite("contention", a, "hold_p99_ns"),
             "p99b": Cite("contention", b, "hold_p99_ns"),
             "w99": Cite("contention", b, "walker_wait_p99_ns"),
             "waited": Cite("contention", b, "walker_waited")}))
    o = f"{re_old} · {t1}t"
    if b in rows and o in rows:
        out.append(Finding(
            "rmap",
            f"With and without realignment the walker's view barely differs: p99 wait "
            f"{{wn}} on {s.new} vs {{wo}} on {s.baseline} ({t1} threads), since the PMD moves "
            "that take the lock are the same apart from the first.",
            {"wn": Cite("contention", b, "walker_wait_p99_ns"),
             "wo": Cite("contention", o, "walker_wait_p99_ns")}))
    u = f"{un} · {t1}t"
    if u in rows:
        out.append(Finding(
            "rmap",
            "Unaligned moves copy PTEs without the rmap lock (need_rmap_locks is false for a "
            "new VMA): {holds} holds per call, so walkers never wait on them ({waited} of "
            "visits) — the cost moves from walkers to the caller ({lat} per call).",
            {"holds": Cite("contention", u, "rmap_holds_per_call"),
             "waited": Cite("contention", u, "walker_waited"),
             "lat": Cite("contention", u, "latency_mean_ns")}))
    return out


def _thp(r, s, tables):
    b = tables["backing"].df
    if "anon THP" not in b:
        return []
    return [Finding(
        "thp",
        "With THP, an unaligned anonymous move must first split {splits} huge PMDs and takes "
        "{lat_thp} instead of {lat}; a PMD-aligned one moves {moves} huge PMDs whole in "
        "{lat_pmd}.",
        {"splits": Cite("backing", "unaligned", "anon THP: huge PMDs split"),
         "lat_thp": Cite("backing", "unaligned", "anon THP"),
         "lat": Cite("backing", "unaligned", "anon"),
         "moves": Cite("backing", "pmd", "anon THP: huge PMDs moved"),
         "lat_pmd": Cite("backing", "pmd", "anon THP")})]


def _workloads(r, s, tables):
    if "workloads" not in tables:
        return []
    w = tables["workloads"].df
    out = []
    diff = w[(w["ratio"] - 1.0).abs() >= 1e-12]
    if len(diff):
        best = diff.loc[(diff["ratio"] - 1.0).abs().idxmax()]
        name = best["workload"]
        clause, ci = _ci_clause("workloads", name, "ratio", tables["workloads"])
        cites = {"ratio": Cite("workloads", name, "ratio"),
                 "realigned": Cite("workloads", name, f"realigned {s.new}"),
                 "calls": Cite("workloads", name, "calls"), **ci}
        significant = _fin(best["ratio_hi"]) and (best["ratio_hi"] < 1.0
                                                  or best["ratio_lo"] > 1.0)
        if significant and best["ratio"] < 1.0:
            text = (f"Among the workload scenarios, {s.new} helps {name} most: its mean "
                    f"latency is {{ratio}} of {s.baseline}'s{clause}, with {{realigned}} "
                    "calls realigned per run out of {calls}.")
        else:
            text = (f"No workload scenario changes much between the kernels: the largest "
                    f"difference is in {name}, whose mean latency on {s.new} is {{ratio}} of "
                    f"{s.baseline}'s{clause}; only {{realigned}} of its {{calls}} calls per run "
                    "are realigned.")
        out.append(Finding("workloads", text, cites))
    same = w[(w["ratio"] - 1.0).abs() < 1e-12]
    if len(same):
        first = same.iloc[0]["workload"]
        out.append(Finding(
            "workloads",
            f"{len(same)} of the {len(w)} scenarios never present a realignable move, so both "
            f"kernels give identical latencies (e.g. {first}: ratio {{ratio}}, "
            "{realigned} realigned calls).",
            {"ratio": Cite("workloads", first, "ratio"),
             "realigned": Cite("workloads", first, f"realigned {s.new}")}))
    return out


def _tunes(r, s, tables):
    out = []
    for tr in r.tunes:
        tid = f"tune-{tr.spec.name}-best"
        if tid not in tables or not len(tables[tid].df):
            continue
        knobs = tr.knobs
        row = "#1"
        cites = {f"k{i}": Cite(tid, row, k) for i, k in enumerate(knobs)}
        setting = ", ".join(f"{k} = {{k{i}}}" for i, k in enumerate(knobs))
        clause, ci = _ci_clause(tid, row, "vs_baseline", tables[tid])
        sid = f"tune-{tr.spec.name}-sensitivity"
        top = tables[sid].df.iloc[0]["knob"]
        cites.update(obj=Cite(tid, row, "objective"), ratio=Cite(tid, row, "vs_baseline"),
                     spread=Cite(sid, top, "spread_rel"), **ci)
        out.append(Finding(
            "tune",
            f"What if a threshold changed? On {tr.spec.workload}, the best setting found is "
            f"{setting}: {tr.spec.objective.label} {{obj}}, {{ratio}} of the profile's own "
            f"setting{clause}; the objective varies by {{spread}} of its mean over {top}.",
            cites))
    return out
