"""Run reservations and their fair queue. Pure bookkeeping, no I/O (the server persists).

A run asks for one region per matrix (:class:`~protocols.messages.MatrixWant`: ``rows`` x
``cols`` on any chip, on chip ``chip``, exactly at ``region``, or a whole chip) and the
table allocates them: first fit, chip by chip, rows then columns, on the cells that no
other run holds. A reservation is held by ``(identity, run_id)``:

- asking again with the same identity and run id takes it back (a resumed run); the
  regions then must match what the run asks for (explicit regions, shapes);
- it lapses ``ttl_s`` after its holder's last message (a crashed client's run can be
  resumed within that time), or when released;
- when the regions are held by others, a request that may wait joins a FIFO queue; only
  the head of the queue is granted (a small request never overtakes a larger one that
  came first), and a queued request is dropped once its client has been silent for
  ``queue_ttl_s``.

Every method takes ``now`` (seconds, any monotonic origin) so tests need no sleeps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from drivers import InvalidRequest, LeaseConflict, LimitExceeded
from drivers.allocation import Defects
from drivers.allocation import allocate as allocate_one
from protocols.messages import MatrixWant
from protocols.region import Region


@dataclass
class Reservation:
    reservation_id: str
    identity: str
    run_id: str
    regions: dict[str, Region]
    seed: int | None = None
    whole: frozenset[str] = frozenset()
    """names of whole-chip entries"""
    created: float = 0.0
    """Unix time it was granted (set by the server)"""

    def describe(self) -> str:
        where = ", ".join(str(r) for r in self.regions.values())
        return f"run {self.run_id} of {self.identity} ({where})"


@dataclass
class Pending:
    identity: str
    run_id: str
    wants: tuple[MatrixWant, ...]
    seed: int | None
    since: float
    cells: int = field(default=0)


def first_fit(
    m: int,
    n: int,
    chip: int,
    rows: int,
    cols: int,
    taken: Sequence[Region],
    bad: Defects | None = None,
) -> Region | None:
    """The first free ``m`` x ``n`` rectangle of ``chip`` in row-major order avoiding the
    bad rows and columns of ``bad`` (and, among those, the one with the fewest bad cells),
    or None (:func:`drivers.allocation.allocate`, the trainer's placement allocator)."""
    bad = bad or Defects()
    return allocate_one(
        (m, n), rows, cols, chip=chip, taken=taken,
        bad_rows=bad.rows, bad_cols=bad.cols, bad_cells=bad.cells,
    )  # fmt: skip


def check_wants(wants: Sequence[MatrixWant], chips: int, rows: int, cols: int) -> None:
    """Refuse what could never be granted, in one line (``InvalidRequest``)."""
    names = [w.name for w in wants]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"reservation names must be unique, got {names}")
    for w in wants:
        if w.chip is not None and w.chip >= chips:
            raise InvalidRequest(
                f"{w.name}: chip {w.chip} does not exist (device has chips 0..{chips - 1})"
            )
        if w.whole_chip:
            if w.chip is None:
                raise InvalidRequest(f"{w.name}: a whole-chip reservation must name its chip")
            continue
        if w.rows > rows or w.cols > cols:
            raise InvalidRequest(
                f"{w.name}: {w.rows}x{w.cols} is larger than a {rows}x{cols} array"
            )
        if w.region is not None:
            r = w.region
            if r.chip >= chips or r.row1 > rows or r.col1 > cols:
                raise InvalidRequest(
                    f"{w.name}: {r} is not on the device ({chips} chips of {rows}x{cols})"
                )
            if (r.rows, r.cols) != (w.rows, w.cols):
                raise InvalidRequest(
                    f"{w.name}: region {r} is {r.rows}x{r.cols}, the matrix {w.rows}x{w.cols}"
                )
            if w.chip is not None and w.chip != r.chip:
                raise InvalidRequest(f"{w.name}: region {r} is not on chip {w.chip}")
    explicit = [(w.name, w.region) for w in wants if w.region is not None]
    for i, (a, ra) in enumerate(explicit):
        for b, rb in explicit[i + 1 :]:
            if ra is not None and rb is not None and ra.overlaps(rb):
                raise InvalidRequest(f"{a} at {ra} overlaps {b} at {rb}")


def allocate(
    wants: Sequence[MatrixWant],
    chips: int,
    rows: int,
    cols: int,
    taken: Sequence[Region],
    defects: Mapping[int, Defects] | None = None,
) -> dict[str, Region] | None:
    """Regions for ``wants`` avoiding ``taken`` (others' regions), or None if they do not
    fit now. Whole chips first, then explicit regions, then the tallest matrices first,
    each by first fit (on an empty device this is :func:`hil.trainer.placement.place`)."""
    out: dict[str, Region] = {}
    taken = list(taken)
    own: list[Region] = []
    for w in wants:
        if w.whole_chip:
            assert w.chip is not None
            whole = Region(w.chip, 0, rows, 0, cols)
            if any(t.overlaps(whole) for t in taken):
                return None
            out[w.name] = whole
    for w in wants:
        if w.region is not None and not w.whole_chip:
            if any(t.overlaps(w.region) for t in taken):
                return None
            out[w.name] = w.region
            own.append(w.region)
    rest = [w for w in wants if w.region is None and not w.whole_chip]
    for w in sorted(rest, key=lambda w: -w.rows):
        if w.chip is not None:
            order = [w.chip]
        else:
            first = [w.prefer] if w.prefer is not None and w.prefer < chips else []
            order = [*first, *(c for c in range(chips) if c not in first)]
        for chip in order:
            bad = (defects or {}).get(chip)
            found = first_fit(w.rows, w.cols, chip, rows, cols, [*taken, *own], bad)
            if found is not None:
                out[w.name] = found
                own.append(found)
                break
        else:
            return None
    return {w.name: out[w.name] for w in wants}


class ReservationTable:
    """Reservations by ``(identity, run_id)``, the FIFO queue and each identity's last message."""

    def __init__(
        self,
        chips: int,
        rows: int,
        cols: int,
        ttl_s: float,
        *,
        queue_ttl_s: float = 10.0,
        max_per_identity: int = 16,
        max_queue: int = 1024,
    ) -> None:
        if not ttl_s > 0 or not queue_ttl_s > 0:
            raise InvalidRequest(f"reservation ttl_s={ttl_s} and queue_ttl_s must be > 0 s")
        self.chips, self.rows, self.cols = chips, rows, cols
        self.ttl_s, self.queue_ttl_s = float(ttl_s), float(queue_ttl_s)
        self.max_per_identity = max_per_identity
        self.max_queue = max_queue
        self.held: dict[tuple[str, str], Reservation] = {}
        self.queue: list[Pending] = []
        self.last_seen: dict[str, float] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ liveness
    def touch(self, identity: str, now: float) -> None:
        self.last_seen[identity] = now

    def expire(self, now: float) -> list[Reservation]:
        """Drop queue entries of silent clients; drop and return lapsed reservations."""
        self.queue = [
            p for p in self.queue if now - self.last_seen.get(p.identity, now) <= self.queue_ttl_s
        ]
        seen = dict(self.last_seen)  # a copy: the server's I/O thread touches it on arrival
        gone = [r for r in list(self.held.values()) if now - seen.get(r.identity, now) > self.ttl_s]
        for r in gone:
            del self.held[(r.identity, r.run_id)]
        return gone

    # ------------------------------------------------------------ requests
    def request(
        self,
        identity: str,
        run_id: str,
        wants: Sequence[MatrixWant],
        seed: int | None,
        *,
        wait: bool,
        now: float,
        others: Iterable[Region] = (),
        defects: Mapping[int, Defects] | None = None,
    ) -> tuple[Reservation | None, int, str]:
        """``(reservation, 0, "")`` when granted (or taken back), else ``(None, position,
        why)`` with the 1-based queue position; ``LeaseConflict`` if it may not wait.
        ``others``: regions held otherwise (other clients' leases)."""
        self.expire(now)
        self.touch(identity, now)
        wants = tuple(wants)
        check_wants(wants, self.chips, self.rows, self.cols)
        lines = {c: Defects(d.rows, d.cols) for c, d in (defects or {}).items()}
        if allocate(wants, self.chips, self.rows, self.cols, [], lines) is None:
            raise InvalidRequest(
                f"run {run_id}'s matrices ({', '.join(f'{w.name} {w.rows}x{w.cols}' for w in wants)}) "
                f"do not fit the device's {self.chips} chip(s) of {self.rows}x{self.cols} cells "
                f"even when nothing else is reserved; reduce the layer widths"
            )
        mine = self.held.get((identity, run_id))
        if mine is not None:
            return self._take_back(mine, wants), 0, ""
        if sum(1 for r in self.held.values() if r.identity == identity) >= self.max_per_identity:
            raise LimitExceeded(
                f"this client holds {self.max_per_identity} run reservations, its quota; "
                f"release some"
            )
        others = list(others)
        pos = next(
            (i for i, p in enumerate(self.queue) if (p.identity, p.run_id) == (identity, run_id)),
            None,
        )
        if pos is None or pos == 0:
            ahead_free = pos == 0 or not self.queue
            taken = [*others, *(g for r in self.held.values() for g in r.regions.values())]
            regions = None
            if ahead_free:  # bad lines always avoided; bad cells where there is room
                regions = allocate(wants, self.chips, self.rows, self.cols, taken, defects)
                if regions is None and defects:
                    regions = allocate(wants, self.chips, self.rows, self.cols, taken, lines)
            if regions is not None:
                if pos == 0:
                    self.queue.pop(0)
                res = Reservation(
                    f"V{next(self._ids)}",
                    identity,
                    run_id,
                    regions,
                    seed,
                    frozenset(w.name for w in wants if w.whole_chip),
                )
                self.held[(identity, run_id)] = res
                return res, 0, ""
        why = self._why(wants, others)
        if pos is None:
            if not wait:
                raise LeaseConflict(
                    f"the chip space run {run_id} needs is held ({why}); not waiting (--no-wait)"
                )
            if len(self.queue) >= self.max_queue:
                raise LimitExceeded(f"the queue is full ({self.max_queue} requests); retry later")
            cells = sum((self.rows * self.cols) if w.whole_chip else w.rows * w.cols for w in wants)
            self.queue.append(Pending(identity, run_id, wants, seed, now, cells))
            pos = len(self.queue) - 1
        return None, pos + 1, why

    def _take_back(self, res: Reservation, wants: tuple[MatrixWant, ...]) -> Reservation:
        for w in wants:
            got = res.regions.get(w.name)
            fits = got is not None and (
                (w.whole_chip and got.chip == w.chip and w.name in res.whole)
                or (
                    not w.whole_chip
                    and (got.rows, got.cols) == (w.rows, w.cols)
                    and (w.region is None or w.region == got)
                    and (w.chip is None or w.chip == got.chip)
                )
            )
            if not fits:
                raise InvalidRequest(
                    f"run {res.run_id} already holds {res.describe()}; {w.name} "
                    f"{w.rows}x{w.cols} does not match it (release it first)"
                )
        if set(res.regions) != {w.name for w in wants}:
            raise InvalidRequest(
                f"run {res.run_id} already holds {sorted(res.regions)}, asked for "
                f"{sorted(w.name for w in wants)} (release it first)"
            )
        return res

    def _why(self, wants: Sequence[MatrixWant], others: Sequence[Region]) -> str:
        if self.queue:
            head = self.queue[0]
            return (
                f"{len(self.queue)} request(s) queued, first run {head.run_id} of {head.identity}"
            )
        blockers = [
            r.describe()
            for r in self.held.values()
            if any(
                w.region is not None and any(g.overlaps(w.region) for g in r.regions.values())
                for w in wants
            )
            or any(
                w.whole_chip and any(g.chip == w.chip for g in r.regions.values()) for w in wants
            )
        ]
        if not blockers:
            blockers = [r.describe() for r in self.held.values()]
        if not blockers and others:
            blockers = [f"leases on {', '.join(str(o) for o in others)}"]
        return "; ".join(blockers[:3]) or "no free space"

    def release(self, identity: str, run_id: str, now: float) -> Reservation | None:
        """Release (and dequeue) run ``run_id`` of ``identity``; the reservation if held."""
        self.touch(identity, now)
        self.queue = [p for p in self.queue if (p.identity, p.run_id) != (identity, run_id)]
        return self.held.pop((identity, run_id), None)

    def restore(self, res: Reservation, now: float) -> None:
        """Re-install a persisted reservation (server restart): alive one TTL from ``now``."""
        self.held[(res.identity, res.run_id)] = res
        self.last_seen.setdefault(res.identity, now)
        n = int(res.reservation_id[1:]) if res.reservation_id[1:].isdigit() else 0
        self._ids = itertools.count(max(n + 1, next(self._ids)))

    # ------------------------------------------------------------ checks
    def holder_of(self, identity: str, region: Region) -> Reservation | None:
        """The reservation of ``identity`` that contains ``region``, if any."""
        for r in self.held.values():
            if r.identity == identity and any(g.contains(region) for g in r.regions.values()):
                return r
        return None

    def check(self, identity: str, region: Region | None, what: str) -> None:
        """Raise ``LeaseConflict`` if another client's reservation covers ``region``
        (``None``: the whole device, e.g. ``advance``)."""
        for r in self.held.values():
            if r.identity == identity:
                continue
            for g in r.regions.values():
                if region is None or g.overlaps(region):
                    where = "the whole device" if region is None else str(region)
                    raise LeaseConflict(
                        f"{what} on {where} conflicts with reservation {r.reservation_id} "
                        f"on {g} held by {r.describe()}; reserve your own regions "
                        f"(it lapses {self.ttl_s:g} s after its holder's last message)"
                    )

    def runs_of(self, identity: str) -> tuple[str, ...]:
        return tuple(sorted(r.run_id for r in self.held.values() if r.identity == identity))

    def all(self) -> list[Reservation]:
        return list(self.held.values())


__all__ = ["Pending", "Reservation", "ReservationTable", "allocate", "check_wants", "first_fit"]
