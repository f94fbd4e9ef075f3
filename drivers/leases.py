"""Region leases and client liveness for the device server. Pure bookkeeping, no I/O.

Rules (one exclusive writer, shared readers, per overlapping region):

- a ``write`` lease conflicts with any overlapping lease of another client;
- a ``read`` lease conflicts with an overlapping ``write`` lease of another client;
- a state-changing request on region R is refused while another client holds any lease
  overlapping R; a read (mvm, read_conductances) is refused while another client holds an
  overlapping write lease. Clients that take no lease can use unleased regions freely;
- every message from a client counts as a heartbeat; a client's leases lapse once
  ``now - last_seen > ttl_s``.

Every method takes ``now`` (seconds, any monotonic origin) so tests need no sleeps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from drivers import InvalidRequest, LeaseConflict, NotFound
from protocols.messages import LeaseMode
from protocols.region import Region


@dataclass(frozen=True)
class Lease:
    lease_id: str
    client: str
    region: Region
    mode: LeaseMode


class LeaseTable:
    """Leases by id plus the last time each client was heard from."""

    def __init__(self, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise InvalidRequest(f"lease ttl_s={ttl_s} must be > 0 s")
        self.ttl_s = float(ttl_s)
        self._leases: dict[str, Lease] = {}
        self._last_seen: dict[str, float] = {}
        self._ids = itertools.count(1)

    def touch(self, client: str, now: float) -> None:
        """Record that ``client`` is alive at ``now`` (any message is a heartbeat)."""
        self._last_seen[client] = now

    def expire(self, now: float) -> list[Lease]:
        """Drop and return the leases of clients silent for longer than ``ttl_s``."""
        # copies: the server's I/O thread touches clients as their messages arrive
        dead = {c for c, t in list(self._last_seen.items()) if now - t > self.ttl_s}
        if not dead:
            return []
        gone = [lease for lease in list(self._leases.values()) if lease.client in dead]
        for lease in gone:
            del self._leases[lease.lease_id]
        for c in dead:
            self._last_seen.pop(c, None)
        return gone

    def acquire(self, client: str, region: Region, mode: LeaseMode, now: float) -> Lease:
        """Grant ``client`` a ``mode`` lease on ``region`` or raise ``LeaseConflict``."""
        if mode not in ("read", "write"):
            raise InvalidRequest(f"lease mode {mode!r} must be 'read' or 'write'")
        self.touch(client, now)
        self.expire(now)
        self._check(client, region, write=(mode == "write"), what=f"a {mode} lease")
        lease = Lease(f"L{next(self._ids)}", client, region, mode)
        self._leases[lease.lease_id] = lease
        return lease

    def restore(self, lease: Lease, now: float) -> None:
        """Re-install a persisted ``lease`` (server restart); its client counts as seen now."""
        self._leases[lease.lease_id] = lease
        self._last_seen.setdefault(lease.client, now)
        n = int(lease.lease_id[1:]) if lease.lease_id[1:].isdigit() else 0
        self._ids = itertools.count(max(n + 1, next(self._ids)))

    def release(self, client: str, lease_id: str, now: float) -> Lease:
        """Release a lease ``client`` holds; ``NotFound`` if it holds no such lease."""
        self.touch(client, now)
        lease = self._leases.get(lease_id)
        if lease is None or lease.client != client:
            raise NotFound(f"lease {lease_id!r} is not held by this client (expired or released?)")
        del self._leases[lease_id]
        return lease

    def check(self, client: str, region: Region | None, *, write: bool, now: float) -> None:
        """Raise ``LeaseConflict`` if another client's lease forbids this access.

        ``region=None`` means the whole device (e.g. advancing the clock).
        """
        self.touch(client, now)
        self.expire(now)
        self._check(client, region, write=write, what="a write" if write else "a read")

    def all(self) -> list[Lease]:
        """Every lease, in the order granted."""
        return list(self._leases.values())

    def held_by(self, client: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.client == client]

    def __len__(self) -> int:
        return len(self._leases)

    def _check(self, client: str, region: Region | None, *, write: bool, what: str) -> None:
        for lease in self._leases.values():
            if lease.client == client:
                continue
            if region is not None and not lease.region.overlaps(region):
                continue
            if write or lease.mode == "write":
                where = "the device" if region is None else str(region)
                raise LeaseConflict(
                    f"{what} on {where} conflicts with {lease.mode} lease {lease.lease_id} "
                    f"on {lease.region} held by client {lease.client}; wait for its release "
                    f"or expiry ({self.ttl_s:g} s after its last heartbeat)"
                )
