"""Scenario mistakes the engine would have run with a silently wrong answer are refused:
a walker's unknown lock, a name given twice, a zero duration (one line, exit 2)."""
from pathlib import Path

import pytest
from test_bad_input import assert_one_line, cli

SHIPPED = Path(__file__).resolve().parents[1] / "workloads" / "scenarios" / \
    "shared-file-two-processes.toml"


def _variant(tmp_path, old: str, new: str, count: int = 1) -> Path:
    text = SHIPPED.read_text()
    assert text.count(old) >= count, old
    p = tmp_path / "s.toml"
    p.write_text(text.replace(old, new, count))
    return p


def test_the_shipped_scenario_runs(tmp_path, capsys):
    rc, _out, err = cli(capsys, "run", SHIPPED, "--out", tmp_path / "o", "-q")
    assert rc == 0, err


def test_a_walker_of_a_lock_no_vma_takes_is_refused(tmp_path, capsys):
    p = _variant(tmp_path, 'lock = "file"', 'lock = "i_mmap:nothing"')
    rc, out, err = cli(capsys, "run", p, "--out", tmp_path / "o", "-q")
    assert_one_line(rc, out, err, "walker 'migrate'", "i_mmap:nothing", "allowed: anon, file")
    assert not (tmp_path / "o").exists()


def test_a_walker_may_name_a_lock_of_the_scenario_by_its_name(tmp_path, capsys):
    from perfsim.engine.scenario import build_spec, load_scenario

    sc = load_scenario(SHIPPED)
    lock = build_spec(sc).walkers[0].lock  # what lock = "file" resolves to
    p = _variant(tmp_path, 'lock = "file"', f'lock = "{lock}"')
    assert build_spec(load_scenario(p)).walkers[0].lock == lock


@pytest.mark.parametrize("old, new, needle", [
    ('name = "resize-b"', 'name = "resize-a"', "caller name 'resize-a' is given twice"),
    ('name = "db-b"', 'name = "db-a"', "process name 'db-a' is given twice"),
])
def test_a_name_given_twice_is_refused(tmp_path, capsys, old, new, needle):
    p = _variant(tmp_path, old, new)
    rc, out, err = cli(capsys, "run", p, "--out", tmp_path / "o", "-q")
    assert_one_line(rc, out, err, needle)


def test_a_vma_name_given_twice_in_a_process_is_refused():
    from perfsim.engine.scenario import Scenario, build_spec
    from perfsim.errors import PerfsimError

    vma = {"name": "v", "start": 0x7F0000000000, "size": 4096}
    sc = Scenario.model_validate({"cpus": 1, "processes": [
        {"name": "p", "cpus": [0], "vmas": [vma, dict(vma, start=0x7F0000200000)]}]})
    with pytest.raises(PerfsimError, match="process 'p': vma name 'v' is given twice"):
        build_spec(sc)


def test_a_zero_duration_is_refused(tmp_path, capsys):
    p = _variant(tmp_path, 'cost_profile = "kvm-host"', 'cost_profile = "kvm-host"\nduration_ns = 0')
    rc, out, err = cli(capsys, "run", p, "--out", tmp_path / "o", "-q")
    # (refused by the scenario's schema when the file is read: before any progress)
    assert_one_line(rc, out, err, "s.toml: duration_ns", "greater than 0")


def test_simulate_with_progress_reports_a_bad_spec_before_any_progress(capsys):
    from dataclasses import replace

    from perfsim.engine import simulate
    from perfsim.engine.scenario import build_spec, load_scenario
    from perfsim.errors import PerfsimError

    spec = build_spec(load_scenario(SHIPPED))
    bad = replace(spec, cpus=1)  # the mms name CPUs up to 3
    with pytest.raises(PerfsimError, match="out of range"):
        simulate(bad, progress=True)
    assert capsys.readouterr().err == ""


def _api():
    from perfsim.mm import AddressSpace, PageTables, Vma
    from perfsim.planner import MoveRequest, plan_mremap
    from perfsim.profiles import resolve_target

    t = resolve_target("6.18", "x86_64")
    space = AddressSpace((Vma(0x7F0000000000, 0x7F0000200000),), PageTables.empty(t.arch))
    return plan_mremap, MoveRequest, space, t


@pytest.mark.parametrize("which, error, needle", [
    ("old_addr str", TypeError, "MoveRequest.old_addr must be an int"),
    ("old_len float", TypeError, "MoveRequest.old_len must be an int"),
    ("req str", TypeError, "plan_mremap: req must be of type MoveRequest"),
    ("space str", TypeError, "plan_mremap: space must be of type AddressSpace"),
    ("target str", TypeError, "plan_mremap: target must be of type Target"),
    ("old_addr -1", ValueError, "MoveRequest.old_addr = -1: must be >= 0"),
    ("new_addr -8K", ValueError, "MoveRequest.new_addr = -8192: must be >= 0"),
])
def test_plan_mremap_names_the_argument_a_caller_got_wrong(which, error, needle):
    plan_mremap, MoveRequest, space, t = _api()
    src = 0x7F0000000000
    args = {"old_addr str": (space, MoveRequest("x", 4096), t),
            "old_len float": (space, MoveRequest(src, 4096.0), t),
            "req str": (space, "req", t),
            "space str": ("space", MoveRequest(src, 4096), t),
            "target str": (space, MoveRequest(src, 4096), "6.18"),
            "old_addr -1": (space, MoveRequest(-1, 4096), t),
            "new_addr -8K": (space, MoveRequest(src, 4096, new_addr=-8192), t)}[which]
    with pytest.raises(error, match=needle):
        plan_mremap(*args)


def test_numpy_integers_are_well_formed_arguments():
    import numpy as np

    from perfsim.planner.syscall import check_plan_arguments

    plan_mremap, MoveRequest, space, t = _api()
    req = MoveRequest(np.int64(0x7F0000000000), np.int64(4096), new_addr=0x7F1000000000)
    check_plan_arguments(space, req, t)  # returns: nothing wrong
    assert plan_mremap(space, req, t).errno is None
