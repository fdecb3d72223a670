"""Confidence intervals, paired comparisons, and the replications a precision needs.

Paired comparisons rely on common random numbers: replication *r* of arm *a* and of arm *b*
use the same seed, so they see the same request stream (sizes, placements, populations,
arrivals, walker gaps, cost jitter). The per-replication difference ``d_r = a_r - b_r`` then
cancels most of the run-to-run noise, and its t interval is much narrower than the one of
two independent samples.

* difference: mean of ``d_r`` ± ``t(1-α/2, n-1) · s_d / √n``;
* ratio: ``exp`` of the mean of ``log(a_r / b_r)`` ± the same t interval on the logs
  (a geometric-mean ratio; it needs positive metrics);
* replications needed for a CI half-width ``h``: the smallest ``n`` with
  ``t(1-α/2, n-1) · s_d / √n ≤ h``, from the observed ``s_d``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile: the ``p`` quantile of t with ``df`` degrees of freedom
    (``scipy.special.stdtrit``, the inverse of the t CDF); nan below one degree of freedom.
    The 95% intervals' quantiles up to 1,000 degrees of freedom come from
    :mod:`perfsim.batch.t_table` (scipy's own values, tabulated) where the scipy they were
    taken from is installed, without importing scipy."""
    if df < 1:
        return float("nan")
    from perfsim.batch.t_table import lookup

    tabled = lookup(p, df)
    if tabled is not None:
        return tabled
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def mean_ci(x, confidence: float = 0.95, quantile=t_quantile) -> tuple[float, float, float]:
    """(mean, low, high) of a t interval; (mean, nan, nan) below two samples. ``quantile``:
    the function giving :func:`t_quantile`'s values (e.g. computed in another process)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if n < 2:
        return m, float("nan"), float("nan")
    h = quantile(0.5 + confidence / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return m, m - h, m + h


def replications_needed(sd: float, half_width: float, confidence: float = 0.95,
                        n_max: int = 1_000_000, quantile=t_quantile) -> int:
    """Smallest n ≥ 2 whose t interval half-width is at most ``half_width``."""
    if not np.isfinite(sd) or half_width <= 0:
        return -1
    if sd == 0:
        return 2
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n = max(2, math.ceil((z * sd / half_width) ** 2))
    while n < n_max and quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) > half_width:
        n += 1
    return n


def paired(a, b, confidence: float = 0.95, precision: float = 0.05,
           quantile=t_quantile, needed: bool = True) -> dict:
    """Paired difference and ratio of two equally long samples (replication-aligned);
    ``quantile`` as for :func:`mean_ci`. ``needed=False``: ``n_needed`` is not worked out
    (-1; :func:`replications_needed` asks for a quantile per candidate count)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    d = a - b
    dm, dlo, dhi = mean_ci(d, confidence, quantile)
    pos = (a > 0) & (b > 0)
    if n and pos.all():
        lm, llo, lhi = mean_ci(np.log(a / b), confidence, quantile)
        ratio, rlo, rhi = math.exp(lm), math.exp(llo) if np.isfinite(llo) else float("nan"), \
            math.exp(lhi) if np.isfinite(lhi) else float("nan")
    else:
        ratio = rlo = rhi = float("nan")
    sd = float(d.std(ddof=1)) if n >= 2 else float("nan")
    mb = float(b.mean()) if n else float("nan")
    return {
        "n": n, "mean_a": float(a.mean()) if n else float("nan"), "mean_b": mb,
        "diff": dm, "diff_lo": dlo, "diff_hi": dhi,
        "ratio": ratio, "ratio_lo": rlo, "ratio_hi": rhi,
        "sd_diff": sd,
        "n_needed": replications_needed(sd, precision * abs(mb), confidence,
                                        quantile=quantile) if n >= 2 and needed else -1,
    }


def paired_table(df, axis: str, a, b, metric: str, confidence: float = 0.95,
                 precision: float = 0.05):
    """One row per combination of the other grid axes: the paired comparison of arm ``a``
    against arm ``b`` of ``axis`` on ``metric``, over replications that succeeded in both."""
    import pandas as pd

    col = f"p:{axis}"
    if col not in df.columns or metric not in df.columns:
        raise KeyError(f"no column {col!r} or {metric!r} in the results")
    ok = df[df["status"] == "ok"]
    others = [c for c in df.columns if c.startswith("p:") and c != col]
    rows = []
    groups = ok.groupby(others, dropna=False, sort=True) if others else [((), ok)]
    for gkey, g in groups:
        ga = g[g[col] == a].set_index("replication")[metric]
        gb = g[g[col] == b].set_index("replication")[metric]
        reps = ga.index.intersection(gb.index).sort_values()
        res = paired(ga.loc[reps].to_numpy(), gb.loc[reps].to_numpy(), confidence, precision)
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        rows.append({**dict(zip(others, gkey, strict=True)), "axis": axis, "a": a, "b": b, "metric": metric,
                     **res})
    return pd.DataFrame(rows)
