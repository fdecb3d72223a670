"""perfsim tune: grid and optuna searches, objectives, constraints, CIs, sensitivity,
clear errors for unknown knobs."""

from __future__ import annotations

import pytest

from perfsim.cli.main import main
from perfsim.errors import PerfsimError
from perfsim.tune import TuneSpec, parse_tune, run_tune


def _spec(**kw) -> TuneSpec:
    data = {"name": "t", "workload": "trace_replay", "seed": 1, "replications": 2,
            "knobs": {"kernel.realign_pmd": [True, False]}}
    data.update(kw)
    return parse_tune(data)


def test_grid_tune_reports_best_settings_with_cis_and_baseline():
    res = run_tune(_spec(knobs={"kernel.realign_pmd": [True, False],
                                "cost.syscall_ns": [5000, 20000]}),
                   executor="serial", quiet=True)
    assert res.method == "grid"
    st = res.settings
    assert len(st) == 1 + 4 and (st["setting"] == -1).sum() == 1
    best = res.best.iloc[0]
    assert best["cost.syscall_ns"] == 5000  # a cheaper syscall wins
    assert best["objective_lo"] <= best["objective"] <= best["objective_hi"]
    assert best["vs_baseline"] < 1.0
    sens = res.sensitivity.set_index("knob")
    assert sens.loc["cost.syscall_ns", "spread"] > sens.loc["kernel.realign_pmd", "spread"]
    assert len(res.runs) == 5 * 2


def test_weighted_objective_and_constraints():
    spec = _spec(knobs={"cost.syscall_ns": [5000, 20000]},
                 objective={"weights": {"p99": 1.0, "ipis_per_call": 1000.0}},
                 constraints=[{"metric": "mean", "min": 15000}])
    res = run_tune(spec, executor="serial", quiet=True)
    st = res.settings.set_index("label")
    assert not st.loc["syscall_ns=5000", "feasible"]
    assert st.loc["syscall_ns=20000", "feasible"]
    assert res.best.iloc[0]["cost.syscall_ns"] == 20000  # the only feasible one


@pytest.mark.parametrize("knobs, needle", [
    ({"kernel.bogus": [1]}, "unknown profile field 'kernel.bogus'; valid fields:"),
    ({"cost.bogus_ns": [1]}, "unknown cost parameter 'bogus_ns'"),
    ({"wibble": [1]}, "grid axis 'wibble': unknown; allowed:"),
    ({"arch.tlb.single_page_flush_ceiling": [-1]}, "single_page_flush_ceiling"),
])
def test_unknown_or_bad_knobs_are_clear_errors(knobs, needle):
    with pytest.raises(PerfsimError, match=None) as e:
        run_tune(_spec(knobs=knobs), executor="serial", quiet=True)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("data, needle", [
    ({"objective": {"metric": "latency"}}, "unknown metric 'latency'"),
    ({"knobs": {}}, "give at least one knob"),
    ({"colour": 1}, "colour: unknown key 'colour'; allowed keys: name"),
    ({"knobs": {"cost.syscall_ns": {"min": 5, "max": 1}}}, "need min < max"),
])
def test_bad_tune_files(data, needle):
    with pytest.raises(PerfsimError) as e:
        _spec(**data)
    assert needle in str(e.value)


def test_grid_method_refuses_ranges():
    spec = _spec(knobs={"cost.syscall_ns": {"min": 1000, "max": 2000}},
                 search={"method": "grid"})
    with pytest.raises(PerfsimError, match="ranges need 'optuna'"):
        spec.method()


def test_optuna_search_is_seeded_and_resumable(tmp_path):
    pytest.importorskip("optuna")
    spec = _spec(knobs={"cost.syscall_ns": {"min": 1000, "max": 30000, "log": True,
                                            "type": "int"},
                        "kernel.realign_pmd": [True, False]},
                 search={"method": "optuna", "trials": 4, "batch": 2})
    a = run_tune(spec, executor="serial", quiet=True, state_dir=tmp_path / "a")
    b = run_tune(spec, executor="serial", quiet=True, state_dir=tmp_path / "b")
    assert a.method == "optuna" and a.storage.endswith(".db")
    assert a.settings["cost.syscall_ns"].tolist()[1:] == b.settings["cost.syscall_ns"].tolist()[1:]
    # Resume: ask for 6 trials in total; the 4 stored ones are not run again.
    c = run_tune(spec, executor="serial", quiet=True, state_dir=tmp_path / "a", trials=6)
    assert len(c.settings) == 1 + 6
    assert c.settings["cost.syscall_ns"].tolist()[1:5] == a.settings["cost.syscall_ns"].tolist()[1:]


def test_cli_tune_writes_its_report(tmp_path, capsys):
    rc = main(["tune", "--workload", "trace_replay", "--knob", "kernel.realign_pmd=true,false",
               "--replications", "2", "--name", "cli", "--out", str(tmp_path), "--quiet",
               "--executor", "serial"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "#1:" in out and "vs_baseline=" in out
    d = tmp_path / "tune-cli"
    assert (d / "index.html").is_file() and (d / "figures" / "tune-cli.svg").is_file()
    assert (d / "data" / "tune-cli-best.csv").is_file()


def test_cli_tune_unknown_knob_exits_2(tmp_path, capsys):
    rc = main(["tune", "--workload", "trace_replay", "--knob", "kernel.nope=1",
               "--out", str(tmp_path), "--quiet", "--executor", "serial"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown profile field 'kernel.nope'" in err[0]


class _CountingExecutor:
    """Serial, counting the points it is asked to simulate."""

    workers = 1

    def __init__(self):
        self.points = []

    def map_unordered(self, fn, items):
        for chunk in items:
            self.points.extend(chunk)
            yield fn(chunk)

    def close(self):
        pass


def test_a_setting_equal_to_the_baseline_is_not_simulated_again():
    # realign_pmd defaults to True: that setting simulates exactly what the baseline does.
    ex = _CountingExecutor()
    res = run_tune(_spec(), executor=ex, quiet=True)
    assert len(ex.points) == 2 * 2  # baseline + realign_pmd=False, 2 replications each
    assert len(res.runs) == 3 * 2
    runs = res.runs.set_index(["cell", "replication"])
    same = [c for c in runs.columns if c not in ("key", "wall_s", "kernel.realign_pmd")]
    on = res.settings.set_index("label").loc["realign_pmd=True", "setting"]
    for r in range(2):
        assert runs.loc[(on, r), same].equals(runs.loc[(-1, r), same])
        assert runs.loc[(on, r), "kernel.realign_pmd"]
    fresh = run_tune(_spec(knobs={"kernel.realign_pmd": [True]}), executor=_CountingExecutor(),
                     quiet=True).runs.set_index(["cell", "replication"])
    metrics = [c for c in same if c != "objective"]
    for r in range(2):
        assert runs.loc[(on, r), metrics].equals(fresh.loc[(0, r), metrics])


def test_points_that_simulate_different_things_are_all_run():
    ex = _CountingExecutor()
    run_tune(_spec(knobs={"cost.syscall_ns": [5000, 20000]}), executor=ex, quiet=True)
    # neither value is the profile's own syscall_ns, so nothing repeats the baseline
    assert len(ex.points) == 3 * 2
