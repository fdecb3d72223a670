"""Scenario files and ``perfsim run`` (issue 3, part 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from perfsim.engine import load_scenario, parse_duration, simulate
from perfsim.errors import PerfsimError

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "workloads" / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_example_scenarios_run_and_their_walkers_wait(path):
    res = simulate(path)
    assert len(res.calls) > 0 and (res.calls.errno == "").all()
    assert len(res.walker_waits) > 0
    assert res.summary["tables"]["holds"]["rows"] == len(res.holds)


def test_durations_parse_to_integer_ns():
    assert parse_duration("20ms") == 20_000_000
    assert parse_duration("1.5us") == 1500
    assert parse_duration(7) == 7
    with pytest.raises(PerfsimError, match="walker_gap"):
        parse_duration("soon", what="walker_gap")


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


BASE = """
cpus = 2
[[processes]]
name = "app"
cpus = [0, 1]
  [[processes.vmas]]
  name = "heap"
  start = "0x7f0000200000"
  size = "8M"
[[callers]]
name = "c"
process = "app"
cpu = 0
  [[callers.requests]]
  old_addr = "0x7f0000200000"
  old_len = "8M"
  new_addr = "0x7f4000200000"
"""


def test_unknown_scenario_field_is_named(tmp_path):
    with pytest.raises(PerfsimError, match=r"callers\[0\]\.speed: unknown key .speed.; allowed keys: name, process"):
        load_scenario(_write(tmp_path, BASE.replace('cpu = 0\n', 'cpu = 0\nspeed = 3\n')))


def test_bad_size_in_scenario_is_named(tmp_path):
    with pytest.raises(PerfsimError, match=r"processes\[0\]\.vmas\[0\]\.size"):
        load_scenario(_write(tmp_path, BASE.replace('size = "8M"', 'size = "8Q"', 1)))


def test_walker_on_unknown_vma_lists_the_known_ones(tmp_path):
    text = BASE + '[[walkers]]\nname = "w"\nprocess = "app"\nvma = "stack"\ncpu = 1\ninterval_ns = "1us"\nhold_ns = "1us"\n'
    with pytest.raises(PerfsimError, match="unknown vma 'stack'.*known: heap"):
        simulate(_write(tmp_path, text))


def test_cli_run_writes_records_atomically(tmp_path):
    from perfsim.cli.main import main

    out = tmp_path / "out"
    scen = _write(tmp_path, BASE)
    assert main(["run", str(scen), "--out", str(out), "--seed", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "summary.json" in names and any(n.startswith("calls.") for n in names)
    calls = (pd.read_parquet(out / "calls.parquet") if (out / "calls.parquet").exists()
             else pd.read_csv(out / "calls.csv"))
    assert len(calls) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp left
    assert main(["run", str(scen), "--out", str(out)]) == 2  # exists, no --force


def test_cli_run_reports_a_bad_scenario_in_one_line(tmp_path, capsys):
    from perfsim.cli.main import main

    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perfsim: error:") and "\n" not in err
