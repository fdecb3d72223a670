"""Cost model (layer 4): cost profiles with provenance, per-row costs, the closed form.

>>> from perfsim.cost import load_cost_profile
>>> load_cost_profile("x86_64-generic").value("tlb_invlpg_ns")
100
"""

from perfsim.cost.model import (
    CATEGORIES,
    PARAM_CATEGORY,
    Prediction,
    RowCosts,
    ipi_targets,
    param_counts,
    predict,
    row_costs,
)
from perfsim.cost.profile import (
    PARAM_DOCS,
    PARAM_NAMES,
    CostParam,
    CostProfile,
    cost_profile_names,
    default_cost_profile,
    load_cost_profile,
    parse_cost_profile,
    resolve_cost_profile,
)

__all__ = [
    "CATEGORIES", "PARAM_CATEGORY", "PARAM_DOCS", "PARAM_NAMES", "CostParam", "CostProfile",
    "Prediction", "RowCosts", "cost_profile_names", "default_cost_profile", "ipi_targets",
    "load_cost_profile",
    "param_counts", "parse_cost_profile", "predict", "resolve_cost_profile", "row_costs",
]
