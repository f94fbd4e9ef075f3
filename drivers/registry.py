"""Driver URL schemes as plug-ins: which code opens ``scheme://...``.

:func:`drivers.open_driver` looks a URL's scheme up here, in this order:

1. schemes registered in this process with :func:`register_scheme`;
2. the built-ins: ``sim`` (:class:`drivers.sim.SimDriver`), ``tcp``/``ipc``/``inproc``
   (:class:`drivers.remote.RemoteDriver` to a ``hil serve``), ``board`` (the real board);
3. entry points of installed packages in the group ``pcm_hil.drivers``: the entry point's
   name is the scheme, its object either a function ``open(url) -> Driver`` or a
   :class:`~drivers.base.Driver` subclass with a ``from_url(url)`` classmethod::

       [project.entry-points."pcm_hil.drivers"]
       ideal = "my_driver:IdealDriver"

So an external package adds a scheme that ``hil train --device``, ``hil serve``,
``hil driver check`` and ``hil selfcheck`` accept without editing this project
(``docs/writing-a-driver.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from drivers import InvalidRequest, NotFound

if TYPE_CHECKING:
    from drivers.base import Driver

ENTRY_POINT_GROUP = "pcm_hil.drivers"

Opener = Callable[[str], "Driver"]
"""``open(url) -> Driver``."""


def _sim(url: str) -> Driver:
    from drivers.sim import SimDriver

    return SimDriver.from_url(url)


def _remote(url: str) -> Driver:
    from drivers.remote import RemoteDriver

    return RemoteDriver.from_url(url)


def _board(url: str) -> Driver:
    try:
        from drivers.board import open_board  # type: ignore[attr-defined]
    except ImportError as exc:
        raise NotFound(
            f"cannot open {url!r}: the board driver (drivers.board.open_board) is not "
            f"available ({exc}). Use sim:// for the simulator or tcp:// for a server."
        ) from exc
    driver: Driver = open_board(url)
    return driver


BUILTIN: dict[str, Opener] = {
    "sim": _sim,
    "tcp": _remote,
    "ipc": _remote,
    "inproc": _remote,
    "board": _board,
}
_registered: dict[str, Opener] = {}


def register_scheme(scheme: str, opener: Opener | type) -> None:
    """Make ``scheme://`` URLs open with ``opener`` (a function or a class with ``from_url``)."""
    if not scheme.isidentifier() or scheme.lower() != scheme:
        raise InvalidRequest(f"driver scheme {scheme!r} must be a lower-case identifier")
    _registered[scheme] = _as_opener(opener, scheme)


def _as_opener(obj: Any, scheme: str) -> Opener:
    if isinstance(obj, type):
        from_url = getattr(obj, "from_url", None)
        if from_url is None:
            raise NotFound(f"driver scheme {scheme!r}: class {obj.__name__} has no from_url(url)")
        return from_url  # type: ignore[no-any-return]
    if not callable(obj):
        raise NotFound(f"driver scheme {scheme!r}: {obj!r} is neither a function nor a class")
    return obj  # type: ignore[no-any-return]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """Every scheme :func:`opener` finds: registered, built-in and from entry points."""
    return sorted({*_registered, *BUILTIN, *_entry_points()})


def opener(scheme: str, url: str = "") -> Opener:
    """The opener of ``scheme``; :class:`~drivers.InvalidRequest` naming the known schemes."""
    if scheme in _registered:
        return _registered[scheme]
    if scheme in BUILTIN:
        return BUILTIN[scheme]
    ep = _entry_points().get(scheme)
    if ep is None:
        raise InvalidRequest(
            f"unknown driver URL scheme {scheme!r} in {url!r}; expected one of "
            + ", ".join(f"{s}://" for s in schemes())
            + " (e.g. sim://?preset=hermes&seed=0 or tcp://127.0.0.1:5555), or install a "
            f"package that provides it (entry points {ENTRY_POINT_GROUP})"
        )
    dist = ep.dist.name if ep.dist else "?"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plug-in: one clear line
        raise NotFound(
            f"driver scheme {scheme!r} of package {dist} ({ep.value}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _registered[scheme] = _as_opener(obj, scheme)
    return _registered[scheme]
