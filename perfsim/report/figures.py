"""The report's figures (matplotlib, Agg): each a PNG and an SVG plus the CSV of exactly the
data it plots (``data/fig-<id>.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perfsim.report.runner import StudyResults
from perfsim.report.tables import Table, _profile_name
from perfsim.units import fmt_size

CLASS_COLORS = {"pud": "#4c72b0", "pmd": "#55a868", "realignable": "#c44e52",
                "blocked": "#8172b2", "unaligned": "#ccb974"}
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


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "perfsim",
                         "svg.fonttype": "none", "figure.dpi": 100})
    return plt


def _NullLocator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _size_ticks(ax, sizes):
    ticks = [s for s in sizes if math.log2(s) % 2 == 0] or list(sizes)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([fmt_size(int(s)).replace(" ", "") for s in ticks], rotation=60,
                       fontsize=7)
    ax.minorticks_off()


def fig_latency(r: StudyResults) -> Figure:
    plt = _plt()
    s = r.study
    c = r.calls
    thp0 = False if False in s.calls.thp else s.calls.thp[0]
    d = c[(c["threads"] == s.calls.threads[0]) & (c["backing"] == s.calls.backings[0])
          & (c["thp"] == thp0)][["cost_profile", "kernel", "class", "size", "latency_ns"]]
    classes = s.calls.classes
    fig, axes = plt.subplots(1, len(classes), figsize=(3.0 * len(classes), 3.4), sharey=True,
                             squeeze=False)
    styles = {k: ls for k, ls in zip(s.kernels, ("--", "-"))}
    profs = list(dict.fromkeys(d["cost_profile"]))
    for ax, cls in zip(axes[0], classes):
        for pi, prof in enumerate(profs):
            for k in s.kernels:
                g = d[(d["class"] == cls) & (d["kernel"] == k) & (d["cost_profile"] == prof)]
                g = g.sort_values("size")
                ax.plot(g["size"], g["latency_ns"] / 1e3, styles[k],
                        color=("C0", "C3", "C2", "C4")[pi % 4], lw=1.4 if k == s.new else 1.1,
                        marker="o" if k == s.new else None, ms=2.5,
                        label=f"{k} · {prof}")
        _size_ticks(ax, sorted(d["size"].unique()))
        ax.set_yscale("log")
        ax.set_title(cls)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("move size")
    axes[0][0].set_ylabel("latency per call (µs)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _done(fig, Figure("latency_vs_size", "Latency vs size per alignment class",
                             f"Log-log; dashed = {s.baseline} (no realignment), solid = "
                             f"{s.new}; colour = cost profile. {s.calls.threads[0]} thread(s), "
                             f"{s.calls.backings[0]}, no THP.", d))


def fig_speedup(r: StudyResults, speed: Table) -> Figure:
    plt = _plt()
    df = speed.df
    s = r.study
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    series = [("realign_gain", f"realignment gain ({s.baseline} / {s.new}, realignable)",
               axes[0]),
              ("unaligned_vs_realigned", "unaligned / realigned", axes[1]),
              ("blocked_vs_realigned", "blocked / realigned", axes[1])]
    rows = []
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
            ax.errorbar(g["size"], y, yerr=err, fmt=mk + ("-" if pi == 0 else "--"), ms=3,
                        capsize=2, lw=1, label=f"{name} · {prof}")
            for sz, a, b, c in zip(g["size"], y, lo, hi):
                rows.append({"cost_profile": prof, "series": col, "size": int(sz), "ratio": a,
                             "lo": b, "hi": c})
    for ax in axes:
        _size_ticks(ax, sorted(df["size"].unique()))
        ax.axhline(1.0, color="k", lw=0.6)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("move size")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("speed-up (×)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("slow-down vs realigned (×)")
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
    ax.set_xlabel("share of the call's latency")
    ax.legend(fontsize=7, ncol=min(6, len(cats)), loc="upper center",
              bbox_to_anchor=(0.5, -0.18 if len(df) > 6 else -0.3))
    fig.tight_layout()
    data = pd.concat([df[["call"]], share.add_prefix("share_"), df[cats + ["total"]]], axis=1)
    return _done(fig, Figure("cost_breakdown", "Cost breakdown by category",
                             bd.title.replace("Where the time goes: ", "") +
                             "; bars are shares, the label the total.", data))


def _cdf(ax, v, **kw):
    v = np.sort(np.asarray(v, float))
    if not len(v):
        return
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", **kw)


def fig_cdfs(r: StudyResults) -> Figure | None:
    if r.holds.empty and r.walkers.empty:
        return None
    plt = _plt()
    s = r.study
    prof = _profile_name(r, s.cost_profiles[0])
    th = sorted({s.contention.threads[0], s.contention.threads[-1]})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = []
    arms = list(dict.fromkeys(r.contention_calls["arm"]))
    for ai, arm in enumerate(arms):
        for ti, t in enumerate(th):
            for ax, frame, col, what in ((axes[0], r.holds, "hold_ns", "rmap hold"),
                                         (axes[1], r.walkers, "wait_ns", "walker wait")):
                if frame.empty:
                    continue
                g = frame[(frame["arm"] == arm) & (frame["threads"] == t)
                          & (frame["cost_profile"] == prof)]
                if not len(g):
                    continue
                _cdf(ax, g[col], color=f"C{ai}", ls=("-", "--", ":")[ti % 3],
                     label=f"{arm} · {t}t (n={len(g)})")
                q = np.percentile(g[col].to_numpy(float), np.arange(0, 101))
                rows += [{"what": what, "arm": arm, "threads": t, "percentile": int(p),
                          "ns": float(v)} for p, v in zip(range(101), q)]
    axes[0].set_xlabel("rmap-lock hold time (ns)")
    axes[1].set_xlabel("walker wait per visit (ns; all visits)")
    for ax in axes:
        ax.set_ylabel("CDF")
        ax.set_xscale("symlog", linthresh=100)
        ax.xaxis.set_minor_locator(_NullLocator())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _done(fig, Figure("cdf_holds_waits",
                             "rmap-lock hold time and walker wait time, with and without "
                             "realignment",
                             f"Engine runs of the contention table; {s.new} realigns the "
                             f"realignable class, {s.baseline} does not; unaligned moves take no "
                             "rmap lock (need_rmap_locks is false for a new VMA). Solid = "
                             f"{th[0]} thread(s), dashed = {th[-1]}.", pd.DataFrame(rows)))


def fig_threads(r: StudyResults, tt: Table) -> Figure:
    plt = _plt()
    df = tt.df
    prof = df["cost_profile"].iloc[0]
    d = df[df["cost_profile"] == prof]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for cls, g in d.groupby("class", sort=False):
        kw = dict(marker="o", ms=3, color=CLASS_COLORS.get(cls), label=cls)
        axes[0].plot(g["threads"], g["flushes_per_call"], **kw)
        axes[1].plot(g["threads"], g["ipis_per_call"], **kw)
        axes[2].plot(g["threads"], g["latency_ns"] / 1e3, **kw)
    for ax, yl in zip(axes, ("TLB flushes per call", "IPIs per call", "latency (µs)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(d["threads"].unique()))
        ax.set_xticklabels(sorted(d["threads"].unique()))
        ax.set_yscale("symlog", linthresh=1)
        ax.yaxis.set_minor_locator(_NullLocator())
        ax.set_xlabel("threads (CPUs in the mm)")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _done(fig, Figure("flushes_ipis_vs_threads", "TLB flushes and IPIs per call vs "
                             "thread count", tt.title + f"; cost profile {prof}.", d))


def fig_workloads(r: StudyResults) -> Figure | None:
    if r.workload_calls.empty:
        return None
    plt = _plt()
    s = r.study
    wc = r.workload_calls
    names = list(dict.fromkeys(wc["workload"]))
    ncol = min(4, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.5 * nrow), squeeze=False)
    rows = []
    for ax, name in zip(axes.flat, names):
        for k, color, ls in ((s.baseline, "C0", "--"), (s.new, "C3", "-")):
            v = wc[(wc["workload"] == name) & (wc["kernel"] == k)]["latency_ns"] / 1e3
            _cdf(ax, v, color=color, ls=ls, label=k)
            q = np.percentile(v, np.arange(0, 101)) if len(v) else []
            rows += [{"workload": name, "kernel": k, "percentile": i, "latency_us": float(x)}
                     for i, x in enumerate(q)]
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("CDF")
    for ax in axes[-1, :]:
        ax.set_xlabel("latency (µs)")
    fig.tight_layout()
    return _done(fig, Figure("workload_cdfs", "Workload scenarios: latency distributions, "
                             "paired", f"Per-call latency CDFs, {s.workloads.replications} "
                             f"replications pooled; both arms run on the same seeds. dashed = "
                             f"{s.baseline}, solid = {s.new}.", pd.DataFrame(rows)))


def fig_tune(tr) -> Figure:
    plt = _plt()
    st = tr.settings
    trial = st[st["setting"] >= 0]
    knobs = tr.knobs
    fig, axes = plt.subplots(1, len(knobs), figsize=(4.2 * len(knobs), 3.3), squeeze=False)
    rows = []
    for ax, k in zip(axes[0], knobs):
        x = trial[k]
        numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
        xs = x.astype(float) if numeric else x.astype(str)
        y = trial["objective"].to_numpy(float)
        err = np.vstack([np.nan_to_num(y - trial["objective_lo"]),
                         np.nan_to_num(trial["objective_hi"] - y)])
        if numeric:
            order = np.argsort(xs.to_numpy())
            ax.errorbar(xs.to_numpy()[order], y[order], yerr=err[:, order], fmt="o-", ms=3,
                        capsize=2, lw=1)
            if len(set(xs)) > 2 and xs.min() > 0 and xs.max() / max(xs.min(), 1e-12) > 50:
                ax.set_xscale("log")
        else:
            ax.errorbar(range(len(xs)), y, yerr=err, fmt="o", ms=3, capsize=2)
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels(list(xs), rotation=30, fontsize=7)
        if tr.baseline:
            ax.axhline(tr.baseline["objective"], color="k", lw=0.7, ls=":",
                       label="baseline (profile's own setting)")
            ax.legend(fontsize=7)
        ax.set_xlabel(k, fontsize=8)
        ax.set_ylabel(tr.spec.objective.label)
        ax.grid(True, alpha=0.3)
        rows += [{"knob": k, "value": v, "objective": o, "lo": lo, "hi": hi}
                 for v, o, lo, hi in zip(x, y, trial["objective_lo"], trial["objective_hi"])]
    fig.tight_layout()
    return _done(fig, Figure(f"tune-{tr.spec.name}", f"Tuning {tr.spec.name}: objective over "
                             "each knob", "Mean objective per setting with its 95% CI; dotted: "
                             "the baseline setting.", pd.DataFrame(rows)))


_PENDING: dict[int, object] = {}


def _done(fig, f: Figure) -> Figure:
    _PENDING[id(f)] = fig
    return f


def save(f: Figure, outdir: Path) -> Figure:
    """Write ``figures/<id>.png`` and ``.svg`` and ``data/fig-<id>.csv``."""
    import matplotlib.pyplot as plt

    fig = _PENDING.pop(id(f))
    (outdir / "figures").mkdir(exist_ok=True)
    (outdir / "data").mkdir(exist_ok=True)
    f.png = f"figures/{f.id}.png"
    f.svg = f"figures/{f.id}.svg"
    fig.savefig(outdir / f.png, dpi=110, metadata={"Software": None})
    fig.savefig(outdir / f.svg, metadata={"Date": None, "Creator": None})
    plt.close(fig)
    f.data.to_csv(outdir / "data" / f"fig-{f.id}.csv", index=False)
    return f


def build_figures(r: StudyResults, tables: dict[str, Table]) -> list[Figure]:
    out = [fig_latency(r), fig_speedup(r, tables["speedup"]),
           fig_breakdown(r, tables["breakdown"])]
    f = fig_cdfs(r)
    if f is not None:
        out.append(f)
    out.append(fig_threads(r, tables["threads"]))
    f = fig_workloads(r)
    if f is not None:
        out.append(f)
    for tr in r.tunes:
        out.append(fig_tune(tr))
    return out


__all__ = ["Figure", "build_figures", "save"]
