"""How the planner computes a plan, never what the plan is.

Every choice here yields the same :class:`~perfsim.planner.result.MovePlan`; the tests hold
the implementations to that. Library users leave it at the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Implementation = Literal["auto", "reference", "fast"]


@dataclass(frozen=True)
class PlanOptions:
    """``implementation``:

    ``"auto"``       the vectorised move where it applies, else the per-extent walk; the
                     array driver of the unmap (the default);
    ``"reference"``  the per-extent walk of ``move_page_tables`` and the per-slot unmap walk;
    ``"fast"``       like ``auto``, but a move the vectorised path declines is an error
                     (``AssertionError``): for tests that must exercise that path.
    """

    implementation: Implementation = "auto"

    def __post_init__(self) -> None:
        if self.implementation not in ("auto", "reference", "fast"):
            raise ValueError(f"implementation must be auto, reference or fast, "
                             f"not {self.implementation!r}")


DEFAULT = PlanOptions()
