"""``perfsim validate``: how far the simulator's predictions are from the measurements.

For every measured configuration the planner (kernel profile) plans the same call and the cost
model (cost profile) prices it; the result is a long-format error table — one row per
configuration × metric × split — with predicted, measured, absolute and signed relative error
(``(predicted - measured) / measured``).

Metrics: ``median_ns``, ``p10_ns``, ``p90_ns`` of the latency (predicted percentiles come from
the profile's distributions, by Monte Carlo with a fixed seed; a profile without jitter
predicts the median for all three), and the whole-call ``tlb_flush_calls``, ``tlb_full_flushes``
and ``ipis`` counted by tracing.

Splits:

* ``in-sample`` — the given cost profile as it is (usually fitted on all of these data);
* ``held-out`` — each configuration predicted by a profile refitted *without* it
  (k-fold, stratified by group and alignment class, or a named split); parameters a training
  set cannot identify fall back to the prior the profile was fitted from (read from its
  ``.fit.json``), never to the value fitted with the held-out data;
* ``planner`` — the flush counts, which do not depend on costs.

The ordering check asks, at each size ≥ 64 MiB and thread count, whether the predicted
latencies order the five alignment classes as the measured ones do. Only pairs whose measured
medians are *resolved* (bootstrap 95 % intervals of the two medians do not overlap) are scored;
the others are reported as ties. The bootstrap resamples measurement rounds, then repetitions
within them, because repetitions of one round are not independent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfsim.atomic import atomic_dir
from perfsim.calibrate.design import ALIGN_CLASSES, fmt_size
from perfsim.calibrate.fit import profile_values_with
from perfsim.calibrate.io import CalibData, load_data, sibling
from perfsim.calibrate.model import Planned
from perfsim.calibrate.pipeline import fit_table, flush_agreement, planned_table, timer_of
from perfsim.calibrate.stats import default_fit_condition, for_condition, latency_rounds
from perfsim.calibrate.timer import TIMER_NAME
from perfsim.cost import PARAM_NAMES, CostProfile, load_cost_profile, predict, row_costs
from perfsim.cost.sampling import draw
from perfsim.errors import PerfsimError

LAT_METRICS = ("median_ns", "p10_ns", "p90_ns")
COUNT_METRICS = {"tlb_flush_calls": "flush_calls", "tlb_full_flushes": "full_flushes",
                 "ipis": "ipi_rounds"}
THRESHOLD_NS = 30_000
ORDER_MIN_SIZE = 64 << 20
CFG_COLS = ["config_id", "group", "align", "size", "threads", "backing", "populate", "thp", "op"]


# --------------------------------------------------------------------------------------------
# Predictions


def predict_latency(planned: Planned, profile: CostProfile, *, n: int = 400,
                    seed: int = 0) -> tuple[float, float, float]:
    """(median, p10, p90) predicted ns. The median is the closed form (every parameter at its
    ``ns``); p10/p90 come from ``n`` draws of the jittered parameters, charged per row exactly
    as :func:`perfsim.cost.row_costs` charges them."""
    cold = profile.cold_cache_ns(planned.touched_bytes)
    med = float(predict(planned.plan, profile).predicted_ns + cold)
    jit = [p for p in PARAM_NAMES if p != "ipi_receiver_ns" and not profile.param(p).is_fixed]
    if not jit:
        return med, med, med
    rc = row_costs(planned.plan, profile)
    rng = np.random.default_rng(seed)
    total = np.full(n, float(rc.total.sum() + cold))
    for p in jit:
        c = rc.counts[p]
        idx = np.flatnonzero(c)
        if not len(idx):
            continue
        par = profile.param(p)
        d = np.asarray(draw(par, n * len(idx), rng), float).reshape(n, len(idx))
        total += (d - par.ns) @ c[idx].astype(float)
    return med, float(np.percentile(total, 10)), float(np.percentile(total, 90))


# --------------------------------------------------------------------------------------------
# Held-out splits


def holdout_folds(table: pd.DataFrame, spec: str, seed: int = 0
                  ) -> list[tuple[str, list[str], list[str]]]:
    """``[(fold name, train ids, test ids)]`` for ``kfold:K``, ``sizes`` (every other size
    held out), ``FIELD=V1[,V2...]`` (those configurations held out) or ``none``."""
    ids = list(table.config_id)
    spec = spec.strip()
    if spec == "none":
        return []
    if spec.startswith("kfold:"):
        try:
            k = int(spec[6:])
        except ValueError:
            k = 0
        if k < 2:
            raise PerfsimError(f"--holdout {spec!r}: K must be an integer >= 2")
        rng = np.random.default_rng(seed)
        fold = {}
        off = 0
        for _, grp in table.groupby(["group", "align"], sort=True):
            members = list(grp.config_id)
            rng.shuffle(members)
            for i, cid in enumerate(members):
                fold[cid] = (off + i) % k
            off += len(members)
        return [(f"fold{j + 1}of{k}", [i for i in ids if fold[i] != j],
                 [i for i in ids if fold[i] == j]) for j in range(k)]
    if spec == "sizes":
        sizes = sorted(table["size"].unique())
        test_sizes = set(sizes[1::2])
        test = list(table.config_id[table["size"].isin(test_sizes)])
        return [("sizes:" + ",".join(fmt_size(int(s)) for s in sorted(test_sizes)),
                 [i for i in ids if i not in set(test)], test)]
    if "=" in spec:
        fld, vals = spec.split("=", 1)
        if fld not in table.columns:
            raise PerfsimError(f"--holdout {spec!r}: unknown field {fld!r}; valid: "
                               + ", ".join(c for c in CFG_COLS if c != "config_id"))
        want = {v.strip() for v in vals.split(",") if v.strip()}
        col = table[fld].map(lambda v: fmt_size(int(v)) if fld == "size" else str(v).lower())
        want = {w.lower() for w in want}
        test = list(table.config_id[col.isin(want)])
        if not test:
            raise PerfsimError(f"--holdout {spec!r}: no measured configuration has {fld} in "
                               f"{sorted(want)}")
        return [(spec, [i for i in ids if i not in set(test)], test)]
    raise PerfsimError(f"--holdout {spec!r}: expected kfold:K, sizes, FIELD=VALUE[,...] or none")


# --------------------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    errors: pd.DataFrame
    summary: pd.DataFrame
    coverage: pd.DataFrame
    ordering: pd.DataFrame
    ordering_summary: pd.DataFrame
    flush: dict[str, Any]
    meta: dict[str, Any]
    table: pd.DataFrame = field(repr=False, default=None)

    def headline(self) -> dict[str, Any]:
        """The figures the acceptance criteria name."""
        s = self.summary
        out: dict[str, Any] = {}
        for split in ("in-sample", "held-out"):
            r = s[(s.split == split) & (s.metric == "median_ns") & (s.subset == ">=30us")]
            if len(r):
                out[f"{split} median |rel err| (median latency, calls >= 30 us)"] = \
                    float(r.median_abs_rel_error.iloc[0])
                out[f"{split} p90 |rel err| (median latency, calls >= 30 us)"] = \
                    float(r.p90_abs_rel_error.iloc[0])
        o = self.ordering_summary
        for r in o.itertuples():
            out[f"{r.split} ordering: sizes right"] = f"{r.groups_right}/{r.groups}"
            out[f"{r.split} ordering: resolved pairs right"] = \
                f"{r.pairs_agree}/{r.pairs_resolved}"
        f = self.flush
        if f.get("traced_configs"):
            for m in ("flush_calls", "full_flushes", "ipi_rounds"):
                out[f"flush agreement {m}"] = f"{f[m]['agree']}/{f[m]['of']}"
        return out


def _err_rows(table: pd.DataFrame, preds: dict[str, tuple[float, float, float]], split: str,
              fold_of: dict[str, str]) -> list[dict]:
    rows = []
    for r in table.to_dict("records"):
        cid = r["config_id"]
        if cid not in preds or not np.isfinite(r["median_ns"]):
            continue
        for m, pv in zip(LAT_METRICS, preds[cid], strict=True):
            meas = float(r[m])
            rows.append({**{k: r[k] for k in CFG_COLS}, "split": split,
                         "fold": fold_of.get(cid, ""), "metric": m, "predicted": pv,
                         "measured": meas, "n": int(r["n_clean"] if r["stats_from"] == "clean"
                                                    else r["n_latency"])})
    return rows


def _count_rows(table: pd.DataFrame) -> list[dict]:
    rows = []
    for r in table.to_dict("records"):
        if not r["n_traced"]:
            continue
        for m, col in COUNT_METRICS.items():
            meas = r[col]
            pred = r[f"pred_{col}"]
            if m == "ipis":
                if not r["n_ipi_clean"]:
                    continue
                meas, pred = meas * (r["threads"] - 1), pred * (r["threads"] - 1)
            if meas is None or (isinstance(meas, float) and np.isnan(meas)):
                continue
            rows.append({**{k: r[k] for k in CFG_COLS}, "split": "planner", "fold": "",
                         "metric": m, "predicted": float(pred), "measured": float(meas),
                         "n": int(r["n_traced"])})
    return rows


def _finish_errors(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["abs_error"] = (df.predicted - df.measured).abs()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (df.predicted - df.measured) / df.measured
    rel[(df.measured == 0) & (df.predicted == 0)] = 0.0
    rel[(df.measured == 0) & (df.predicted != 0)] = np.nan
    df["rel_error"] = rel
    df["abs_rel_error"] = rel.abs()
    df["size_h"] = df["size"].map(lambda s: fmt_size(int(s)))
    return df


def summarize_errors(err: pd.DataFrame, worst: int = 3) -> pd.DataFrame:
    """Per split × metric (and, for latency, calls ≥ 30 µs): count, median and p90 of the
    absolute relative error, median absolute error, exact agreement, the worst cases."""
    rows = []
    for (split, metric), g in err.groupby(["split", "metric"], sort=False):
        subsets = [("all", g)]
        if metric in LAT_METRICS:
            subsets.append((">=30us", g[g.measured >= THRESHOLD_NS]))
        for name, s in subsets:
            if s.empty:
                continue
            a = s.abs_rel_error.dropna()
            w = s.sort_values("abs_rel_error", ascending=False).head(worst)
            rows.append({
                "split": split, "metric": metric, "subset": name, "n": len(s),
                "median_abs_rel_error": float(a.median()) if len(a) else np.nan,
                "p90_abs_rel_error": float(a.quantile(0.9)) if len(a) else np.nan,
                "max_abs_rel_error": float(a.max()) if len(a) else np.nan,
                "median_abs_error": float(s.abs_error.median()),
                "p90_abs_error": float(s.abs_error.quantile(0.9)),
                "exact": int((s.abs_error == 0).sum()),
                "median_signed_rel_error": float(s.rel_error.dropna().median())
                if s.rel_error.notna().any() else np.nan,
                "worst": "; ".join(f"{r.config_id} {r.rel_error:+.0%}" if np.isfinite(r.rel_error)
                                   else f"{r.config_id} {r.predicted:g} vs {r.measured:g}"
                                   for r in w.itertuples()),
            })
    return pd.DataFrame(rows)


def coverage_table(table: pd.DataFrame, header: dict) -> pd.DataFrame:
    """Designed vs measured vs traced configurations per group × alignment class, with the
    sizes measured and the reasons for anything skipped."""
    design = pd.DataFrame(header.get("design") or table[CFG_COLS].to_dict("records"))
    skipped = {s["config_id"]: s["reason"] for s in header.get("skipped", [])}
    rows = []
    for (grp, al), d in design.groupby(["group", "align"], sort=False):
        m = table[(table.group == grp) & (table["align"] == al)]
        reasons = sorted({skipped[c].split(":")[0] for c in d.config_id if c in skipped})
        rows.append({
            "group": grp, "align": al, "designed": len(d), "measured": len(m),
            "traced": int((m.n_traced > 0).sum()),
            "threads": ",".join(str(t) for t in sorted(m.threads.unique())),
            "backing": ",".join(sorted(m.backing.unique())),
            "populate": ",".join(sorted(m.populate.unique())),
            "thp": ",".join(sorted({"on" if t else "off" for t in m.thp})),
            "sizes": ",".join(fmt_size(int(s)) for s in sorted(m["size"].unique())),
            "skipped": len(d) - len(m), "skip_reasons": "; ".join(reasons)})
    return pd.DataFrame(rows)


def _median_ci(x: np.ndarray, rng: np.random.Generator, b: int = 1000,
               rounds: np.ndarray | None = None) -> tuple[float, float]:
    """Bootstrap 95 % interval of the median of ``x``.

    Repetitions are measured in rounds, and repetitions of one round share the machine's
    state at that moment (load, frequency, caches), so they are not independent draws.
    With round labels the bootstrap resamples whole rounds first, then repetitions within
    them (a two-stage cluster bootstrap); otherwise it resamples repetitions."""
    if len(x) < 2:
        v = float(x[0]) if len(x) else np.nan
        return v, v
    ids = np.unique(rounds) if rounds is not None else np.zeros(1)
    if rounds is None or len(ids) < 2:
        meds = np.median(rng.choice(x, (b, len(x))), axis=1)
    else:
        groups = [x[rounds == i] for i in ids]
        meds = np.empty(b)
        for k in range(b):
            pick = rng.integers(0, len(groups), len(groups))
            meds[k] = np.median(np.concatenate([rng.choice(groups[j], len(groups[j])) for j in pick]))
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def ordering_check(table: pd.DataFrame, samples: dict[str, np.ndarray],
                   preds: dict[str, dict[str, float]], seed: int = 0,
                   rounds: dict[str, np.ndarray] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise class order at each (size ≥ 64 MiB, threads) of the core group.

    A pair is scored (``resolved``) only when the 95 % intervals of the two measured medians
    do not overlap; with ``rounds`` the intervals resample measurement rounds too."""
    core = table[(table.group == "core") & (table["size"] >= ORDER_MIN_SIZE)]
    rng = np.random.default_rng(seed)
    rounds = rounds or {}
    ci = {cid: _median_ci(samples[cid], rng, rounds=rounds.get(cid))
          for cid in core.config_id if cid in samples}
    rows = []
    for (size, thr), g in core.groupby(["size", "threads"]):
        by = {r["align"]: r for r in g.to_dict("records")}
        for a, b in combinations([c for c in ALIGN_CLASSES if c in by], 2):
            ra, rb = by[a], by[b]
            (la, ha), (lb, hb) = ci[ra["config_id"]], ci[rb["config_id"]]
            resolved = ha < lb or hb < la
            ms = np.sign(ra["median_ns"] - rb["median_ns"])
            for split, pr in preds.items():
                if ra["config_id"] not in pr or rb["config_id"] not in pr:
                    continue
                pa, pb = pr[ra["config_id"]], pr[rb["config_id"]]
                rows.append({"split": split, "size": int(size), "size_h": fmt_size(int(size)),
                             "threads": int(thr), "class_a": a, "class_b": b,
                             "measured_a": ra["median_ns"], "measured_b": rb["median_ns"],
                             "ci_a": f"[{la:.0f}, {ha:.0f}]", "ci_b": f"[{lb:.0f}, {hb:.0f}]",
                             "predicted_a": pa, "predicted_b": pb, "resolved": bool(resolved),
                             "agree": bool(np.sign(pa - pb) == ms)})
    df = pd.DataFrame(rows)
    summ = []
    if not df.empty:
        for split, g in df.groupby("split", sort=False):
            res = g[g.resolved]
            per = res.groupby(["size", "threads"]).agree.all()
            groups = g.groupby(["size", "threads"]).ngroups
            bad = [f"{fmt_size(int(s))}/t{t}" for (s, t), ok in per.items() if not ok]
            summ.append({"split": split, "groups": groups,
                         "groups_right": groups - len(bad), "pairs": len(g),
                         "pairs_resolved": len(res), "pairs_agree": int(res.agree.sum()),
                         "pairs_agree_all": int(g.agree.sum()), "wrong_at": ", ".join(bad)})
    return df, pd.DataFrame(summ)


def rank_strings(table: pd.DataFrame, preds: dict[str, float]) -> pd.DataFrame:
    """Measured and predicted class order (fastest first) per size ≥ 64 MiB and threads."""
    core = table[(table.group == "core") & (table["size"] >= ORDER_MIN_SIZE)]
    rows = []
    short = {"pud_aligned": "PUD", "pmd_aligned": "PMD", "realignable": "realign",
             "blocked": "blocked", "unaligned": "unaligned"}
    for (size, thr), g in core.groupby(["size", "threads"]):
        m = g.sort_values("median_ns")
        p = g.assign(pred=g.config_id.map(preds)).sort_values("pred")
        rows.append({"size": fmt_size(int(size)), "threads": int(thr),
                     "measured order": " < ".join(short[a] for a in m["align"]),
                     "predicted order": " < ".join(short[a] for a in p["align"])})
    return pd.DataFrame(rows)


def validate(data: CalibData | str | Path, cost: CostProfile | str | Path, *,
             kernel: str = "6.18", arch: str = "x86_64", holdout: str = "kfold:5",
             prior: str | None = None, seed: int = 0, n_mc: int = 400) -> ValidationReport:
    """Predict every measured configuration; see the module docstring."""
    if not isinstance(data, CalibData):
        data = load_data(data)
    profile = load_cost_profile(cost)
    if prior is None:
        prior = "x86_64-generic"
        if isinstance(cost, str | Path):
            fp = sibling(cost, ".fit.json")
            if fp.is_file():
                prior = json.loads(fp.read_text()).get("prior", prior)
    prior_prof = load_cost_profile(prior)
    table, planned, samples = planned_table(data, profile, kernel=kernel, arch=arch)
    table = table[np.isfinite(table.median_ns)].reset_index(drop=True)
    fit_cond = default_fit_condition(data.records)  # planned_table's condition
    c_timed = timer_of(data, fit_cond) == TIMER_NAME
    ins = {cid: predict_latency(planned[cid], profile, n=n_mc, seed=seed)
           for cid in table.config_id}
    rows = _err_rows(table, ins, "in-sample", {})
    held: dict[str, tuple[float, float, float]] = {}
    fold_of: dict[str, str] = {}
    folds = holdout_folds(table, holdout, seed)
    # The refit's fixed (non-identified) parameters are the profile's own for every
    # parameter the design cannot separate, but a fold that lacks the data for a
    # *free* parameter must not borrow the value fitted with the held-out configurations:
    # such a parameter falls back to the original prior.
    base = prior_prof.with_values(**{p: profile.value(p) for p in PARAM_NAMES})
    for name, train, test in folds:
        if not train or not test:
            continue
        f = fit_table(table, planned, samples, base, ids=train, n_boot=0, seed=seed,
                      cold_cache=c_timed)
        vals = dict(f.values)
        for p, st in f.status.items():
            if st == "prior (no data)":
                vals[p] = prior_prof.value(p)
        f.values = vals
        prof_f = profile_values_with(base, f)
        for cid in test:
            held[cid] = predict_latency(planned[cid], prof_f, n=n_mc, seed=seed)
            fold_of[cid] = name
    rows += _err_rows(table, held, "held-out", fold_of)
    rows += _count_rows(table)
    err = _finish_errors(rows)
    summary = summarize_errors(err)
    preds = {"in-sample": {c: v[0] for c, v in ins.items()}}
    if held:
        preds["held-out"] = {c: v[0] for c, v in held.items()}
    order, order_summary = ordering_check(table, samples, preds, seed,
                                          rounds=latency_rounds(for_condition(
                                              data.records, fit_cond)))
    meta = {"data": Path(data.path).name, "data_sha256": data.sha256,
            "cost_profile": profile.name, "cost_profile_digest": profile.digest,
            "prior_for_refits": prior_prof.name, "kernel": kernel, "arch": arch,
            "holdout": holdout, "folds": [f[0] for f in folds], "seed": seed, "n_mc": n_mc,
            "machine": data.header.get("machine", {}), "status": data.header.get("status"),
            "missing": data.header.get("missing", []),
            "measured_duration_s": data.header.get("duration_s"),
            "rank_in_sample": rank_strings(table, preds["in-sample"]).to_dict("records"),
            "rank_held_out": (rank_strings(table, preds["held-out"]).to_dict("records")
                              if held else [])}
    return ValidationReport(err, summary, coverage_table(table, data.header), order,
                            order_summary, flush_agreement(table), meta, table)


# --------------------------------------------------------------------------------------------
# Writing the report directory


def _md_table(df: pd.DataFrame, floatfmt: dict[str, str] | None = None) -> str:
    if df is None or df.empty:
        return "(none)\n"
    floatfmt = floatfmt or {}
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r, strict=True):
            if c in floatfmt and isinstance(v, int | float) and np.isfinite(v):
                cells.append(format(v, floatfmt[c]))
            elif isinstance(v, float):
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_markdown(rep: ValidationReport, command: str = "") -> str:
    m = rep.meta
    mach = m.get("machine", {})
    pct = {"median_abs_rel_error": ".1%", "p90_abs_rel_error": ".1%", "max_abs_rel_error": ".1%",
           "median_signed_rel_error": "+.1%", "median_abs_error": ".0f", "p90_abs_error": ".0f"}
    lines = [
        f"# Validation: {m['cost_profile']} against {m['data']}", "",
        f"Command: `{command}`" if command else "", "",
        f"Cost profile `{m['cost_profile']}` (digest {m['cost_profile_digest']}), kernel profile "
        f"{m['kernel']}/{m['arch']}; data `{m['data']}` (sha256 {m['data_sha256'][:16]}), "
        f"measured on {mach.get('cpu_model', '?')}, {mach.get('ncpus', '?')} CPUs, "
        f"{'VM guest, ' if mach.get('hypervisor_flag') else ''}"
        f"systemd-detect-virt {mach.get('virtualization', '?')}, Linux {mach.get('kernel', '?')} "
        f"(status: {m.get('status')}). Held-out: `{m['holdout']}` "
        f"({len(m['folds'])} fold(s)); refits fall back to `{m['prior_for_refits']}` for "
        "parameters a training set cannot identify.", "",
        "## Headline", "",
    ]
    for k, v in rep.headline().items():
        lines.append(f"* {k}: **{v:.1%}**" if isinstance(v, float) else f"* {k}: **{v}**")
    lines += ["", "## Error summary (|relative error| = |predicted − measured| / measured)", "",
              _md_table(rep.summary, pct), "",
              "## Ordering of the alignment classes (sizes ≥ 64 MiB, fastest first)", "",
              _md_table(pd.DataFrame(m["rank_in_sample"]).rename(
                  columns={"predicted order": "predicted order (in-sample)"})), ""]
    if m.get("rank_held_out"):
        lines += [_md_table(pd.DataFrame(m["rank_held_out"]).rename(
            columns={"predicted order": "predicted order (held-out)"})), ""]
    lines += [_md_table(rep.ordering_summary), "",
              "Pairs are scored only when the measured medians' bootstrap 95 % intervals do "
              "not overlap (`resolved`); `ordering.csv` has every pair.", "",
              "## Coverage", "", _md_table(rep.coverage), ""]
    if m.get("missing"):
        lines += ["Missing from the measurement:", ""] + [f"* {x}" for x in m["missing"]] + [""]
    lines += ["## Predicted vs measured", "", "![predicted vs measured](pred_vs_measured.png)", "",
              "Files: `errors.csv` (long format: configuration × metric × split), "
              "`summary.csv`, `coverage.csv`, `ordering.csv`, `configs.csv` (per-configuration "
              "statistics), `meta.json`.", ""]
    return "\n".join(lines)


MARKERS = {"pud_aligned": "o", "pmd_aligned": "s", "realignable": "^", "blocked": "D",
           "unaligned": "v"}


def plot(rep: ValidationReport, path: str | Path) -> None:
    from perfsim.report.tune_figure import agg_pyplot

    plt = agg_pyplot()  # (matplotlib's compiled modules loaded with Ctrl-C held back)

    err = rep.errors
    splits = [s for s in ("in-sample", "held-out") if (err.split == s).any()]
    fig, axes = plt.subplots(1, len(splits), figsize=(6.2 * len(splits), 5.6), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        d = err[(err.split == split) & (err.metric == "median_ns")]
        for al, mk in MARKERS.items():
            for thr, col in ((1, "tab:blue"), (2, "tab:orange")):
                s = d[(d["align"] == al) & (d.threads == thr)]
                if s.empty:
                    continue
                core = s.group == "core"
                ax.scatter(s.measured[core] / 1e3, s.predicted[core] / 1e3, marker=mk, c=col,
                           s=30, label=f"{al}, {thr} thr", alpha=0.85)
                if (~core).any():
                    ax.scatter(s.measured[~core] / 1e3, s.predicted[~core] / 1e3, marker=mk,
                               facecolors="none", edgecolors=col, s=30, alpha=0.85)
        lo = max(1.0, min(d.measured.min(), d.predicted.min()) / 1e3 / 1.5)
        hi = max(d.measured.max(), d.predicted.max()) / 1e3 * 1.5
        xs = np.array([lo, hi])
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.plot(xs, xs * 1.15, "k:", lw=0.6)
        ax.plot(xs, xs / 1.15, "k:", lw=0.6)
        ax.axvline(THRESHOLD_NS / 1e3, color="grey", lw=0.5, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured median latency (µs)")
        ax.set_ylabel("predicted (µs)")
        ax.set_title(f"{split}: {rep.meta['cost_profile']}")
        ax.grid(True, which="both", alpha=0.2)
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=1)
    fig.text(0.01, 0.01, "filled: core (anon, full, THP off); hollow: sparse/none, memfd, THP, "
             "hugetlb. dotted: ±15 %. dashed: 30 µs.", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rep: ValidationReport, out_dir: str | Path, *, command: str = "",
                 force: bool = False) -> Path:
    """Write the report directory atomically (temporary sibling, then rename)."""
    out = Path(out_dir)
    if out.exists() and not force:
        raise PerfsimError(f"--out {out} already exists; choose another directory or pass --force")
    with atomic_dir(out) as tmp:
        rep.errors.to_csv(tmp / "errors.csv", index=False)
        rep.summary.to_csv(tmp / "summary.csv", index=False)
        rep.coverage.to_csv(tmp / "coverage.csv", index=False)
        rep.ordering.to_csv(tmp / "ordering.csv", index=False)
        if rep.table is not None:
            rep.table.to_csv(tmp / "configs.csv", index=False)
        meta = dict(rep.meta, headline=rep.headline(), flush_agreement=rep.flush,
                    command=command)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        plot(rep, tmp / "pred_vs_measured.png")
        (tmp / "README.md").write_text(render_markdown(rep, command))
    return out
