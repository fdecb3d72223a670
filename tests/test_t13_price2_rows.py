"""A walked plan is priced and keyed from its row tuples (``Steps.row_tuples``) without ever
making its columns, and gives what pricing and keying its columns give.

The template signature of a part of a few rows is a tuple of its rows' Python ints instead
of the bytes of its columns; these tests hold it to the bytes key it replaces (written out
here as the definition): on many tables, with and without row tuples, two signatures are
equal exactly when their bytes keys are."""

from __future__ import annotations

import numpy as np
import pytest
from test_t13_price_counts import FOLIOS, LOCK_SETS, _distinct_profile, _same_template
from test_throughput import _plans

from perfsim.cost import load_cost_profile
from perfsim.cost.model import LIST_COLUMNS, SCALAR_ROWS, column_lists
from perfsim.engine.pricing import (
    _COST_FIELDS,
    ROW_DTYPES,
    SIGNATURE_COLUMNS,
    TemplateCache,
    _array_template,
    _small_template,
    build_template,
    lock_ids,
    signature,
)
from perfsim.engine.records import CALL_STAT_COLUMNS, CallStats
from perfsim.planner import steps as S


def _bytes_part_key(part) -> tuple:
    """The definition: a dense part's lock-set names, the dtypes of its lock-set ids and
    signature columns, and all their bytes."""
    arrays = (part.lock_set, *(part.cols[c] for c in SIGNATURE_COLUMNS))
    return (part.lock_sets, tuple(a.dtype for a in arrays),
            b"".join(a.tobytes() for a in arrays))


def _bytes_signature(steps, cpus: int):
    parts = steps.parts()
    if len(parts) == 1 and parts[0] is steps:
        return (len(steps), cpus, _bytes_part_key(steps))
    key = [len(steps), cpus]
    for p in parts:
        if not (isinstance(p, S.Steps) and p.parts() == [p]):
            return None
        key.append(_bytes_part_key(p))
    return tuple(key)


def _random_rows(rng: np.random.Generator, n: int) -> tuple[list[tuple], list[tuple]]:
    """``n`` row tuples in ``ROW_FIELDS`` order (Python ints) and their lock names."""
    lock_pool = LOCK_SETS[: int(rng.integers(1, len(LOCK_SETS) + 1))]
    rows, names = [], []
    for _ in range(n):
        vals = {f: int(rng.integers(0, 3)) for f in S.ROW_FIELDS}
        vals.update(old_addr=int(rng.integers(0, 1 << 40)), new_addr=int(rng.integers(0, 1 << 40)),
                    length=int(rng.integers(0, 1 << 30)), kind=int(rng.integers(0, 16)),
                    phase=int(rng.integers(0, 5)), ptes=int(rng.integers(0, 600)),
                    flush_pages=int(rng.integers(0, 513)), ipis=int(rng.integers(0, 8)))
        ls = lock_pool[int(rng.integers(0, len(lock_pool)))]
        vals["rmap"] = len(ls)
        rows.append(tuple(vals[f] for f in S.ROW_FIELDS))
        names.append(ls)
    return rows, names


def _rows_steps(rows, names) -> S.Steps:
    return S.Steps(rows=(list(rows), list(names)))


def _variants(rng: np.random.Generator, rows, names) -> list[S.Steps]:
    """Tables some of which have the same signature columns as ``rows`` and some not: the
    row table, its columns copied, the rows translated, one signature value changed, one
    column widened or narrowed, other lock names, a lazy table of parts."""
    out = [_rows_steps(rows, names)]
    base = _rows_steps(rows, names)
    cols = {c: v.copy() for c, v in base.cols.items()}
    out.append(S.Steps(cols, base.lock_sets, base.lock_set.copy()))
    out.append(_rows_steps([(r[0] + 4096, r[1] + 8192, *r[2:4], r[4] * 2, *r[5:]) for r in rows],
                           names))
    i = int(rng.integers(0, len(rows)))
    f = S.ROW_FIELDS.index(SIGNATURE_COLUMNS[int(rng.integers(0, len(SIGNATURE_COLUMNS)))])
    changed = list(rows)
    changed[i] = (*rows[i][:f], rows[i][f] + 1, *rows[i][f + 1:])
    out.append(_rows_steps(changed, names))
    c = SIGNATURE_COLUMNS[int(rng.integers(0, len(SIGNATURE_COLUMNS)))]
    other = np.int64 if cols[c].dtype == np.int32 else np.int32
    out.append(S.Steps(dict(cols, **{c: cols[c].astype(other)}), base.lock_sets, base.lock_set))
    out.append(_rows_steps(rows, [LOCK_SETS[2] if n == LOCK_SETS[1] else n for n in names]))
    if len(rows) > 1:
        cut = int(rng.integers(1, len(rows)))
        out.append(S.Steps(parts=[_rows_steps(rows[:cut], names[:cut]),
                                  _rows_steps(rows[cut:], names[cut:])]))
        head = _rows_steps(rows[:cut], names[:cut])
        out.append(S.Steps(parts=[S.Steps({k: v.copy() for k, v in head.cols.items()},
                                          head.lock_sets, head.lock_set.copy()),
                                  _rows_steps(rows[cut:], names[cut:])]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_signatures_are_equal_exactly_when_the_bytes_keys_of_the_columns_are(seed):
    rng = np.random.default_rng(300 + seed)
    tables = []
    for _ in range(12):
        n = int(rng.choice([1, 2, 5, SCALAR_ROWS, SCALAR_ROWS + 1, 60]))
        rows, names = _random_rows(rng, n)
        tables += _variants(rng, rows, names)
        if rng.random() < 0.5:  # the same rows again, from another draw of the plan
            tables += _variants(rng, rows, names)
    keys = [(signature(t, 4), t) for t in tables]
    for t in tables:  # keyed from the rows alone: no column made for a small row table
        if t.row_tuples is not None and len(t) <= SCALAR_ROWS:
            assert t._cols is None and t._lock_set is None
    old = [_bytes_signature(t, 4) for _k, t in keys]
    for (ka, _), oa in zip(keys, old, strict=True):
        for (kb, _), ob in zip(keys, old, strict=True):
            assert (ka == kb) == (oa == ob)
            if ka == kb:
                assert hash(ka) == hash(kb)
    assert len(set(old)) < len(old)  # some keys are equal, so both sides are exercised


def test_row_tables_have_the_row_dtypes_the_signature_assumes():
    rows, names = _random_rows(np.random.default_rng(1), 7)
    t = _rows_steps(rows, names)
    assert ROW_DTYPES == (t.lock_set.dtype, *(t.cols[c].dtype for c in SIGNATURE_COLUMNS))


@pytest.mark.parametrize("seed", range(3))
def test_column_lists_and_lock_ids_of_row_tables_are_their_columns_as_lists(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        rows, names = _random_rows(rng, int(rng.integers(1, 70)))
        t = _rows_steps(rows, names)
        lists, ids = column_lists(t), lock_ids(t)
        assert t._cols is None  # read from the rows
        assert lists == [t.cols[c].tolist() for c in LIST_COLUMNS]
        assert all(type(v) is int for col in lists for v in col)
        assert ids == t.lock_set.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_small_templates_of_row_tables_equal_column_templates_and_make_no_column(seed):
    prof = _distinct_profile()
    rng = np.random.default_rng(50 + seed)
    for _ in range(20):
        rows, names = _random_rows(rng, int(rng.integers(1, SCALAR_ROWS + 1)))
        folio = FOLIOS[int(rng.integers(0, len(FOLIOS)))]
        for hot in (set(), {"anon_vma:heap"}):
            t = _rows_steps(rows, names)
            got = _small_template(t, prof, 5, hot, None, folio, {})
            if not hot or not any("anon_vma:heap" in n for n in names):
                assert t._cols is None
            _same_template(got, _array_template(_rows_steps(rows, names), prof, 5, None, hot,
                                                None, folio))


def test_small_template_stats_are_the_call_stats_record_in_field_order():
    assert CALL_STAT_COLUMNS[11:] == _COST_FIELDS
    prof = load_cost_profile("x86_64-generic")
    for plan in _plans("ipi_storm", 5):
        t = build_template(plan.steps, prof, 4, None, (), None)
        assert t.stats == tuple(CallStats(**dict(zip(CALL_STAT_COLUMNS, t.stats, strict=True))))
        assert len(t.stats) == len(CALL_STAT_COLUMNS)


@pytest.mark.parametrize("name", ["allocator_realloc", "ipi_storm", "gc_compaction",
                                  "shared_file_reclaim", "db_buffer_pool"])
def test_workload_plans_key_and_price_as_their_columns(name):
    """Workload plans, walked (row tuples) or not: the signature is equal exactly when the
    bytes key is, the template equals the one built on columns, and a walked plan's
    columns are never made by keying and pricing it."""
    prof = load_cost_profile("x86_64-generic")
    plans = _plans(name, 12)
    assert any(p.steps.row_tuples is not None for p in plans)
    cache = TemplateCache(prof, {"anon_vma:heap", "i_mmap:files"})
    keys = []
    for p in plans:
        keys.append(signature(p.steps, 4))
        cache.get(p.steps, 4, None)
        if p.steps.row_tuples is not None and len(p.steps) <= SCALAR_ROWS:
            assert p.steps._cols is None
    old = [_bytes_signature(p.steps, 4) for p in plans]
    for ka, oa in zip(keys, old, strict=True):
        for kb, ob in zip(keys, old, strict=True):
            assert (ka == kb) == (oa == ob)
    for p in plans:
        _same_template(build_template(p.steps, prof, 4, None, cache.hot_locks, None),
                       _array_template(p.steps, prof, 4, None, cache.hot_locks, None, None))


def _credits_by_definition(offsets, targets, stolen) -> tuple:
    """For the j-th other CPU, the (offset, stolen) of every flush with more than j targets."""
    return tuple(tuple((o, s) for o, t, s in zip(offsets, targets, stolen, strict=True) if t > j)
                 for j in range(max(targets, default=0)))


@pytest.mark.parametrize("seed", range(3))
def test_segment_credits_of_flushes_with_equal_targets_share_one_tuple(seed):
    from perfsim.engine.pricing import _credits

    rng = np.random.default_rng(seed)
    for _ in range(40):
        f = int(rng.integers(0, 6))
        offsets = np.sort(rng.integers(0, 10**6, f)).tolist()
        stolen = rng.integers(0, 5000, f).tolist()
        t = int(rng.integers(0, 8))
        for targets in ([t] * f, rng.integers(0, 8, f).tolist()):
            got = _credits(offsets, targets, stolen)
            assert got == _credits_by_definition(offsets, targets, stolen)
            for j in range(1, len(got)):
                if got[j] == got[j - 1]:
                    assert got[j] is got[j - 1]


@pytest.mark.parametrize("seed", range(2))
def test_column_sequences_are_the_column_lists(seed):
    from perfsim.cost.model import column_sequences

    rng = np.random.default_rng(70 + seed)
    for _ in range(20):
        rows, names = _random_rows(rng, int(rng.integers(1, 30)))
        t = _rows_steps(rows, names)
        assert [list(c) for c in column_sequences(t)] == column_lists(t)
        cols = S.Steps({k: v.copy() for k, v in t.cols.items()}, t.lock_sets, t.lock_set)
        assert column_sequences(cols) == column_lists(cols) == column_lists(t)
