"""total_ns_draws gives, per generator, exactly row_costs(...).total.sum()."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.cost import PARAM_NAMES, load_cost_profile, row_costs
from perfsim.cost.model import total_ns_draws
from perfsim.report.shapes import plan_call, target_for

CASES = [("unaligned", 64 << 20, "anon", False), ("realignable", 2 << 20, "anon", False),
         ("pud", 1 << 30, "anon", False), ("unaligned", 64 << 20, "shmem", True),
         ("blocked", 8 << 10, "anon", False)]


def _all_jittered(name: str):
    """The profile with every parameter drawn (lognormal, sigma 0.2): every draw counts."""
    import re
    from pathlib import Path

    import perfsim
    from perfsim.cost import parse_cost_profile

    text = (Path(perfsim.__file__).parent / "data/cost" / f"{name}.toml").read_text()
    text = re.sub(r'^dist = .*\n', "", text, flags=re.M)
    text = re.sub(r'^sigma = .*\n', "", text, flags=re.M)
    text = re.sub(r'^(\[params\.[a-z_0-9]+\]\n)', r'\1dist = "lognormal"\nsigma = 0.2\n', text,
                  flags=re.M)
    prof = parse_cost_profile(text, f"{name} (all jittered)")
    assert not any(prof.param(n).is_fixed for n in PARAM_NAMES if prof.param(n).ns)
    return prof


@pytest.mark.parametrize("profile", ["kvm-host", "x86_64-generic", "arm64-generic",
                                     "x86_64-generic*"])
@pytest.mark.parametrize("cls,size,backing,thp", CASES)
@pytest.mark.parametrize("cpus", [1, 4, 16])
def test_total_ns_draws_equals_row_costs_per_generator(profile, cls, size, backing, thp, cpus):
    arch = "arm64-4k" if profile.startswith("arm64") else "x86_64"
    plan = plan_call(target_for("6.18", arch), cls, size, backing=backing, thp=thp,
                     populate="full")
    prof = _all_jittered(profile[:-1]) if profile.endswith("*") else load_cost_profile(profile)

    def gens():
        return (np.random.default_rng(np.random.SeedSequence([7, r])) for r in range(5))

    want = [int(row_costs(plan, prof, cpus=cpus, rng=g).total.sum()) for g in gens()]
    assert total_ns_draws(plan, prof, gens(), cpus=cpus).tolist() == want
