"""A cheaper ``__init__`` for the planner's small frozen dataclasses (no kernel rule here).

A frozen dataclass's generated ``__init__`` sets each field through the generic
``object.__setattr__`` (the class's own ``__setattr__`` refuses); the planner builds several
such records per call (``MovedRange``, ``UnmapRegion``, ``MoveGates``, ...), so that cost is a
visible part of planning a small move. :func:`direct_init` replaces the generated
``__init__`` by one with the same parameters, defaults and ``__post_init__`` call that writes
every field into the instance ``__dict__`` at once. Nothing else of the class changes: its
``__eq__``, ``__hash__``, ``__repr__``, pickling and ``dataclasses.replace`` work as before
(``tests/test_t13_plan2_frozen.py`` holds every decorated class to the generated one).

The dataclass's own ``__init__`` is kept as ``cls.__dataclass_init__`` for those tests.
"""

from __future__ import annotations

from dataclasses import MISSING, fields


class _Factory:
    """The default of a ``default_factory`` parameter: "not given, make one"."""

    def __repr__(self) -> str:
        return "<factory>"


_MADE_BY_FACTORY = _Factory()


def direct_init(cls):
    """Give dataclass ``cls`` (frozen or not, without ``slots``, every field an ``init``
    field, not keyword-only) an ``__init__`` that sets all fields with one
    ``__dict__.update`` (a ``default_factory`` field not given gets a fresh value, as the
    dataclass's own makes it); returns ``cls``."""
    params, names, defaults, made = [], [], {"_made_by_factory": _MADE_BY_FACTORY}, []
    for f in fields(cls):
        if not f.init or f.kw_only:
            raise TypeError(f"direct_init: {cls.__name__}.{f.name} is not a plain init field")
        names.append(f.name)
        if f.default_factory is not MISSING:  # made per call when not given, as dataclass does
            defaults[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_made_by_factory")
            made.append(f"    if {f.name} is _made_by_factory: {f.name} = _factory_{f.name}()")
        elif f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    if "__slots__" in cls.__dict__:
        raise TypeError(f"direct_init: {cls.__name__} has __slots__ (no instance __dict__)")
    body = [f"def __init__(self, {', '.join(params)}):", *made,
            f"    self.__dict__.update({', '.join(f'{n}={n}' for n in names)})"]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    namespace: dict = {}
    exec("\n".join(body), dict(defaults), namespace)  # noqa: S102 - source built from fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__dataclass_init__ = cls.__init__
    cls.__init__ = init
    return cls
