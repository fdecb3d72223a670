"""Callers started when their first call comes, in the order SimPy would have run them.

A run made every caller's SimPy process before the clock started (:func:`simulate.run`), and
a caller whose first call comes later (``start_ns > 0``: every arrival of an open-loop stream
is one) spent its life until then suspended on a timeout: a generator, its frame, a process
and two events per arrival, about 7 KB each, all alive from the start to the end, walked by
every garbage collection of the run (docs/throughput.md, "Open-loop arrivals"). Here such a
caller's process is made only when the one before it in time has started, so a run holds one
waiting process per run of consecutive late callers instead of one per caller.

The order of events is SimPy's own, not an approximation of it. SimPy orders its queue by
``(time, priority, id)``, ids counted up as events are scheduled, and a caller's process does
nothing observable before its first ``yield`` (the timeout to ``start_ns``). So for a run of
consecutive callers with ``start_ns > 0``:

* their initialising events would have taken consecutive ids when the processes were made,
  and been processed one after the other at time 0 (nothing else is processed between two of
  them: every event scheduled while they run has a larger id), each scheduling its
  timeout: consecutive ids again. :class:`LateCallers` takes the first initialising id for a
  stand-in event, skips the rest, and when the stand-in is processed reserves the timeouts'
  ids in one step;
* each caller's start event carries the id its timeout would have had and is queued at
  ``start_ns``; the next one (by start time, then position) is queued when it fires. Its key
  is larger than every key processed before it, so nothing can pass it that would not have;
* when a start event fires, the caller's generator runs from past its first ``yield``
  (``caller(..., started=True)``), inside that event's processing, as it would have run
  inside its timeout's.

The ids taken are the same in number (the run's ``scheduled_events`` do not change) and every
event keeps its place in the order, so the records are identical (``tests/test_t15_arrivals.py``
runs every shipped workload both ways). A SimPy without the id counter (``_eid``) gets every
process made up front, as before.
"""

from __future__ import annotations

import itertools
from heapq import heappush

from simpy.core import NORMAL, URGENT
from simpy.events import PENDING, Event, Process

from perfsim.engine.caller import ChildSeed, caller


class CallersDone(Event):
    """Triggered when every caller's process has ended: what ``simpy.AllOf`` of all of them
    does (``Condition._check``: counted as each ends; a caller that failed fails it, its
    exception defused there), for processes made while the run goes on."""

    def __init__(self, env, n: int) -> None:
        super().__init__(env)
        self.left = n

    def one_ended(self, proc: Event) -> None:
        if self._value is not PENDING:
            return
        self.left -= 1
        if not proc._ok:
            proc._defused = True
            self.fail(proc._value)
        elif not self.left:
            self.succeed()


class _Started(Process):
    """A caller's process whose first event is ``start`` (its start time's event, already
    queued), not SimPy's initialising event."""

    def __init__(self, env, generator, start: Event) -> None:
        self.env = env  # (what Process.__init__ sets, without scheduling an Initialize)
        self.callbacks = []
        self._generator = generator
        self._target = start


class LateCallers:
    """The callers ``spec.callers[lo:hi]`` (each with ``start_ns > 0``), started at their
    ``start_ns`` in SimPy's order (module docstring). ``done``: the run's
    :class:`CallersDone`, or None for a run of fixed duration."""

    def __init__(self, env, m, lo: int, hi: int, done: CallersDone | None) -> None:
        self.env, self.m, self.lo, self.hi, self.done = env, m, lo, hi, done
        stand_in = Event(env)
        stand_in.callbacks = [self._reserve]
        stand_in._ok, stand_in._value = True, None
        env.schedule(stand_in, URGENT)  # the first caller's initialising id...
        env._eid = itertools.count(next(env._eid) + hi - lo - 1)  # ...and the others'

    def _reserve(self, _event) -> None:
        """At time 0, where the callers' initialising events would have run: their
        timeouts' ids, and the first start."""
        env, callers = self.env, self.m.spec.callers
        self.base = next(env._eid)
        env._eid = itertools.count(self.base + self.hi - self.lo)
        starts = [callers[i].start_ns for i in range(self.lo, self.hi)]
        # by start time, then position (a stable sort): the order of their timeouts' keys
        self.order = sorted(range(len(starts)), key=starts.__getitem__)
        self.starts = starts
        self.at = 0
        self._queue_next()

    def _queue_next(self, _event=None) -> None:
        if self.at == len(self.order):
            return
        k = self.order[self.at]
        self.at += 1
        i = self.lo + k
        m, env = self.m, self.env
        start = Event(env)
        start._ok, start._value = True, None
        proc = _Started(env, caller(m, m.spec.callers[i], ChildSeed(m.spec.seed, i), started=True),
                        start)
        start.callbacks = [self._queue_next, proc._resume]
        if self.done is not None:
            proc.callbacks.append(self.done.one_ended)
        heappush(env._queue, (self.starts[k], NORMAL, self.base + k, start))


def start_callers(env, m, done: CallersDone | None, *, late: bool = True) -> None:
    """Make the run's caller processes, in spec order: one now for a caller whose first call
    is at time 0, a :class:`LateCallers` for each run of consecutive callers that start later
    (every caller made now with ``late=False`` or when this SimPy has no id counter)."""
    callers = m.spec.callers
    lazy = late and isinstance(getattr(env, "_eid", None), itertools.count)
    i, n = 0, len(callers)
    while i < n:
        if not (lazy and callers[i].start_ns > 0):  # (a negative start: SimPy's error)
            proc = env.process(caller(m, callers[i], ChildSeed(m.spec.seed, i)))
            if done is not None:
                proc.callbacks.append(done.one_ended)
            i += 1
            continue
        j = i + 1
        while j < n and callers[j].start_ns > 0:
            j += 1
        LateCallers(env, m, i, j, done)
        i = j
