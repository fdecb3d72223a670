"""The tuning figure drawn the cheaper way is the same figure (issue 13, seventh pass).

:func:`perfsim.report.tune_figure.new_figure` makes the figure without pyplot, and
:func:`perfsim.report.tune_figure.tight_layout` runs matplotlib's tight-layout engine once
and leaves the figure without an engine, so ``savefig`` skips the dry draw it makes for a
figure that keeps one. The PNG and SVG must be the bytes of a pyplot figure laid out by
``Figure.tight_layout()`` (how the figure was drawn before), on varied figures: numeric,
logarithmic and categorical knobs, one to three panels, with and without a baseline,
intervals with NaN ends.
"""

import random

import numpy as np
import pytest

from perfsim.report import tune_figure as TF


def _panel(rng: random.Random, i: int) -> TF.TunePanel:
    n = rng.randint(1, 7)
    kind = rng.choice(["numeric", "log", "labels"])
    y = np.array([rng.uniform(0.5, 1.6) for _ in range(n)])
    lo = y - np.array([rng.uniform(0, 0.3) for _ in range(n)])
    hi = y + np.array([rng.uniform(0, 0.3) for _ in range(n)])
    if n > 1 and rng.random() < 0.5:  # a setting with too few replications: no interval
        lo[0] = hi[0] = np.nan
    if kind == "labels":
        xs = [rng.choice(["true", "false", "0", "33", "lazy", "eager"]) + str(j)
              for j in range(n)]
        return TF.TunePanel(f"kernel.knob_{i}", False, False, xs, y, lo, hi)
    top = 4096.0 if kind == "log" else 64.0
    xs = np.array(sorted(rng.sample(range(1, int(top)), n)), float)
    return TF.TunePanel(f"arch.tlb.knob_{i}", True, kind == "log" and n > 2, xs, y, lo, hi)


def _plots(count: int = 6) -> list[TF.TunePlot]:
    rng = random.Random(13_7)
    plots = []
    for c in range(count):
        panels = tuple(_panel(rng, i) for i in range(1 + c % 3))
        base = rng.choice([float("nan"), 0.0, rng.uniform(100.0, 1e6)])
        unit, scale = rng.choice([("µs", 1e-3), ("", 1.0)])
        plots.append(TF.TunePlot(panels, rng.choice(["mean latency", "p99 latency", "ipis"]),
                                 unit, scale, base))
    return plots


def _images(plot: TF.TunePlot, outdir) -> tuple[bytes, bytes]:
    outdir.mkdir()
    fig = TF.draw_tune(plot)
    TF.save_images(fig, outdir, "f")
    png, svg = TF.image_paths("f")
    return (outdir / png).read_bytes(), (outdir / svg).read_bytes()


def _pyplot_figure(figsize):
    return TF.pyplot().figure(figsize=figsize)


@pytest.mark.parametrize("case", range(6))
def test_the_figure_without_pyplot_laid_out_once_is_the_pyplot_figure_tight_layout_draws(
        case, tmp_path, monkeypatch):
    plot = _plots()[case]
    ours = _images(plot, tmp_path / "ours")
    monkeypatch.setattr(TF, "new_figure", _pyplot_figure)
    monkeypatch.setattr(TF, "tight_layout", lambda fig: fig.tight_layout())
    theirs = _images(plot, tmp_path / "theirs")
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]


@pytest.mark.parametrize("part", ["new_figure", "tight_layout"])
def test_each_shortcut_alone_draws_the_same_images(part, tmp_path, monkeypatch):
    plot = _plots()[2]
    ours = _images(plot, tmp_path / "ours")
    monkeypatch.setattr(TF, part, {"new_figure": _pyplot_figure,
                                   "tight_layout": lambda fig: fig.tight_layout()}[part])
    assert _images(plot, tmp_path / "theirs") == ours


def test_the_drawn_figure_keeps_no_layout_engine_and_no_pyplot_manager():
    fig = TF.draw_tune(_plots(1)[0])
    assert fig.get_layout_engine() is None
    assert fig.canvas.manager is None


def test_closing_a_pyplot_figure_releases_it_from_pyplot():
    plt = TF.pyplot()
    fig = _pyplot_figure((2, 2))
    assert plt.fignum_exists(fig.number)
    TF.close(fig)
    assert not plt.fignum_exists(fig.number)


def test_the_figure_process_draws_both_images_without_importing_pyplot(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from perfsim.report import figure_process
        for m in figure_process.IMPORTS:
            __import__(m)
        from perfsim.report import tune_figure as TF
        panel = TF.TunePanel("k", True, False, np.array([1.0, 2.0]), np.array([1.0, 1.1]),
                             np.array([0.9, 1.0]), np.array([1.1, 1.2]))
        figure_process.draw_both(TF.TunePlot((panel,), "mean", "µs", 1e-3, 5e3),
                                 {str(tmp_path)!r}, "f")
        print("matplotlib.pyplot" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"f.png", "f.svg"}
