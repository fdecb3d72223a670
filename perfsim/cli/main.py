"""``perfsim``: the entry point of the command line.

Exit status (:data:`EXIT_STATUS`, printed at the end of every command's ``--help``): 0 on
success (a request the *kernel* refuses is a success: its errno is the answer), 2 for bad
input (one line ``perfsim: error: ...`` on stderr, never a traceback), 130 when interrupted,
1 for an internal error (a bug in perfsim: the traceback is shown). A few commands add a
code of their own (:data:`EXTRA_EXIT_STATUS`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence

from perfsim import __version__
from perfsim.errors import PerfsimError

SUBCOMMANDS: tuple[str, ...] = ("plan", "run", "sweep", "workload", "report", "tune",
                                "calibrate", "validate", "groundtruth")
"""The subcommands, in the order ``--help`` lists them: each is a module ``perfsim.cli.<name>``
with a ``register(subparsers)`` function. A new subcommand adds its name here."""

DESCRIPTION = """\
perfsim simulates what Linux's mremap() does when it moves page tables: which
decisions the kernel makes for a request (PUD/PMD moves, PTE copies, THP splits,
realignment, errno) and what they cost (TLB flushes, IPIs, rmap locks, table pages).
"""

EXIT_STATUS: dict[int, str] = {
    0: "success (also when the simulated kernel returns an errno: that is the answer)",
    1: "internal error: a bug in perfsim; the traceback is shown, please report it (or, "
       "in one line, a worker process killed from outside)",
    2: 'bad input: one line "perfsim: error: ..." naming the file, flag or field; nothing '
       "is written",
    130: "interrupted (Ctrl-C): nothing half-written is left behind",
}
"""The exit statuses every command can return, listed at the end of every ``--help``."""

SINGLE_THREADED_BLAS: tuple[str, ...] = ("plan", "run", "sweep", "workload", "report", "tune")
"""The subcommands that do no linear algebra (no matrix product, no ``numpy.linalg``: only
``calibrate`` and ``validate`` fit and project): for them :func:`single_threaded_blas`
keeps OpenBLAS to one thread. A multi-threaded OpenBLAS starts a thread per core when numpy
(and again when scipy, which carries its own copy) is loaded, and those threads spin for a
while before they sleep: about 0.1 CPU-s for numpy and 0.2 for scipy on this 2-core machine
(2026-12-01), paid by every process of a pool of workers, for nothing when no BLAS routine
is ever called. No result changes: nothing these commands compute goes through BLAS."""


def single_threaded_blas(command: str | None) -> None:
    """``OPENBLAS_NUM_THREADS=1`` for a command of :data:`SINGLE_THREADED_BLAS` (the first
    word of the command line), unless the user set it. OpenBLAS reads it when numpy or
    scipy is first imported, so it is set before the subcommand's module is imported; the
    workers the command starts inherit it. Where numpy is loaded already (``main`` called
    from a program, a test) it is too late to matter, and the environment is left alone."""
    if command in SINGLE_THREADED_BLAS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


EXTRA_EXIT_STATUS: dict[str, dict[int, str]] = {
    "calibrate": {3: 'a profile was written but the measurement was partial (see the "missing" '
                     "lines it prints)"},
    "report": {3: "--check found problems (broken images, console errors)"},
}
"""Exit statuses particular to one command, listed in its ``--help`` with :data:`EXIT_STATUS`."""


def exit_status_text(extra: dict[int, str] | None = None) -> str:
    """The ``exit status:`` paragraph of a ``--help``: :data:`EXIT_STATUS` and ``extra``."""
    import textwrap

    lines = ["exit status:"]
    for code, text in sorted({**EXIT_STATUS, **(extra or {})}.items()):
        lines += textwrap.wrap(text, 88, initial_indent=f"  {code:<4} ",
                               subsequent_indent=" " * 7)
    return "\n".join(lines) + "\n"


EPILOG = """\
Each command has its own --help with examples, e.g. "perfsim plan --help".

example:
  perfsim plan --old-len 1G --old-addr A+2M+4K --new-addr B+6M+8K --json

""" + exit_status_text()


class UsageError(Exception):
    """An argparse usage error, turned into one ``perfsim: error:`` line by :func:`main`."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors raise instead of printing usage and exiting.

    Values that look like negative sizes (``--len -4K``, ``--src -0x1000``) are taken as
    values, so that perfsim can say "must not be negative" instead of "expected one
    argument"; no perfsim option starts with a digit.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d[\w.+\-]*$")

    def error(self, message: str):  # noqa: D102 - argparse API
        raise UsageError(message, self.prog)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of :data:`SUBCOMMANDS` registered; every
    parser's help ends with the exit statuses it can return. Given the command line
    ``argv`` whose first word names a subcommand, only that subcommand's module is imported
    and registered (each pulls in what its command needs: pandas, matplotlib, SimPy, ...,
    about half a second that ``perfsim plan`` or ``perfsim tune`` need not pay for the
    others); any other command line (``perfsim``, ``perfsim --help``, a misspelt command)
    gets them all, so its help and errors list every command."""
    parser = Parser(prog="perfsim", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"perfsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=Parser)
    for name in _wanted(argv):
        importlib.import_module(f"perfsim.cli.{name}").register(sub)
    for name, p in sub.choices.items():
        _add_exit_status(p, EXTRA_EXIT_STATUS.get(name, {}))
    return parser


def _wanted(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The subcommands to register for ``argv``: the one its first word names, else all."""
    if argv and argv[0] in SUBCOMMANDS:
        return (argv[0],)
    return tuple(SUBCOMMANDS)


def _add_exit_status(p: argparse.ArgumentParser, extra: dict[int, str]) -> None:
    """Append the exit statuses to ``p``'s epilog, and to those of its own sub-actions."""
    text = exit_status_text(extra)
    p.epilog = f"{p.epilog.rstrip()}\n\n{text}" if p.epilog else text
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    action = _subparsers_action(p)
    if action is not None:
        for child in action.choices.values():
            _add_exit_status(child, extra)


def _subparsers_action(p: argparse.ArgumentParser):
    for a in p._actions:  # noqa: SLF001 - argparse keeps no public list of them
        if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
            return a
    return None


def _chosen_parsers(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The parsers of the (sub)commands the command line chose, from ``parser`` down, each
    with its sub-command action (None: it has none) and the name chosen there (None: none)."""
    p = parser
    while p is not None:
        action = _subparsers_action(p)
        chosen = getattr(args, action.dest, None) if action is not None else None
        yield p, action, chosen
        p = action.choices[chosen] if chosen is not None else None


def _missing_action(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The one-line error for a command line that stops before choosing a (sub)command:
    ``perfsim`` alone, ``perfsim workload`` alone."""
    for p, action, chosen in _chosen_parsers(parser, args):
        if action is not None and chosen is None:
            what = "a command" if p is parser else "an action"
            return f"{what} is required: {', '.join(sorted(action.choices))} (see '{p.prog} --help')"
    raise AssertionError("called for a command line that chose every (sub)command")


def _empty_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The error for the first option of the chosen (sub)command given an empty value (``--out ""``,
    ``--trace-call=``, an unset shell variable), or None. No perfsim option takes an empty
    value, and the commands read one as "not given": ``--out ""`` wrote to the default place,
    ``report --trace-call ""`` ran the whole default study."""
    for p, _action, _chosen in _chosen_parsers(parser, args):
        for a in p._actions:  # noqa: SLF001 - argparse keeps no public list of them
            if not a.option_strings or a.nargs == 0:
                continue
            v = getattr(args, a.dest, None)
            if v == "" or (isinstance(v, list) and "" in v):
                return f"{max(a.option_strings, key=len)} '': an empty value; give a value " \
                       f"(see '{p.prog} --help')"
    return None


def _fail(message: str) -> int:
    message = " ".join(str(message).split())  # always exactly one line
    print(f"perfsim: error: {message}", file=sys.stderr)
    return 2


def keep_interrupts(unraisable) -> None:
    """A ``sys.unraisablehook`` that does not lose a Ctrl-C: CPython discards an exception
    raised where it cannot propagate (a finalizer run by the garbage collector, a
    generator closed as it is collected), and a SIGINT arriving just then raises its
    ``KeyboardInterrupt`` there, so the interrupt would be lost. This hook has a thread
    send the main thread a new SIGINT a moment later (``_thread.interrupt_main``, once the
    finalizer is over; should that one land in a finalizer too, this hook runs again), which
    raises where it can stop the command. Any other unraisable exception goes to the
    default hook."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread
        import threading

        threading.Timer(0.01, _thread.interrupt_main).start()
        return
    sys.__unraisablehook__(unraisable)


QUICK_EXIT: tuple[str, ...] = ("tune",)
"""The subcommands that, run as the program, end with :func:`exit_without_teardown`: the
interpreter's own teardown of everything ``perfsim tune`` has loaded (pandas, pydantic
models, SimPy, the planner's caches) takes 0.2-0.3 s on this machine (2026-12-01), about a
quarter of the whole command, and does nothing the command needs: it has closed every file
it wrote (each written to a temporary name and renamed), its pool and its figure process."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it).
    While it runs, :func:`keep_interrupts` is the unraisable-exception hook. Run as the
    program (``argv`` None) a command of :data:`QUICK_EXIT` exits here instead, through
    :func:`exit_without_teardown`."""
    before, sys.unraisablehook = sys.unraisablehook, keep_interrupts
    try:
        status = _main(argv)
    finally:
        sys.unraisablehook = before
    if argv is None and sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        exit_without_teardown(status)
    return status


def exit_without_teardown(status: int) -> None:
    """End the process with ``status`` now: run the ``atexit`` handlers (multiprocessing's
    and concurrent.futures' clean-ups, logging's flush), flush stdout and stderr, and
    ``os._exit``, skipping only the interpreter's destruction of its modules and objects.
    Returns (and the normal exit follows) when that could lose anything: another thread
    still runs (the normal exit joins it), a tracer or profiler is active (it writes its
    results at the normal exit), or this Python has no ``atexit._run_exitfuncs``."""
    import atexit
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if (run_exitfuncs is None or threading.active_count() > 1 or sys.gettrace() is not None
            or sys.getprofile() is not None):
        return
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to write
            pass
    os._exit(status)


def _is_broken_pool(exc: BaseException) -> bool:
    """Whether ``exc`` is a process pool's "a child process terminated abruptly" (looked up
    only if the pool's module was ever imported: nothing else can raise it)."""
    pool = sys.modules.get("concurrent.futures.process")
    return pool is not None and isinstance(exc, pool.BrokenProcessPool)


def _worker_lost() -> int:
    """A pool worker ended abruptly. Ctrl-C at a terminal signals the whole process group;
    the pool can see its workers die of it before this process's own KeyboardInterrupt is
    raised, so the signal is given a moment to land and an interrupt reads as one."""
    import time

    try:
        time.sleep(1.0)
    except KeyboardInterrupt:
        print("perfsim: interrupted", file=sys.stderr)
        return 130
    print("perfsim: error: a worker process ended abruptly (killed from outside, or out of "
          "memory); no result was written; run again, perhaps with fewer workers",
          file=sys.stderr)
    return 1


def _main(argv: Sequence[str] | None) -> int:
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        single_threaded_blas(words[0] if words else None)
        parser = build_parser(words)
        try:
            args, extra = parser.parse_known_args(words)
            if extra:
                cmd = getattr(args, "command", None)
                raise UsageError(f"unrecognized arguments: {' '.join(extra)}",
                                 f"perfsim {cmd}" if cmd else "perfsim")
        except UsageError as exc:
            sub = exc.prog.removeprefix("perfsim").strip()
            hint = f" (see 'perfsim {sub + ' ' if sub else ''}--help')"
            return _fail(f"{exc}{hint}")
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        func = getattr(args, "func", None)
        if func is None:
            return _fail(_missing_action(parser, args))
        empty = _empty_option(parser, args)
        if empty:
            return _fail(empty)
        status = func(args)
        sys.stdout.flush()
        return 0 if status is None else int(status)
    except PerfsimError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("perfsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (perfsim plan --trace | head): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug in perfsim, not a user mistake: keep the traceback
        if _is_broken_pool(exc):
            return _worker_lost()
        traceback.print_exc()
        print(f"perfsim: internal error (perfsim {__version__}); this is a bug, please report "
              "it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
