"""The examples in perfsim's docstrings are tests: every module that has some runs them.

Modules are found by walking the package, so a new module's examples run without being
listed here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import perfsim


def _modules_with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    names = []
    for info in pkgutil.walk_packages(perfsim.__path__, "perfsim."):
        if info.name.endswith("__main__"):
            continue  # running it is the CLI, not a module with examples
        module = importlib.import_module(info.name)
        if any(t.examples for t in finder.find(module, module=module)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_decision_functions_have_examples():
    # the planner's kernel decisions carry worked examples (issue 9 item 7)
    for name in ("perfsim.planner.pgtable_move", "perfsim.planner.batch", "perfsim.planner.tlb",
                 "perfsim.planner.unmap"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
