"""A plan made of periodic blocks (a large regular move) gets its call template part by part
(``pricing._periodic_template``), never materialised: the same template as the column path
(``pricing._array_template`` on the materialised plan), on seeded random periodic plans
(overrides of any count column, rmap rows under several lock sets, fixed and jittered
profiles) and on the 1 GiB unaligned move."""

from __future__ import annotations

import numpy as np
import pytest
from test_t13_price_counts import (
    FOLIOS,
    _distinct_profile,
    _jittery,
    _same_template,
    random_periodic_plan,
)

from perfsim.cost import load_cost_profile
from perfsim.cost.model import (
    LIST_COLUMNS,
    SCALAR_ROWS,
    lay_out,
    periodic_layout,
    vector_row_costs,
)
from perfsim.engine import pricing
from perfsim.engine.pricing import _array_template, build_template
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.profiles import resolve_target

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def _periodic_only(monkeypatch) -> None:
    """Make the column path fail, so a test sees the template come from the periodic one."""
    def no_columns(*_a, **_k):
        raise AssertionError("the column path was taken")

    monkeypatch.setattr(pricing, "_array_template", no_columns)


def _dense(plan: S.Steps) -> S.Steps:
    return S.Steps(plan.cols, plan.lock_sets, plan.lock_set)


def _plans(rng, count: int) -> list[S.Steps]:
    """Random periodic plans; every other one takes no rmap lock (as a large anonymous
    move), so both ways of recording a periodic segment are drawn."""
    out = []
    for i in range(count):
        plan = random_periodic_plan(rng)
        if i % 2:
            for part in plan.parts():
                t = part.template if isinstance(part, S.PeriodicBlock) else part
                t.cols["rmap"][:] = 0
        out.append(plan)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_periodic_templates_equal_column_templates_of_the_materialised_plan(seed, monkeypatch):
    rng = np.random.default_rng(900 + seed)
    profiles = (_distinct_profile(), _jittery(("syscall_ns", "ipi_wakeup_ns")),
                _jittery(("pte_present_ns", "table_alloc_ns"), "normal"))
    for plan in _plans(rng, 12):
        if periodic_layout(plan) is None:
            continue
        want_plan = _dense(S.Steps(parts=plan.parts()))
        for prof in profiles:
            for cpus in (1, 3):
                folio = FOLIOS[int(rng.integers(0, len(FOLIOS)))]
                lazy = S.Steps(parts=plan.parts())
                a, b = np.random.default_rng(seed), np.random.default_rng(seed)
                with monkeypatch.context() as mp:
                    _periodic_only(mp)
                    got = build_template(lazy, prof, cpus, a, set(), None, folio)
                want = _array_template(want_plan, prof, cpus, b, set(), None, folio)
                assert a.bit_generator.state == b.bit_generator.state
                _same_template(got, want)
                if len(lazy) > SCALAR_ROWS or not prof.is_fixed:  # else _small_template's
                    assert lazy._cols is None and lazy._lock_set is None  # not materialised


def test_periodic_plans_with_hot_locks_or_walked_ptls_get_the_column_templates():
    rng = np.random.default_rng(5)
    prof = _distinct_profile()
    seen = 0
    for _ in range(40):
        plan = random_periodic_plan(rng)
        if periodic_layout(plan) is None or not any(plan.lock_sets):
            continue
        hot = {plan.lock_sets[-1][0]}
        if not any(hot & set(ls) for ls in plan.lock_sets):
            continue
        want_plan = _dense(S.Steps(parts=plan.parts()))
        got = build_template(S.Steps(parts=plan.parts()), prof, 2, None, hot, None)
        _same_template(got, _array_template(want_plan, prof, 2, None, hot, None, None))
        ptl_hot = rng.random(len(plan)) < 0.1
        got = build_template(S.Steps(parts=plan.parts()), prof, 2, None, set(), ptl_hot)
        _same_template(got, _array_template(want_plan, prof, 2, None, set(), ptl_hot, None))
        seen += 1
    assert seen >= 5


def _one_gib_move() -> S.Steps:
    """The plan of bench/bench_engine.py's 1 GiB mutually unaligned move."""
    target = resolve_target("6.18", "x86_64")
    src = 0x300000000000 + 2 * MiB + 4 * KiB
    dst = 0x300000000000 + 2 * GiB + 6 * MiB + 8 * KiB
    space = AddressSpace((Vma(src, src + GiB, name="heap"),),
                         PageTables.empty(target.arch).populate(src, src + GiB))
    return plan_mremap(space, MoveRequest(old_addr=src, old_len=GiB, new_addr=dst),
                       target).steps


def test_the_1g_unaligned_move_gets_its_template_part_by_part(monkeypatch):
    steps = _one_gib_move()
    assert any(isinstance(p, S.PeriodicBlock) for p in steps.parts())
    for prof in (load_cost_profile("kvm-host").fixed(), load_cost_profile("kvm-host")):
        for cpus in (1, 2):
            lazy = S.Steps(parts=steps.parts())
            a, b = np.random.default_rng(1), np.random.default_rng(1)
            with monkeypatch.context() as mp:
                _periodic_only(mp)
                got = build_template(lazy, prof, cpus, a, set(), None)
            want = _array_template(_dense(S.Steps(parts=steps.parts())), prof, cpus, b, set(),
                                   None, None)
            _same_template(got, want)
            assert lazy._cols is None


@pytest.mark.parametrize("seed", range(4))
def test_a_laid_out_column_is_the_materialised_column(seed):
    rng = np.random.default_rng(40 + seed)
    for _ in range(10):
        plan = random_periodic_plan(rng)
        pieces = periodic_layout(plan)
        if pieces is None:
            continue
        names = ("flushes", "flush_full", "flush_pages", "rmap", "kind", "ptes", "ipis")
        at = [LIST_COLUMNS.index(c) for c in names]
        values = [([pc.lists[i] for i in at],
                   {q: [row[i] for i in at] for q, row in pc.patched.items()}) for pc in pieces]
        got = lay_out(pieces, len(plan), values)
        dense = _dense(S.Steps(parts=plan.parts()))
        for name, row in zip(names, got, strict=True):
            assert np.array_equal(row, dense.cols[name]), name


def _run(plans, profile, cpus: int, users: bool, max_rows: int = 1_000_000, spill=None):
    from perfsim.engine import CallerSpec, MmSpec, SimSpec, UserSpec, simulate

    target = resolve_target("6.18", "x86_64")
    mm_cpus = tuple(range(cpus))
    spec = SimSpec(cpus=max(cpus, 2), target=target, profile=profile,
                   mms=(MmSpec("app", mm_cpus),),
                   callers=(CallerSpec("mover", "app", 0, tuple(plans), interval_ns=5_000),),
                   users=(UserSpec("u", "app", cpus - 1, 7_000),) if users and cpus > 1 else ())
    return simulate(spec, max_rows=max_rows, spill_dir=spill)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("bound", ["kept", "dropped", "spilled"])
def test_runs_of_periodic_plans_record_what_their_materialised_plans_record(seed, bound,
                                                                             tmp_path):
    """The records a periodic template defers (its flushes, made when a table is read)
    read back, and aggregate, as those of the materialised plan's column template."""
    import pandas as pd

    rng = np.random.default_rng(300 + seed)
    plans = [p for p in _plans(rng, 16)
             if periodic_layout(p) is not None and len(p) > SCALAR_ROWS][:6]
    assert plans
    dense = [_dense(S.Steps(parts=p.parts())) for p in plans]
    prof = _distinct_profile()
    kw = {"max_rows": 300} if bound != "kept" else {}
    for cpus, users in ((1, False), (2, True), (3, False)):
        got = _run([S.Steps(parts=p.parts()) for p in plans], prof, cpus, users, **kw,
                   spill=tmp_path / f"a{cpus}" if bound == "spilled" else None)
        want = _run(dense, prof, cpus, users, **kw,
                    spill=tmp_path / f"b{cpus}" if bound == "spilled" else None)
        assert got.summary == want.summary
        for t in got.TABLES:
            pd.testing.assert_frame_equal(got.frame(t), want.frame(t))


@pytest.mark.parametrize("seed", range(3))
def test_a_periodic_plans_ipi_and_flush_counts_from_its_pieces_are_its_columns(seed):
    from perfsim.cost.model import periodic_prices

    rng = np.random.default_rng(60 + seed)
    prof = _distinct_profile()
    for plan in _plans(rng, 10):
        pieces = periodic_layout(plan)
        if pieces is None:
            continue
        dense = _dense(S.Steps(parts=plan.parts()))
        for cpus in (None, 1, 4):
            totals = periodic_prices(pieces, prof, cpus, None, prof.medians_ns)[4]
            want = vector_row_costs(dense, prof, cpus=cpus)
            flushing = dense.cols["flushes"] != 0
            assert totals.ipis == int(want.ipis.sum())
            assert totals.flush_rows == int(np.count_nonzero(flushing))
            assert totals.top == int(want.ipis[flushing].max(initial=0))


def test_a_table_holding_deferred_flushes_pickles_as_its_columns():
    import pickle

    import pandas as pd

    from perfsim.engine.records import DeferredColumn

    res = _run([_one_gib_move()], load_cost_profile("kvm-host").fixed(), 1, False)
    table = res._tables["flushes"]
    assert any(isinstance(ch, tuple) and isinstance(ch[3][0], DeferredColumn)
               for ch in table._chunks)  # the flushes are deferred
    copy = pickle.loads(pickle.dumps(table))
    pd.testing.assert_frame_equal(copy.to_frame(), table.to_frame())
    assert copy.summary() == table.summary()


def test_periodic_templates_priced_through_a_kept_row_memo_equal_column_templates():
    """Rows priced for earlier plans (a run's or a batch's row memo) give later periodic
    templates the same costs."""
    rng = np.random.default_rng(77)
    prof = _distinct_profile()
    for folio in FOLIOS[:2]:
        memo: dict = {}
        for plan in _plans(rng, 10) + [_one_gib_move()]:
            if periodic_layout(plan) is None:
                continue
            for cpus in (1, 2):
                got = build_template(S.Steps(parts=plan.parts()), prof, cpus, None, set(),
                                     None, folio, memo)
                want = _array_template(_dense(S.Steps(parts=plan.parts())), prof, cpus, None,
                                       set(), None, folio)
                _same_template(got, want)
        assert memo  # rows were kept


def test_runs_sharing_caches_share_their_priced_rows():
    from perfsim.engine.reuse import RunCaches

    caches = RunCaches()
    prof = load_cost_profile("kvm-host").fixed()
    alone = _run([_one_gib_move()], prof, 1, False)
    from perfsim.engine import CallerSpec, MmSpec, SimSpec, simulate

    spec = SimSpec(cpus=2, target=resolve_target("6.18", "x86_64"), profile=prof,
                   mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("mover", "app", 0, (_one_gib_move(),),
                                       interval_ns=5_000),))
    first = simulate(spec, caches=caches)
    assert caches.templates.row_memos  # kept for the next run
    second = simulate(spec, caches=caches)
    import pandas as pd

    for res in (first, second):
        assert res.summary == alone.summary
        for t in res.TABLES:
            pd.testing.assert_frame_equal(res.frame(t), alone.frame(t))
