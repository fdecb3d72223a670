"""Every published ratio a cost profile uses is reproduced within 1.5x (docs/cost-model.md,
"Published ratios"): computed here from the shipped profiles and the planner, not copied."""

from __future__ import annotations

import pytest

from perfsim.cost import predict
from perfsim.cost.batching import folio_batching
from perfsim.mm.build import single_move_space
from perfsim.planner import MoveRequest, PlanOptions, plan_mremap
from perfsim.profiles import resolve_target

G, M, K = 1 << 30, 1 << 20, 1 << 10
A, B = 0x7F0000200000, 0x7F4000600000          # 2 MiB aligned, not 1 GiB aligned
PUD_SRC, PUD_DST = 0x7F0000000000, 0x7F4000000000
WITHIN = 1.5


def call_ns(profile, kernel, arch, src, dst, length, *, folio_bytes=0, **changes) -> int:
    t = resolve_target(kernel, arch)
    if changes:
        t = t.with_changes(**changes)
    space = single_move_space(t, src=src, length=length, folio_size=folio_bytes)
    plan = plan_mremap(space, MoveRequest(src, length, new_addr=dst), t, PlanOptions("reference"))
    fb = folio_batching(t, folio_bytes, shift_bytes=dst - src)
    return predict(plan, profile, folio=fb).predicted_ns


def within(model: float, published: float) -> bool:
    return 1 / WITHIN <= model / published <= WITHIN


# arm64 (kernel 6.6: the oldest profile, no realignment; the anchors ran 5.4)
NO_PMD = {"arch.have_move_pmd": False, "arch.have_move_pud": False}
NO_PUD = {"arch.have_move_pud": False}


def test_B1_arm64_have_move_pmd_speedup_8x():
    """Kalesh Singh, 'arm64: mremap speedup - Enable HAVE_MOVE_PMD' (v3, Oct 2020): 1 GiB,
    PMD-aligned, 5.4: 9,100,885.4 ns PTE by PTE vs 1,134,312.6 ns with PMD moves (8.0x)."""
    pte = call_ns("arm64-generic", "6.6", "arm64-4k", A, B, G, **NO_PMD)
    pmd = call_ns("arm64-generic", "6.6", "arm64-4k", A, B, G, **NO_PUD)
    assert within(pte / pmd, 9_100_885.4 / 1_134_312.6)
    assert within(pmd, 1_134_312.6)


def test_B2_arm64_have_move_pud_speedup_19x():
    """Kalesh Singh, 'arm64: mremap speedup - Enable HAVE_MOVE_PUD' (Oct 2020): 1 GiB,
    PUD-aligned: 1,134,312.6 ns with PMD moves vs 59,395.7 ns with one PUD move (19.1x)."""
    pmd = call_ns("arm64-generic", "6.6", "arm64-4k", PUD_SRC, PUD_DST, G, **NO_PUD)
    pud = call_ns("arm64-generic", "6.6", "arm64-4k", PUD_SRC, PUD_DST, G)
    assert within(pmd / pud, 1_134_312.6 / 59_395.7)
    assert within(pud, 59_395.7)


def test_B3_arm64_pte_batching_saves_70us_per_1m_of_64k_folios():
    """Dev Jain, 'Optimize mremap() for large folios' (v4, Jun 2025), Apple M3: mmap 1 MiB of
    64 KiB folios, memset, mremap to src + 1 MiB, munmap, 10,000 times: 1.9 s -> 1.2 s, so
    70 us saved per move by the batching (6.15: PTE by PTE; 6.17: batched)."""
    src = 1 << 30
    before = call_ns("arm64-generic", "6.15", "arm64-4k", src, src + M, M, folio_bytes=64 * K)
    after = call_ns("arm64-generic", "6.17", "arm64-4k", src, src + M, M, folio_bytes=64 * K)
    assert within(before - after, (1.9 - 1.2) / 10_000 * 1e9)


def test_B3_no_regression_for_small_folios_on_arm64():
    """B3 also reports 'no regression is observed for small folios'."""
    src = 1 << 30
    before = call_ns("arm64-generic", "6.15", "arm64-4k", src, src + M, M)
    after = call_ns("arm64-generic", "6.17", "arm64-4k", src, src + M, M)
    assert within(after / before, 1.0)


@pytest.mark.parametrize("profile", ["x86_64-generic", "kvm-host"])
def test_X1_x86_hint_gate_restores_pre_batching_speed(profile):
    """Cross-check of the x86 profiles on a source they were not derived from: Lorenzo
    Stoakes, '[PATCH HOTFIX 6.17] mm/mremap: avoid expensive folio lookup on mremap folio pte
    batch' (Aug 2025), Raptor Lake: 143,857 realloc calls/s before batching, 138,701 with the
    pte_batch_hint gate (1.037x) - and 81,503 under gate 'folio', which must be slower."""
    src = 1 << 30
    for length in (16 * K, 64 * K, M):          # PTE moves (no PMD-aligned extent)
        none = call_ns(profile, "6.15", "x86_64", src, src + 2 * length, length)
        hint = call_ns(profile, "6.17", "x86_64", src, src + 2 * length, length)
        folio = call_ns(profile, "6.17", "x86_64", src, src + 2 * length, length,
                        **{"kernel.pte_batching": "folio"})
        assert within(hint / none, 143_857 / 138_701)
        assert folio > hint
