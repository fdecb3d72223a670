"""Which perfsim tree a benchmark measures, put first on ``sys.path`` before perfsim loads.

``--tree PATH`` (how a script's ``--against TREE`` runs a child on an older tree), else the
tree the script is in. Shared by the benchmarks that can measure another tree side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path


def use_tree(script: str) -> Path:
    """The tree to measure for the benchmark ``script`` (its ``__file__``), now first on
    ``sys.path``."""
    if "--tree" in sys.argv[:-1]:
        root = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    else:
        root = Path(script).resolve().parents[1]
    sys.path.insert(0, str(root))
    return root


def require_tree(path: str, what: str = "--against") -> None:
    """Exit with status 2 and one line unless ``path`` is a perfsim tree."""
    if not (Path(path) / "perfsim" / "__init__.py").is_file():
        print(f"{what} {path}: not a perfsim tree (no perfsim/__init__.py)", file=sys.stderr)
        raise SystemExit(2)


def at_least_one(text: str) -> int:
    """An argparse ``type`` for counts (``--reps``, ``--rounds``, ``--calls``, ``--workers``):
    an integer of at least 1, else argparse's one-line usage error (exit status 2)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n
