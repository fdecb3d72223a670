"""Kernel-semantics locks on a SimPy environment: a fair rwsem and a FIFO spinlock.

**rwsem policy** (modelled on Linux's rwsem since the 2019–2020 rework; see docs/engine.md):

* One FIFO wait queue of readers and writers.
* A writer gets the lock at once only if it is free *and* nobody is queued; otherwise it
  queues. (Kernel: the write fast path is a cmpxchg from "unlocked, no waiters".)
* A reader gets it at once only if no writer holds it *and* nobody is queued; otherwise it
  queues. (Kernel: the read fast path fails when the waiters flag is set, and optimistic
  reader stealing is refused while the lock is reader-owned, so a stream of readers cannot
  starve a queued writer.)
* When the lock becomes free: a writer at the head is woken alone; a reader at the head wakes
  *every* queued reader (at most ``MAX_READERS_WAKEUP`` = 256), and the writers keep their
  places (kernel: "wake up almost all readers in the wait queue").

A spinlock is a ticket lock: strictly FIFO, one holder.

Acquisition is two-step so an uncontended acquire costs no simulation event:
``try_*`` grants at once and returns True, or returns False; then ``wait_*`` queues and
returns an event that fires on the grant.
"""

from __future__ import annotations

from collections import deque

import simpy

MAX_READERS_WAKEUP = 256

_READ, _WRITE = 0, 1


class RwSem:
    """A reader/writer semaphore with the kernel's queueing policy (module docstring)."""

    __slots__ = ("env", "name", "readers", "writer", "queue", "acquisitions", "contended")

    def __init__(self, env: simpy.Environment, name: str) -> None:
        self.env = env
        self.name = name
        self.readers = 0
        self.writer: object | None = None
        self.queue: deque[tuple[int, object, simpy.Event]] = deque()
        self.acquisitions = 0
        self.contended = 0

    # -- fast paths -----------------------------------------------------------------
    def try_write(self, who: object) -> bool:
        if self.writer is None and self.readers == 0 and not self.queue:
            self.writer = who
            self.acquisitions += 1
            return True
        return False

    def try_read(self) -> bool:
        if self.writer is None and not self.queue:
            self.readers += 1
            self.acquisitions += 1
            return True
        return False

    # -- slow paths -----------------------------------------------------------------
    def wait_write(self, who: object) -> simpy.Event:
        ev = self.env.event()
        self.queue.append((_WRITE, who, ev))
        self.contended += 1
        return ev

    def wait_read(self, who: object = None) -> simpy.Event:
        ev = self.env.event()
        self.queue.append((_READ, who, ev))
        self.contended += 1
        return ev

    # -- release --------------------------------------------------------------------
    def release_write(self) -> None:
        assert self.writer is not None, f"{self.name}: write release without holder"
        self.writer = None
        if self.queue:  # (else nobody to wake)
            self._wake()

    def release_read(self) -> None:
        assert self.readers > 0, f"{self.name}: read release without holder"
        self.readers -= 1
        if self.readers == 0:
            self._wake()

    def _wake(self) -> None:
        if not self.queue or self.writer is not None or self.readers:
            return
        kind, who, ev = self.queue[0]
        if kind == _WRITE:
            self.queue.popleft()
            self.writer = who
            self.acquisitions += 1
            ev.succeed()
            return
        keep: deque = deque()
        woken = 0
        while self.queue:
            item = self.queue.popleft()
            if item[0] == _READ and woken < MAX_READERS_WAKEUP:
                woken += 1
                self.readers += 1
                self.acquisitions += 1
                item[2].succeed()
            else:
                keep.append(item)
        self.queue = keep


class SpinLock:
    """A ticket spinlock: FIFO, one holder. The waiter's CPU spins (is not given away)."""

    __slots__ = ("env", "name", "held", "queue", "acquisitions", "contended")

    def __init__(self, env: simpy.Environment, name: str) -> None:
        self.env = env
        self.name = name
        self.held = False
        self.queue: deque[simpy.Event] = deque()
        self.acquisitions = 0
        self.contended = 0

    def try_lock(self) -> bool:
        if not self.held:
            self.held = True
            self.acquisitions += 1
            return True
        return False

    def wait_lock(self) -> simpy.Event:
        ev = self.env.event()
        self.queue.append(ev)
        self.contended += 1
        return ev

    def unlock(self) -> None:
        assert self.held, f"{self.name}: unlock without holder"
        if self.queue:
            self.acquisitions += 1
            self.queue.popleft().succeed()  # ownership passes directly (ticket order)
        else:
            self.held = False
