"""Issue 13, seventh pass: a run's record tables made when first used
(``records.Recorder``): a run makes only the tables it writes, and its result reads the
same tables, frames, summary and pickle as one whose tables were all made at once."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, WalkerSpec, simulate
from perfsim.engine.records import RECORDER_TABLES, Recorder, RecordTables, Table
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import resolve_target

KiB, MiB = 1 << 10, 1 << 20
A = 0x7F0000200000
B = 0x7F4000200000


def _space(size: int, target):
    return AddressSpace((Vma(A, A + size, name="heap"),),
                        PageTables.empty(target.arch).populate(A, A + size))


def _specs():
    target = resolve_target("6.18", "x86_64")
    fixed = load_cost_profile("kvm-host").fixed()
    jittery = load_cost_profile("kvm-host")
    out = {}
    for size in (4 * KiB, 2 * MiB + 8 * KiB, 64 * MiB):
        plan = plan_mremap(_space(size, target), MoveRequest(old_addr=A, old_len=size,
                                                             new_addr=B), target)
        for name, prof in (("fixed", fixed), ("jittery", jittery)):
            out[f"lone {size} {name}"] = SimSpec(
                cpus=2, target=target, profile=prof, mms=(MmSpec("app", (0, 1)),),
                callers=(CallerSpec("mover", "app", 0, (plan,)),))
    reqs = (MoveRequest(old_addr=A, old_len=2 * MiB, new_addr=B),
            MoveRequest(old_addr=B, old_len=2 * MiB, new_addr=A))
    out["walker"] = SimSpec(
        cpus=2, target=target, profile=jittery,
        mms=(MmSpec("app", (0, 1), _space(2 * MiB, target)),),
        callers=(CallerSpec("gc", "app", 0, reqs, repeat=20, interval_ns=50_000),),
        walkers=(WalkerSpec("w", "anon_vma:heap", cpu=1, interval_ns=20_000, hold_ns=3_000,
                            hold_sigma=0.3),),
        duration_ns=3_000_000, seed=3)
    return out


SPECS = _specs()


def _eager(spec) -> dict:
    """The summary's tables, and the frames, of a run whose tables are all made first."""
    from perfsim.engine.simulate import run

    rec = Recorder()
    tables = rec.tables()
    run(spec, rec)
    return {"summaries": {k: t.summary() for k, t in tables.items()},
            "frames": {k: t.to_frame() for k, t in tables.items()}}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_run_with_tables_made_on_first_use_records_what_one_with_all_made_does(name):
    spec = SPECS[name]
    want = _eager(spec)
    got = simulate(spec)
    assert got.summary["tables"] == want["summaries"]
    assert list(got.summary["tables"]) == list(RECORDER_TABLES)
    for t in RECORDER_TABLES:
        pd.testing.assert_frame_equal(got.frame(t), want["frames"][t])
    again = pickle.loads(pickle.dumps(simulate(spec)))
    assert again.summary == got.summary
    for t in RECORDER_TABLES:
        pd.testing.assert_frame_equal(again.frame(t), want["frames"][t])


@pytest.mark.parametrize("name", sorted(n for n in SPECS if n.startswith("lone")))
def test_a_lone_caller_makes_no_table_it_does_not_write(name):
    spec = SPECS[name]
    want = _eager(spec)
    res = simulate(spec)
    rec = res._tables.rec
    unmade = set(RECORDER_TABLES) - set(vars(rec))
    assert {"walker_waits", "users"} <= unmade
    assert all(want["summaries"][t]["rows"] == 0 for t in unmade)
    assert res.summary["tables"]["users"] == want["summaries"]["users"]
    assert set(RECORDER_TABLES) - set(vars(rec)) == unmade  # (the summary made none)
    assert len(res.frame("users")) == 0  # made when read: an empty table
    assert "users" in vars(rec)


def test_record_tables_map_every_table_name_and_no_other():
    tables = RecordTables(Recorder())
    assert list(tables) == list(RECORDER_TABLES) == tables.keys()
    assert len(tables) == 5 and "calls" in tables and "nope" not in tables
    assert tables.get("nope") is None
    with pytest.raises(KeyError):
        tables["nope"]  # noqa: B018
    with pytest.raises(AttributeError):
        Recorder().nope  # noqa: B018
    assert all(isinstance(t, Table) for t in tables.values())
    assert np.all([tables[k] is v for k, v in tables.items()])
