"""perfsim's cache directory (``$XDG_CACHE_HOME/perfsim`` or ``~/.cache/perfsim``)."""

from __future__ import annotations

import os
from pathlib import Path

from perfsim.errors import PerfsimError


def cache_dir(sub: str = "") -> Path:
    """The cache directory (created), or one of its subdirectories."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "perfsim" / sub if sub else Path(base) / "perfsim"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerfsimError(f"cache directory {path}: cannot create it ({exc.strerror})") from None
    return path
