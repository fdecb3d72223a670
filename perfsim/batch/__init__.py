"""Batch runs (layer 7): sweeps planned as pure functions, run on one executor interface,
stored as content-addressed, crash-safe Parquet, compared in pairs on common random numbers.

>>> from perfsim.batch import t_quantile
>>> round(t_quantile(0.975, 9), 2)
2.26
"""

__all__ = [
    "DaskExecutor", "Point", "ProcessExecutor", "ResultStore", "SerialExecutor", "Sweep",
    "SweepReport", "analyze", "cells", "load_results", "load_sweep", "make_executor", "mean_ci",
    "paired", "paired_table", "parse_sweep", "plan_sweep", "replications_needed", "run_batch",
    "run_point", "run_sweep", "schema_for", "t_quantile",
]

_HOME = {"SweepReport": "api", "analyze": "api", "run_sweep": "api",
         "DaskExecutor": "executors", "ProcessExecutor": "executors",
         "SerialExecutor": "executors", "make_executor": "executors",
         "run_batch": "runner", "run_point": "runner",
         "mean_ci": "stats", "paired": "stats", "paired_table": "stats",
         "replications_needed": "stats", "t_quantile": "stats",
         "ResultStore": "store", "load_results": "store", "schema_for": "store",
         "Point": "sweep", "Sweep": "sweep", "cells": "sweep", "load_sweep": "sweep",
         "parse_sweep": "sweep", "plan_sweep": "sweep"}
"""Where each name of :data:`__all__` lives; imported when first used, so that importing one
module of the package (the executors, the sweep planner) loads neither the simulator nor
pandas through the others."""


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"perfsim.batch.{_HOME[name]}"), name)
    raise AttributeError(f"module 'perfsim.batch' has no attribute {name!r}")
