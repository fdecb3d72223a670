"""The kernel-faithful planner: what Linux decides for one mremap() request."""

from perfsim.planner.options import PlanOptions
from perfsim.planner.result import Counters, MovePlan, MoveRequest
from perfsim.planner.syscall import plan_mremap

__all__ = ["Counters", "MovePlan", "MoveRequest", "PlanOptions", "plan_mremap"]
