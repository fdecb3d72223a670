"""The tabulated t quantiles (issue 13, sixth pass): scipy's own values, used only where
that scipy is installed."""

import math

import pytest

from perfsim.batch import t_table
from perfsim.batch.stats import mean_ci, paired, t_quantile

same_scipy = pytest.mark.skipif(
    t_table.installed_scipy_revision() != t_table.SCIPY_REVISION,
    reason=f"the installed scipy is not the build the table was taken from "
           f"({t_table.SCIPY_VERSION}, {t_table.SCIPY_REVISION[:12]})")


def _scipy(p, df):
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


@same_scipy
def test_every_tabulated_quantile_is_scipys_exactly():
    got = [t_table.lookup(t_table.P, df) for df in range(1, t_table.DF_MAX + 1)]
    assert got == [_scipy(t_table.P, df) for df in range(1, t_table.DF_MAX + 1)]


@same_scipy
def test_the_printed_text_block_is_the_modules_own():
    from pathlib import Path

    assert t_table.text_block() in Path(t_table.__file__).read_text()


def test_the_table_probability_is_what_a_95_percent_interval_asks_for():
    assert t_table.P == 0.5 + 0.95 / 2 == 0.975


def test_t_quantile_is_scipys_inside_and_outside_the_table():
    grid = [(p, df) for p in (0.5, 0.9, 0.95, 0.975, 0.995)
            for df in (1, 2, 3, 4, 9, 29, 57, 999, 1_000, 1_001, 123_456)]
    assert [t_quantile(p, df) for p, df in grid] == [_scipy(p, df) for p, df in grid]
    assert math.isnan(t_quantile(0.975, 0))


def test_another_scipy_build_is_asked_instead_of_the_table(monkeypatch):
    monkeypatch.setattr(t_table, "installed_scipy_revision", lambda: "0" * 40)
    assert t_table.lookup(0.975, 2) is None
    assert not t_table.covers(0.975, 2)
    assert t_quantile(0.975, 2) == _scipy(0.975, 2)


def test_the_table_holds_no_other_probability_or_degrees_of_freedom():
    assert t_table.lookup(0.95, 2) is None
    assert t_table.lookup(0.975, 0) is None
    assert t_table.lookup(0.975, t_table.DF_MAX + 1) is None
    assert t_table.lookup(0.975, 2.5) is None
    assert not t_table.covers(0.975, t_table.DF_MAX + 1)


def test_the_revision_is_read_without_importing_scipy():
    import subprocess
    import sys

    code = ("import sys; from perfsim.batch import t_table; "
            "print(t_table.installed_scipy_revision(), 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    rev, loaded = out.stdout.split()
    import scipy.version

    assert (rev, loaded) == (scipy.version.git_revision, "False")


@same_scipy
def test_a_95_percent_analysis_imports_no_scipy():
    import subprocess
    import sys

    code = ("import sys\n"
            "from perfsim.batch.stats import mean_ci, paired\n"
            "mean_ci([1.0, 2.0, 4.0])\n"
            "paired([1.0, 2.0, 4.0, 3.0], [1.5, 2.0, 3.0, 3.5])\n"
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_paired_without_the_replications_needed_is_paired_but_for_them():
    a, b = [3.0, 4.5, 5.0, 4.0, 6.5], [2.5, 4.0, 5.5, 3.0, 5.0]
    full, short = paired(a, b), paired(a, b, needed=False)
    assert short["n_needed"] == -1 and full["n_needed"] >= 2
    assert {k: v for k, v in full.items() if k != "n_needed"} == \
        {k: v for k, v in short.items() if k != "n_needed"}


def test_mean_ci_with_the_table_is_mean_ci_with_scipy():
    x = [10.0, 12.5, 11.0, 9.5]
    assert mean_ci(x) == mean_ci(x, quantile=_scipy)
