"""Exceptions perfsim raises for user mistakes.

A :class:`PerfsimError` is a problem with what the user asked for (an unknown profile, an
unparsable size, a malformed file). The CLI prints its message on one line and exits with
status 2; it never shows a traceback for one. Requests the *kernel* would reject are not
errors here: the planner returns them as a result with an ``errno`` name, like the syscall.
"""


class PerfsimError(Exception):
    """A user-facing error: bad input, unknown name, invalid file."""
