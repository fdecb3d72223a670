"""Issue 13, fifth pass ("pop2"): what a workload run costs besides its calls.

Each shortcut taken outside the calls is held here to the general path it replaces:
``summarize`` reading the engine's record tables as numpy columns to ``summarize`` reading
the DataFrames; draws made call by call (``iter_draws``), generators made when first used
(``LazyRng``) and certain trials (``bernoulli``) to the draws made all at once; open-loop
callers sharing one class and the realigned tally made per stream to the per-caller
wrapping; built-in profiles and targets made once to a fresh parse.
"""

from __future__ import annotations

import pytest

from perfsim.workload.schema import parse_workload

_ERRORS = """
name = "errors"
seed = 1
cpus = 2
[[processes]]
name = "p"
threads = 2
vmas = [ { name = "a", start = "0x10000000", size = "2M" },
         { name = "b", start = "0x10200000", size = "2M" } ]
[[streams]]
name = "s"
process = "p"
kind = "calls"
calls = [ { vma = "a", old_len = "2M", new_len = "4M", maymove = false },
          { vma = "b", old_len = "1M", new_addr = "0x40000000", fixed = true } ]
"""
"""A refused call (ENOMEM: no room to grow in place without MREMAP_MAYMOVE), a move, and
an idle thread whose user work the move's IPI interrupts."""


def _same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        assert type(got[k]) is type(v), k
        assert got[k] == v or (v != v and got[k] != got[k]), k


def _both_ways(res) -> tuple[dict, dict]:
    """``summarize`` of a result whose tables no DataFrame was made of (the numpy columns),
    then of the same result read through its DataFrames."""
    from perfsim.workload.run import summarize

    assert res.columns("calls") is not None  # the column path is taken
    by_columns = summarize(res, 3)
    res.frames()
    assert res.columns("calls") is None  # now the DataFrame path is
    return by_columns, summarize(res, 3)


@pytest.mark.parametrize("seed", [None, 4])
def test_summarize_by_columns_is_summarize_by_dataframes_on_every_shipped_workload(seed):
    import numpy as np

    from perfsim.cost import load_cost_profile
    from perfsim.engine import simulate
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload, workload_names
    from perfsim.workload.run import compile_workload

    for name in workload_names():
        w = load_workload(resolve_workload(name))
        comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                                load_cost_profile(w.cost_profile),
                                np.random.SeedSequence(w.seed if seed is None else seed))
        _same(*_both_ways(simulate(comp.spec)))


def test_summarize_by_columns_counts_refused_calls_and_user_threads_as_dataframes_do():
    from perfsim.workload import run_workload

    res, m, _ = run_workload(parse_workload(_ERRORS))
    assert m["errors"] == 1 and m["calls"] == 2 and m["user_interrupts"] >= 1
    by_columns, by_frames = _both_ways(run_workload(parse_workload(_ERRORS))[0])
    _same(by_columns, by_frames)


@pytest.mark.parametrize("max_rows", [1, 3, 50])
def test_summarize_by_columns_of_a_bounded_table_is_summarize_by_dataframes(max_rows):
    from perfsim.workload import run_workload

    res, _, _ = run_workload("shared_file_reclaim", max_rows=max_rows)
    _same(*_both_ways(res))


def test_summarize_of_a_spilled_table_reads_its_dataframe(tmp_path):
    import numpy as np

    from perfsim.cost import load_cost_profile
    from perfsim.engine import simulate
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.run import compile_workload, summarize

    w = load_workload(resolve_workload("allocator_realloc"))
    comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                            load_cost_profile(w.cost_profile), np.random.SeedSequence(w.seed))
    spilled = simulate(comp.spec, max_rows=64, spill_dir=tmp_path)
    assert spilled._tables["calls"].parts  # some rows are in part files
    assert spilled.columns("calls") is None
    whole = simulate(compile_workload(w, resolve_target(w.kernel, w.arch),
                                      load_cost_profile(w.cost_profile),
                                      np.random.SeedSequence(w.seed)).spec)
    _same(summarize(spilled), summarize(whole))


def _draw_columns(rng, n: int) -> list:
    """Columns for every CallDraw field, each of a randomly chosen dtype a distribution's
    ``sample`` can give (int64, uint64, float64, bool, object, fixed-width text)."""
    import dataclasses

    import numpy as np

    from perfsim.workload.generate import CallDraw

    cols = []
    for f in dataclasses.fields(CallDraw):
        k = int(rng.integers(0, 5))
        if f.type == "str":
            vals = rng.choice(["move", "grow", "stack", "anon", "pud"], n)
            cols.append(vals if k < 2 else vals.astype(object))
        elif f.type == "bool":
            r = rng.random(n)
            cols.append([r < 0.5, (r * 3).astype(np.int64), r, (r < 0.5).astype(object),
                         np.zeros(n, bool)][k])
        else:
            r = rng.random(n) * 1e6
            cols.append([r, r.astype(np.int64), r.astype(np.uint64), r.astype(object),
                         r.astype(np.int64).astype(object)][k])
    return cols


@pytest.mark.parametrize("seed", range(30))
def test_call_draws_are_made_as_the_fields_types_convert_each_value(seed):
    """iter_draws / draws_of: field i of call k is ``type_i(column_i[k])`` (the numpy
    scalar converted), whatever dtype the column has, and a call's draw is the same
    whether the calls are taken one by one or as a list."""
    import dataclasses
    import itertools

    import numpy as np

    from perfsim.workload.generate import CallDraw, draws_of, iter_draws

    types = {"str": str, "int": int, "float": float, "bool": bool}
    fields = dataclasses.fields(CallDraw)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    cols = _draw_columns(rng, n)
    want = [CallDraw(*(types[f.type](col[i]) for f, col in zip(fields, cols, strict=True)))
            for i in range(n)]
    got = draws_of(cols)
    assert got == want
    for g, w in zip(got, want, strict=True):
        assert [type(getattr(g, f.name)) for f in fields] == \
            [type(getattr(w, f.name)) for f in fields]
    k = int(rng.integers(0, n + 1))
    assert list(itertools.islice(iter_draws(cols), k)) == want[:k]


def test_a_built_in_profile_is_the_value_its_text_validates_to_however_often_it_is_loaded():
    from importlib import resources

    from perfsim.profiles import (
        ArchProfile,
        KernelProfile,
        arch_names,
        kernel_names,
        load_arch,
        load_kernel,
    )
    from perfsim.schema import load_model

    for sub, names, load, model in (("arch", arch_names(), load_arch, ArchProfile),
                                    ("kernels", kernel_names(), load_kernel, KernelProfile)):
        for name in names:
            text = (resources.files("perfsim") / "data" / sub / f"{name}.toml").read_text()
            fresh = load_model(text, model, "profile")
            assert load(name) == fresh and load(name) == fresh
            assert load(name).model_dump() == fresh.model_dump()


def test_a_profile_text_is_parsed_again_when_it_changes_and_a_bad_one_fails_every_time():
    from perfsim.errors import PerfsimError
    from perfsim.profiles import KernelProfile, _parse_builtin

    text = 'name = "k"\nversion = [6, 18]\nrealign_pmd = true\n'
    a = _parse_builtin(text, KernelProfile, "kernel profile", "built-in kernel profile 'k'")
    b = _parse_builtin(text.replace("true", "false"), KernelProfile, "kernel profile",
                       "built-in kernel profile 'k'")
    assert a.realign_pmd and not b.realign_pmd
    bad = text + "no_such_field = 1\n"
    for _ in range(2):
        with pytest.raises(PerfsimError, match="no_such_field"):
            _parse_builtin(bad, KernelProfile, "kernel profile", "built-in kernel profile 'k'")


@pytest.mark.parametrize("seed", range(12))
def test_certain_trials_are_what_the_generator_would_have_drawn(seed):
    import numpy as np

    from perfsim.workload.generate import bernoulli

    rng = np.random.default_rng(seed)
    for p in (0.0, 1.0, float(rng.random()), 1e-12, 1 - 1e-12):
        n = int(rng.integers(0, 600))
        want = np.random.default_rng([seed, n]).random(n) < p
        got = bernoulli(np.random.default_rng([seed, n]), p, n)
        assert got.dtype == want.dtype and (got == want).all()


def _random_stream(rng):
    """A synthetic stream of random distributions (fixed, choice, uniform) and random
    probabilities (0, 1 or in between), as a workload file gives them."""
    def prob():
        return [0.0, 1.0, round(float(rng.random()), 3)][int(rng.integers(0, 3))]

    def size():
        return [{"dist": "fixed", "value": "2M"},
                {"dist": "choice", "values": ["4K", "132K", "1G"], "weights": [1, 2, 3]},
                {"dist": "uniform", "min": "4K", "max": "64M", "align": "4K"}][
                    int(rng.integers(0, 3))]

    def frac():
        return [0.5, {"dist": "uniform", "min": 0.05, "max": 1.0}][int(rng.integers(0, 2))]

    def cat(values):
        k = int(rng.integers(0, 3))
        return values[0] if k == 0 else {"dist": "choice", "values": values[:k + 1]}

    return {"name": "s", "process": "p", "count": 10,
            "op": cat(["move", "grow", "stack"]), "size": size(), "shift": size(),
            "growth": [2.0, {"dist": "uniform", "min": 1.0, "max": 3.0}][int(rng.integers(0, 2))],
            "populate": frac(), "backing": cat(["anon", "shmem", "file"]),
            "src_align": cat(["page", "pmd", "random"]), "dst_align": cat(["same", "pud", "page"]),
            "guard_below_src": prob(), "guard_below_dst": prob(), "thp": prob(),
            "fixed": prob(), "dontunmap": prob(), "grow_in_place": prob()}


@pytest.mark.parametrize("seed", range(25))
def test_a_streams_draws_with_generators_made_when_used_are_those_with_all_made_first(seed):
    """SyntheticDraws makes a quantity's generator when a draw first uses it (LazyRng) and
    asks none for a certain trial (bernoulli): the same columns, chunk after chunk, as
    with every quantity's generator made up front (its definition, rng_of)."""
    import numpy as np

    from perfsim.workload.generate import STREAMS, SyntheticDraws, rng_of

    rng = np.random.default_rng(seed)
    w = parse_workload({"name": "w", "seed": seed, "processes": [{"name": "p"}],
                        "streams": [_random_stream(rng)]})
    root = np.random.SeedSequence(seed)
    lazy = SyntheticDraws(w.streams[0], root, 0)
    eager = SyntheticDraws(w.streams[0], root, 0)
    eager.rngs = {q: rng_of(root, STREAMS, 0, q) for q in range(18)}
    eager_columns = eager._columns

    def definition():  # what _columns drew when every trial asked its generator
        s = w.streams[0]
        cols = list(eager_columns())
        n = len(cols[0])
        for field, q, p in ((7, 5, s.guard_below_src), (8, 6, s.guard_below_dst),
                            (12, 10, s.thp), (13, 11, s.fixed), (14, 12, s.dontunmap),
                            (15, 13, s.grow_in_place)):
            assert field == q + 2
            if p in (0.0, 1.0):  # bernoulli did not draw: draw what random() would have
                cols[field] = eager.rngs[q].random(n) < p
        return cols

    for _ in range(2):
        got, want = lazy._columns(), definition()
        for g, x in zip(got, want, strict=True):
            g, x = np.asarray(g), np.asarray(x)
            assert g.dtype == x.dtype and (g == x).all()


def test_single_call_callers_take_the_shared_planners_plans_in_the_order_they_ask():
    from perfsim.workload.generate import _Shared

    asked = []

    def planner():
        for k in range(3):
            asked.append(k)
            yield f"plan{k}"

    shared = _Shared(planner())
    ones = [shared.one() for _ in range(5)]
    assert asked == []  # making the callers plans nothing
    assert list(ones[3]) == ["plan0"] and list(ones[0]) == ["plan1"]
    assert list(ones[4]) == ["plan2"] and asked == [0, 1, 2]
    assert list(ones[1]) == [] and list(ones[2]) == []  # the planner has no more


@pytest.mark.parametrize("seed", [None, 2, 9])
def test_a_runs_realigned_calls_are_those_of_its_callers_plans(seed):
    """run_workload counts realigned calls on each stream's plans (compile_workload's
    wrap_plans): the count of wrapping each caller's plans after compiling (as it did)."""
    from dataclasses import replace

    import numpy as np

    from perfsim.cost import load_cost_profile
    from perfsim.engine import simulate
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload, run_workload, workload_names
    from perfsim.workload.run import Tally, compile_workload, summarize

    seen = 0
    for name in workload_names():
        _, m, _ = run_workload(name, seed=seed)
        w = load_workload(resolve_workload(name))
        comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                                load_cost_profile(w.cost_profile),
                                np.random.SeedSequence(w.seed if seed is None else seed))
        tally = Tally()
        spec = replace(comp.spec, callers=tuple(replace(c, plans=tally.wrap(c.plans))
                                                for c in comp.spec.callers))
        _same(m, summarize(simulate(spec), tally.realigned))
        seen += m["realigned_calls"]
    assert seen > 0


def test_a_resolved_target_is_the_target_of_its_profiles_with_its_digest():
    from perfsim.profiles import Target, arch_names, kernel_names, load_arch, load_kernel, resolve_target

    for arch in arch_names():
        for kernel in kernel_names():
            fresh = Target(arch=load_arch(arch), kernel=load_kernel(kernel))
            got = resolve_target(kernel, arch)
            assert got == fresh and got.digest == fresh.digest
            assert resolve_target(kernel, arch).digest == fresh.digest
            assert got.with_changes(realign_pmd=not got.kernel.realign_pmd) != got
