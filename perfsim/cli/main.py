"""``perfsim``: the entry point of the command line.

Exit status: 0 on success (a request the *kernel* refuses is a success: its errno is the
answer), 2 for bad input (one line ``perfsim: error: ...`` on stderr, never a traceback),
130 when interrupted. Any other exception is a bug in perfsim and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from perfsim import __version__
from perfsim.errors import PerfsimError

SUBCOMMANDS: tuple[str, ...] = ("plan", "run", "sweep", "workload", "report", "tune",
                                "calibrate", "validate", "groundtruth")
"""Modules ``perfsim.cli.<name>`` tried, in this order, for a ``register(subparsers)``."""

DESCRIPTION = """\
perfsim simulates what Linux's mremap() does when it moves page tables: which
decisions the kernel makes for a request (PUD/PMD moves, PTE copies, THP splits,
realignment, errno) and what they cost (TLB flushes, IPIs, rmap locks, table pages).
"""

EPILOG = """\
Each subcommand has its own --help with examples, e.g. "perfsim plan --help".

exit status: 0 success (also when the simulated kernel returns an errno: that is the
answer), 2 bad input to perfsim ("perfsim: error: ..." on one line), 130 interrupted.

example:
  perfsim plan --len 1G --src 2M+4K --dst 6M+8K --json
"""


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


def _broken(name: str, exc: BaseException):
    def func(args: argparse.Namespace) -> int:
        raise RuntimeError(f"perfsim.cli.{name} failed to import") from exc
    return func


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand module that exists registered."""
    parser = Parser(prog="perfsim", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"perfsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=Parser)
    for name in SUBCOMMANDS:
        modname = f"perfsim.cli.{name}"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue  # not written yet: the subcommand is simply absent
            _register_broken(sub, name, exc)
            continue
        except Exception as exc:  # a broken module must not take the other commands down
            _register_broken(sub, name, exc)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def _register_broken(sub, name: str, exc: BaseException) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {type(exc).__name__}: {exc})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_broken(name, exc))


def _fail(message: str) -> int:
    message = " ".join(str(message).split())  # always exactly one line
    print(f"perfsim: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it)."""
    try:
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
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
            names = ", ".join(sorted(parser._subparsers._group_actions[0].choices))  # noqa: SLF001
            return _fail(f"a command is required: {names} (see 'perfsim --help')")
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


if __name__ == "__main__":
    sys.exit(main())
