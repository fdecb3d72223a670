"""The tuning figure drawn from plain data: numpy and matplotlib only, no pandas, no
simulator. :func:`perfsim.report.figures.fig_tune` prepares a :class:`TunePlot` from a
tuning's settings and draws it with :func:`draw_tune`; ``perfsim tune`` may hand the same
:class:`TunePlot` to a figure process (:mod:`perfsim.report.figure_process`), which has
imported matplotlib while the simulations ran. Either way the same function draws the same
artists from the same numbers, so the PNG and SVG files are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STYLE = {"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "perfsim",
         "svg.fonttype": "none", "figure.dpi": 100}
"""The report's matplotlib style: font sizes, a fixed SVG hash salt and text kept as text,
so an SVG is the same on every run."""


def agg_pyplot():
    """matplotlib's pyplot on the Agg backend, imported with Ctrl-C held back until the
    import is over (:func:`perfsim.interrupts.deferred_interrupt`), the Agg backend's
    compiled module included (pyplot loads it only at the first figure otherwise): after
    this a report loads no other compiled module of matplotlib's (2026-12-02)."""
    from perfsim.interrupts import deferred_interrupt

    with deferred_interrupt():
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.backends.backend_agg  # noqa: F401 (its compiled module, loaded now)
        import matplotlib.pyplot as plt
    return plt


def pyplot():
    """:func:`agg_pyplot` with the report's style (:data:`STYLE`)."""
    plt = agg_pyplot()
    plt.rcParams.update(STYLE)
    return plt


def new_figure(figsize: tuple[float, float]):
    """A figure of ``figsize`` inches in the report's style (:data:`STYLE`) on an Agg
    canvas, made without pyplot: what ``pyplot().figure(figsize=figsize)`` makes, less the
    pyplot figure manager (nothing here shows a window), so drawing one needs neither
    pyplot's import nor its backend switch (a figure process imports
    :mod:`matplotlib.figure` only). ``savefig`` renders each format on that format's own
    canvas either way; the images are the same bytes (``tests/test_t13d_tune_figure.py``)."""
    from perfsim.interrupts import deferred_interrupt

    with deferred_interrupt():  # (its C extensions: as pyplot())
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

    matplotlib.rcParams.update(STYLE)
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


@dataclass(frozen=True)
class TunePanel:
    """One knob's panel: the settings' knob values (``xs``: floats when the knob is
    ``numeric``, else their labels) and the paired ratio to the baseline with its CI
    (``y``, ``lo``, ``hi``: float arrays, one entry per setting)."""

    knob: str
    numeric: bool
    log_x: bool
    """A numeric knob spanning more than a factor of 50 over more than two positive values."""
    xs: object
    y: object
    lo: object
    hi: object


@dataclass(frozen=True)
class TunePlot:
    """Everything :func:`draw_tune` draws: a panel per knob, the objective's name, and the
    baseline's objective times ``scale`` (the right axis; NaN without a baseline)."""

    panels: tuple[TunePanel, ...]
    name: str
    unit: str
    scale: float
    base: float


OBJECTIVE_WORDS = {"mean": "mean latency per call", "p50": "median latency per call",
                   "p90": "p90 latency per call", "p99": "p99 latency per call"}
"""How the figure names an objective (objective metric names, docs/tune.md, in words; also
:data:`perfsim.report.figures.OBJECTIVE_WORDS`)."""


def plot_of_numbers(knobs: list[str], label: str, terms, settings, base: float) -> TunePlot:
    """The :class:`TunePlot` :func:`perfsim.report.figures.tune_plot` makes of a tuning,
    from plain numbers instead of its settings table: ``settings`` are the trial settings
    in order, each ``(knob values, vs_baseline, vs_baseline_lo, vs_baseline_hi)``, and
    ``base`` the baseline's objective mean (NaN without one); ``label`` and ``terms`` are the
    objective's. The settings table keeps knob values as written (an object column), which
    ``tune_plot`` labels as text (``str`` of each value), so every panel is categorical here
    too. ``perfsim tune`` draws this while its analysis is still to come; the drawing is
    used only if the analysis's own TunePlot is equal (:func:`same_plot`)."""
    import numpy as np

    ns_obj = all(c.endswith("_ns") for c in terms)
    scale, unit = (1e-3, "µs") if ns_obj else (1.0, "")
    y = np.array([s[1] for s in settings], float)
    lo = np.array([s[2] for s in settings], float)
    hi = np.array([s[3] for s in settings], float)
    panels = tuple(TunePanel(k, False, False, [str(s[0][k]) for s in settings], y, lo, hi)
                   for k in knobs)
    return TunePlot(panels, OBJECTIVE_WORDS.get(label, label), unit, scale, float(base))


def same_plot(a: TunePlot, b: TunePlot) -> bool:
    """Whether :func:`draw_tune` draws ``a`` and ``b`` alike: the same panels (knob, kind,
    values and labels, the same floats with NaN in the same places), name, unit, scale and
    baseline."""
    import numpy as np

    def same_floats(x, y) -> bool:
        x, y = np.asarray(x), np.asarray(y)
        return x.dtype == y.dtype and x.shape == y.shape and bool(
            np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))

    def same_xs(x, y) -> bool:
        if isinstance(x, list) or isinstance(y, list):
            return (isinstance(x, list) and isinstance(y, list) and len(x) == len(y)
                    and all(type(u) is type(v) and u == v for u, v in zip(x, y)))
        return same_floats(x, y)

    def same_base(x: float, y: float) -> bool:
        return x == y or (x != x and y != y)

    return (len(a.panels) == len(b.panels)
            and all(p.knob == q.knob and p.numeric == q.numeric and p.log_x == q.log_x
                    and same_xs(p.xs, q.xs) and same_floats(p.y, q.y)
                    and same_floats(p.lo, q.lo) and same_floats(p.hi, q.hi)
                    for p, q in zip(a.panels, b.panels))
            and a.name == b.name and a.unit == b.unit and a.scale == b.scale
            and same_base(a.base, b.base))


def draw_tune(p: TunePlot):
    """The matplotlib figure of ``p``: per knob, the setting / baseline ratio with its paired
    95% CI over the knob's values, the baseline's dotted line, and the objective itself on
    the right axis."""
    import math

    import numpy as np

    fig = new_figure((4.6 * len(p.panels), 3.5))
    axes = fig.subplots(1, len(p.panels), squeeze=False)
    for ax, k in zip(axes[0], p.panels):
        y, lo, hi = k.y, k.lo, k.hi
        err = np.clip(np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)]), 0, None)
        if k.numeric:
            order = np.argsort(k.xs)
            ax.errorbar(k.xs[order], y[order], yerr=err[:, order], fmt="o-", ms=3,
                        capsize=2, lw=1, label="setting / baseline, paired 95% CI")
            if k.log_x:
                ax.set_xscale("log")
        else:
            ax.errorbar(range(len(k.xs)), y, yerr=err, fmt="o", ms=3, capsize=2,
                        label="setting / baseline, paired 95% CI")
            ax.set_xticks(range(len(k.xs)))
            ax.set_xticklabels(list(k.xs), rotation=30, fontsize=7)
        ax.axhline(1.0, color="k", lw=0.7, ls=":", label="baseline (profile's own setting)")
        ax.legend(fontsize=6.5, loc="upper left")
        ax.set_xlabel(k.knob, fontsize=8)
        ax.set_ylabel(f"{p.name}: setting / baseline (×)", fontsize=8)
        ax.grid(True, alpha=0.3)
        if math.isfinite(p.base) and p.base > 0:
            sec = ax.secondary_yaxis("right", functions=(lambda v, b=p.base * p.scale: v * b,
                                                         lambda v, b=p.base * p.scale: v / b))
            sec.set_ylabel(f"≈ {p.name}" + (f" ({p.unit})" if p.unit else ""), fontsize=8)
    tight_layout(fig)
    return fig


def tight_layout(fig) -> None:
    """``fig.tight_layout()`` without the layout engine it leaves behind: the same
    adjustment of the subplots (the same :class:`~matplotlib.layout_engine.TightLayoutEngine`
    with the same arguments, executed once), but the figure keeps no engine, so
    ``savefig`` does not first draw the whole figure once more with drawing disabled to run
    an engine that does nothing (``Figure.tight_layout`` leaves a placeholder engine). That
    dry draw was a third of the PNG's time and half the SVG's (2026-12-01); the images are
    the same bytes (``tests/test_t13d_tune_figure.py``)."""
    from matplotlib.layout_engine import TightLayoutEngine

    TightLayoutEngine(pad=1.08, h_pad=None, w_pad=None, rect=None).execute(fig)


def image_paths(fid: str) -> tuple[str, str]:
    """A figure's PNG and SVG, relative to the report directory."""
    return f"figures/{fid}.png", f"figures/{fid}.svg"


def save_png(fig, outdir: str | Path, fid: str) -> None:
    """Write ``fig`` as ``outdir/figures/<fid>.png`` (no software stamp)."""
    fig.savefig(Path(outdir) / image_paths(fid)[0], dpi=110, metadata={"Software": None})


def save_svg(fig, outdir: str | Path, fid: str) -> None:
    """Write ``fig`` as ``outdir/figures/<fid>.svg`` (no date or creator stamp)."""
    fig.savefig(Path(outdir) / image_paths(fid)[1], metadata={"Date": None, "Creator": None})


def save_images(fig, outdir: str | Path, fid: str) -> None:
    """Write ``fig`` as ``outdir/figures/<fid>.png`` and ``.svg`` (stamped with no date or
    software, so the files depend on the figure alone) and close it (a pyplot figure; one
    of :func:`new_figure` is not pyplot's to close)."""
    (Path(outdir) / "figures").mkdir(exist_ok=True)
    save_png(fig, outdir, fid)
    save_svg(fig, outdir, fid)
    close(fig)


def close(fig) -> None:
    """Release ``fig`` from pyplot if pyplot manages it (``plt.close``)."""
    if fig.canvas.manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
