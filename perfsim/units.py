"""Sizes, addresses and durations as the user writes them: ``4K``, ``1G+4K``,
``0x7f0000000000``, ``20us``.

All sizes are integer bytes. Suffixes are binary (K = 1024). A term may be a plain integer,
a hex number, or a number with a suffix; terms may be joined with ``+`` and ``-``.
All durations are integer nanoseconds: an integer, or a number with ``ns``/``us``/``ms``/``s``.
"""

from __future__ import annotations

import re

from perfsim.errors import PerfsimError

_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_TERM = re.compile(r"^\s*(0[xX][0-9a-fA-F_]+|\d[\d_]*)\s*([KMGTPkmgtp]?)(?:i?[Bb])?\s*$")


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse ``text`` into bytes; raise :class:`PerfsimError` naming ``what`` if it cannot.

    >>> parse_size("1G+4K")
    1073745920
    >>> parse_size("0x200000")
    2097152
    >>> parse_size("2MiB-4K")
    2093056
    """
    if isinstance(text, bool):
        raise PerfsimError(f"{what}: expected a size such as 4K, 2M, 1G+4K; got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise PerfsimError(f"{what}: must not be negative (got {text})")
        return text
    s = str(text).strip()
    if not s:
        raise PerfsimError(f"{what}: empty value; expected a size such as 4K, 2M, 1G+4K")
    if s.startswith("-"):
        raise PerfsimError(f"{what}: must not be negative (got {text!r})")
    total = 0
    for sign, term in _split_terms(s):
        m = _TERM.match(term)
        if not m:
            raise PerfsimError(
                f"{what}: cannot parse {text!r}; expected a number with an optional "
                "K/M/G/T suffix, terms joined by + or - (e.g. 1G+4K, 0x7f0000000000)"
            )
        num, suffix = m.groups()
        value = int(num.replace("_", ""), 0) * _SUFFIX[suffix.upper()]
        total += sign * value
    if total < 0:
        raise PerfsimError(f"{what}: must not be negative (got {text!r} = {total})")
    return total


def parse_address(text: str | int, *, bases: dict[str, int], what: str = "address") -> int:
    """An address as the user writes it: a plain number is the address itself
    (``0x7f0000201000``, ``45088768``); a named base plus or minus sizes is an offset from
    that base (``A+2M+4K``, ``B+6M+8K``, with ``bases = {"A": ..., "B": ...}``).

    >>> parse_address("A+2M+4K", bases={"A": 0x7F0000000000})
    139637978828800
    >>> parse_address("0x2801000", bases={"A": 0x7F0000000000})
    41947136
    """
    if isinstance(text, str):
        s = text.strip()
        head = s[:1].upper()
        if head in bases and (len(s) == 1 or s[1] in "+-"):
            rest = s[1:].strip()
            if not rest:
                return bases[head]
            if not rest[1:].strip():
                raise PerfsimError(f"{what}: cannot parse {text!r}; expected e.g. {head}+2M+4K")
            total = bases[head] + sum(sign * parse_size(term, what=what)
                                      for sign, term in _split_terms("0" + rest))
            if total < 0:
                raise PerfsimError(f"{what}: {text!r} lies below address 0")
            return total
        if s[:1].isalpha() and not s.lower().startswith("0x"):
            names = ", ".join(sorted(bases))
            raise PerfsimError(f"{what}: cannot parse {text!r}; expected an address such as "
                               f"0x7f0000201000 or a base ({names}) plus sizes, e.g. A+2M+4K")
    return parse_size(text, what=what)


_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*$")
_DUR_UNIT = {None: 1, "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def parse_duration(text: str | int, *, what: str = "duration") -> int:
    """Parse ``text`` into integer nanoseconds; raise :class:`PerfsimError` naming ``what``.

    >>> parse_duration("1.5us")
    1500
    >>> parse_duration("20ms")
    20000000
    >>> parse_duration(300)
    300
    """
    if isinstance(text, bool) or isinstance(text, float):
        raise PerfsimError(f"{what}: expected integer nanoseconds or a duration such as "
                           f"500ns, 100us, 2ms; got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise PerfsimError(f"{what}: must not be negative (got {text})")
        ns = text
    else:
        m = _DUR.match(str(text))
        if not m:
            raise PerfsimError(f"{what}: cannot parse {text!r}; expected e.g. 500ns, 100us, "
                               "2ms, 1s")
        ns = int(round(float(m.group(1)) * _DUR_UNIT[m.group(2)]))
    if ns > MAX_DURATION_NS:
        raise PerfsimError(f"{what}: {text!r} is too long; allowed: at most 2**62 ns (about "
                           "146 years)")
    return ns


MAX_DURATION_NS = 1 << 62
"""The longest duration: simulated time is 64-bit integer nanoseconds, and a sum of two
durations must still fit (``"99999999999s"`` parsed to 1e20 ns, beyond any of them)."""


def _split_terms(s: str) -> list[tuple[int, str]]:
    terms: list[tuple[int, str]] = []
    sign, start = 1, 0
    for i, ch in enumerate(s):
        if ch in "+-" and i > 0 and s[i - 1] not in "xX":
            terms.append((sign, s[start:i]))
            sign, start = (1 if ch == "+" else -1), i + 1
    terms.append((sign, s[start:]))
    return terms


def fmt_size(n: int) -> str:
    """Render bytes compactly: ``1G+4K`` style when exact, else bytes."""
    if n == 0:
        return "0"
    parts = []
    rest = n
    for suf in ("T", "G", "M", "K"):
        unit = _SUFFIX[suf]
        if rest >= unit:
            q, rest = divmod(rest, unit)
            parts.append(f"{q}{suf}")
    if rest:
        parts.append(str(rest))
    return "+".join(parts)
