"""The driver contract: one small interface for every chip backend (simulator, server, board).

Public verbs validate their arguments, log one structlog event (``request_id``, ``chip``,
``region``), then call a ``_hook``. A new driver implements only the hooks:

==========================  =====================================================
public verb                 hook (arguments already validated and normalised)
==========================  =====================================================
``info()``                  ``_info() -> DeviceInfo`` (called once, cached)
``mvm(region, x)``          ``_mvm(region, x_f32, transpose) -> (batch, n) f32 µS``
``read_conductances(r)``    ``_read_conductances(region) -> (rows, cols, 4) f32 µS``
``apply_pulses(r, counts)`` ``_apply_pulses(region, counts_i32, reset_mask, rid)``
``reset(region)``           ``_reset(region, rid) -> ResetReport``
``program(region, target)`` ``_program(region, net_target_f32, tol, iters, rid)``
``advance(dt_s)``           ``_advance(dt_s, rid) -> AdvanceReport`` (optional)
``time_s()``                ``_time_s() -> float`` (optional)
``close()``                 ``_close()``
==========================  =====================================================

Run reservations (:meth:`Driver.reserve`, :meth:`Driver.release_reservation`): a run asks
for one region per matrix and the device side allocates them. The base class allocates
locally (:mod:`drivers.reservations`): an in-process driver has one user. ``RemoteDriver``
asks the server, which allocates among all its clients, queues, and holds them for the
run across client crashes.

Device records, kept by the device side (no hook to write): ``wear(region)`` gives the
wear ledger's SET pulses and RESETs per device (every applied ``apply_pulses``, ``reset``
and ``program`` is counted; in memory since the driver opened, in the state database of a
``SimDriver`` with a state dir, by the server behind a ``RemoteDriver``), and
``health_report()`` / ``keep_health_report(report)`` the latest ``hil health`` report of
the device (so every run on it can avoid the cells that report marks bad).

Units (docs/ARCHITECTURE.md): conductances in µS, device order ``A+, B+, A-, B-`` on the
last axis, MVM ``y_us = x_q @ G_net`` with ``G_net = ((G_A+ + G_B+) - (G_A- + G_B-))/2``
for ``x`` of shape ``(batch, rows)`` in ``[-1, 1]``; ``transpose=True`` drives the columns
with ``x`` of shape ``(batch, cols)`` and returns ``(batch, rows)``.

Idempotency: state-changing verbs take a client-chosen ``request_id``. The base keeps a
bounded :class:`ReplyCache`; a repeated id returns the first reply and calls no hook. A
repeated id with *different* arguments is refused (``InvalidRequest``), since that is a
caller bug. Drivers that persist state (SimDriver with a state dir) persist this record
with the state. A driver instance is not thread-safe; share it through the server.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import structlog

from drivers import DeviceError, DriverError, InvalidRequest, LimitExceeded
from drivers.allocation import defects_from_report
from drivers.idempotency import (  # noqa: F401 - re-exported as the contract's API
    MAX_REQUEST_ID_LEN,
    REPORT_TYPES,
    ReplyCache,
    Report,
    fingerprint,
    new_request_id,
)
from drivers.ledger import MemoryWear, WearLedger
from drivers.reservations import Reservation, ReservationTable
from drivers.statedb import StateDB
from drivers.validation import (
    as_int,
    check_counts,
    check_inputs,
    check_mask,
    check_target,
    finite_float,
)
from protocols.messages import MatrixWant
from protocols.models import (
    CAP_TIME,
    CAP_TRANSPOSE,
    AdvanceReport,
    DeviceInfo,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region


class MvmCodes(NamedTuple):
    """An integer MVM periphery: 8-bit signed DAC (``x_code = round(127·x)``) and an ADC of
    ``dtype`` (int8 or int16) codes with ``y_us = code · lsb_us``."""

    lsb_us: float
    dtype: np.dtype


@dataclass(frozen=True)
class Tenant:
    """Whose requests these are, for a driver that isolates tenants (the simulator):
    a run's seed and its reserved regions. See :meth:`Driver.tenant`."""

    seed: int
    regions: tuple[Region, ...]

    @classmethod
    def of(cls, res: Reservation) -> Tenant | None:
        """The tenant of a reservation: its matrix regions (or, for whole-chip work only,
        its whole chips) and the run's seed (0 if it gave none)."""
        parts = [r for k, r in res.regions.items() if k not in res.whole]
        if not parts:
            parts = list(res.regions.values())
        return cls(int(res.seed or 0), tuple(sorted(parts, key=lambda r: (r.chip, r.row0, r.col0))))


def _hashable_counts(counts: np.ndarray) -> np.ndarray:
    """Validated pulse counts (int32, >= 0) as fingerprinted: ``uint8`` when every count
    fits (pulse limits are far below 256), else unchanged."""
    if counts.size and int(counts.max()) <= 255:
        return counts.astype(np.uint8)
    return counts


class LinkBytes(NamedTuple):
    """Counters of a driver's device link (see :meth:`Driver.link_bytes`)."""

    sent: int
    received: int
    baud: int | None = None


DAC_CODE_MAX = 127
"""8-bit signed DAC: ``x ∈ [−1, 1]`` is the code ``round(127·x)``."""


MAX_ADVANCE_S = 10 * 365.25 * 86400.0
"""Largest ``advance(dt_s)`` one call accepts: ten years (the clock stays finite)."""

HEALTH_REPORT_KIND = "pcm-hil-health"
"""The ``kind`` of a health report (``hil health``); :meth:`Driver.keep_health_report`."""

MAX_HEALTH_REPORT_BYTES = 32 * 1024 * 1024
"""Largest health report (JSON) a device keeps."""

HEALTH_META_KEY = "health_report"
"""Key of the latest health report in a state database's ``meta`` table."""


def check_health_report(report: Any) -> str:
    """``report`` as compact JSON text, after the contract's checks (one-line errors)."""
    if not isinstance(report, dict):
        raise InvalidRequest(f"a health report is a JSON object, got {type(report).__name__}")
    if report.get("kind") != HEALTH_REPORT_KIND:
        raise InvalidRequest(
            f"a health report has kind {HEALTH_REPORT_KIND!r}, got {report.get('kind')!r}"
        )
    try:
        text = json.dumps(report, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the health report is not plain JSON: {exc}") from None
    if len(text) > MAX_HEALTH_REPORT_BYTES:
        raise LimitExceeded(
            f"the health report has {len(text)} bytes, more than {MAX_HEALTH_REPORT_BYTES}"
        )
    return text


class Driver(abc.ABC):
    """Abstract chip driver. Use as a context manager; see the module docstring."""

    isolates_tenants = False
    """True if :meth:`tenant` gives each tenant its own noise and clock (the simulator):
    then a tenant's ``advance`` moves only its own clock, and needs no whole device."""

    keeps_records: ClassVar[bool] = True
    """False for a driver whose device records live elsewhere (``RemoteDriver``: the
    server's); such a driver overrides :meth:`wear`, :meth:`health_report` and
    :meth:`keep_health_report`."""

    def __init__(self, *, reply_cache_size: int = 4096) -> None:
        self._replies = ReplyCache(reply_cache_size)
        self._info_cache: DeviceInfo | None = None
        self._closed = False
        self._pending_fingerprint = ""
        self._local_reservations: ReservationTable | None = None
        self._log = structlog.get_logger(__name__).bind(driver=type(self).__name__)
        self._wear: WearLedger | MemoryWear | None = None
        self._records_db: StateDB | None = None
        self._records_wear = True  # False while a server records the wear for us
        self._health_text: str | None = None

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _info(self) -> DeviceInfo: ...

    @abc.abstractmethod
    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray: ...

    @abc.abstractmethod
    def _read_conductances(self, region: Region) -> np.ndarray: ...

    @abc.abstractmethod
    def _apply_pulses(
        self, region: Region, counts: np.ndarray, reset_mask: np.ndarray | None, request_id: str
    ) -> PulseReport: ...

    @abc.abstractmethod
    def _reset(self, region: Region, request_id: str) -> ResetReport: ...

    @abc.abstractmethod
    def _program(
        self,
        region: Region,
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
        request_id: str,
    ) -> ProgramReport: ...

    def _advance(self, dt_s: float, request_id: str) -> AdvanceReport:
        raise InvalidRequest(f"{type(self).__name__} has no clock control (capability {CAP_TIME})")

    def _time_s(self) -> float:
        raise InvalidRequest(f"{type(self).__name__} has no device clock (capability {CAP_TIME})")

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; default: nothing to release."""

    # ------------------------------------------------------------ reservations
    def reserve(
        self,
        run_id: str,
        wants: Sequence[MatrixWant],
        *,
        seed: int | None = None,
        wait: bool = True,
        on_wait: Callable[[int, str], None] | None = None,
    ) -> Reservation:
        """Regions for run ``run_id``, one per :class:`~protocols.messages.MatrixWant`,
        allocated by the device side and held for the run until
        :meth:`release_reservation` (or, on a server, its TTL after a crash). Asked again
        with the same run id, the same reservation is returned. When the space is held by
        others, waits in the server's FIFO queue (``on_wait(position, why)`` on every
        change) or, with ``wait=False``, raises :class:`~drivers.LeaseConflict`."""
        self._check_open()
        info = self.info()
        table = self._local_reservations
        if table is None:
            table = self._local_reservations = ReservationTable(
                info.chips, info.rows, info.cols, ttl_s=1e18, queue_ttl_s=1e18
            )
        defects = None
        try:  # the health report this device keeps: allocation avoids what it marks bad
            kept = self.health_report()
            defects = None if kept is None else defects_from_report(kept)
        except (DriverError, ValueError):
            defects = None
        res, _, why = table.request(
            "local", run_id, wants, seed, wait=False, now=0.0, defects=defects
        )
        if res is None:  # pragma: no cover - one local user never queues
            raise DeviceError(f"local reservation of run {run_id} failed: {why}")
        return res

    def release_reservation(self, run_id: str) -> None:
        """Release run ``run_id``'s reservation (nothing if it holds none)."""
        if self._local_reservations is not None:
            res = self._local_reservations.release("local", run_id, 0.0)
            tenant = None if res is None else Tenant.of(res)
            if tenant is not None:
                self.end_tenant(tenant)

    def local_tenant(self, region: Region | None) -> Tenant | None:
        """The tenant of a local reservation that holds ``region`` (None: the device, i.e.
        the latest local reservation); None without local reservations."""
        table = self._local_reservations
        if table is None or not table.held:
            return None
        if region is None:
            return Tenant.of(list(table.held.values())[-1])
        res = table.holder_of("local", region)
        return None if res is None else Tenant.of(res)

    @contextmanager
    def tenant(self, tenant: Tenant | None) -> Iterator[None]:  # noqa: ARG002 - a hook
        """Within the block, requests belong to ``tenant``: a driver that can (the
        simulator) draws their noise from the tenant's own stream and moves the tenant's
        own clock, so a run's results do not depend on other runs' traffic. The server
        wraps each request of a reserved region in it. Default: nothing."""
        yield

    def end_tenant(self, tenant: Tenant) -> None:  # noqa: B027 - optional hook
        """Forget ``tenant``'s streams (its reservation ended). Default: nothing."""

    def keep_tenants(self, tenants: Sequence[Tenant]) -> None:  # noqa: B027 - optional hook
        """Forget every tenant but ``tenants`` (the live reservations after a restart)."""

    def resume_token(self) -> str | None:
        """A secret that lets a later process be this client again (a server session
        token, kept by the run in ``RUN/session.token``); None if identity needs none."""
        return None

    # ------------------------------------------------------------- public verbs
    def info(self) -> DeviceInfo:
        """Chips, array shape, conductance range, capabilities, limits and identity."""
        self._check_open()
        if self._info_cache is None:
            self._info_cache = self._info()
        return self._info_cache

    def mvm(self, region: Region, x: Any, *, transpose: bool = False) -> np.ndarray:
        """``y_us = x_q @ G_net`` over ``region``: ``(batch, rows)`` -> ``(batch, cols)`` f32 µS."""
        region = self._check_region(region)
        info = self.info()
        if transpose and not info.has(CAP_TRANSPOSE):
            raise InvalidRequest(
                f"{info.driver} driver has no transposed MVM (capability {CAP_TRANSPOSE})"
            )
        n_in, n_out = (region.cols, region.rows) if transpose else (region.rows, region.cols)
        x = check_inputs(x, n_in, info)
        self._log.debug(
            "mvm", chip=region.chip, region=str(region), batch=x.shape[0], transpose=transpose
        )
        y = self._mvm(region, x, transpose)
        return self._check_output(y, (x.shape[0], n_out), "mvm")

    def read_conductances(self, region: Region) -> np.ndarray:
        """Per-device conductances of ``region``: ``(rows, cols, 4)`` float32 µS (noisy read)."""
        region = self._check_region(region)
        self._log.debug("read_conductances", chip=region.chip, region=str(region))
        g = self._read_conductances(region)
        return self._check_output(g, (*region.shape, self.info().devices_per_cell), "read")

    def apply_pulses(
        self,
        region: Region,
        counts: Any,
        reset_mask: Any = None,
        *,
        request_id: str | None = None,
    ) -> PulseReport:
        """RESET devices where ``reset_mask``, then apply ``counts`` SET pulses per device."""
        region = self._check_region(region)
        info = self.info()
        counts = check_counts(counts, region, info)
        mask = None if reset_mask is None else check_mask(reset_mask, region, info)
        rid = self._check_request_id(request_id)
        # counts are int32 here whatever the caller sent; hashed as uint8 when they fit
        # (a quarter of the bytes; the same counts give the same fingerprint either way)
        fp = fingerprint("apply_pulses", region, _hashable_counts(counts), mask)
        return self._once(
            "apply_pulses",
            rid,
            fp,
            region,
            lambda: self._apply_pulses(region, counts, mask, rid),
            wear=(counts, mask),
            set_pulses=int(counts.sum()),
        )  # type: ignore[return-value]

    def reset(self, region: Region, *, request_id: str | None = None) -> ResetReport:
        """RESET every device of ``region`` (conductance to ~g_min, drift restarts)."""
        region = self._check_region(region)
        rid = self._check_request_id(request_id)
        fp = fingerprint("reset", region)
        return self._once(
            "reset",
            rid,
            fp,
            region,  # type: ignore[return-value]
            lambda: self._reset(region, rid),
        )

    def program(
        self,
        region: Region,
        target_us: Any,
        *,
        tolerance_us: float,
        max_iterations: int,
        request_id: str | None = None,
    ) -> ProgramReport:
        """Program-and-verify the net conductance of each cell of ``region`` (µS).

        ``target_us`` is ``(rows, cols)``: ``G_net = ((G_A+ + G_B+) - (G_A- + G_B-))/2``
        per cell, ``|target_us| <= info().g_net_max_us``. The device RESETs the cells and
        programs the side of the target's sign until each read is within
        ``tolerance_us`` or ``max_iterations`` is spent (pcm-physics §3).
        """
        region = self._check_region(region)
        info = self.info()
        target = check_target(target_us, region, info)
        tol = finite_float(tolerance_us, "tolerance_us")
        if tol <= 0:
            raise InvalidRequest(f"tolerance_us={tol} must be > 0 µS")
        iters = as_int(max_iterations, "max_iterations")
        if iters < 1:
            raise InvalidRequest(f"max_iterations={iters} must be >= 1")
        if iters > info.limits.max_program_iterations:
            raise LimitExceeded(
                f"max_iterations={iters} exceeds the device limit "
                f"{info.limits.max_program_iterations}; lower it"
            )
        rid = self._check_request_id(request_id)
        fp = fingerprint("program", region, target, tol, iters)
        return self._once(
            "program",
            rid,
            fp,
            region,  # type: ignore[return-value]
            lambda: self._program(region, target, tol, iters, rid),
        )

    def advance(self, dt_s: float, *, request_id: str | None = None) -> float:
        """Move the device clock forward by ``dt_s`` seconds; returns the new time (s)."""
        self._check_open()
        if not self.info().has(CAP_TIME):
            raise InvalidRequest(f"{self.info().driver} driver has no clock control")
        dt = finite_float(dt_s, "dt_s")
        if dt < 0:
            raise InvalidRequest(f"dt_s={dt} must be >= 0: the device clock cannot go back")
        if dt > MAX_ADVANCE_S:
            raise LimitExceeded(
                f"dt_s={dt:g} exceeds {MAX_ADVANCE_S:g} s (ten years) per call; advance in "
                f"steps if you mean it"
            )
        rid = self._check_request_id(request_id)
        rep = self._once(
            "advance", rid, fingerprint("advance", dt), None, lambda: self._advance(dt, rid)
        )
        return rep.time_s

    def time_s(self) -> float:
        """The device clock (s) — simulators only (capability ``time_control``)."""
        self._check_open()
        if not self.info().has(CAP_TIME):
            raise InvalidRequest(f"{self.info().driver} driver has no device clock")
        return float(self._time_s())

    def mvm_codes(self, chip: int) -> MvmCodes | None:
        """The integer periphery of ``chip`` when it has one (capability ``mvm_codes``):
        an MVM's inputs are exactly the DAC codes ``round(127·x)`` and its outputs exactly
        ``code · lsb_us``, so both can travel as codes. None for a float periphery."""
        return None

    def link_bytes(self) -> LinkBytes | None:
        """Bytes sent to and received from the device over its link so far (None: the
        device is in-process); ``baud`` is the line rate of a serial link."""
        return None

    # ------------------------------------------------------------- device records
    def keep_records_in(self, db: StateDB, *, hosted: bool = False) -> None:
        """Keep the wear ledger and the health report in ``db`` (a ``SimDriver``'s state
        database; the server's). ``hosted``: a server records the wear of the requests it
        applies (with the client's identity) and this driver only serves it."""
        if self._records_db is not db:
            info = self.info()
            self._wear = WearLedger(db, (info.rows, info.cols, info.devices_per_cell))
            self._records_db = db
        self._records_wear = not hosted

    @property
    def records_outlive_process(self) -> bool:
        """True when the device records (wear, health report) outlive this process: kept
        on disk, or by a server (``RemoteDriver`` overrides)."""
        return self._records_db is not None and self._records_db.durable

    @property
    def wear_ledger(self) -> WearLedger | MemoryWear | None:
        """The wear ledger this driver keeps (None when it keeps none)."""
        if not self.keeps_records:
            return None
        if self._wear is None:
            info = self.info()
            self._wear = MemoryWear((info.rows, info.cols, info.devices_per_cell))
        return self._wear

    def wear(self, region: Region) -> tuple[np.ndarray, np.ndarray] | None:
        """``(set_pulses, resets)`` per device of ``region``, int64 ``(rows, cols, 4)``:
        the wear ledger's totals (None when the device keeps no ledger)."""
        region = self._check_region(region)
        ledger = self.wear_ledger
        if ledger is None:
            return None
        set_p, resets = ledger.device_totals(region.chip)
        rs, cs = region.slices()
        return set_p[rs, cs], resets[rs, cs]

    def health_report(self) -> dict[str, Any] | None:
        """The latest health report kept by the device (``hil health``), or None."""
        self._check_open()
        text = self._health_text
        if self._records_db is not None:
            text = self._records_db.get_meta(HEALTH_META_KEY)
        return None if text is None else dict(json.loads(text))

    def keep_health_report(self, report: dict[str, Any]) -> None:
        """Keep ``report`` (a ``hil health`` report) as the device's latest."""
        self._check_open()
        text = check_health_report(report)
        if self._records_db is not None:
            self._records_db.set_meta(HEALTH_META_KEY, text)
        else:
            self._health_text = text

    def _record_wear(
        self, verb: str, rid: str, region: Region | None, reply: Report, arrays: tuple[Any, ...]
    ) -> None:
        ledger = self.wear_ledger if self._records_wear else None
        if ledger is None or region is None:
            return
        if verb == "apply_pulses" and isinstance(reply, PulseReport):
            counts, mask = arrays
            ledger.record("", "", rid, verb, region, reply.set_pulses, reply.resets, counts, mask)
        elif verb in ("reset", "program"):  # every device of the region RESET
            pulses = reply.pulses if isinstance(reply, ProgramReport) else 0
            n = region.rows * region.cols * self.info().devices_per_cell
            ledger.record("", "", rid, verb, region, pulses, n)

    def recorded_reply(self, request_id: str) -> Report | None:
        """The reply recorded for state-changing ``request_id``, if any (nothing applied)."""
        return self._replies.peek(request_id)

    def close(self) -> None:
        """Release the device; idempotent. Persisting drivers save their state here."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- internals
    def _once(
        self,
        verb: str,
        rid: str,
        fp: str,
        region: Region | None,
        call: Any,
        wear: tuple[Any, ...] = (),
        **fields: Any,
    ) -> Report:
        where = {} if region is None else {"chip": region.chip, "region": str(region)}
        cached = self._replies.get(rid, verb, fp)
        if cached is not None:
            self._log.info(verb, request_id=rid, replayed=True, **where)
            return cached
        self._log.debug(verb, request_id=rid, **where, **fields)
        self._pending_fingerprint = fp  # persisting drivers journal it with the reply
        db = self._records_db if self._records_wear else None
        with nullcontext() if db is None else db.transaction():  # journal row + wear row
            reply = call()
            self._record_wear(verb, rid, region, reply, wear)
        self._replies.put(rid, verb, fp, reply)
        return reply

    def _check_open(self) -> None:
        if self._closed:
            raise DriverError(f"{type(self).__name__} is closed; open a new driver")

    def _check_request_id(self, request_id: str | None) -> str:
        if request_id is None:
            return new_request_id()
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID_LEN:
            raise InvalidRequest(
                f"request_id {request_id!r} must be a non-empty str of at most "
                f"{MAX_REQUEST_ID_LEN} characters"
            )
        return request_id

    def _check_region(self, region: Any) -> Region:
        self._check_open()
        if isinstance(region, tuple | list) and len(region) == 5:
            try:
                region = Region(*region)
            except ValueError as exc:
                raise InvalidRequest(f"bad region {region!r}: {exc}") from None
        if not isinstance(region, Region):
            raise InvalidRequest(
                f"region must be a protocols.Region(chip, row0, row1, col0, col1), "
                f"got {type(region).__name__}"
            )
        info = self.info()
        if region.chip >= info.chips:
            raise InvalidRequest(
                f"{region}: chip {region.chip} does not exist "
                f"(device has chips 0..{info.chips - 1})"
            )
        if region.row1 > info.rows or region.col1 > info.cols:
            raise InvalidRequest(
                f"{region} exceeds the {info.rows}x{info.cols} array; rows must be in "
                f"[0, {info.rows}] and columns in [0, {info.cols}] (half-open ranges)"
            )
        return region

    def _check_output(self, y: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != shape:
            raise DeviceError(
                f"{type(self).__name__} {what} returned shape {y.shape}, "
                f"expected {shape}: driver bug"
            )
        return y.astype(np.float32, copy=False)
