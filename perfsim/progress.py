"""Progress for long work: a live bar on a terminal, a plain line every few seconds in a log.

tqdm redraws its bar with carriage returns many times a second; written to a file or a CI
log that is thousands of ``\\r`` fragments. :func:`progress` returns a tqdm bar only when the
stream is a terminal; otherwise a :class:`LineProgress` that prints one complete line at
most every ``interval_s`` seconds (and one at the end), with the same small API the callers
use: ``update``, ``set_description_str``, ``set_postfix_str``, ``set_postfix``, ``close``,
``n`` and ``total``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["LineProgress", "progress"]


class LineProgress:
    """Progress as whole lines, rate-limited: ``desc: n/total unit (p%), elapsed, ETA``
    (``desc: n unit, elapsed`` where the total is not known: ``total`` 0)."""

    def __init__(self, total: int, *, desc: str, unit: str, stream: IO[str],
                 interval_s: float = 5.0, clock=time.monotonic) -> None:
        self.total = int(total)
        self.n = 0
        self.desc = desc
        self.unit = unit
        self.postfix = ""
        self._stream = stream
        self._interval = interval_s
        self._clock = clock
        self._t0 = clock()
        self._last = self._t0
        self._closed = False

    def _line(self) -> str:
        elapsed = self._clock() - self._t0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if 0 < self.n < self.total and elapsed > 0:
            eta = f", about {(self.total - self.n) * elapsed / self.n:.0f} s left"
        post = f" [{self.postfix}]" if self.postfix else ""
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"  # (0: not known)
        return f"{self.desc}: {done} {self.unit}{pct}, {elapsed:.0f} s{eta}{post}"

    def _maybe_print(self, force: bool = False) -> None:
        now = self._clock()
        if force or now - self._last >= self._interval:
            self._last = now
            print(self._line(), file=self._stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self._maybe_print()

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._maybe_print(force=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int, *, desc: str, unit: str = "sim", stream: IO[str] | None = None,
             interval_s: float = 5.0, **tqdm_kw: Any):
    """A progress reporter for ``total`` units of work (0: not known), written to
    ``stream`` (stderr)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total or None, unit=unit, desc=desc, file=stream, dynamic_ncols=True,
                    **tqdm_kw)
    return LineProgress(total, desc=desc, unit=unit, stream=stream, interval_s=interval_s)
