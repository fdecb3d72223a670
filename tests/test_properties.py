"""Hypothesis properties of the planner (design.md "Conservation")."""

from hypothesis import given
from hypothesis import strategies as st

from perfsim import resolve_target
from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap

K, M = 1 << 10, 1 << 20
SRC_BASE, DST_BASE = 0x7F0000000000, 0x7F4000000000

layouts = st.fixed_dictionaries({
    "arch": st.sampled_from(["x86_64", "arm64-4k", "riscv-sv48"]),
    "src_off": st.integers(0, 1023).map(lambda p: p * 4 * K),
    "dst_off": st.integers(0, 1023).map(lambda p: p * 4 * K),
    "dst_gib": st.integers(0, 2),
    "pages": st.integers(1, 3000),
    "populate": st.sampled_from(["full", "none", "0.3", "every:7", "every:513"]),
    "thp": st.booleans(),
    "backing": st.sampled_from(["anon", "shmem"]),
    "guard_src": st.booleans(),
    "guard_dst": st.booleans(),
    "cpus": st.integers(1, 4),
    "seed": st.integers(0, 3),
})


def build(d, kernel="6.18", **changes):
    t = resolve_target(kernel, d["arch"])
    if changes:
        t = t.with_changes(**changes)
    src = SRC_BASE + (1 << 21) + d["src_off"]
    dst = DST_BASE + d["dst_gib"] * (1 << 30) + (1 << 21) + d["dst_off"]
    length = d["pages"] * 4 * K
    thp = d["thp"] and d["backing"] == "anon"  # file THP splits drop pages by design (R10)
    sp = single_move_space(t, src=src, length=length, backing=d["backing"], thp=thp,
                           populate=Population.parse(d["populate"], seed=d["seed"]),
                           guard_below_src=d["guard_src"] and d["src_off"] > 0,
                           guard_below_dst=dst if d["guard_dst"] and d["dst_off"] > 0 else None,
                           cpus=d["cpus"])
    return t, sp, src, dst, length


@given(layouts)
def test_a_move_loses_and_duplicates_no_pte(d):
    t, sp, src, dst, length = build(d)
    before = sp.pt.mapping(src, src + length)
    p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t)
    assert p.errno is None
    assert p.progress_bytes == length
    after = p.after.pt
    assert list(after.mapping(dst, dst + length)) == list(before)
    assert after.present_ptes(src, src + length) == 0
    assert p.move.ptes_moved + 512 * (p.move.pmd_moves + p.move.thp_moves) + \
        (1 << 18) * p.move.pud_moves >= 0
    # Pages outside both ranges (the guard VMA's page) are untouched.
    page = 4 * K
    assert after.present_ptes(src - page, src) == sp.pt.present_ptes(src - page, src)


@given(layouts)
def test_realigned_and_unaligned_moves_leave_identical_mappings(d):
    t, sp, src, dst, length = build(d)
    t_off = t.with_changes(realign_pmd=False)
    p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t)
    q = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t_off)
    assert not q.realigned
    lo, hi = min(src, dst) - (4 << 20), max(src, dst) + length + (4 << 20)
    for a, b in ((lo, lo + (hi - lo) // 2), (lo + (hi - lo) // 2, hi)):
        if b - a < (64 << 20):
            assert list(p.after.pt.mapping(a, b)) == list(q.after.pt.mapping(a, b))
    assert list(p.after.pt.mapping(dst, dst + length)) == list(q.after.pt.mapping(dst, dst + length))
    assert [(v.start, v.end) for v in p.after.vmas] == [(v.start, v.end) for v in q.after.vmas]
    # Realignment never adds work on the PTE path.
    assert p.move.ptes_moved <= q.move.ptes_moved


@given(layouts, st.integers(1, 8))
def test_progress_never_exceeds_the_request_and_revert_restores(d, k):
    t, sp, src, dst, length = build(d)
    p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst, fail_alloc_at=k), t)
    assert 0 <= p.progress_bytes <= length
    if p.errno is not None:
        assert p.errno == "ENOMEM"
        assert list(p.after.pt.mapping(src, src + length)) == list(sp.pt.mapping(src, src + length))
        assert p.after.pt.present_ptes(dst, dst + length) == 0
        assert [(v.start, v.end) for v in p.after.vmas] == [(v.start, v.end) for v in sp.vmas]
