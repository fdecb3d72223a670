import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A host test whose tracing session finds tracefs taken by someone else *after*
    collection (another tool started tracing) is skipped with that reason, not failed."""
    outcome = yield
    excinfo = outcome.excinfo
    if excinfo is not None:
        from perfsim.host.trace import TracingBusy

        if issubclass(excinfo[0], TracingBusy):
            outcome.force_exception(pytest.skip.Exception(f"tracing is in use: {excinfo[1]}"))
