"""User threads settled lazily and once per distinct state (issue 13): the same state as
crediting each IPI one by one, in time order (:meth:`UserThread.credit`, the definition)."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.engine.machine import Cpu, UserThread
from perfsim.engine.spec import UserSpec

FIELDS = ("q_start", "q_delay", "quanta", "stolen", "interrupts", "max_delay")


def _state(u: UserThread) -> tuple:
    return tuple(getattr(u, f) for f in FIELDS)


def _one_by_one(spec: UserSpec, credits: list[tuple[int, int]]) -> UserThread:
    u = UserThread(spec)
    for t, s in sorted(credits):
        u.credit(t, s)
    return u


def _random_run(rng, t0_min: int) -> tuple[int, tuple]:
    n = int(rng.integers(1, 12))
    grain = int(rng.choice([1, 10]))  # on a grain of 10 ns credits often land on quantum ends
    offs = (np.sort(rng.integers(0, int(rng.choice([50, 500, 5000])), n)) // grain * grain)
    stolen = rng.integers(0, 400, n) // grain * grain
    t0 = t0_min + int(rng.integers(0, 300)) // grain * grain
    return t0, tuple(zip(offs.tolist(), stolen.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(40))
def test_settling_runs_lazily_and_shared_equals_crediting_one_by_one(seed):
    """Runs of credits shared by several CPUs (as a template's are), some overlapping in
    time (callers of two mms), settled at random moments (never before a credit already
    queued could be applied out of order), on CPUs with several users of equal and unequal
    quanta: every user ends in the state of its credits applied one at a time."""
    rng = np.random.default_rng(seed)
    ncpu = int(rng.integers(1, 6))
    cpus = [Cpu(i) for i in range(ncpu)]
    specs = []
    for i in range(ncpu):
        for k in range(int(rng.integers(0, 4))):
            spec = UserSpec(f"u{i}.{k}", "mm", i, int(rng.choice([100, 300, 1000, 1000])))
            cpus[i].users.append(UserThread(spec))
            specs.append(spec)
    got_credits: dict[int, list] = {i: [] for i in range(ncpu)}
    clock = 0
    memo = None
    for _ in range(int(rng.integers(1, 30))):
        t0, credits = _random_run(rng, clock)
        targets = [i for i in range(ncpu) if rng.random() < 0.7]
        for i in targets:
            cpus[i].credit_run(t0, credits, sum(s for _, s in credits))
            got_credits[i] += [(t0 + o, s) for o, s in credits]
        clock += int(rng.integers(0, 400))
        if rng.random() < 0.4:
            memo = {} if rng.random() < 0.8 else None
            for c in cpus:
                c.settle(clock, memo)
                for u in c.users:
                    due = [cr for cr in got_credits[c.index] if cr[0] <= clock]
                    assert _state(u) == _state(_one_by_one(u.spec, due)), u.spec
    end = clock + 10_000
    memo = {}
    for c in cpus:
        c.settle(end, memo)
        assert c.pending == []
    for c in cpus:
        assert c.ipis == len(got_credits[c.index])
        assert c.stolen == sum(s for _, s in got_credits[c.index])
        for u in c.users:
            want = _one_by_one(u.spec, got_credits[c.index])
            assert _state(u) == _state(want), u.spec


def test_a_credit_at_a_quantum_end_lands_in_the_next_quantum():
    cpu = Cpu(0, [UserThread(UserSpec("u", "mm", 0, 100))])
    cpu.credit_run(0, ((100, 20),), 20)
    cpu.settle(100)
    assert _state(cpu.users[0]) == (100, 20, 1, 20, 1, 0)  # quantum 0 closed undisturbed
    cpu = Cpu(0, [UserThread(UserSpec("u", "mm", 0, 100))])
    cpu.credit_run(0, ((100, 20), (220, 5), (300, 1)), 26)
    cpu.settle(300)
    want = _one_by_one(cpu.users[0].spec, [(100, 20), (220, 5), (300, 1)])
    assert _state(cpu.users[0]) == _state(want) == (220, 6, 2, 26, 3, 20)


def test_a_run_partly_due_leaves_its_later_credits_pending():
    cpu = Cpu(0, [UserThread(UserSpec("u", "mm", 0, 100))])
    cpu.credit_run(1000, ((0, 5), (10, 5), (50, 5), (50, 7), (90, 5)), 27)
    cpu.settle(1050)
    u = cpu.users[0]
    assert (u.interrupts, u.stolen) == (4, 22)
    assert cpu.pending == [[1000, ((0, 5), (10, 5), (50, 5), (50, 7), (90, 5)), 4]]
    cpu.settle(1089)
    assert u.interrupts == 4
    cpu.settle(1090)
    assert (u.interrupts, u.stolen, cpu.pending) == (5, 27, [])


def test_users_of_equal_state_given_the_same_credits_are_rolled_forward_once():
    """The memo: the second CPU's users reuse the first's result (same state, same runs),
    and a user in another state is computed on its own."""
    credits = ((0, 30), (40, 30), (400, 30))
    a = Cpu(1, [UserThread(UserSpec("a", "mm", 1, 100)), UserThread(UserSpec("b", "mm", 1, 100))])
    b = Cpu(2, [UserThread(UserSpec("c", "mm", 2, 100)), UserThread(UserSpec("d", "mm", 2, 70))])
    for c in (a, b):
        c.credit_run(500, credits, 90)
    memo: dict = {}
    a.settle(2000, memo)
    b.settle(2000, memo)
    assert len(memo) == 2  # quantum 100 once (three users), quantum 70 once
    for u in (*a.users, *b.users):
        want = _one_by_one(u.spec, [(500 + o, s) for o, s in credits])
        assert _state(u) == _state(want)


def test_overlapping_runs_are_applied_in_time_order():
    cpu = Cpu(0, [UserThread(UserSpec("u", "mm", 0, 50))])
    cpu.credit_run(100, ((0, 10), (200, 10)), 20)
    cpu.credit_run(150, ((0, 25), (20, 5)), 30)
    cpu.settle(1000)
    want = _one_by_one(cpu.users[0].spec, [(100, 10), (300, 10), (150, 25), (170, 5)])
    assert _state(cpu.users[0]) == _state(want)


def _users_by_definition(spec, res) -> dict[str, tuple]:
    """Each user thread's record from the flushes table alone: a flush with ``targets = t``
    of a caller interrupts the first ``t`` other CPUs of its mm (cpumask order) at its
    time, each stolen its ``stolen_ns``; credited one by one in time order, then advanced
    to the run's end (the definition the engine's lazy, shared settling must equal)."""
    mm_cpus = {m.name: m.cpus for m in spec.mms}
    others = {c.name: [x for x in mm_cpus[c.mm] if x != c.cpu] for c in spec.callers}
    credits: dict[int, list] = {}
    f = res.flushes
    for caller, t, targets, stolen in zip(f.caller, f.time_ns, f.targets, f.stolen_ns,
                                          strict=True):
        for cpu in others[caller][:int(targets)]:
            credits.setdefault(cpu, []).append((int(t), int(stolen)))
    end = int(res.summary["end_ns"])
    out = {}
    for u in spec.users:
        th = _one_by_one(u, [c for c in credits.get(u.cpu, []) if c[0] <= end])
        th.advance_to(end)
        out[u.name] = (th.quanta, th.quanta * u.quantum_ns, th.stolen, th.interrupts,
                       max(th.max_delay, th.q_delay))
    ipis = [sum(1 for _ in credits.get(c, ())) for c in range(spec.cpus)]
    stolen = [sum(s for _, s in credits.get(c, ())) for c in range(spec.cpus)]
    return out, ipis, stolen


@pytest.mark.parametrize("name", ["ipi_storm", "db_buffer_pool", "random_layout_stress",
                                  "allocator_realloc"])
@pytest.mark.parametrize("settle_runs", [0, None])
def test_users_table_equals_crediting_every_flush_one_by_one(name, settle_runs, monkeypatch):
    """Shipped workloads, settled after every call (``settle_runs = 0``) or lazily: every
    user's row and every CPU's IPI count and stolen time equal the definition."""
    from dataclasses import replace

    from perfsim.cost import load_cost_profile
    from perfsim.engine import machine, simulate
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import compile_workload

    if settle_runs is not None:
        monkeypatch.setattr(machine, "SETTLE_RUNS", settle_runs)
    w = load_workload(resolve_workload(name))
    comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                            load_cost_profile(w.cost_profile), np.random.SeedSequence(w.seed))
    spec = replace(comp.spec, callers=tuple(replace(c, plans=list(c.plans)[:60])
                                            for c in comp.spec.callers))
    res = simulate(spec)
    want, ipis, stolen = _users_by_definition(spec, res)
    got = {r.thread: (r.quanta, r.work_ns, r.stolen_ns, r.interrupts, r.max_quantum_delay_ns)
           for r in res.users.itertuples()}
    assert got == want
    assert res.summary["cpu_ipis"] == ipis and res.summary["cpu_stolen_ns"] == stolen
    assert sum(v[3] for v in want.values()) > 0
