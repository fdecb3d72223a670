"""The report's tables, derived from a study's raw results (pure functions of DataFrames).

A :class:`Table` is a DataFrame plus what the writers need: an id (its anchor and file name
``data/<id>.csv``), a title, a caption, the column that names each row (findings cite cells
by row name and column), per-column formatters, and confidence-interval columns shown next
to their estimate. Values are stored raw (ns, counts, ratios) so the CSV files and the
golden tests compare numbers, not text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perfsim.batch.stats import paired
from perfsim.cost import CATEGORIES
from perfsim.units import fmt_size

if TYPE_CHECKING:  # the study runner is not needed to draw or tabulate a tuning
    from perfsim.report.runner import StudyResults


# --------------------------------------------------------------------------- formatting
def fmt_ns(v) -> str:
    """Nanoseconds with a readable unit (3 significant digits)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(v) >= div:
            return f"{_sig(v / div)} {unit}"
    return f"{_sig(v)} ns"


def _sig(x: float) -> str:
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:,.{digits}f}"


def fmt_ratio(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    return f"{v:.2f}×" if abs(v) < 10 else f"{v:.1f}×" if abs(v) < 100 else f"{v:,.0f}×"


def fmt_ratio4(v) -> str:
    """A ratio close to 1, with four decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{float(v):.4f}×"


def fmt_int(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{int(round(float(v))):,}"


def fmt_float(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return _sig(float(v))


def fmt_pct(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * float(v):.1f}%"


def fmt_size_col(v) -> str:
    return fmt_size(int(v)).replace(" ", " ")


def fmt_text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


@dataclass
class Table:
    id: str
    title: str
    caption: str
    df: pd.DataFrame
    key: str
    """Column whose value names a row (unique)."""
    fmt: dict[str, Callable] = field(default_factory=dict)
    ci: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Estimate column → (low, high) columns, rendered as ``est [lo, hi]``."""
    hidden: tuple[str, ...] = ()
    """Columns written to the CSV but not rendered (e.g. the CI bounds)."""

    def shown_columns(self) -> list[str]:
        lows = {c for pair in self.ci.values() for c in pair}
        return [c for c in self.df.columns if c not in lows and c not in self.hidden]

    def format(self, col: str, v) -> str:
        f = self.fmt.get(col)
        if f is None and col.endswith(("_lo", "_hi")):
            f = self.fmt.get(col[:-3])
        if f is None:
            if isinstance(v, (bool, np.bool_)):
                return "yes" if v else "no"
            if isinstance(v, (int, np.integer)):
                return fmt_int(v)
            if isinstance(v, (float, np.floating)):
                return fmt_float(v)
            return fmt_text(v)
        return f(v)

    def cell_text(self, row: pd.Series, col: str) -> str:
        s = self.format(col, row[col])
        if col in self.ci:
            lo, hi = self.ci[col]
            if math.isfinite(float(row[lo])) and math.isfinite(float(row[hi])):
                s += f" [{self.format(col, row[lo])}, {self.format(col, row[hi])}]"
        return s

    def anchor(self, rowkey, col: str) -> str:
        return f"{self.id}--{slug(rowkey)}--{slug(col)}"

    def row(self, rowkey) -> pd.Series:
        hit = self.df[self.df[self.key].astype(str) == str(rowkey)]
        if len(hit) != 1:
            raise KeyError(f"table {self.id}: no unique row {rowkey!r}")
        return hit.iloc[0]

    def value(self, rowkey, col: str):
        return self.row(rowkey)[col]


# --------------------------------------------------------------------------- selections
def _primary(r: StudyResults) -> pd.DataFrame:
    """The grid cells of the report's main view: first cost profile, first thread count,
    first backing, THP off (or the first THP value)."""
    s, c = r.study, r.calls
    thp0 = False if False in s.calls.thp else s.calls.thp[0]
    return c[(c["cost_profile"] == _profile_name(r, s.cost_profiles[0]))
             & (c["threads"] == s.calls.threads[0]) & (c["backing"] == s.calls.backings[0])
             & (c["thp"] == thp0)]


def _profile_name(r: StudyResults, ref: str) -> str:
    from perfsim.cost import load_cost_profile

    return load_cost_profile(ref).name


def _ref_size(r: StudyResults) -> int:
    sizes = sorted(r.calls["size"].unique())
    want = r.study.ref_size
    return int(min(sizes, key=lambda x: abs(math.log2(x) - math.log2(want))))


def label(cls: str, kernel: str) -> str:
    return f"{cls} · {kernel}"


# --------------------------------------------------------------------------- builders
def latency_table(r: StudyResults) -> Table:
    s = r.study
    p = _primary(r)
    wide = p.pivot_table(index="size", columns=["class", "kernel"], values="latency_ns",
                         aggfunc="first")
    cols = [(c, k) for c in s.calls.classes for k in s.kernels if (c, k) in wide.columns]
    df = pd.DataFrame({"size": wide.index.astype(np.int64)})
    for c, k in cols:
        df[label(c, k)] = wide[(c, k)].to_numpy()
    df.insert(0, "move", [fmt_size(int(x)).replace(" ", "") for x in df["size"]])
    fmt = {label(c, k): fmt_ns for c, k in cols}
    fmt["size"] = fmt_int
    return Table("latency", "Latency of one mremap() call by size and alignment class",
                 f"Whole-syscall latency, cost profile {s.cost_profiles[0]}, "
                 f"{s.calls.threads[0]} thread(s), {s.calls.backings[0]}, no THP, fully "
                 "populated; closed form (no contention).", df, "move", fmt,
                 hidden=("size",))


def _paired_ratio(reps: pd.DataFrame, a: dict, b: dict) -> dict:
    def sel(d):
        m = np.ones(len(reps), bool)
        for k, v in d.items():
            m &= (reps[k] == v).to_numpy()
        return reps[m].set_index("replication")["latency_ns"]

    ra, rb = sel(a), sel(b)
    idx = ra.index.intersection(rb.index).sort_values()
    return paired(ra.loc[idx].to_numpy(float), rb.loc[idx].to_numpy(float))


def speedup_table(r: StudyResults) -> Table:
    """Paired ratios (common random numbers) per cost profile and size."""
    s = r.study
    reps = r.reps
    thp0 = False if False in s.calls.thp else s.calls.thp[0]
    base = {"threads": s.calls.threads[0], "backing": s.calls.backings[0], "thp": thp0}
    rows = []
    classes = set(s.calls.classes)
    for prof in sorted(reps["cost_profile"].unique(), key=lambda n: _order(r, n)):
        for size in sorted(reps["size"].unique()):
            sub = reps[(reps["cost_profile"] == prof) & (reps["size"] == size)
                       & (reps["threads"] == base["threads"])
                       & (reps["backing"] == base["backing"]) & (reps["thp"] == base["thp"])]
            row = {"row": f"{prof} {fmt_size(int(size)).replace(' ', '')}",
                   "cost_profile": prof, "size": int(size)}
            pairs = {
                "realign_gain": (("realignable", s.baseline), ("realignable", s.new)),
                "unaligned_vs_realigned": (("unaligned", s.new), ("realignable", s.new)),
                "blocked_vs_realigned": (("blocked", s.new), ("realignable", s.new)),
                "unaligned_vs_pmd": (("unaligned", s.new), ("pmd", s.new)),
            }
            for name, ((ca, ka), (cb, kb)) in pairs.items():
                if ca in classes and cb in classes:
                    pr = _paired_ratio(sub, {"class": ca, "kernel": ka},
                                       {"class": cb, "kernel": kb})
                    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = (
                        pr["ratio"], pr["ratio_lo"], pr["ratio_hi"])
            rows.append(row)
    df = pd.DataFrame(rows)
    ci = {n: (f"{n}_lo", f"{n}_hi") for n in ("realign_gain", "unaligned_vs_realigned",
                                              "blocked_vs_realigned", "unaligned_vs_pmd")
          if n in df}
    fmt = {n: fmt_ratio for n in df.columns if n.split("_")[-1] not in ("profile", "row")
           and n not in ("size", "cost_profile", "row")}
    fmt["size"] = fmt_size_col
    return Table("speedup", "Realigned vs unaligned: paired speed-ups with 95% confidence "
                 "intervals",
                 f"realign_gain = latency on {s.baseline} / latency on {s.new} for a "
                 "realignable move (what realignment buys); unaligned_vs_realigned and "
                 f"blocked_vs_realigned = that class / realignable on {s.new}; "
                 f"unaligned_vs_pmd = unaligned / both PMD-aligned. Ratios are geometric means "
                 f"over {s.calls.replications} replications with common random numbers "
                 "(cost jitter); a profile without jitter gives no interval.",
                 df, "row", fmt, ci)


def _order(r: StudyResults, prof_name: str) -> int:
    names = [_profile_name(r, p) for p in r.study.cost_profiles]
    return names.index(prof_name) if prof_name in names else 99


def breakdown_table(r: StudyResults) -> Table:
    s = r.study
    p = _primary(r)
    size = _ref_size(r)
    p = p[p["size"] == size]
    rows = []
    for c in s.calls.classes:
        for k in s.kernels:
            hit = p[(p["class"] == c) & (p["kernel"] == k)]
            if not len(hit):
                continue
            h = hit.iloc[0]
            row = {"call": label(c, k), **{cat: int(h[f"cost_{cat}_ns"]) for cat in CATEGORIES},
                   "total": int(h["latency_ns"])}
            rows.append(row)
    df = pd.DataFrame(rows)
    keep = ["call"] + [c for c in CATEGORIES if df[c].sum() > 0] + ["total"]
    df = df[keep]
    return Table("breakdown", f"Where the time goes: cost by category, {fmt_size(size)} move",
                 f"Cost profile {s.cost_profiles[0]}, {s.calls.threads[0]} thread(s); "
                 "categories as in docs/cost-model.md (fixed = syscall entry, VMA work, "
                 "loop steps).", df, "call", {c: fmt_ns for c in keep[1:]})


def opcounts_table(r: StudyResults) -> Table:
    s = r.study
    p = _primary(r)
    size = _ref_size(r)
    p = p[p["size"] == size]
    cols = ["realigned", "pud_moves", "pmd_moves", "thp_moves", "thp_splits", "ptes_moved",
            "move_ptes_calls", "tlb_flushes", "tlb_full_flushes", "rmap_holds",
            "tables_allocated", "syscall_tlb_flushes", "syscall_tables_freed"]
    rows = []
    for c in s.calls.classes:
        for k in s.kernels:
            hit = p[(p["class"] == c) & (p["kernel"] == k)]
            if len(hit):
                h = hit.iloc[0]
                rows.append({"call": label(c, k), **{x: h[x] for x in cols}})
    df = pd.DataFrame(rows)
    df["realigned"] = df["realigned"].astype(bool)
    return Table("opcounts", f"Operation counts of move_page_tables, {fmt_size(size)} move",
                 "Counts of move_page_tables() alone, as in docs/kernel-rules.md (E1–E4); the "
                 "syscall_* columns cover the whole call (unmap of the source included).",
                 df, "call")


def threads_table(r: StudyResults) -> Table:
    s = r.study
    c = r.calls
    size = _ref_size(r)
    thp0 = False if False in s.calls.thp else s.calls.thp[0]
    sub = c[(c["kernel"] == s.new) & (c["size"] == size) & (c["backing"] == s.calls.backings[0])
            & (c["thp"] == thp0)]
    rows = []
    for prof in sorted(sub["cost_profile"].unique(), key=lambda n: _order(r, n)):
        for cls in s.calls.classes:
            for th in s.calls.threads:
                hit = sub[(sub["cost_profile"] == prof) & (sub["class"] == cls)
                          & (sub["threads"] == th)]
                if not len(hit):
                    continue
                h = hit.iloc[0]
                rows.append({"row": f"{prof} · {cls} · {th}t", "cost_profile": prof,
                             "class": cls, "threads": int(th),
                             "flushes_per_call": int(h["syscall_tlb_flushes"]),
                             "ipis_per_call": int(h["ipis"]),
                             "ipi_ns": int(h["cost_ipi_ns"]), "latency_ns": int(h["latency_ns"]),
                             "stolen_ns": int(h["stolen_ns"])})
    df = pd.DataFrame(rows)
    return Table("threads", f"TLB flushes and IPIs per call vs threads ({s.new}, "
                 f"{fmt_size(size)})",
                 "An mm whose threads run on N CPUs: every flush_tlb_mm_range IPIs the other "
                 "N−1 CPUs (lazy CPUs included, freed_tables). ipi_ns is the sender's IPI "
                 "cost; stolen_ns the time taken from the other CPUs in total.",
                 df, "row", {"ipi_ns": fmt_ns, "latency_ns": fmt_ns, "stolen_ns": fmt_ns})


def backing_table(r: StudyResults) -> Table:
    s = r.study
    c = r.calls
    size = _ref_size(r)
    sub = c[(c["kernel"] == s.new) & (c["size"] == size)
            & (c["cost_profile"] == _profile_name(r, s.cost_profiles[0]))
            & (c["threads"] == s.calls.threads[0])]
    rows = []
    for cls in s.calls.classes:
        row = {"class": cls}
        for b in s.calls.backings:
            for thp in s.calls.thp:
                hit = sub[(sub["class"] == cls) & (sub["backing"] == b) & (sub["thp"] == thp)]
                if len(hit):
                    name = f"{b}{' THP' if thp else ''}"
                    row[name] = int(hit.iloc[0]["latency_ns"])
                    if thp:
                        row[f"{name}: huge PMDs split"] = int(hit.iloc[0]["thp_splits"])
                        row[f"{name}: huge PMDs moved"] = int(hit.iloc[0]["thp_moves"])
        rows.append(row)
    df = pd.DataFrame(rows)
    fmt = {col: fmt_ns for col in df.columns if col != "class" and not col.endswith(
        ("split", "moved"))}
    return Table("backing", f"Anonymous vs shmem, THP on/off ({s.new}, {fmt_size(size)})",
                 f"Latency per backing ('<backing> THP' = with transparent huge pages); "
                 "'huge PMDs split' counts split_huge_pmd calls, 'huge PMDs moved' huge PMDs "
                 f"moved whole by move_huge_pmd. Cost profile {s.cost_profiles[0]}, "
                 f"{s.calls.threads[0]} thread(s).",
                 df, "class", fmt)


def contention_table(r: StudyResults) -> Table | None:
    if r.contention_calls.empty:
        return None
    s = r.study
    prof = _profile_name(r, s.cost_profiles[0])
    cc = r.contention_calls[r.contention_calls["cost_profile"] == prof]
    hh = r.holds[r.holds["cost_profile"] == prof] if len(r.holds) else r.holds
    ww = r.walkers[r.walkers["cost_profile"] == prof] if len(r.walkers) else r.walkers
    rows = []
    for (arm, th), g in cc.groupby(["arm", "threads"], sort=False):
        h = hh[(hh["arm"] == arm) & (hh["threads"] == th)] if len(hh) else hh
        w = ww[(ww["arm"] == arm) & (ww["threads"] == th)] if len(ww) else ww
        hv = h["hold_ns"].to_numpy(float) if len(h) else np.zeros(0)
        wv = w["wait_ns"].to_numpy(float) if len(w) else np.zeros(0)
        rows.append({
            "row": f"{arm} · {th}t", "arm": arm, "threads": int(th), "calls": len(g),
            "rmap_holds_per_call": float(g["rmap_holds"].mean()),
            "hold_p50_ns": _pct(hv, 50), "hold_p99_ns": _pct(hv, 99),
            "walker_visits": len(wv), "walker_waited": float((wv > 0).mean()) if len(wv) else 0.0,
            "walker_wait_p50_ns": _pct(wv, 50), "walker_wait_p99_ns": _pct(wv, 99),
            "walker_wait_max_ns": float(wv.max()) if len(wv) else 0.0,
            "latency_mean_ns": float(g["latency_ns"].mean()),
            "rmap_wait_mean_ns": float(g["rmap_wait_ns"].mean()),
        })
    df = pd.DataFrame(rows)
    c = s.contention
    fmt = {k: fmt_ns for k in df.columns if k.endswith("_ns")}
    fmt["walker_waited"] = fmt_pct
    return Table("contention", "rmap-lock holds and walker waits under contention (engine)",
                 f"One caller moves {c.size} ({', '.join(c.classes)}) back and forth {c.calls} "
                 f"times every {c.interval_ns / 1000:g} µs; a reclaim-style walker read-locks the "
                 f"region's rmap lock every {c.walker_interval_ns / 1000:g} µs (Poisson) for "
                 f"{c.walker_hold_ns / 1000:g} µs; the mm's other threads run user work. "
                 f"{c.replications} replications pooled, cost profile {s.cost_profiles[0]}. "
                 "walker_waited = share of walker visits that had to wait.",
                 df, "row", fmt)


def _pct(v: np.ndarray, q: float) -> float:
    return float(np.percentile(v, q)) if len(v) else 0.0


def workloads_table(r: StudyResults) -> Table | None:
    if r.workload_runs.empty:
        return None
    s = r.study
    wr = r.workload_runs
    rows = []
    for name in dict.fromkeys(wr["workload"]):
        g = wr[wr["workload"] == name]
        a = g[g["kernel"] == s.new].set_index("replication")
        b = g[g["kernel"] == s.baseline].set_index("replication")
        idx = a.index.intersection(b.index).sort_values()
        pr = paired(a.loc[idx, "lat_mean_ns"].to_numpy(float),
                    b.loc[idx, "lat_mean_ns"].to_numpy(float))
        p99 = paired(a.loc[idx, "lat_p99_ns"].to_numpy(float),
                     b.loc[idx, "lat_p99_ns"].to_numpy(float))
        rows.append({"workload": name, "n": pr["n"], "calls": int(a["calls"].mean()),
                     f"mean {s.new}": pr["mean_a"], f"mean {s.baseline}": pr["mean_b"],
                     "ratio": pr["ratio"], "ratio_lo": pr["ratio_lo"], "ratio_hi": pr["ratio_hi"],
                     "p99_ratio": p99["ratio"], "p99_ratio_lo": p99["ratio_lo"],
                     "p99_ratio_hi": p99["ratio_hi"],
                     f"realigned {s.new}": float(a["realigned_calls"].mean()),
                     f"realigned {s.baseline}": float(b["realigned_calls"].mean()),
                     "n_needed": pr["n_needed"]})
    df = pd.DataFrame(rows)
    fmt = {f"mean {s.new}": fmt_ns, f"mean {s.baseline}": fmt_ns, "ratio": fmt_ratio4,
           "p99_ratio": fmt_ratio4, f"realigned {s.new}": fmt_float,
           f"realigned {s.baseline}": fmt_float}
    return Table("workloads", f"Workload scenarios, paired: {s.new} vs {s.baseline}",
                 f"Mean call latency per scenario on each kernel; ratio = {s.new} / "
                 f"{s.baseline} (geometric mean of per-replication ratios, 95% CI) over "
                 f"{s.workloads.replications} replications with common random numbers; "
                 "realigned = calls realigned per run; n_needed = replications for a CI "
                 "half-width of 5% of the baseline mean.",
                 df, "workload", fmt, {"ratio": ("ratio_lo", "ratio_hi"),
                                       "p99_ratio": ("p99_ratio_lo", "p99_ratio_hi")})


def tune_tables(tr) -> list[Table]:
    name = tr.spec.name
    knobs = tr.knobs
    obj = tr.spec.objective
    ns_obj = all(c.endswith("_ns") for c in obj.terms())
    ofmt = fmt_ns if ns_obj else fmt_float
    best = tr.best.copy()
    best.insert(0, "row", [f"#{i}" for i in best["rank"]])
    cols = ["row", *knobs, "objective", "objective_lo", "objective_hi", "vs_baseline",
            "vs_baseline_lo", "vs_baseline_hi", "feasible", "n"]
    best = best[[c for c in cols if c in best]]
    fmt = {"objective": ofmt, "vs_baseline": fmt_ratio, **{k: fmt_text for k in knobs}}
    out = [Table(f"tune-{name}-best", f"Tuning {name}: best settings",
                 f"Objective {obj.label} ({obj.direction}) on {tr.spec.workload}, "
                 f"{tr.spec.replications} replications per setting (95% CI); vs_baseline = "
                 "paired ratio to the profile's own setting on the same seeds. "
                 f"Search: {tr.method}.", best, "row", fmt,
                 {"objective": ("objective_lo", "objective_hi"),
                  "vs_baseline": ("vs_baseline_lo", "vs_baseline_hi")})]
    st = tr.settings.copy()
    st.insert(0, "row", ["baseline" if s_ < 0 else f"s{s_}" for s_ in st["setting"]])
    keep = ["row", *knobs, "objective", "objective_lo", "objective_hi", "vs_baseline",
            "vs_baseline_lo", "vs_baseline_hi", "feasible", "lat_mean_ns", "lat_p99_ns",
            "ipis_per_call", "rmap_hold_p99_ns", "walker_wait_p99_ns"]
    st = st[[c for c in keep if c in st]]
    sfmt = {**fmt, "lat_mean_ns": fmt_ns, "lat_p99_ns": fmt_ns, "rmap_hold_p99_ns": fmt_ns,
            "walker_wait_p99_ns": fmt_ns}
    out.append(Table(f"tune-{name}-settings", f"Tuning {name}: every setting",
                     "Baseline = no knob changed.", st, "row", sfmt,
                     {"objective": ("objective_lo", "objective_hi"),
                      "vs_baseline": ("vs_baseline_lo", "vs_baseline_hi")}))
    sens = tr.sensitivity.copy()
    out.append(Table(f"tune-{name}-sensitivity", f"Tuning {name}: sensitivity per knob",
                     "spread = max − min of the objective's mean over the knob's values "
                     "(ranges: quintile bins), averaged over the other knobs; spread_rel = "
                     "spread / mean objective.", sens, "knob",
                     {"min_objective": ofmt, "max_objective": ofmt, "spread": ofmt,
                      "spread_rel": fmt_pct}))
    return out


def classes_table(r: StudyResults) -> Table:
    """The five alignment classes: the addresses of each move (docs/kernel-rules.md E1-E4)."""
    from perfsim.report.shapes import SHAPES
    from perfsim.report.study import CLASS_DOCS

    rows = [{"class": c, "source": f"{SHAPES[c][0]:#x}", "destination": f"{SHAPES[c][1]:#x}",
             "VMA below the source": "one page" if SHAPES[c][2] else "none",
             "what it is": CLASS_DOCS[c]} for c in r.study.calls.classes]
    return Table("classes", "The alignment classes",
                 "Every move of the report is mremap(src, len, len, MREMAP_MAYMOVE | "
                 "MREMAP_FIXED, dst) of a fully populated anonymous VMA [src, src + len) with "
                 "nothing mapped at the destination.", pd.DataFrame(rows), "class")


def build_tables(r: StudyResults) -> list[Table]:
    """Every table of the report, in report order."""
    out = [classes_table(r), latency_table(r), speedup_table(r), breakdown_table(r), opcounts_table(r),
           threads_table(r), backing_table(r)]
    for t in (contention_table(r), workloads_table(r)):
        if t is not None:
            out.append(t)
    for tr in r.tunes:
        out.extend(tune_tables(tr))
    return out
