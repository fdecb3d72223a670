"""Processes from /proc, for the tests that kill a pool's creator and look for orphans."""

from __future__ import annotations

import os
import signal
import time


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        out[int(d)] = (int(rest[1]), rest[0])
    return out


def children(pid: int) -> set[int]:
    """The live (not zombie) children of ``pid``."""
    return {c for c, (pp, state) in proc_table().items() if pp == pid and state != "Z"}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    table, found, todo = proc_table(), set(), [pid]
    while todo:
        p = todo.pop()
        for c, (pp, _) in table.items():
            if pp == p and c not in found:
                found.add(c)
                todo.append(c)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (present and not zombies)."""
    table = proc_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def left_after(kids: set[int], timeout_s: float = 30.0) -> set[int]:
    """Those of ``kids`` still running ``timeout_s`` after now (polled), killed so a failing
    test leaves nothing behind."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(kids):
        time.sleep(0.1)
    left = alive(kids)
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left
