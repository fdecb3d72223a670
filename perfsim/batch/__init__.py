"""Batch runs (layer 7): sweeps planned as pure functions, run on one executor interface,
stored as content-addressed, crash-safe Parquet, compared in pairs on common random numbers.

>>> from perfsim.batch import t_quantile
>>> round(t_quantile(0.975, 9), 2)
2.26
"""

from perfsim.batch.api import SweepReport, analyze, run_sweep
from perfsim.batch.executors import DaskExecutor, ProcessExecutor, SerialExecutor, make_executor
from perfsim.batch.runner import run_batch, run_point
from perfsim.batch.stats import mean_ci, paired, paired_table, replications_needed, t_quantile
from perfsim.batch.store import ResultStore, load_results, schema_for
from perfsim.batch.sweep import Point, Sweep, cells, load_sweep, parse_sweep, plan_sweep

__all__ = [
    "DaskExecutor", "Point", "ProcessExecutor", "ResultStore", "SerialExecutor", "Sweep",
    "SweepReport", "analyze", "cells", "load_results", "load_sweep", "make_executor", "mean_ci",
    "paired", "paired_table", "parse_sweep", "plan_sweep", "replications_needed", "run_batch",
    "run_point", "run_sweep", "schema_for", "t_quantile",
]
