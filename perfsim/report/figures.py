"""The report's figures (matplotlib, Agg): each a PNG and an SVG plus the CSV of exactly the
data it plots (``data/fig-<id>.csv``).

Conventions every figure follows (``tests/test_report_figures.py`` checks them on the
matplotlib objects): no axis shows a negative tick (nothing the report plots is negative);
log axes carry explicit 1-2-5 ticks with plain labels, at least two of them, and tick labels
never overlap; lines that coincide are named in the panel, so an invisible line is never a
mystery; every quantity axis says its unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perfsim.report import tune_figure
from perfsim.report.tables import Table, _profile_name
from perfsim.units import fmt_size

if TYPE_CHECKING:  # the study runner is not needed to draw or tabulate a tuning
    from perfsim.report.runner import StudyResults

CLASS_COLORS = {"pud": "#4c72b0", "pmd": "#55a868", "realignable": "#c44e52",
                "blocked": "#8172b2", "unaligned": "#ccb974"}
CLASS_STYLES = {"pud": ("-", "o"), "pmd": ("-", "s"), "realignable": ("--", "^"),
                "blocked": (":", "D"), "unaligned": ("-", "v")}
CAT_COLORS = {"pte_copies": "#ccb974", "pmd_moves": "#55a868", "pud_moves": "#4c72b0",
              "thp": "#64b5cd", "tlb_flush": "#c44e52", "ipi": "#dd8452",
              "rmap_locks": "#8172b2", "ptl": "#937860", "table_alloc_free": "#da8bc3",
              "notifier": "#8c8c8c", "fixed": "#cfcfcf"}


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    data: pd.DataFrame
    png: str = ""
    svg: str = ""
    mpl: object = field(default=None, repr=False, compare=False)
    """The matplotlib Figure until :func:`save` writes and closes it."""


def _plt():
    from perfsim.report.tune_figure import pyplot

    return pyplot()


# --------------------------------------------------------------------------- axis helpers
def fmt_tick(v: float) -> str:
    """A tick label: plain digits with thousands separators, no exponent."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:g}"
    return f"{v:.2g}"


def nice_log_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Ticks for a log axis over ``[lo, hi]`` (both > 0): the densest of the 1-2-5, 1-3
    and 1 series with at most ``max_ticks`` ticks inside the range; a narrow range (less
    than two such ticks) gets evenly spaced round values instead."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = float(lo), float(hi)
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    for subs in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in subs
                 if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= max_ticks:
            if len(ticks) >= 2:
                return ticks
            break
    vals = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    ticks = [float(v) for v in vals if lo <= v <= hi and v > 0]
    if len(ticks) < 2:
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    return ticks


def set_log_axis(ax, axis: str, values, *, max_ticks: int = 6, pad: float = 1.25,
                 suffix: str = "") -> None:
    """Log scale on ``axis`` ("x" or "y") spanning the positive ``values`` with explicit,
    non-overlapping ticks and no minor ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x) and x > 0], float)
    lo, hi = (v.min(), v.max()) if len(v) else (1.0, 10.0)
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo / pad, hi * pad)
    a.set_major_locator(FixedLocator(nice_log_ticks(lo / pad, hi * pad, max_ticks)))
    a.set_major_formatter(FuncFormatter(lambda x, _p: fmt_tick(x) + suffix))
    a.set_minor_locator(NullLocator())


def set_count_axis(ax, axis: str, values) -> None:
    """A count axis that may hold zeros: symlog (linear below 1), from 0 to a decade tick
    above the maximum, ticks 0, 1, 10, 100, ... only."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x)], float)
    top = max(float(v.max()) if len(v) else 1.0, 1.0)
    k = math.ceil(math.log10(top * 1.6))
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=1, linscale=0.6)
    # A little room below 0 so markers at 0 are not cut by the frame; no tick there.
    (ax.set_xlim if axis == "x" else ax.set_ylim)(-0.3, 10.0 ** k)
    a.set_major_locator(FixedLocator([0] + [10.0 ** i for i in range(0, k + 1)]))
    a.set_major_formatter(FuncFormatter(lambda x, _p: fmt_tick(x)))
    a.set_minor_locator(NullLocator())


def _size_ticks(ax, sizes):
    from matplotlib.ticker import NullLocator

    ticks = [s for s in sizes if math.log2(s) % 2 == 0] or list(sizes)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([fmt_size(int(s)).replace(" ", "") for s in ticks], rotation=60,
                       fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())


def coincident_groups(series: dict[str, np.ndarray], rel: float = 0.02) -> list[list[str]]:
    """Names whose series agree within ``rel`` (relative) at every point, i.e. lines that
    cannot be told apart on a log axis, grouped; only groups of two or more, in the order
    of ``series``."""
    names = list(series)
    seen: set[str] = set()
    out = []
    for i, a in enumerate(names):
        if a in seen:
            continue
        grp = [a]
        for b in names[i + 1:]:
            if b in seen:
                continue
            x, y = np.asarray(series[a], float), np.asarray(series[b], float)
            if x.shape == y.shape and np.allclose(x, y, rtol=rel, atol=0):
                grp.append(b)
        if len(grp) > 1:
            seen.update(grp)
            out.append(grp)
    return out


def overlap_label(group: list[str], series: dict[str, np.ndarray]) -> str:
    """``a = b`` when the series are identical, ``a ≈ b`` when they only look identical."""
    first = np.asarray(series[group[0]], float)
    same = all(np.array_equal(first, np.asarray(series[g], float)) for g in group[1:])
    return (" = " if same else " ≈ ").join(group)


def _note_overlap(ax, labels: list[str], *, loc=(0.02, 0.97)) -> None:
    if not labels:
        return
    text = "\n".join(f"{lbl} (lines overlap)" for lbl in labels)
    ax.text(*loc, text, transform=ax.transAxes, va="top", ha="left", fontsize=6.5,
            color="#333", bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#bbb",
                                "alpha": 0.9})


# --------------------------------------------------------------------------- the classes
def _class_counts(r: StudyResults) -> dict[str, dict[str, str]]:
    """What each kernel does for each class at the reference size (from the data)."""
    from perfsim.report.tables import _primary, _ref_size

    p = _primary(r)
    size = _ref_size(r)
    p = p[p["size"] == size]
    out: dict[str, dict[str, str]] = {}
    for _, h in p.iterrows():
        parts = []
        if h["pud_moves"]:
            parts.append(f"{int(h['pud_moves']):,} PUD move{'s' * (h['pud_moves'] != 1)}")
        if h["pmd_moves"]:
            parts.append(f"{int(h['pmd_moves']):,} PMD moves")
        if h["ptes_moved"]:
            parts.append(f"{int(h['ptes_moved']):,} PTE{'s' * (h['ptes_moved'] != 1)} copied")
        text = " + ".join(parts) or "nothing moved"
        if h["realigned"]:
            text = "realigned: " + text
        out.setdefault(h["class"], {})[h["kernel"]] = text
    return out


CLASS_PICTURE_LABELS = {
    "pud": "src and dst on 1 GiB (PUD) boundaries (E1)",
    "pmd": "src and dst on 2 MiB (PMD) boundaries, not 1 GiB",
    "realignable": "both 4 KiB past a PMD boundary, nothing mapped below them (E2)",
    "blocked": "as realignable, but a 1-page VMA sits just below the source (E3)",
    "unaligned": "src 4 KiB, dst 8 KiB past a PMD boundary: not mutually aligned (E4)",
}


def fig_classes(r: StudyResults) -> Figure:
    """A picture of the five alignment classes: where source and destination start against
    the PMD (and PUD) boundaries, and what the kernels do with each at the reference size."""
    import textwrap

    from perfsim.report.shapes import SHAPES
    from perfsim.report.tables import _ref_size

    plt = _plt()
    s = r.study
    classes = list(s.calls.classes)
    counts = _class_counts(r)
    size = fmt_size(_ref_size(r)).replace(" ", "")
    pmd = 2 << 20
    page = 4096
    n = len(classes)
    fig, ax = plt.subplots(figsize=(10, 0.8 * n + 0.8))
    ax.set_xlim(-3.2, 7.4)
    ax.set_ylim(-1.0 * (n - 1) - 0.5, 0.95)
    ax.axis("off")
    off_scale = 0.16 / page          # 4 KiB drawn as 0.16 PMD widths (not to scale)
    rows = []
    for i, cls in enumerate(classes):
        src, dst, guard = SHAPES[cls]
        y = -1.0 * i
        for b in range(0, 4):
            pud_b = b == 0 and cls == "pud"
            ax.plot([b, b], [y - 0.36, y + 0.36], color="k" if pud_b else "#888",
                    lw=1.8 if pud_b else 0.8, ls="-" if pud_b else ":")
        for name, addr, yy in (("src", src, y + 0.17), ("dst", dst, y - 0.17)):
            off = (addr % pmd) * off_scale
            ax.barh(yy, 3.3 - off, left=off, height=0.24, color=CLASS_COLORS.get(cls, "#999"),
                    alpha=0.85, edgecolor="k", lw=0.4)
            ax.text(-0.1, yy, name, ha="right", va="center", fontsize=7, color="#333")
            if addr % pmd:
                ax.text(off + 0.05, yy, f"+{(addr % pmd) // 1024}K", va="center",
                        fontsize=6.5, color="white", fontweight="bold")
            rows.append({"class": cls, "lane": name, "offset_in_pmd_bytes": int(addr % pmd),
                         "pud_aligned": int(addr) % (1 << 30) == 0,
                         "vma_below": bool(guard and name == "src")})
        if guard:
            so = (src % pmd) * off_scale
            ax.barh(y + 0.17, so, left=0, height=0.24, color="white", edgecolor="k", lw=0.6,
                    hatch="////")
        ax.text(-3.15, y + 0.12, cls, fontsize=9.5, fontweight="bold", va="center")
        ax.text(-3.15, y - 0.2, textwrap.fill(CLASS_PICTURE_LABELS.get(cls, cls), 44),
                fontsize=6.6, va="center", color="#333", linespacing=1.1)
        done = counts.get(cls, {})
        lines = [f"{k}: {done[k]}" for k in s.kernels if k in done]
        ax.text(3.5, y, "\n".join(lines), fontsize=7.4, va="center")
    ax.text(0, 0.62, "dotted: PMD (2 MiB) boundaries; solid: also a PUD (1 GiB) boundary;\n"
            "hatched: a one-page VMA; 4/8 KiB offsets drawn enlarged", fontsize=6.8,
            color="#444", va="center")
    ax.text(3.5, 0.62, f"what move_page_tables does with a {size} move", fontsize=7.4,
            color="#444", va="center", fontweight="bold")
    fig.tight_layout()
    return _done(fig, Figure("alignment_classes", "The five alignment classes",
                             "Where each class's source and destination start against the "
                             "page-table boundaries, and the operations of one "
                             f"{size} move on each kernel, as the planner counts them for "
                             "this report.", pd.DataFrame(rows)))


# --------------------------------------------------------------------------- latency
def fig_latency(r: StudyResults, measured=None) -> Figure:
    """Latency vs size per class; ``measured`` (:class:`MeasuredPoints`) adds the
    calibration medians of that profile as black crosses with p10-p90 bars."""
    plt = _plt()
    s = r.study
    c = r.calls
    thp0 = False if False in s.calls.thp else s.calls.thp[0]
    d = c[(c["threads"] == s.calls.threads[0]) & (c["backing"] == s.calls.backings[0])
          & (c["thp"] == thp0)][["cost_profile", "kernel", "class", "size", "latency_ns"]]
    classes = s.calls.classes
    fig, axes = plt.subplots(1, len(classes), figsize=(3.0 * len(classes), 3.7), sharey=True,
                             squeeze=False)
    styles = {k: ls for k, ls in zip(s.kernels, ("--", "-"))}
    profs = list(dict.fromkeys(d["cost_profile"]))
    colors = {p: ("C0", "C3", "C2", "C4")[i % 4] for i, p in enumerate(profs)}
    allv = [d["latency_ns"].to_numpy(float) / 1e3]
    m = None
    if measured is not None:
        m = measured.points[measured.points["class"].isin(classes)
                            & measured.points["size"].between(d["size"].min(), d["size"].max())]
        allv += [m["p10_ns"].to_numpy(float) / 1e3, m["p90_ns"].to_numpy(float) / 1e3]
    for ax, cls in zip(axes[0], classes):
        for prof in profs:
            for k in s.kernels:
                g = d[(d["class"] == cls) & (d["kernel"] == k) & (d["cost_profile"] == prof)]
                g = g.sort_values("size")
                ax.plot(g["size"], g["latency_ns"] / 1e3, styles[k], color=colors[prof],
                        lw=1.4 if k == s.new else 1.1, marker="o" if k == s.new else None,
                        ms=2.5, label=f"{k} · {prof}")
        if m is not None:
            g = m[m["class"] == cls]
            if len(g):
                y = g["median_ns"].to_numpy(float) / 1e3
                err = np.vstack([y - g["p10_ns"].to_numpy(float) / 1e3,
                                 g["p90_ns"].to_numpy(float) / 1e3 - y])
                ax.errorbar(g["size"], y, yerr=np.clip(err, 0, None), fmt="x", color="k",
                            ms=4, lw=0.8, capsize=1.5, zorder=5,
                            label=f"measured (kernel {measured.kernel_release.split('-')[0]})")
        _size_ticks(ax, sorted(d["size"].unique()))
        ax.set_title(cls)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("move size")
    set_log_axis(axes[0][0], "y", np.concatenate(allv), max_ticks=7)
    axes[0][0].set_ylabel("latency per call (µs)")
    axes[0][-1].legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    cap = (f"Log-log; dashed = {s.baseline} (no realignment), solid = {s.new}; colour = cost "
           f"profile. {s.calls.threads[0]} thread(s), {s.calls.backings[0]}, no THP.")
    data = d.assign(source="model")
    if m is not None:
        cap += (f" Black crosses: medians measured on a real kernel ({measured.label}; "
                f"bars p10–p90), from {Path(measured.path).name}, the data the "
                f"{measured.profile} profile was fitted to; compare them with the "
                f"{s.new} · {measured.profile} line.")
        data = pd.concat([data, pd.DataFrame({
            "cost_profile": measured.profile, "kernel": measured.kernel_release,
            "class": m["class"], "size": m["size"], "latency_ns": m["median_ns"],
            "p10_ns": m["p10_ns"], "p90_ns": m["p90_ns"], "source": "measured"})],
            ignore_index=True)
    return _done(fig, Figure("latency_vs_size", "Latency vs size per alignment class", cap,
                             data))


def fig_speedup(r: StudyResults, speed: Table) -> Figure:
    plt = _plt()
    df = speed.df
    s = r.study
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    series = [("realign_gain", f"realignment gain ({s.baseline} / {s.new}, realignable)",
               axes[0]),
              ("unaligned_vs_realigned", "unaligned / realigned", axes[1]),
              ("blocked_vs_realigned", "blocked / realigned", axes[1])]
    rows = []
    ys = {0: [], 1: []}
    for pi, prof in enumerate(dict.fromkeys(df["cost_profile"])):
        g = df[df["cost_profile"] == prof].sort_values("size")
        for col, name, ax in series:
            if col not in g:
                continue
            y = g[col].to_numpy(float)
            lo = g[f"{col}_lo"].to_numpy(float)
            hi = g[f"{col}_hi"].to_numpy(float)
            err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
            mk = {"realign_gain": "o", "unaligned_vs_realigned": "s",
                  "blocked_vs_realigned": "^"}[col]
            ax.errorbar(g["size"], y, yerr=np.clip(err, 0, None),
                        fmt=mk + ("-" if pi == 0 else "--"), ms=3, capsize=2, lw=1,
                        label=f"{name} · {prof}")
            ys[0 if ax is axes[0] else 1] += [y, np.nan_to_num(hi, nan=1.0),
                                              np.nan_to_num(lo, nan=1.0)]
            for sz, a, b, c in zip(g["size"], y, lo, hi):
                rows.append({"cost_profile": prof, "series": col, "size": int(sz), "ratio": a,
                             "lo": b, "hi": c})
    for ax in axes:
        _size_ticks(ax, sorted(df["size"].unique()))
        ax.axhline(1.0, color="k", lw=0.6)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("move size")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1,
                  frameon=False)
    top0 = float(np.nanmax(np.concatenate(ys[0]))) if ys[0] else 1.5
    axes[0].set_ylim(min(0.98, float(np.nanmin(np.concatenate(ys[0])))) if ys[0] else 0.98,
                     top0 + 0.06 * max(top0 - 1, 0.1))
    axes[0].set_ylabel(f"speed-up of {s.new} over {s.baseline} (×)")
    set_log_axis(axes[1], "y", np.concatenate(ys[1]) if ys[1] else [1, 10], max_ticks=7,
                 pad=1.15, suffix="×")
    axes[1].set_ylabel(f"slow-down vs realigned on {s.new} (×)")
    fig.tight_layout()
    return _done(fig, Figure("speedup", "Realigned vs unaligned speed-ups with 95% CIs",
                             "Paired ratios over common-random-number replications; error "
                             "bars are 95% t intervals of the geometric mean ratio (zero "
                             "width for a profile without jitter).", pd.DataFrame(rows)))


def fig_breakdown(r: StudyResults, bd: Table) -> Figure:
    plt = _plt()
    df = bd.df
    cats = [c for c in df.columns if c not in ("call", "total")]
    share = df[cats].div(df["total"], axis=0)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(df) + 1.3))
    left = np.zeros(len(df))
    y = np.arange(len(df))[::-1]
    for cat in cats:
        ax.barh(y, share[cat], left=left, color=CAT_COLORS.get(cat, "#999"), label=cat,
                height=0.7)
        left += share[cat].to_numpy()
    ax.set_yticks(y)
    ax.set_yticklabels(df["call"], fontsize=8)
    for yi, tot in zip(y, df["total"]):
        ax.text(1.01, yi, f"{tot / 1e3:,.1f} µs", va="center", fontsize=7)
    ax.set_xlim(0, 1.15)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xticklabels(["0", "20%", "40%", "60%", "80%", "100%"])
    ax.set_xlabel("share of the call's latency (label: the call's total)")
    ax.legend(fontsize=7, ncol=min(6, len(cats)), loc="upper center",
              bbox_to_anchor=(0.5, -0.18 if len(df) > 6 else -0.3))
    fig.tight_layout()
    data = pd.concat([df[["call"]], share.add_prefix("share_"), df[cats + ["total"]]], axis=1)
    size = bd.title.rsplit(", ", 1)[-1]
    how = bd.caption.split(";")[0].lower()
    return _done(fig, Figure("cost_breakdown", "Cost breakdown by category",
                             f"One {size} per class and kernel ({how}): each bar is the "
                             "call's latency split into cost categories, the label its "
                             "total.", data))


def _cdf(ax, v, **kw):
    v = np.sort(np.asarray(v, float))
    if not len(v):
        return
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", **kw)


def _set_wait_axis(ax, values) -> None:
    """Waits are often exactly 0: symlog, linear up to 100 ns, ticks 0 and 1-10 decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.asarray(values, float)
    top = max(float(v.max()) if len(v) else 1000.0, 1000.0)
    k = math.ceil(math.log10(top * 1.3))
    ax.set_xscale("symlog", linthresh=100, linscale=0.5)
    ax.set_xlim(0, 10.0 ** k)
    ax.xaxis.set_major_locator(FixedLocator([0] + [10.0 ** i for i in range(2, k + 1)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: fmt_tick(x)))
    ax.xaxis.set_minor_locator(NullLocator())


def fig_cdfs(r: StudyResults) -> Figure | None:
    if r.holds.empty and r.walkers.empty:
        return None
    plt = _plt()
    s = r.study
    prof = _profile_name(r, s.cost_profiles[0])
    th = sorted({s.contention.threads[0], s.contention.threads[-1]})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = []
    vals: dict[int, list] = {0: [], 1: []}
    arms = list(dict.fromkeys(r.contention_calls["arm"]))
    for ai, arm in enumerate(arms):
        for ti, t in enumerate(th):
            for k, (ax, frame, col, what) in enumerate(
                    ((axes[0], r.holds, "hold_ns", "rmap hold"),
                     (axes[1], r.walkers, "wait_ns", "walker wait"))):
                if frame.empty:
                    continue
                g = frame[(frame["arm"] == arm) & (frame["threads"] == t)
                          & (frame["cost_profile"] == prof)]
                if not len(g):
                    continue
                lw = 2.6 if ai % 2 == 0 else 1.1
                _cdf(ax, g[col], color=f"C{ai}", ls=("-", "--", ":")[ti % 3], lw=lw,
                     alpha=0.55 if ai % 2 == 0 else 1.0,
                     label=f"{arm} · {t}t (n={len(g)})")
                vals[k].append(g[col].to_numpy(float))
                q = np.percentile(g[col].to_numpy(float), np.arange(0, 101))
                rows += [{"what": what, "arm": arm, "threads": t, "percentile": int(p),
                          "ns": float(v)} for p, v in zip(range(101), q)]
    axes[0].set_xlabel("rmap-lock hold time (ns)")
    axes[1].set_xlabel("walker wait per visit (ns; 0 = did not wait)")
    if vals[0]:
        set_log_axis(axes[0], "x", np.concatenate(vals[0]), max_ticks=6, pad=1.3)
    if vals[1]:
        _set_wait_axis(axes[1], np.concatenate(vals[1]))
    for ax in axes:
        ax.set_ylabel("CDF (share of holds or visits)")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    never = []
    if not r.walkers.empty:
        w = r.walkers[r.walkers["cost_profile"] == prof]
        never = [a for a in arms if len(w[w["arm"] == a]) and not (w[w["arm"] == a]["wait_ns"]
                                                                   > 0).any()]
    tail = (f" Walkers never wait on {_list_words(never)}: those curves are the vertical line "
            "at 0 (every visit) on the right." if never else "")
    return _done(fig, Figure("cdf_holds_waits",
                             "rmap-lock hold time and walker wait time, with and without "
                             "realignment",
                             f"Engine runs of the contention table; {s.new} realigns the "
                             f"realignable class, {s.baseline} does not; unaligned moves take no "
                             "rmap lock (need_rmap_locks is false for a new VMA), so they have "
                             "no hold curve. Solid = "
                             f"{th[0]} thread(s), dashed = {th[-1]}; the {s.baseline} arms are "
                             f"drawn wide and light under the {s.new} arms, so where the two "
                             "kernels agree one line runs inside the other." + tail,
                             pd.DataFrame(rows)))


def _list_words(items: list[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fig_threads(r: StudyResults, tt: Table) -> Figure:
    plt = _plt()
    df = tt.df
    prof = df["cost_profile"].iloc[0]
    d = df[df["cost_profile"] == prof]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    cols = (("flushes_per_call", "TLB flushes per call", 1.0),
            ("ipis_per_call", "IPIs per call", 1.0),
            ("latency_ns", "latency per call (µs)", 1e-3))
    notes = []
    for ax, (col, yl, scale) in zip(axes, cols):
        series = {}
        for cls, g in d.groupby("class", sort=False):
            g = g.sort_values("threads")
            ls, mk = CLASS_STYLES.get(cls, ("-", "o"))
            ax.plot(g["threads"], g[col] * scale, ls=ls, marker=mk, ms=4, mfc="none",
                    color=CLASS_COLORS.get(cls), label=cls, lw=1.3)
            series[cls] = g[col].to_numpy(float)
        labels = [overlap_label(g, series) for g in coincident_groups(series)]
        _note_overlap(ax, labels)
        notes += [f"{yl.split(' (')[0]}: {lbl}" for lbl in labels]
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(d["threads"].unique()))
        ax.set_xticklabels(sorted(d["threads"].unique()))
        ax.xaxis.set_minor_locator(_NullLocator())
        if col == "latency_ns":
            set_log_axis(ax, "y", d[col].to_numpy(float) * scale, max_ticks=6, pad=1.6)
        else:
            set_count_axis(ax, "y", d[col].to_numpy(float))
        ax.set_xlabel("threads (CPUs in the mm)")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    cap = tt.title + f"; cost profile {prof}."
    if notes:
        cap += (" Lines that overlap (named in each panel; = identical, ≈ within 2%): "
                + "; ".join(notes) + ". Their flush counts agree because a PMD move and a "
                "move_ptes extent each flush once, and every flush is one IPI round to the "
                "other CPUs.")
    return _done(fig, Figure("flushes_ipis_vs_threads", "TLB flushes and IPIs per call vs "
                             "thread count", cap, d))


def _NullLocator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def fig_workloads(r: StudyResults) -> Figure | None:
    if r.workload_calls.empty:
        return None
    plt = _plt()
    s = r.study
    wc = r.workload_calls
    names = list(dict.fromkeys(wc["workload"]))
    ncol = min(4, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.6 * nrow), squeeze=False)
    rows = []
    same = []
    for ax, name in zip(axes.flat, names):
        vs = {}
        for k, color, ls, lw, alpha in ((s.baseline, "C0", "-", 3.0, 0.45),
                                        (s.new, "C3", "--", 1.1, 1.0)):
            v = wc[(wc["workload"] == name) & (wc["kernel"] == k)]["latency_ns"] / 1e3
            _cdf(ax, v, color=color, ls=ls, lw=lw, alpha=alpha, label=k)
            vs[k] = np.sort(v.to_numpy(float))
            q = np.percentile(v, np.arange(0, 101)) if len(v) else []
            rows += [{"workload": name, "kernel": k, "percentile": i, "latency_us": float(x)}
                     for i, x in enumerate(q)]
        a, b = vs[s.baseline], vs[s.new]
        if a.shape == b.shape and np.array_equal(a, b):
            same.append(name)
            ax.text(0.03, 0.95, f"{s.baseline} = {s.new}:\nidentical calls", fontsize=6.5,
                    transform=ax.transAxes, va="top", ha="left",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#bbb"})
        set_log_axis(ax, "x", np.concatenate([a, b]), max_ticks=4, pad=1.15)
        ax.set_ylim(0, 1.03)
        ax.set_title(name, fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("CDF (share of calls)")
    for ax in axes[-1, :]:
        ax.set_xlabel("latency per call (µs)")
    fig.tight_layout()
    cap = (f"Per-call latency CDFs, {s.workloads.replications} replications pooled; both arms "
           f"run on the same seeds. Wide light blue = {s.baseline}, thin dashed red = {s.new}, "
           "drawn on top so both stay visible where they agree.")
    if same:
        cap += (f" In {len(same)} of {len(names)} panels ({', '.join(same)}) the two kernels "
                "give identical calls: these workloads never present a realignable move, "
                f"and {s.baseline} and {s.new} decide everything else alike.")
    return _done(fig, Figure("workload_cdfs", "Workload scenarios: latency distributions, "
                             "paired", cap, pd.DataFrame(rows)))


#: Objective metric names (docs/tune.md) in words, for axis labels (one table, the
#: figure's: the early figure drawn from the raw rows names them alike).
OBJECTIVE_WORDS = tune_figure.OBJECTIVE_WORDS


def fig_tune(tr) -> Figure:
    """The objective over each knob as the paired ratio to the baseline setting (the
    table's vs_baseline with its paired 95% CI), with the objective itself on the right
    axis (µs for a nanosecond objective): :func:`tune_plot` drawn by
    :func:`~perfsim.report.tune_figure.draw_tune`."""
    from perfsim.report.tune_figure import draw_tune

    f, plot = tune_plot(tr)
    return _done(draw_tune(plot), f)


def tune_plot(tr):
    """``(Figure, TunePlot)`` of a tuning: the figure's id, title, caption and data (no
    matplotlib figure yet) and the plain numbers :func:`~perfsim.report.tune_figure.
    draw_tune` draws, which need neither pandas nor this module to be drawn."""
    from perfsim.report.tune_figure import plot_of_numbers

    st = tr.settings
    trial = st[st["setting"] >= 0]
    knobs = tr.knobs
    obj = tr.spec.objective
    ns_obj = all(c.endswith("_ns") for c in obj.terms())
    unit = "µs" if ns_obj else ""
    base = float(tr.baseline["objective"]) if tr.baseline else float("nan")
    # The settings table keeps each knob's values as written (an object column: the
    # search's settings table), so every panel is categorical: the plot is the one
    # plot_of_numbers makes of the same numbers (as the early figure of `perfsim tune`).
    y = trial["vs_baseline"].to_numpy(float)
    lo = trial["vs_baseline_lo"].to_numpy(float)
    hi = trial["vs_baseline_hi"].to_numpy(float)
    values = {k: trial[k].tolist() for k in knobs}
    plot = plot_of_numbers(knobs, obj.label, obj.terms(),
                           [({k: values[k][i] for k in knobs}, y[i], lo[i], hi[i])
                            for i in range(len(trial))], base)
    rows = [{"knob": k, "value": v, "vs_baseline": o, "vs_baseline_lo": a,
             "vs_baseline_hi": b, "objective": ob}
            for k in knobs for v, o, a, b, ob in zip(trial[k], y, lo, hi, trial["objective"])]
    cap = ("Each setting's objective as a paired ratio to the baseline setting on the same "
           "seeds, with its paired 95% CI (the vs_baseline column of the tables: a setting "
           "whose bar stays off the dotted line differs from the baseline even when the "
           "unpaired CIs of the two means overlap). The right axis converts the ratio into "
           f"the objective{' in ' + unit if unit else ''} using the baseline's mean "
           f"({_fmt_obj(base, ns_obj)}).")
    f = Figure(f"tune-{tr.spec.name}", f"Tuning {tr.spec.name}: objective over each knob",
               cap, pd.DataFrame(rows))
    return f, plot


def _fmt_obj(v: float, ns: bool) -> str:
    from perfsim.report.tables import fmt_float, fmt_ns

    return fmt_ns(v) if ns else fmt_float(v)


def _done(fig, f: Figure) -> Figure:
    f.mpl = fig
    return f


def save(f: Figure, outdir: Path) -> Figure:
    """Write ``figures/<id>.png`` and ``.svg`` and ``data/fig-<id>.csv``."""
    from perfsim.report.tune_figure import save_images

    save_images(f.mpl, outdir, f.id)
    f.mpl = None
    return save_data(f, outdir)


def save_data(f: Figure, outdir: Path) -> Figure:
    """Write ``data/fig-<id>.csv`` and name the figure's image files (:func:`save` writes
    them, or a figure process does, see :mod:`perfsim.report.figure_process`)."""
    from perfsim.report.tune_figure import image_paths

    (outdir / "data").mkdir(exist_ok=True)
    f.png, f.svg = image_paths(f.id)
    f.data.to_csv(outdir / "data" / f"fig-{f.id}.csv", index=False)
    return f


def iter_figures(r: StudyResults, tables: dict[str, Table], measured=None):
    """Every figure of the report, in report order, built one at a time (save each before
    asking for the next, so only one matplotlib figure is open). ``measured``: calibration
    points to overlay on the latency figure, see :mod:`perfsim.report.measured`."""
    yield fig_classes(r)
    yield fig_latency(r, measured)
    yield fig_speedup(r, tables["speedup"])
    yield fig_breakdown(r, tables["breakdown"])
    f = fig_cdfs(r)
    if f is not None:
        yield f
    yield fig_threads(r, tables["threads"])
    f = fig_workloads(r)
    if f is not None:
        yield f
    for tr in r.tunes:
        yield fig_tune(tr)


def build_figures(r: StudyResults, tables: dict[str, Table], measured=None) -> list[Figure]:
    """:func:`iter_figures` as a list (all figures open at once; for tests and notebooks)."""
    return list(iter_figures(r, tables, measured))


__all__ = ["Figure", "build_figures", "coincident_groups", "fmt_tick", "iter_figures",
           "nice_log_ticks", "overlap_label", "save", "set_count_axis", "set_log_axis"]
