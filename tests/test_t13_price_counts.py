"""The count rules are written once (cost/counts.py) and evaluated two ways: on whole columns
and on one row's Python ints. Both evaluations, and everything priced from them (row costs,
call templates, the row memo), give the same integers, with the same dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from test_throughput import _plans

from perfsim.cost import load_cost_profile
from perfsim.cost.batching import FolioBatching
from perfsim.cost.counts import (
    ARRAY_OPS,
    FIRST_ROW_RULES,
    ROW_COLUMNS,
    ROW_PARAMS,
    SCALAR_OPS,
    folio_terms,
    row_counts,
)
from perfsim.cost.model import (
    _COUNT_ORDER,
    CATEGORIES,
    PARAM_NAMES,
    SCALAR_ROWS,
    column_lists,
    ipi_targets,
    param_counts,
    row_costs,
    scalar_row_costs,
    vector_row_costs,
)
from perfsim.engine.pricing import (
    TemplateCache,
    _array_template,
    _small_template,
    build_template,
)
from perfsim.planner import steps as S

I64 = np.int64
LOCK_SETS = ((), ("anon_vma:heap",), ("i_mmap:files", "anon_vma:heap"))
FOLIOS = (None, FolioBatching(folio_pages=16, contpte_pages=16, lookup=True),
          FolioBatching(folio_pages=16, contpte_pages=16, unfold=True, refold=True),
          FolioBatching(folio_pages=4, contpte_pages=1, lookup=True, unfold=True))


def _distinct_profile(name: str = "x86_64-generic"):
    """A profile whose parameters all differ (distinct primes): a count charged to the wrong
    parameter or category changes some total."""
    primes = [p for p in range(101, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    return load_cost_profile(name).with_values(**dict(zip(PARAM_NAMES, primes, strict=False)))


def random_steps(rng: np.random.Generator, n: int) -> S.Steps:
    """A table of ``n`` rows with every column drawn at random (kinds, phases, counts, flush
    fields, lock sets), runs of equal phase included."""
    cols = {
        "old_addr": rng.integers(0, 1 << 40, n), "new_addr": rng.integers(0, 1 << 40, n),
        "phase": np.sort(rng.integers(0, 5, n)) if rng.random() < 0.5 else rng.integers(0, 5, n),
        "kind": rng.integers(0, len(S.KIND_NAMES), n),
        "length": rng.integers(0, 1 << 30, n),
        "ptes": rng.integers(0, 600, n), "slots": rng.integers(0, 600, n),
        "batches": rng.integers(0, 600, n) * rng.integers(0, 2, n),
        "alloc_p4d": rng.integers(0, 2, n), "alloc_pud": rng.integers(0, 2, n),
        "alloc_pmd": rng.integers(0, 3, n), "alloc_pte": rng.integers(0, 3, n),
        "freed": rng.integers(0, 600, n) * (rng.random(n) < 0.2),
        "flushes": (rng.random(n) < 0.6).astype(int), "flush_full": rng.integers(0, 2, n),
        "flush_pages": rng.integers(0, 513, n), "ipis": rng.integers(0, 64, n) * rng.integers(0, 2, n),
        "rmap": rng.integers(0, 3, n) * (rng.random(n) < 0.3), "ptl": rng.integers(0, 3, n),
        "notifier": rng.integers(0, 2, n),
    }
    typed = {c: np.asarray(v, S._DTYPES.get(c, np.int32)) for c, v in cols.items()}
    return S.Steps(typed, LOCK_SETS, rng.integers(0, len(LOCK_SETS), n).astype(np.int32))


def _tables(seed: int, count: int, max_rows: int = SCALAR_ROWS):
    rng = np.random.default_rng(seed)
    return [random_steps(rng, int(rng.integers(1, max_rows + 1))) for _ in range(count)]


def _same_array(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _same_costs(a, b) -> None:
    for name in ("total", "ipis", "stolen", "matrix", "per_category"):
        assert _same_array(getattr(a, name), getattr(b, name)), name
    assert list(a.by_category) == list(b.by_category) == list(CATEGORIES)
    for c in CATEGORIES:
        assert _same_array(a.by_category[c], b.by_category[c]), c
    assert a.category_sums() == b.category_sums()
    assert all(type(v) is int for v in a.category_sums().values())
    n = len(a.total)
    assert a.category_sums(1, n) == b.category_sums(1, n)
    assert a.total_list == b.total.tolist() and a.stolen_list == b.stolen.tolist()
    assert a.ipis_list == b.ipis.tolist()
    assert list(a.counts) == list(b.counts) == list(_COUNT_ORDER)


@pytest.mark.parametrize("seed", range(6))
def test_row_counts_on_python_ints_equal_row_counts_on_arrays(seed):
    rng = np.random.default_rng(100 + seed)
    for steps in _tables(seed, 20):
        n = len(steps)
        cols = steps.cols
        ipis = rng.integers(0, 9, n).astype(I64)
        for folio in FOLIOS:
            terms = folio_terms(folio)
            block = [cols["kind"], cols["phase"],
                     *np.array([cols[c] for c in ROW_COLUMNS[2:]], I64)]
            arrays = row_counts(block, ipis, ARRAY_OPS, terms)
            assert len(arrays) == len(ROW_PARAMS)
            for i in range(n):
                row = [int(cols[c][i]) for c in ROW_COLUMNS]
                ints = row_counts(row, int(ipis[i]), SCALAR_OPS, terms)
                for p, a, v in zip(ROW_PARAMS, arrays, ints, strict=True):
                    want = int(a[i]) if isinstance(a, np.ndarray) else int(a)
                    assert type(v) in (int, bool) and int(v) == want, (p, i, row)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cpus", [None, 1, 4])
def test_scalar_row_costs_equal_vectorised_row_costs_on_random_tables(seed, cpus):
    for name in ("x86_64-generic", "arm64-generic"):
        prof = _distinct_profile(name)
        for steps in _tables(seed, 12):
            for folio in FOLIOS:
                fast = scalar_row_costs(column_lists(steps), prof, cpus, folio)
                _same_costs(fast, vector_row_costs(steps, prof, cpus=cpus, folio=folio))


@pytest.mark.parametrize("name", ["allocator_realloc", "ipi_storm", "exec_stack",
                                  "shared_file_reclaim", "random_layout_stress"])
def test_scalar_row_costs_equal_vectorised_row_costs_on_workload_plans(name):
    profs = (load_cost_profile("x86_64-generic"), _distinct_profile())
    for plan in _plans(name, 12):
        for prof in profs:
            for cpus in (None, 3):
                got = row_costs(plan, prof, cpus=cpus)
                _same_costs(got, vector_row_costs(plan, prof, cpus=cpus))


def test_row_costs_prices_small_fixed_plans_on_python_ints_and_others_on_columns():
    prof = load_cost_profile("x86_64-generic")
    small, big = _tables(1, 1)[0], _tables(2, 1, 4 * SCALAR_ROWS)[0]
    while len(big) <= SCALAR_ROWS:
        big = random_steps(np.random.default_rng(len(big)), 3 * SCALAR_ROWS)
    assert row_costs(small, prof)._scalar is not None
    assert row_costs(big, prof)._scalar is None
    jittery = prof.model_copy(update={"params": prof.params.model_copy(update={
        "pte_present_ns": prof.params.pte_present_ns.model_copy(
            update={"dist": "lognormal", "sigma": 0.2})})})
    assert not jittery.is_fixed
    assert row_costs(small, jittery, rng=np.random.default_rng(1))._scalar is None


@pytest.mark.parametrize("seed", range(4))
def test_first_row_rules_charge_the_first_row_that_pays_the_trigger(seed):
    prof = _distinct_profile()
    for steps in _tables(seed, 15):
        for cpus in (None, 2):
            for rc in (vector_row_costs(steps, prof, cpus=cpus),
                       scalar_row_costs(column_lists(steps), prof, cpus, None)):
                counts = rc.counts
                for name, trigger in FIRST_ROW_RULES:
                    paid = np.flatnonzero(counts[trigger] > 0)
                    want = np.zeros(len(steps), I64)
                    if len(paid):
                        want[paid[0]] = 1
                    assert _same_array(counts[name], want)


@pytest.mark.parametrize("seed", range(3))
def test_row_memo_gives_what_pricing_without_it_gives(seed):
    prof = _distinct_profile()
    memo: dict = {}
    tables = _tables(seed, 30, 8)
    for _ in range(2):  # the second pass prices every row from the memo
        for steps in tables:
            lists = column_lists(steps)
            _same_costs(scalar_row_costs(lists, prof, 4, None, memo),
                        scalar_row_costs(lists, prof, 4, None))
    assert 0 < len(memo) <= sum(len(t) for t in tables)


def _same_template(a, b) -> None:
    assert a.segments == b.segments and a.any_contended == b.any_contended
    assert a.stats == b.stats and all(type(v) is int for v in a.stats)
    assert (a.row_total, a.row_lock_set, a.row_rmap, a.row_flush) == (
        b.row_total, b.row_lock_set, b.row_rmap, b.row_flush)
    assert all(type(v) is int for row in a.row_flush if row for v in row[1:])
    assert _same_array(a.rc.total, b.rc.total)
    assert len(a.records) == len(b.records)
    for ra, rb in zip(a.records, b.records, strict=True):
        assert (ra is None) == (rb is None)
        if ra is None:
            continue
        assert ra.credits == rb.credits and len(ra.holds) == len(rb.holds)
        for ha, hb in zip(ra.holds, rb.holds, strict=True):
            assert ha[0] == hb[0] and all(_same_array(x, y) for x, y in zip(ha[1:], hb[1:]))
        assert (ra.flush is None) == (rb.flush is None)
        if ra.flush is not None:
            assert all(_same_array(x, y) for x, y in zip(ra.flush, rb.flush, strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_small_templates_equal_templates_built_on_columns(seed):
    prof = _distinct_profile()
    rng = np.random.default_rng(7 + seed)
    for steps in _tables(seed, 15):
        for hot in (set(), {"anon_vma:heap"}, {"i_mmap:files"}):
            for ptl_hot in (None, rng.random(len(steps)) < 0.2):
                folio = FOLIOS[int(rng.integers(0, len(FOLIOS)))]
                for cpus in (1, 5):
                    _same_template(_small_template(steps, prof, cpus, hot, ptl_hot, folio),
                                   _array_template(steps, prof, cpus, None, hot, ptl_hot,
                                                   folio))


@pytest.mark.parametrize("name", ["allocator_realloc", "ipi_storm", "shared_file_reclaim",
                                  "gc_compaction"])
def test_small_templates_equal_templates_built_on_columns_for_workload_plans(name):
    prof = load_cost_profile("x86_64-generic")
    cache = TemplateCache(prof, {"anon_vma:heap", "i_mmap:files"}, enabled=True)
    for plan in _plans(name, 10):
        want = _array_template(plan.steps, prof, 4, None, cache.hot_locks, None, None)
        _same_template(build_template(plan.steps, prof, 4, None, cache.hot_locks, None), want)
        _same_template(cache.get(plan.steps, 4, None), want)


def test_template_cache_row_memo_is_per_folio_bounded_and_off_without_reuse():
    prof = load_cost_profile("x86_64-generic")
    cache = TemplateCache(prof, set(), memo_rows=5)
    assert cache.row_memo(None) is cache.row_memo(None)
    assert cache.row_memo(FOLIOS[1]) is not cache.row_memo(None)
    for steps in _tables(3, 5, 8):
        cache.get(steps, 2, None)
    assert len(cache.row_memo(None)) <= 5 + SCALAR_ROWS
    assert TemplateCache(prof, set(), enabled=False).row_memo(None) is None


def test_param_counts_are_the_rows_of_the_count_matrix():
    prof = load_cost_profile("x86_64-generic")
    for steps in _tables(9, 10, 3 * SCALAR_ROWS):
        ipis = ipi_targets(steps, prof, 3)
        counts = param_counts(steps, ipis, FOLIOS[2])
        rc = vector_row_costs(steps, prof, cpus=3, folio=FOLIOS[2])
        assert list(counts) == list(rc.counts)
        for p, v in counts.items():
            assert _same_array(v, rc.counts[p])


def test_profile_medians_are_its_parameters_ns_and_follow_with_values():
    prof = load_cost_profile("x86_64-generic")
    assert prof.medians_ns == tuple(int(prof.param(p).ns) for p in PARAM_NAMES)
    changed = prof.with_values(pte_present_ns=12345)
    assert changed.medians_ns[PARAM_NAMES.index("pte_present_ns")] == 12345
    assert prof.medians_ns[PARAM_NAMES.index("pte_present_ns")] != 12345


def test_a_profile_copied_with_other_parameters_recomputes_its_medians_and_fixedness():
    prof = load_cost_profile("x86_64-generic")
    assert prof.is_fixed and prof.medians_ns[0] == int(prof.param(PARAM_NAMES[0]).ns)
    first = PARAM_NAMES[0]
    jittery = prof.model_copy(update={"params": prof.params.model_copy(update={
        first: prof.param(first).model_copy(update={"ns": 7, "dist": "lognormal",
                                                    "sigma": 0.3})})})
    assert not jittery.is_fixed and jittery.medians_ns[0] == 7
    assert prof.is_fixed and prof.medians_ns[0] != 7


def random_periodic_plan(rng: np.random.Generator) -> S.Steps:
    """Dense parts of a few random rows around periodic blocks of random templates (one
    phase each), reps and overrides of random count columns."""
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.7:
            parts.append(random_steps(rng, int(rng.integers(1, 6))))
        t = random_steps(rng, int(rng.integers(1, 5)))
        t.cols["phase"][:] = int(rng.integers(0, 5))
        reps = int(rng.integers(1, 300))
        overrides = {}
        for col in rng.choice(["alloc_pmd", "alloc_pte", "flushes", "ipis", "ptes", "kind",
                               "flush_pages", "freed", "old_addr", "length"],
                              int(rng.integers(0, 4)), replace=False):
            m = int(rng.integers(1, min(6, reps * len(t)) + 1))
            pos = rng.choice(reps * len(t), m, replace=False)
            hi = len(S.KIND_NAMES) if col == "kind" else 3
            overrides[str(col)] = (pos, rng.integers(0, hi, m).astype(t.cols[col].dtype))
        parts.append(S.PeriodicBlock(t, reps, 4096, 8192, overrides))
    if rng.random() < 0.5:
        parts.append(random_steps(rng, int(rng.integers(1, 6))))
    return S.Steps(parts=parts)


@pytest.mark.parametrize("seed", range(8))
def test_periodic_row_costs_equal_row_costs_of_the_materialised_plan(seed):
    from perfsim.cost.model import periodic_row_costs

    rng = np.random.default_rng(500 + seed)
    prof = _distinct_profile()
    for _ in range(10):
        plan = random_periodic_plan(rng)
        for cpus in (None, 2):
            folio = FOLIOS[int(rng.integers(0, len(FOLIOS)))]
            got = periodic_row_costs(plan, prof, cpus=cpus, folio=folio)
            assert got is not None
            dense = S.Steps(plan.cols, plan.lock_sets, plan.lock_set)
            _same_costs_arrays(got, vector_row_costs(dense, prof, cpus=cpus, folio=folio))


def _same_costs_arrays(a, b) -> None:
    for name in ("total", "ipis", "stolen", "matrix", "per_category"):
        assert _same_array(getattr(a, name), getattr(b, name)), name
    for c in CATEGORIES:
        assert _same_array(a.by_category[c], b.by_category[c]), c
    assert a.category_sums() == b.category_sums()
    assert all(type(v) is int for v in a.category_sums().values())


def test_periodic_row_costs_leave_plans_they_do_not_cover_to_the_column_path():
    from perfsim.cost.model import periodic_row_costs

    rng = np.random.default_rng(3)
    prof = load_cost_profile("x86_64-generic")
    t = random_steps(rng, 2)
    t.cols["phase"][:] = S.MOVE
    block = S.PeriodicBlock(t, 50, 4096, 4096, {"phase": (np.array([3]), np.array([1], np.int32))})
    assert periodic_row_costs(S.Steps(parts=[block]), prof) is None
    assert periodic_row_costs(random_steps(rng, 5), prof) is None
    big = random_steps(rng, SCALAR_ROWS + 1)
    assert periodic_row_costs(S.Steps(parts=[big, S.PeriodicBlock(t, 5, 0, 0)]), prof) is None
    plan = S.Steps(parts=[block])
    _same_costs_arrays(row_costs(plan, prof), vector_row_costs(plan, prof))


def test_a_first_flush_overridden_away_moves_the_first_flush_charges_to_the_next_flush():
    from perfsim.cost.model import periodic_row_costs

    rng = np.random.default_rng(11)
    prof = _distinct_profile()
    t = random_steps(rng, 2)
    t.cols["phase"][:] = S.MOVE
    t.cols["flushes"][:] = 1
    t.cols["ipis"][:] = 3
    for gone in ([0], [0, 1], [0, 1, 2, 3], [1, 2]):
        pos = np.array(gone)
        block = S.PeriodicBlock(t, 40, 4096, 4096, {
            "flushes": (pos, np.zeros(len(pos), np.int32))})
        plan = S.Steps(parts=[block])
        got = periodic_row_costs(plan, prof)
        want = vector_row_costs(S.Steps(plan.cols, plan.lock_sets, plan.lock_set), prof)
        _same_costs_arrays(got, want)
        first = min(set(range(80)) - set(gone))
        assert int(np.flatnonzero(want.counts["tlb_first_flush_ns"])[0]) == first


@pytest.mark.parametrize("seed", range(4))
def test_segment_credits_list_for_each_other_cpu_the_flushes_that_reach_it(seed):
    from perfsim.engine.pricing import _credits

    rng = np.random.default_rng(seed)
    for _ in range(30):
        f = int(rng.integers(0, 40))
        offsets = np.sort(rng.integers(0, 10**6, f)).tolist()
        targets = (rng.integers(0, 8, f) * (rng.random(f) < 0.8)).tolist()
        stolen = rng.integers(0, 5000, f).tolist()
        got = _credits(offsets, targets, stolen)
        assert len(got) == max(targets, default=0)
        for j, cr in enumerate(got):
            assert cr == tuple((o, s) for o, t, s in zip(offsets, targets, stolen) if t > j)


@pytest.mark.parametrize("seed", range(3))
def test_signatures_are_equal_exactly_when_every_signature_column_and_lock_set_is(seed):
    from perfsim.engine.pricing import SIGNATURE_COLUMNS, signature

    rng = np.random.default_rng(seed)
    for steps in _tables(40 + seed, 15, 12):
        cols = {c: v.copy() for c, v in steps.cols.items()}
        key = signature(steps, 4)
        assert key == signature(S.Steps(cols, steps.lock_sets, steps.lock_set.copy()), 4)
        assert key != signature(steps, 5)
        moved = dict(cols, old_addr=cols["old_addr"] + 4096, length=cols["length"] * 2)
        assert key == signature(S.Steps(moved, steps.lock_sets, steps.lock_set), 4)
        for c in SIGNATURE_COLUMNS:
            i = int(rng.integers(0, len(steps)))
            changed = dict(cols, **{c: cols[c].copy()})
            changed[c][i] += 1
            assert key != signature(S.Steps(changed, steps.lock_sets, steps.lock_set), 4), c
            wider = dict(cols, **{c: cols[c].astype(np.int64 if cols[c].dtype == np.int32
                                                    else np.int32)})
            assert key != signature(S.Steps(wider, steps.lock_sets, steps.lock_set), 4), c
        other_ids = (steps.lock_set + 1) % len(LOCK_SETS)
        assert key != signature(S.Steps(cols, steps.lock_sets, other_ids.astype(np.int32)), 4)
        lazy = S.Steps(parts=[steps])
        assert signature(lazy, 4) == key


def test_folio_batching_of_a_plan_is_its_source_vmas_batching_when_it_charges_anything():
    from types import SimpleNamespace

    from perfsim.cost.batching import folio_batching, folio_batching_of_plan
    from perfsim.profiles import resolve_target

    seen = set()
    for kernel in ("6.6", "6.15", "6.16", "6.17", "6.18", "6.19"):
        for arch in ("x86_64", "arm64-4k", "arm64-16k", "arm64-64k", "riscv-sv39"):
            target = resolve_target(kernel, arch)
            for folio_size in (0, 4096, 16 << 10, 64 << 10, 2 << 20):
                for shift in (0, 4096, 64 << 10, 2 << 20, -(16 << 10), 12345 * 4096):
                    vma = SimpleNamespace(folio_size=folio_size)
                    plan = SimpleNamespace(
                        errno=None, result_addr=(1 << 40) + shift,
                        request=SimpleNamespace(old_addr=1 << 40),
                        before=SimpleNamespace(find_vma=lambda a, v=vma: v))
                    want = folio_batching(target, folio_size, shift_bytes=shift)
                    got = folio_batching_of_plan(plan, target)
                    assert got == (want if want.charges_anything else None)
                    seen.add(got is None)
    assert seen == {True, False}
    failed = SimpleNamespace(errno="ENOMEM", result_addr=None)
    assert folio_batching_of_plan(failed, resolve_target("6.18", "x86_64")) is None


def _one_by_one_jittered_costs(steps, profile, cpus, rng, folio):
    """The jittered pricing as it was written before (the definition): every parameter in
    PARAM_NAMES order, drawn for the rows that use it, its products added per category."""
    from perfsim.cost.model import PARAM_CATEGORY
    from perfsim.cost.sampling import draw

    n = len(steps)
    ipis = ipi_targets(steps, profile, cpus)
    counts = param_counts(steps, ipis, folio)
    by_cat = {c: np.zeros(n, I64) for c in CATEGORIES}
    values = {}
    for name in PARAM_NAMES:
        param = profile.param(name)
        if param.is_fixed:
            v, idx = draw(param, 0, rng), None
        else:
            used = ipis > 0 if name == "ipi_receiver_ns" else counts[name] != 0
            idx = np.flatnonzero(used)
            v = draw(param, len(idx), rng)
        if isinstance(v, int):
            values[name] = v
            if name != "ipi_receiver_ns" and v:
                by_cat[PARAM_CATEGORY[name]] += counts[name] * v
        else:
            full = np.zeros(n, I64)
            full[idx] = v
            values[name] = full
            if name != "ipi_receiver_ns":
                by_cat[PARAM_CATEGORY[name]] += counts[name] * full
    total = np.zeros(n, I64)
    for a in by_cat.values():
        total += a
    own = (steps.flush_full.astype(I64) * values["tlb_full_flush_ns"]
           + steps.flush_pages.astype(I64) * values["tlb_invlpg_ns"])
    stolen = np.where(ipis > 0, values["ipi_receiver_ns"] + own, 0).astype(I64)
    return total, by_cat, stolen


def _jittery(names, dist="lognormal"):
    prof = _distinct_profile()
    params = prof.params.model_copy(update={
        n: prof.param(n).model_copy(update={"dist": dist, "sigma": 0.25}) for n in names})
    return prof.model_copy(update={"params": params})


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("names", [("syscall_ns", "ipi_wakeup_ns"),
                                   ("pte_present_ns", "ipi_receiver_ns", "tlb_invlpg_ns"),
                                   ("tlb_full_flush_ns", "ptl_ns", "extent_ns", "unmap_ns"),
                                   tuple(PARAM_NAMES)])
def test_jittered_row_costs_draw_and_price_as_pricing_parameters_one_by_one(seed, names):
    prof = _jittery(names, "normal" if seed % 2 else "lognormal")
    assert not prof.is_fixed
    rng = np.random.default_rng(seed)
    for steps in _tables(seed, 8, 3 * SCALAR_ROWS) + [random_steps(rng, 0)]:
        for cpus in (None, 3):
            a, b = np.random.default_rng(seed + 9), np.random.default_rng(seed + 9)
            got = row_costs(steps, prof, cpus=cpus, rng=a)
            total, by_cat, stolen = _one_by_one_jittered_costs(steps, prof, cpus, b, None)
            assert a.bit_generator.state == b.bit_generator.state
            assert _same_array(got.total, total) and _same_array(got.stolen, stolen)
            for c in CATEGORIES:
                assert _same_array(got.by_category[c], by_cat[c]), c
            assert got.category_sums() == {c: int(v.sum()) for c, v in by_cat.items()}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("names", [("syscall_ns", "ipi_wakeup_ns"),
                                   ("pte_present_ns", "tlb_first_flush_ns", "unmap_ns"),
                                   ("tlb_invlpg_ns", "ptl_ns")])
def test_jittered_row_costs_of_periodic_plans_draw_as_pricing_parameters_one_by_one(seed, names):
    from perfsim.cost.model import periodic_jittered_row_costs

    prof = _jittery(names)
    rng = np.random.default_rng(900 + seed)
    for _ in range(6):
        plan = random_periodic_plan(rng)
        dense = S.Steps(plan.cols, plan.lock_sets, plan.lock_set)
        for cpus in (None, 4):
            a, b = np.random.default_rng(seed), np.random.default_rng(seed)
            got = row_costs(plan, prof, cpus=cpus, rng=a)
            assert (got._later is not None) == ("tlb_invlpg_ns" not in names)
            total, by_cat, stolen = _one_by_one_jittered_costs(dense, prof, cpus, b, None)
            assert a.bit_generator.state == b.bit_generator.state
            assert _same_array(got.total, total) and _same_array(got.stolen, stolen)
            assert _same_array(got.ipis, ipi_targets(dense, prof, cpus))
            for c in CATEGORIES:
                assert _same_array(got.by_category[c], by_cat[c]), c
            assert got.category_sums() == {c: int(v.sum()) for c, v in by_cat.items()}
    assert periodic_jittered_row_costs(random_steps(rng, 5), prof, None, rng, None) is None


@pytest.mark.parametrize("seed", range(4))
def test_plan_columns_read_part_by_part_are_the_materialised_columns(seed):
    from perfsim.engine.pricing import _PlanColumns

    rng = np.random.default_rng(70 + seed)
    for _ in range(8):
        plan = random_periodic_plan(rng)
        cols = _PlanColumns(plan)
        assert cols.parts is not None
        got = {c: cols[c] for c in S.ADDR_COLUMNS + S.INT_COLUMNS if "addr" not in c}
        dense = plan.cols  # materialises
        for c, v in got.items():
            assert _same_array(v, dense[c]), c
        assert _PlanColumns(plan).parts is None  # materialised now: its own columns


@pytest.mark.parametrize("seed", range(4))
def test_templates_of_periodic_plans_priced_part_by_part_equal_column_templates(seed):
    from perfsim.engine.pricing import _template_costs

    rng = np.random.default_rng(80 + seed)
    for prof in (_distinct_profile(), _jittery(("syscall_ns", "ipi_wakeup_ns"))):
        for _ in range(5):
            plan = random_periodic_plan(rng)
            dense = S.Steps(plan.cols, plan.lock_sets, plan.lock_set)
            lazy = S.Steps(parts=plan.parts())
            for cpus in (1, 4):
                a, b = np.random.default_rng(seed), np.random.default_rng(seed)
                got = build_template(lazy, prof, cpus, a, set(), None)
                want = _array_template(dense, prof, cpus, b, set(), None, None)
                assert a.bit_generator.state == b.bit_generator.state
                _same_template(got, want)
                if len(lazy) > SCALAR_ROWS:
                    assert _template_costs is not None and got.rc._later is not None


def test_a_profiles_digest_is_computed_once_and_again_for_a_copy_with_other_fields():
    import hashlib
    import json

    prof = load_cost_profile("x86_64-generic")
    data = prof.model_dump(mode="json")
    if data.get("cold_cache") is None:
        data.pop("cold_cache", None)
    want = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert prof.digest == want and prof.digest is prof.digest
    renamed = prof.model_copy(update={"name": "other"})
    assert renamed.digest != prof.digest
    assert renamed.digest == load_cost_profile("x86_64-generic").model_copy(
        update={"name": "other"}).digest
