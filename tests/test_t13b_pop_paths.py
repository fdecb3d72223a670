"""Issue 13, fifth pass ("pop"): each shortcut of the moves of large, partly populated
ranges, held to the general path it stands for on seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.planner.fast_rows import RowBlock, zero_stride


def _same_column(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tolist() == b.tolist()
    assert (a.strides == (0,)) == (b.strides == (0,))
    assert a.flags.writeable == b.flags.writeable
    assert a.flags.c_contiguous == b.flags.c_contiguous


def _random_value(rng, n: int):
    k = int(rng.integers(0, 6))
    if k == 0:
        return int(rng.integers(0, 3))
    if k == 1:
        return bool(rng.integers(0, 2))
    if k == 2:
        return np.int64(rng.integers(0, 3))
    if k == 3:
        return rng.integers(0, 4, n).astype(rng.choice([np.int64, np.int32, np.int8]))
    if k == 4:
        return rng.integers(0, 2, n).astype(bool)
    return zero_stride(int(rng.integers(0, 3)), np.int64, n)


def _column_by_definition(rb: RowBlock, name: str, dtype) -> list[int]:
    """Each group's values written at its positions, in order, over zeros; a group that
    holds the column as the scalar 0, or not at all, writes nothing (a later group is an
    overlay of the rows it names)."""
    out = [0] * rb.n
    for pos, cols in rb.groups:
        v = cols.get(name, 0)
        if np.isscalar(v) and v == 0:
            continue
        at = range(rb.n) if pos is None else np.asarray(pos).tolist()
        vals = np.broadcast_to(np.asarray(v), (len(at),)).astype(dtype).tolist()
        for i, x in zip(at, vals, strict=True):
            out[i] = x
    return out


@pytest.mark.parametrize("seed", range(40))
def test_row_block_column_is_column_of_groups(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9)) if seed % 4 else int(rng.integers(60, 300))
    names = ["a", "b", "c", "d"]
    rb = RowBlock(n)
    # the blocks the planners build: a first group over every row and groups at some
    # positions after it, or groups at positions that together cover every row
    if rng.random() < 0.5:
        groups = [None] + [np.sort(rng.choice(n, int(rng.integers(1, n + 1)), replace=False))
                           for _ in range(int(rng.integers(0, 3)))]
    else:
        part = rng.integers(0, int(rng.integers(1, 4)), n)
        groups = [np.flatnonzero(part == g) for g in range(int(part.max()) + 1)]
    for pos in groups:
        m = n if pos is None else len(pos)
        cols = {nm: _random_value(rng, m) for nm in names if rng.random() < 0.6}
        rb.add(pos, **cols)
    for nm in names + ["absent"]:
        for dtype in (np.int32, np.int64):
            shared_a: dict = {}
            shared_b: dict = {}
            _same_column(rb.column(nm, dtype, shared_a), rb.column_of_groups(nm, dtype, shared_b))
            _same_column(rb.column(nm, dtype), rb.column_of_groups(nm, dtype))
            assert rb.column(nm, dtype).tolist() == _column_by_definition(rb, nm, dtype)


@pytest.mark.parametrize("seed", range(12))
def test_mask_table_row_int_is_the_int_of_the_joined_row(seed):
    from perfsim.mm.pagetable import PageTables, _words_to_int
    from perfsim.planner.bitmaps import MaskTable
    from perfsim.profiles import load_arch

    rng = np.random.default_rng(seed)
    arch = load_arch("x86_64")
    base = 0x7F0000000000
    pt = PageTables.empty(arch).populate(base, base + int(rng.integers(1, 9)) * arch.pmd_size,
                                         fraction=0.4, seed=seed)
    masks = MaskTable(pt)
    words = arch.ptrs_per_pte // 64
    for _ in range(30):
        op = rng.integers(0, 4)
        if op == 0:
            masks.add_int(int.from_bytes(rng.bytes(words * 8), "little") * int(rng.integers(0, 2)))
        elif op == 1:
            masks.add_rows(rng.integers(0, 2**63, (int(rng.integers(0, 3)), words)).astype(np.uint64))
        elif op == 2:
            masks.materialise()
        i = int(rng.integers(0, masks.n))
        got = masks.row_int(i)
        assert got == _words_to_int(masks.rows(np.array([i]))[0])
        assert masks.row_int(i) == got
    table, pop = masks.materialise()
    assert [masks.row_int(i) for i in range(masks.n)] == [_words_to_int(r) for r in table]
    assert pop.tolist() == [_words_to_int(r).bit_count() for r in table]


def _summary_by_pandas(res, realigned: int = 0) -> dict:
    """What ``summarize`` computes, figure by figure on pandas Series (its definition)."""
    from perfsim.cost import CATEGORIES

    c, w, u = res.calls, res.walker_waits, res.users
    n = len(c)
    lat = c["latency_ns"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
    end = int(res.summary.get("end_ns", 0))

    def q(p):
        return float(np.percentile(lat, p)) if len(lat) else float("nan")

    out = {
        "calls": n,
        "errors": int((c["errno"] != "").sum()) if n else 0,
        "realigned_calls": int(realigned),
        "lat_mean_ns": float(lat.mean()) if n else float("nan"),
        "lat_p50_ns": q(50), "lat_p90_ns": q(90), "lat_p99_ns": q(99),
        "lat_max_ns": int(lat.max()) if n else 0,
        "lat_total_ns": int(lat.sum()),
        "mmap_lock_wait_mean_ns": float(c["mmap_lock_wait_ns"].mean()) if n else float("nan"),
        "rmap_wait_mean_ns": float(c["rmap_wait_ns"].mean()) if n else float("nan"),
        "rmap_wait_max_ns": int(c["rmap_wait_ns"].max()) if n else 0,
        "ptl_wait_mean_ns": float(c["ptl_wait_ns"].mean()) if n else float("nan"),
        "sim_end_ns": end,
        "calls_per_sim_s": n / (end / 1e9) if end else float("nan"),
        "events": int(res.summary.get("events", 0)),
        "walker_visits": int(sum(res.summary.get("walker_visits", {}).values())),
        "walker_waits": len(w),
        "walker_wait_mean_ns": float(w["wait_ns"].mean()) if len(w) else 0.0,
        "walker_wait_max_ns": int(w["wait_ns"].max()) if len(w) else 0,
        "user_stolen_ns": int(u["stolen_ns"].sum()) if len(u) else 0,
        "user_interrupts": int(u["interrupts"].sum()) if len(u) else 0,
    }
    for k in ("ptes_moved", "pmd_moves", "pud_moves", "thp_moves", "tlb_flushes", "ipis",
              "rmap_holds"):
        out[k] = int(c[k].sum()) if n else 0
    for cat in CATEGORIES:
        col = f"cost_{cat}_ns"
        out[col] = int(c[col].sum()) if n and col in c else 0
    return out


def _same_summary(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        assert type(got[k]) is type(v), k
        assert got[k] == v or (v != v and got[k] != got[k]), k


@pytest.mark.parametrize("seed", [None, 11])
def test_summarize_of_every_shipped_workload_is_the_pandas_summary(seed):
    from perfsim.workload import run_workload, workload_names
    from perfsim.workload.run import summarize

    for name in workload_names():
        res, m, _ = run_workload(name, seed=seed)
        _same_summary(m, _summary_by_pandas(res, m["realigned_calls"]))
        _same_summary(summarize(res), _summary_by_pandas(res))


@pytest.mark.parametrize("seed", range(20))
def test_column_reductions_are_the_pandas_reductions(seed):
    import pandas as pd

    from perfsim.workload.run import _max, _mean, _sum

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    ints = rng.integers(-(1 << 40), 1 << 40, n)
    floats = rng.standard_normal(n) * 10.0 ** float(rng.integers(-3, 12))
    floats[rng.random(n) < 0.2] = np.nan
    for a in (ints, ints.astype(np.int32), floats):
        s = pd.Series(a)
        want_mean = float(s.mean())
        assert _mean(a) == want_mean or (want_mean != want_mean and _mean(a) != _mean(a))
        if a.dtype.kind == "i":
            assert _sum(a) == int(s.sum()) and _max(a) == int(s.max())
        elif not np.isnan(a).all():
            assert _sum(np.round(a)) == int(pd.Series(np.round(a)).sum())
            assert _max(np.round(a)) == int(pd.Series(np.round(a)).max())
    nan = np.full(3, np.nan)
    assert _mean(nan) != _mean(nan) and pd.Series(nan).mean() != pd.Series(nan).mean()


def _population_by_definition(arch, start: int, end: int, fraction: float, seed: int,
                              thp: bool) -> dict:
    """``{slot: (kind, bitmap int or None)}`` of ``populate(start, end, fraction=, seed=,
    thp=)`` on an empty state: slot j's bitmap is the j-th run of ``ptrs`` draws of
    ``default_rng(seed)`` below ``fraction``, clipped to the range; a slot wholly inside is
    a THP when asked; a slot left empty has no table."""
    from perfsim.mm.pagetable import PMD_LEAF, PMD_TABLE, range_mask

    page, pmd, ptrs = arch.page_size, arch.pmd_size, arch.ptrs_per_pte
    first, last = start // pmd, (end - 1) // pmd
    draws = np.random.default_rng(seed).random((last - first + 1, ptrs)) < fraction
    want = {}
    for j, slot in enumerate(range(first, last + 1)):
        lo = max(start - slot * pmd, 0) // page
        hi = min(end - slot * pmd, pmd) // page
        if thp and lo == 0 and hi == ptrs:
            want[slot] = (PMD_LEAF, None)
            continue
        bits = sum(1 << i for i in np.flatnonzero(draws[j]).tolist()) & range_mask(lo, hi)
        if bits:
            want[slot] = (PMD_TABLE, bits)
    return want


def _entries(pt) -> dict:
    from perfsim.mm.pagetable import PMD_LEAF, _words_to_int

    return {slot: (kind, None if kind == PMD_LEAF else _words_to_int(pt.masks[row]))
            for slot, kind, row in zip(pt.pmd_idx.tolist(), pt.pmd_kind.tolist(),
                                       pt.pmd_mask.tolist(), strict=True)}


def _large_range(rng, arch, pages_lo=70, pages_hi=200):
    ptrs, page = arch.ptrs_per_pte, arch.page_size
    base = 0x7F0000000000 + int(rng.integers(0, 4)) * arch.pud_size
    start = base + int(rng.integers(0, 3 * ptrs)) * page
    return start, start + int(rng.integers(pages_lo * ptrs, pages_hi * ptrs)) * page


@pytest.mark.parametrize("seed", range(16))
def test_a_large_random_population_is_each_slots_run_of_draws_clipped_to_the_range(seed):
    """The array population of more PMD slots than the small path takes, against its
    definition; every bitmap's population is its popcount."""
    from perfsim.mm.pagetable import PageTables, _words_to_int
    from perfsim.profiles import load_arch

    rng = np.random.default_rng(1000 + seed)
    arch = load_arch("x86_64")
    start, end = _large_range(rng, arch)
    fraction = float(rng.choice([0.002, 0.3, 0.9]))
    thp = bool(rng.integers(0, 2))
    pt = PageTables.empty(arch).populate(start, end, fraction=fraction, seed=seed, thp=thp)
    want = _population_by_definition(arch, start, end, fraction, seed, thp)
    assert _entries(pt) == want
    assert pt.mask_pop.tolist() == [_words_to_int(r).bit_count() for r in pt.masks]
    assert pt.pud_idx.tolist() == sorted({s >> (arch.pud_shift - arch.pmd_shift) for s in want})


@pytest.mark.parametrize("seed", range(16))
def test_populating_over_a_large_population_ors_the_bitmaps_of_the_slots_both_touch(seed):
    """A second population (the guard page below a source, a range over part of another)
    on a state of many entries: a slot both touch holds the OR of the two bitmaps, or stays
    a huge leaf; the others are each population's own."""
    from perfsim.mm.pagetable import PMD_LEAF, PageTables, _words_to_int
    from perfsim.profiles import load_arch

    rng = np.random.default_rng(2000 + seed)
    arch = load_arch("x86_64")
    start, end = _large_range(rng, arch)
    fraction, thp = float(rng.choice([0.05, 0.5])), bool(rng.integers(0, 2))
    first = PageTables.empty(arch).populate(start, end, fraction=fraction, seed=seed, thp=thp)
    page = arch.page_size
    if seed % 2:
        s2, e2 = start - page, start  # a guard page below the range
    else:
        s2 = start + int(rng.integers(-40, 40)) * arch.pmd_size // 2 // page * page
        e2 = s2 + int(rng.integers(1, 30 * arch.ptrs_per_pte)) * page
    f2, seed2 = float(rng.choice([0.4, 1.0])), seed + 7
    got = first.populate(s2, e2, fraction=f2, seed=seed2)
    want = _population_by_definition(arch, start, end, fraction, seed, thp)
    for slot, (kind, bits) in _population_by_definition(arch, s2, e2, f2, seed2, False).items():
        old = want.get(slot)
        if old is None:
            want[slot] = (kind, bits)
        elif old[0] != PMD_LEAF:
            want[slot] = (kind, old[1] | bits)
    assert _entries(got) == want
    assert got.mask_pop.tolist() == [_words_to_int(r).bit_count() for r in got.masks]


@pytest.mark.parametrize("seed", range(12))
def test_pair_window_is_the_bits_at_off_of_the_two_rows_side_by_side(seed):
    from perfsim.mm.pagetable import _words_to_int
    from perfsim.planner.bitmaps import pair_window, shift_left, shift_right

    rng = np.random.default_rng(seed)
    w = int(rng.choice([1, 8, 32]))
    bits = 64 * w
    table = rng.integers(0, 2**63, (int(rng.integers(1, 40)), w), dtype=np.uint64)
    table[rng.random(table.shape) < 0.3] = 0
    table[rng.random(table.shape) < 0.2] |= np.uint64(1 << 63)
    n = int(rng.integers(0, 50))
    lo, hi = rng.integers(0, len(table), n), rng.integers(0, len(table), n)
    for off in sorted({1, 63, bits - 1, *(rng.integers(1, bits, 4).tolist()),
                       *(range(64, bits, 64))}):
        got = pair_window(table, lo, hi, off)
        assert got.shape == (n, w) and got.dtype == np.uint64 and got.flags.c_contiguous
        full = (1 << bits) - 1
        want = [((_words_to_int(table[a]) | _words_to_int(table[b]) << bits) >> off) & full
                for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
        assert [_words_to_int(r) for r in got] == want
        assert (got == (shift_right(table[lo], off) | shift_left(table[hi], bits - off))).all()


@pytest.mark.parametrize("seed", range(12))
def test_bits_in_rows_of_many_ids_counts_like_python_ints(seed):
    from perfsim.mm.pagetable import _words_to_int
    from perfsim.planner.bitmaps import bits_in_rows

    rng = np.random.default_rng(seed)
    w = int(rng.choice([1, 8, 32]))
    table = rng.integers(0, 2**63, (int(rng.integers(1, 120)), w), dtype=np.uint64)
    table[rng.random(table.shape) < 0.3] = 0
    table[rng.random(table.shape) < 0.3] = np.uint64(2**64 - 1)
    n = int(rng.integers(9, 300))
    ids = rng.integers(0, len(table), n)
    a, b = rng.integers(0, 64 * w + 1, n), rng.integers(0, 64 * w + 1, n)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    want = [(_words_to_int(table[i]) >> x & ((1 << (y - x)) - 1)).bit_count()
            for i, x, y in zip(ids.tolist(), lo.tolist(), hi.tolist(), strict=True)]
    got = bits_in_rows(table, ids, lo, hi)
    assert got.dtype == np.int64 and got.tolist() == want


@pytest.mark.parametrize("seed", range(20))
def test_row_block_steps_holds_each_column_column_makes(seed):
    from perfsim.planner import steps as S
    from perfsim.planner.fast_rows import _STEP_COLUMNS

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    rb = RowBlock(n)
    names = [nm for nm, _ in _STEP_COLUMNS]
    cols = {nm: _random_value(rng, n) for nm in names if rng.random() < 0.7}
    cols["lock"] = 0
    rb.add(None, **cols)
    if seed % 3 == 0:  # an overlay group: the general path
        pos = np.sort(rng.choice(n, int(rng.integers(1, n + 1)), replace=False))
        rb.add(pos, alloc_pmd=1)
    st = rb.steps(((),))
    assert list(st.cols) == list(S.ADDR_COLUMNS + S.INT_COLUMNS)
    for nm, dt in _STEP_COLUMNS:
        _same_column(st.cols[nm], rb.column(nm, dt, {}))


def test_mask_table_full_is_the_states_first_full_row_else_one_added_when_asked():
    from perfsim.mm.pagetable import PageTables
    from perfsim.planner.bitmaps import MaskTable
    from perfsim.profiles import load_arch

    arch = load_arch("x86_64")
    base, pmd = 0x7F0000000000, arch.pmd_size
    sparse = PageTables.empty(arch).populate(base, base + 3 * pmd, fraction=0.5, seed=1)
    full = sparse.populate(base + 8 * pmd, base + 9 * pmd)
    m = MaskTable(full)
    assert m.full == int(np.flatnonzero(full.mask_pop == arch.ptrs_per_pte)[0])
    m = MaskTable(sparse)
    m.add_int((1 << arch.ptrs_per_pte) - 1)  # a full row added while planning is not the state's
    m.materialise()
    n = m.n
    assert m.full == n and m.full == n and m.n == n + 1
    assert m.row_int(n) == (1 << arch.ptrs_per_pte) - 1


@pytest.mark.parametrize("seed", range(8))
def test_an_empty_state_is_the_array_empty_state_and_populates_as_it(seed):
    from perfsim.mm.pagetable import _ARRAYS, PageTables
    from perfsim.profiles import load_arch

    rng = np.random.default_rng(seed)
    arch = load_arch(str(rng.choice(["x86_64", "arm64-4k", "riscv-sv39"])))
    w = arch.ptrs_per_pte // 64

    def eager() -> PageTables:  # the arrays alone, as a state read from elsewhere has them
        return PageTables(arch, frozenset(), np.zeros(0, np.int64), np.zeros(0, np.int8),
                          np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int32),
                          np.zeros((1, w), np.uint64), np.zeros(1, np.int32))

    def fields(pt):
        return [(n, getattr(pt, n).dtype, getattr(pt, n).tolist()) for n in sorted(_ARRAYS)] + \
            [sorted(pt.pud_tables)]

    assert fields(PageTables.empty(arch)) == fields(eager())
    base = 0x7F0000000000 + int(rng.integers(0, 8)) * arch.pmd_size
    ranges = []
    for _ in range(int(rng.integers(1, 4))):
        s = base + int(rng.integers(0, 6 * arch.ptrs_per_pte)) * arch.page_size
        e = s + int(rng.integers(1, 3 * arch.ptrs_per_pte)) * arch.page_size
        ranges.append((s, e, {"fraction": float(rng.choice([0.3, 1.0])), "seed": seed,
                              "thp": bool(rng.integers(0, 2))}))
    assert fields(PageTables.empty(arch).populate_each(ranges)) == \
        fields(eager().populate_each(ranges))


@pytest.mark.parametrize("name", ["random_layout_stress", "exec_stack", "gc_compaction",
                                  "allocator_realloc"])
def test_calls_laid_out_on_one_shared_empty_state_are_the_calls_laid_out_alone(name):
    from perfsim.mm.pagetable import _ARRAYS, PageTables
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import SyntheticDraws, layout_call

    w = load_workload(resolve_workload(name))
    target = resolve_target(w.kernel, w.arch)

    def fields(pt):
        return [(n, getattr(pt, n).dtype, getattr(pt, n).tolist()) for n in sorted(_ARRAYS)] + \
            [sorted(pt.pud_tables)]

    shared = PageTables.empty(target.arch)
    for i, s in enumerate(w.streams):
        if not hasattr(s, "src_align"):
            continue
        draws = iter(SyntheticDraws(s, np.random.SeedSequence(w.seed), i))
        for _ in range(40):
            d = next(draws)
            (sp_a, rq_a), (sp_b, rq_b) = (layout_call(d, s, target, w.cpus),
                                          layout_call(d, s, target, w.cpus, shared))
            assert rq_a == rq_b and sp_a.vmas == sp_b.vmas and sp_a.cpus == sp_b.cpus
            assert fields(sp_a.pt) == fields(sp_b.pt)
    assert fields(shared) == fields(PageTables.empty(target.arch))
