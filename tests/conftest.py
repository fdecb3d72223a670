import os
import signal

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# A suite started in the background of a non-interactive shell (`pytest ... &`, nohup)
# inherits SIGINT ignored, and an ignored signal stays ignored across exec: every command the
# Ctrl-C tests start would then ignore their SIGINT and run to the end (seen 2026-12-01: all
# six such tests failed that way, none in the foreground). Python's own handler is reset to
# the default at exec, so installing it here gives the children a terminal's Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A host test whose tracing session finds tracefs taken by someone else *after*
    collection (another tool started tracing) is skipped with that reason, not failed;
    also when the command under test reported it as its own error (raised from it)."""
    outcome = yield
    excinfo = outcome.excinfo
    if excinfo is not None:
        from perfsim.host.trace import TracingBusy

        exc = excinfo[1]
        busy = exc if isinstance(exc, TracingBusy) else exc.__cause__
        if isinstance(busy, TracingBusy):
            outcome.force_exception(pytest.skip.Exception(f"tracing is in use: {busy}"))
