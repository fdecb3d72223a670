"""What-if tuning (layer 9): search kernel-profile, cost-profile and workload knobs for the
setting that minimises (or maximises) an objective, with confidence intervals, constraints
and the sensitivity of the objective to each knob. See docs/tune.md.

>>> from perfsim.tune import default_tune
>>> default_tune().method()
'grid'
"""

from perfsim.tune.search import TuneResult, analyze, evaluate_point, run_tune, settings_points
from perfsim.tune.spec import (
    METRIC_ALIASES,
    Constraint,
    KnobRange,
    Objective,
    Search,
    TuneSpec,
    default_tune,
    load_tune,
    parse_tune,
)

__all__ = [
    "METRIC_ALIASES", "Constraint", "KnobRange", "Objective", "Search", "TuneResult",
    "TuneSpec", "analyze", "default_tune", "evaluate_point", "load_tune", "parse_tune",
    "run_tune", "settings_points",
]
