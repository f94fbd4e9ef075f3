"""Idempotency of state-changing requests: request ids, request fingerprints, reply record.

A client picks a ``request_id`` per state-changing request and reuses it on retry. The
driver records ``request_id -> (verb, fingerprint, reply)`` in a bounded
:class:`ReplyCache`; a repeated id with the same verb and arguments (same
:func:`fingerprint`) gets the recorded reply and nothing is applied again, a repeated id
with other arguments is refused. Persisting drivers save :meth:`ReplyCache.to_records`
with their state.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from drivers import InvalidRequest
from protocols.models import AdvanceReport, ProgramReport, PulseReport, ResetReport
from protocols.region import Region

Report = PulseReport | ResetReport | ProgramReport | AdvanceReport
REPORT_TYPES: dict[str, type[Report]] = {
    t.__name__: t for t in (PulseReport, ResetReport, ProgramReport, AdvanceReport)
}
MAX_REQUEST_ID_LEN = 128


def new_request_id() -> str:
    """A fresh random request id (uuid4 hex)."""
    return uuid.uuid4().hex


class ReplyCache:
    """Bounded ``request_id -> (verb, fingerprint, reply)`` record of state-changing requests.

    Oldest entries are evicted first once ``capacity`` is reached; a retry older than
    ``capacity`` requests is therefore applied again, so size it above the number of
    requests a client can have in flight across a restart.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"ReplyCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[str, str, Report]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str, verb: str, fingerprint: str) -> Report | None:
        """The recorded reply of ``request_id``, or None if unknown.

        Raises:
            InvalidRequest: the id was used before for a different verb or arguments.
        """
        entry = self._entries.get(request_id)
        if entry is None:
            return None
        old_verb, old_fp, reply = entry
        if old_verb != verb or old_fp != fingerprint:
            raise InvalidRequest(
                f"request_id {request_id!r} was already used for a different {old_verb} "
                f"request; a retry must repeat the same request. Use a fresh id "
                f"(drivers.base.new_request_id()) for a new request."
            )
        return reply

    def peek(self, request_id: str) -> Report | None:
        """The recorded reply of ``request_id`` without checking verb or arguments."""
        entry = self._entries.get(request_id)
        return None if entry is None else entry[2]

    def put(self, request_id: str, verb: str, fingerprint: str, reply: Report) -> None:
        self._entries[request_id] = (verb, fingerprint, reply)
        self._entries.move_to_end(request_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-able records, oldest first (for snapshots)."""
        return [
            {"id": rid, "verb": v, "fp": fp, "type": type(r).__name__, "reply": r.model_dump()}
            for rid, (v, fp, r) in self._entries.items()
        ]

    def load_records(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            reply = REPORT_TYPES[rec["type"]].model_validate(rec["reply"])
            self.put(rec["id"], rec["verb"], rec["fp"], reply)


def fingerprint(verb: str, *parts: Any) -> str:
    """A digest of a request's verb and arguments (arrays hashed by dtype, shape, bytes)."""
    h = hashlib.blake2b(verb.encode(), digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype.str}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, Region):
            h.update(p.model_dump_json().encode())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()
