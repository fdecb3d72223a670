"""``perfsim tune`` draws its figure from the search's rows, before the analysis (issue 13,
eighth pass): the early figure is the analysis's figure, and the report uses it only then."""

import itertools
import random

import numpy as np
import pytest

KNOB_SETS = {
    "ints": {"arch.tlb.single_page_flush_ceiling": [0, 8, 33, 128, 512]},
    "bools and ints": {"kernel.realign_pmd": [True, False],
                       "arch.tlb.single_page_flush_ceiling": [8, 64]},
    "floats": {"cost.ipi_round_trip_ns": [1500.0, 2500.5, 1e4]},
    "strings and floats": {"kernel.version": ["6.1", "6.18"],
                           "cost.ipi_round_trip_ns": [0.5, 3.25]},
    "a range": {"cost.ipi_round_trip_ns": {"min": 500, "max": 5000, "type": "int"}},
    "a float range": {"cost.tlb_flush_ns": {"min": 0.1, "max": 9.0, "log": True}},
}
OBJECTIVES = [{"metric": "mean"}, {"metric": "p99", "direction": "maximize"},
              {"metric": "ipis_per_call"},
              {"weights": {"p99": 1.0, "ipis_per_call": 2000.0}},
              {"metric": "rmap_hold_p99"}]
METRICS = ("lat_mean_ns", "lat_p50_ns", "lat_p90_ns", "lat_p99_ns", "rmap_hold_p50_ns",
           "rmap_hold_p99_ns", "walker_wait_p50_ns", "walker_wait_p99_ns", "ipis_per_call",
           "flushes_per_call", "user_stolen_per_call_ns")


def _spec(knobs: dict, objective: dict, replications: int):
    from perfsim.tune import parse_tune

    return parse_tune({"name": "early", "workload": "ipi_storm", "seed": 1,
                       "replications": replications, "knobs": knobs,
                       "objective": objective}, "test")


def _settings(spec, rng: random.Random) -> list[dict]:
    """The settings a grid or a sampler would ask for."""
    from perfsim.tune.spec import KnobRange

    if all(not isinstance(k, KnobRange) for k in spec.knobs.values()):
        keys = list(spec.knobs)
        return [dict(zip(keys, c, strict=True))
                for c in itertools.product(*(spec.knobs[k] for k in keys))]
    out = []
    for _ in range(rng.randint(2, 7)):
        s = {}
        for name, k in spec.knobs.items():
            if isinstance(k, KnobRange):
                s[name] = (rng.randint(int(k.min), int(k.max)) if k.type == "int"
                           else rng.uniform(k.min, k.max))
            else:
                s[name] = rng.choice(list(k))
        out.append(s)
    return out


def _rows(spec, rng: random.Random, *, fail: float, baseline_fails: bool,
          zero: bool) -> list[dict]:
    """Rows as the search returns them (in no order): per setting and replication, the
    metrics of a run, or a failure; the setting's index is a grid cell or a trial number."""
    rows = []
    cells, cell = [(-1, {})], -1
    for s in _settings(spec, rng):  # grid cells, or trial numbers with gaps
        cell += 1 + rng.randint(0, 2) * (not spec.method() == "grid")
        cells.append((cell, s))
    for cell, s in cells:
        for r in range(spec.replications):
            row = {"key": f"{cell}-{r}", "cell": cell, "replication": r, **s}
            if (rng.random() < fail and cell != -1) or (cell == -1 and baseline_fails):
                row.update(status="failed", error="RuntimeError: boom at x.py:1",
                           wall_s=0.01)
            else:
                scale = rng.lognormvariate(0, 0.2) * (1 + (r + 1) * 0.1)
                row.update(status="ok", error="", calls=100,
                           **{m: scale * rng.uniform(1e3, 9e5) for m in METRICS},
                           wall_s=0.01)
                if zero and rng.random() < 0.2:
                    row["lat_mean_ns"] = 0.0
            rows.append(row)
    rng.shuffle(rows)
    return rows


def _cases():
    rng = random.Random(20261201)
    for i in range(36):
        knobs = list(KNOB_SETS)[i % len(KNOB_SETS)]
        yield (knobs, OBJECTIVES[i % len(OBJECTIVES)], rng.randint(2, 5), rng.random() * 0.3,
               i % 9 == 4, i % 7 == 3, rng.randrange(1 << 30))


@pytest.mark.parametrize("knobs, objective, reps, fail, baseline_fails, zero, seed",
                         list(_cases()))
def test_the_early_figure_is_the_figure_of_the_analysis(knobs, objective, reps, fail,
                                                         baseline_fails, zero, seed):
    import pandas as pd

    from perfsim.report import figures as F
    from perfsim.report.tune_figure import plot_of_numbers, same_plot
    from perfsim.tune.search import analyze, early_plot_numbers

    spec = _spec(KNOB_SETS[knobs], objective, reps)
    rows = _rows(spec, random.Random(seed), fail=fail, baseline_fails=baseline_fails,
                 zero=zero)
    runs = pd.DataFrame(rows).sort_values(["cell", "replication"], ignore_index=True)
    _, plot = F.tune_plot(analyze(spec, "grid", runs))
    early = plot_of_numbers(list(spec.knobs), spec.objective.label, spec.objective.terms(),
                            *early_plot_numbers(spec, rows))
    assert same_plot(early, plot)
    for p, q in zip(early.panels, plot.panels, strict=True):  # and field by field
        assert (p.knob, p.numeric, p.log_x, p.xs) == (q.knob, q.numeric, q.log_x, q.xs)
        for a, b in ((p.y, q.y), (p.lo, q.lo), (p.hi, q.hi)):
            assert a.tobytes() == np.asarray(b, float).tobytes()
    assert (early.name, early.unit, early.scale) == (plot.name, plot.unit, plot.scale)
    assert early.base == plot.base or (np.isnan(early.base) and np.isnan(plot.base))


def test_no_early_figure_when_every_run_failed():
    from perfsim.tune.search import early_plot_numbers

    spec = _spec(KNOB_SETS["ints"], {"metric": "mean"}, 2)
    rows = [{"key": "k", "cell": c, "replication": r, "status": "failed", "error": "x"}
            for c in (-1, 0) for r in (0, 1)]
    assert early_plot_numbers(spec, rows) is None


def test_the_figure_names_objectives_as_the_report_does():
    from perfsim.report import figures as F
    from perfsim.report import tune_figure

    assert tune_figure.OBJECTIVE_WORDS == F.OBJECTIVE_WORDS


def _plot(**change):
    from perfsim.report.tune_figure import TunePanel, TunePlot

    panel = {"knob": "k", "numeric": False, "log_x": False, "xs": ["1", "2"],
             "y": np.array([1.0, np.nan]), "lo": np.array([0.9, np.nan]),
             "hi": np.array([1.1, np.nan])}
    plot = {"name": "mean latency per call", "unit": "µs", "scale": 1e-3, "base": 5.0}
    panel.update({k: v for k, v in change.items() if k in panel})
    plot.update({k: v for k, v in change.items() if k in plot})
    return TunePlot((TunePanel(**panel),), **plot)


@pytest.mark.parametrize("change", [
    {"xs": ["1", "3"]}, {"xs": [1, 2]}, {"y": np.array([1.0, 1.0])},
    {"lo": np.array([0.9000000000000001, np.nan])}, {"hi": np.array([np.nan, 1.1])},
    {"knob": "j"}, {"numeric": True}, {"log_x": True}, {"name": "p99"}, {"unit": ""},
    {"scale": 1.0}, {"base": float("nan")}, {"base": 5.000000000000001}])
def test_same_plot_tells_any_drawn_difference_apart(change):
    from perfsim.report.tune_figure import same_plot

    assert same_plot(_plot(), _plot())
    assert same_plot(_plot(base=float("nan")), _plot(base=float("nan")))
    assert not same_plot(_plot(), _plot(**change))
    assert not same_plot(_plot(**change), _plot())


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_a_figure_drawn_ahead_is_moved_into_the_report_when_it_is_the_same(tmp_path):
    from perfsim.report.figure_process import FigureProcess, draw_here

    draw_here(_plot(), tmp_path / "here", "tune-x") if (tmp_path / "here").mkdir() is None \
        else None
    (tmp_path / "report").mkdir()
    fp = FigureProcess().start()
    try:
        assert fp.draw_ahead(_plot(), "tune-x")
        scratch = fp.scratch
        job = fp.draw(_plot(), tmp_path / "report", "tune-x")
        assert fp.t_quantile(0.975, 3) > 0  # asked here while the drawing is awaited
        assert job.wait() == "process"
    finally:
        fp.close()
    assert _files(tmp_path / "report") == _files(tmp_path / "here")
    assert set(_files(tmp_path / "report")) == {"figures/tune-x.png", "figures/tune-x.svg"}
    assert not scratch.exists()


@pytest.mark.parametrize("other", [{"fid": "tune-y"}, {"base": 6.0}])
def test_a_figure_drawn_ahead_is_not_used_for_another_one(tmp_path, other):
    from perfsim.report.figure_process import FigureProcess, draw_here

    fid = other.get("fid", "tune-x")
    wanted = _plot(**{k: v for k, v in other.items() if k != "fid"})
    (tmp_path / "here").mkdir()
    draw_here(wanted, tmp_path / "here", fid)
    (tmp_path / "report").mkdir()
    with FigureProcess().start() as fp:
        assert fp.draw_ahead(_plot(), "tune-x")
        assert fp.draw(wanted, tmp_path / "report", fid).wait() == "process"
        scratch = fp.scratch
    assert _files(tmp_path / "report") == _files(tmp_path / "here")
    assert not scratch.exists()


def test_a_figure_drawn_ahead_by_a_process_that_died_is_drawn_here(tmp_path):
    from perfsim.report.figure_process import FigureProcess

    with FigureProcess().start() as fp:
        assert fp.draw_ahead(_plot(), "tune-x")
        fp.proc.kill()
        fp.proc.join()
        assert fp.draw(_plot(), tmp_path, "tune-x").wait() == "here"
    assert set(_files(tmp_path)) == {"figures/tune-x.png", "figures/tune-x.svg"}


def test_nothing_is_drawn_ahead_without_a_figure_process():
    from perfsim.report.figure_process import FigureProcess

    fp = FigureProcess()
    assert not fp.draw_ahead(_plot(), "tune-x")
    assert fp.scratch is None


def test_the_tune_command_uses_the_figure_it_drew_from_the_rows(tmp_path, monkeypatch):
    from perfsim.cli.main import main
    from perfsim.report import figure_process

    ahead, drawn = [], []
    draw_ahead, wait = figure_process.FigureProcess.draw_ahead, figure_process._Job.wait
    monkeypatch.setattr(figure_process.FigureProcess, "draw_ahead",
                        lambda fp, plot, fid: ahead.append(draw_ahead(fp, plot, fid)) or
                        ahead[-1])
    monkeypatch.setattr(figure_process._Job, "wait",
                        lambda job: drawn.append((job.into is not None, wait(job))))
    monkeypatch.setattr(figure_process, "worth_starting", lambda: True)
    assert main(["tune", "--workload", "ipi_storm", "--knob",
                 "arch.tlb.single_page_flush_ceiling=0,33,512", "--set",
                 "workload.streams.mover-0.count=3", "--replications", "2", "--name", "ea",
                 "--executor", "serial", "--quiet", "--out", str(tmp_path)]) == 0
    assert ahead == [True] and drawn == [(True, "process")]
    assert set(_files(tmp_path / "tune-ea" / "figures")) == {"tune-ea.png", "tune-ea.svg"}


def test_nothing_is_drawn_ahead_without_a_temporary_directory(monkeypatch, tmp_path):
    import tempfile

    from perfsim.report.figure_process import FigureProcess

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with FigureProcess().start() as fp:
        assert not fp.draw_ahead(_plot(), "tune-x")
        assert fp.draw(_plot(), tmp_path, "tune-x").wait() == "process"
    assert set(_files(tmp_path)) == {"figures/tune-x.png", "figures/tune-x.svg"}
