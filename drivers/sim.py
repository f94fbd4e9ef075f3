"""SimDriver: the driver contract over two in-process simulated chips (:mod:`simulator`).

``SimDriver(preset="hermes", seed=0, state_dir=None)`` holds ``simulator.Chip`` 0 and 1.
Chip ``c`` draws from ``SeedSequence(seed, spawn_key=(c,))`` (simulator.chip), so a run
is a deterministic function of (preset, seed, sequence of requests).

Persistence (``state_dir`` given; see :mod:`drivers.statedb`): the chips live in the
SQLite database ``state_dir/state.db`` as a snapshot (one ``.npz`` blob per chip plus the
reply record) and a journal of the state-changing requests applied since. On start the
driver loads the snapshot and replays the journal; each state-changing request is
applied, then journalled with its request id, request fingerprint, chip times *before*
it was applied and its reply, in a transaction that commits (fsync) before the request
is answered; under ``hil serve`` that transaction is the server's, which adds the reply
record, wear and audit rows to it. Replay moves each chip's clock to the recorded time
(``Chip.advance_to``) and re-applies the request: the simulator draws writes from a
stream separate from reads, so the state after replay equals the state before the crash
exactly. The idempotency record (request id -> reply) is rebuilt from the snapshot and
the journal, so a client retrying an id after a crash gets the recorded reply and nothing
is applied twice; a request whose record never committed was never answered and is
applied once on retry. MVM clock ticks after the last durable write are not persisted (a
few hundred ns per input vector). Compaction (a new snapshot and an empty journal, one
transaction) runs every ``compact_every`` records or ``compact_bytes`` bytes (pulse
counts are journalled as uint8 when they fit) and on :meth:`close`. The wear ledger and
the latest health report (:class:`~drivers.base.Driver` device records) live in the same
database; without a state dir they are kept in memory.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
import structlog

import simulator
from drivers import DeviceError, InvalidRequest
from drivers.base import DAC_CODE_MAX, Driver, MvmCodes, Tenant
from drivers.fsio import atomic_write_bytes, fsync_dir
from drivers.statedb import SCHEMA_VERSION, StateDB
from protocols.models import (
    CAP_MVM_CODES,
    CAP_PROGRAM,
    CAP_SNAPSHOT,
    CAP_TIME,
    CAP_TRANSPOSE,
    AdvanceReport,
    DeviceInfo,
    Limits,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

N_CHIPS = 2
DEFAULT_LIMITS = Limits(max_pulses_per_device=100, max_batch=4096, max_program_iterations=200)


def _sim_errors(fn: F) -> F:
    """Map simulator errors to the driver error tree (bad input vs device failure)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (simulator.RegionError, simulator.ShapeError, simulator.InputRangeError) as exc:
            raise InvalidRequest(f"simulator refused the request: {exc}") from exc
        except simulator.SimulatorError as exc:
            raise DeviceError(f"simulator failed: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _compact_ints(a: np.ndarray) -> np.ndarray:
    """Pulse counts as uint8 when they fit (4x smaller journal records), else unchanged."""
    if a.dtype.kind in "iu" and a.size and 0 <= int(a.min()) and int(a.max()) <= 255:
        return a.astype(np.uint8)
    return a


class SimDriver(Driver):
    """Two simulated chips behind the driver contract, optionally crash-safe on disk."""

    isolates_tenants = True

    def __init__(
        self,
        preset: str = "hermes",
        seed: int = 0,
        state_dir: str | Path | None = None,
        *,
        clock: str = "virtual",
        compact_every: int = 1000,
        compact_bytes: int = 64 * 2**20,
        fsync: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        reply_cache_size: int = 4096,
        restore: str | Path | None = None,
    ) -> None:
        super().__init__(reply_cache_size=reply_cache_size)
        if compact_every < 1:
            raise InvalidRequest(f"compact_every={compact_every} must be >= 1")
        self.limits = limits
        self.compact_every = compact_every
        self.compact_bytes = compact_bytes
        self._fsync = fsync
        self.state_db: StateDB | None = None
        self._tenant: Tenant | None = None
        self._stream_memo: dict[
            Tenant, tuple[tuple[int, tuple[simulator.Region, ...], tuple[int, ...]], ...]
        ] = {}
        self._gen = 0
        self._journal_records = 0
        self._journal_bytes = 0
        try:
            params = simulator.get_preset(preset)  # a built-in name or a preset file
            restore = None if restore is None else Path(restore)
            if state_dir is None and restore is not None:
                self._load_files(restore, params, seed)
            elif state_dir is None:
                self.chips = [self._new_chip(c, params, seed, clock) for c in range(N_CHIPS)]
            else:
                self.state_db = StateDB.open(state_dir, fsync=fsync)
                self._open_state(params, seed, clock, restore)
        except simulator.SimulatorError as exc:
            self._close_db()
            raise InvalidRequest(str(exc)) from None
        except BaseException:
            self._close_db()
            raise
        self.params = self.chips[0].params
        self.seed = self.chips[0].seed
        db = self.state_db
        if db is not None and db.version() == SCHEMA_VERSION:  # records beside the chips
            self.keep_records_in(db)  # (an old schema, opened by a test: kept in memory)

    @classmethod
    def from_url(cls, url: str) -> SimDriver:
        """``sim://?preset=hermes&seed=0&state_dir=DIR&clock=virtual&compact_every=1000``
        (also ``fsync=0`` and ``restore=SNAPSHOT_DIR``); ``preset`` is a built-in name or a
        preset file ``PATH.yaml`` (:mod:`simulator.preset_file`)."""
        parts = urlsplit(url)
        if parts.netloc or parts.path not in ("", "/"):
            raise InvalidRequest(
                f"{url!r}: put sim options in the query, e.g. sim://?preset=hermes&seed=0"
            )
        q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {"preset", "seed", "state_dir", "clock", "compact_every", "fsync", "restore"}
        if unknown := set(q) - known:
            raise InvalidRequest(
                f"unknown sim:// option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        try:
            return cls(
                q.get("preset", "hermes"),
                int(q.get("seed", 0)),
                q.get("state_dir") or None,
                clock=q.get("clock", "virtual"),
                compact_every=int(q.get("compact_every", 1000)),
                fsync=q.get("fsync", "1") not in ("0", "false", "no"),
                restore=q.get("restore") or None,
            )
        except ValueError as exc:
            raise InvalidRequest(f"bad sim:// option value in {url!r}: {exc}") from None

    # ------------------------------------------------------------ persistence
    @staticmethod
    def _new_chip(c: int, preset: simulator.DeviceParams, seed: int, clock: str) -> simulator.Chip:
        return simulator.Chip(c, preset, seed, clock=clock)

    def _open_state(
        self, preset: simulator.DeviceParams, seed: int, clock: str, restore: Path | None
    ) -> None:
        db = self.state_db
        assert db is not None
        snap = db.read_snapshot()
        if snap is None:
            if restore is None:
                self.chips = [self._new_chip(c, preset, seed, clock) for c in range(N_CHIPS)]
            else:
                self._load_files(restore, preset, seed)
            self.compact()
            log.info("state_created", state_db=str(db.path), preset=preset.name, seed=seed)
            return
        if restore is not None:
            raise InvalidRequest(
                f"state dir {db.path.parent if db.path else '?'} already holds chip state; "
                f"restore={restore} applies to a new state dir only"
            )
        gen, meta, blobs = snap
        self._check_meta(meta, preset, seed, str(db.path))
        self.chips = [simulator.Chip.from_bytes(blobs[f"chip{c}"]) for c in range(N_CHIPS)]
        self._replies.load_records(meta["replies"])
        self._gen = gen
        n = 0
        for _seq, header, arrays in db.journal():
            self._replay(header, arrays)
            n += 1
        self._journal_records, self._journal_bytes = db.journal_size()
        log.info(
            "state_restored",
            state_db=str(db.path),
            generation=gen,
            replayed=n,
            time_s=[c.time_s for c in self.chips],
        )

    @staticmethod
    def _check_meta(
        meta: dict[str, Any], preset: simulator.DeviceParams, seed: int, where: str
    ) -> None:
        if (meta["preset"], meta["seed"]) != (preset.name, seed):
            raise InvalidRequest(
                f"{where} holds preset {meta['preset']!r} seed {meta['seed']}, not "
                f"{preset.name!r} seed {seed}; open it with those (or use a new --state-dir)"
            )

    def _load_files(self, snap: Path, preset: simulator.DeviceParams, seed: int) -> None:
        """Chips and reply record from a :meth:`snapshot` directory, after checking it
        holds the requested preset and seed."""
        try:
            meta = json.loads((snap / "meta.json").read_text())
        except FileNotFoundError:
            raise InvalidRequest(f"{snap} is not a SimDriver snapshot (no meta.json)") from None
        self._check_meta(meta, preset, seed, str(snap))
        self.chips = [simulator.Chip.load(snap / f"chip{c}.npz") for c in range(N_CHIPS)]
        self._replies.load_records(json.loads((snap / "replies.json").read_text()))

    def _meta(self) -> dict[str, Any]:
        p = self.chips[0].params
        return {"preset": p.name, "seed": self.chips[0].seed}

    def snapshot(self, dest: str | Path) -> Path:
        """Save the complete state (both chips, reply record) into the new directory
        ``dest``; ``SimDriver(..., restore=dest)`` or ``sim://?...&restore=DEST`` reopens it
        exactly (capability ``snapshot``). Written to a temporary name, then renamed."""
        self._check_open()
        dest = Path(dest)
        if dest.exists():
            raise InvalidRequest(f"snapshot destination {dest} exists; pass a new directory")
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = {f"chip{c}.npz": chip.to_bytes() for c, chip in enumerate(self.chips)}
        files["meta.json"] = json.dumps(self._meta()).encode()
        files["replies.json"] = json.dumps(self._replies.to_records()).encode()
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return dest

    def compact(self) -> None:
        """Fold the journal into a new snapshot, in one transaction (also done on close)."""
        if self.state_db is None:
            return
        blobs = {f"chip{c}": chip.to_bytes() for c, chip in enumerate(self.chips)}
        meta = {**self._meta(), "replies": self._replies.to_records()}
        self._gen = self.state_db.write_snapshot(meta, blobs)
        self._journal_records = self._journal_bytes = 0

    def _record(
        self,
        verb: str,
        rid: str,
        chip: int | None,
        t_before: list[float],
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        reply: Any,
    ) -> None:
        db = self.state_db
        if db is None:
            return
        header = {
            "verb": verb,
            "rid": rid,
            "fp": self._pending_fingerprint,
            "chip": chip,
            "t_before": t_before,
            "params": params,
            "type": type(reply).__name__,
            "reply": reply.model_dump(),
        }
        if self._tenant is not None:
            header["tenant"] = {
                "seed": self._tenant.seed,
                "regions": [r.model_dump() for r in self._tenant.regions],
                "starts": self._tenant_starts(),
            }
        stored = {k: _compact_ints(v) for k, v in arrays.items() if v is not None}
        with db.transaction():  # joins the server's transaction when there is one
            self._journal_bytes += db.append_journal(header, stored)
            self._journal_records += 1
            if (
                self._journal_records >= self.compact_every
                or self._journal_bytes >= self.compact_bytes
            ):
                # The new snapshot replaces this journal record, so it must carry this
                # request's reply too (the base records it only after the hook returns).
                self._replies.put(rid, verb, self._pending_fingerprint, reply)
                self.compact()

    def _replay(self, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        t = h.get("tenant")
        tenant = (
            None
            if t is None
            else Tenant(int(t["seed"]), tuple(Region.model_validate(r) for r in t["regions"]))
        )
        with self.tenant(tenant, None if t is None else t["starts"]):
            self._replay_now(h, arrays)

    def _replay_now(self, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for chip, t in zip(self.chips, h["t_before"], strict=True):
            if t > chip.time_s:
                chip.advance_to(t)
        verb, p = h["verb"], h["params"]
        region = Region.model_validate(p["region"]) if "region" in p else None
        if verb == "apply_pulses":
            assert region is not None
            reply: Any = self._do_pulses(region, arrays["counts"], arrays.get("reset_mask"))
        elif verb == "reset":
            assert region is not None
            reply = self._do_reset(region)
        elif verb == "program":
            assert region is not None
            reply = self._do_program(
                region, arrays["target_us"], p["tolerance_us"], p["max_iterations"]
            )
        elif verb == "advance":
            reply = self._do_advance(p["dt_s"])
        else:
            raise DeviceError(f"journal holds unknown verb {verb!r}")
        recorded = type(reply).model_validate(h["reply"])
        if self.chips[0].clock.mode == "wall":  # replayed at other times: compare counts only
            same = reply.model_dump(exclude={"time_s", "rms_error_us", "max_error_us"}) == (
                recorded.model_dump(exclude={"time_s", "rms_error_us", "max_error_us"})
            )
        else:  # virtual clock: replay is exact
            same = reply == recorded
        if not same:
            raise DeviceError(
                f"journal replay of {verb} {h['rid']} diverged: got {reply}, "
                f"recorded {recorded}; the state dir does not match this code"
            )
        self._replies.put(h["rid"], verb, h["fp"], recorded)

    # ------------------------------------------------------------ tenants
    @staticmethod
    def _chip_regions(tenant: Tenant, c: int) -> tuple[simulator.Region, ...]:
        return tuple(
            simulator.Region(c, r.row0, r.row1, r.col0, r.col1)
            for r in tenant.regions
            if r.chip == c
        )

    @staticmethod
    def _stream_key(tenant: Tenant, regions: Sequence[simulator.Region]) -> tuple[int, ...]:
        """The run's seed and its regions on one chip (with the chip's seed and id, the
        stream's ``SeedSequence``): never arrival order."""
        return (tenant.seed, *(x for r in regions for x in (r.row0, r.row1, r.col0, r.col1)))

    def _tenant_streams(
        self, tenant: Tenant
    ) -> tuple[tuple[int, tuple[simulator.Region, ...], tuple[int, ...]], ...]:
        """``(chip, regions, stream key)`` of each chip ``tenant`` holds regions of;
        memoised per tenant (every request of a reserved region enters its streams, and a
        tenant's regions and seed never change)."""
        hit = self._stream_memo.get(tenant)
        if hit is None:
            hit = tuple(
                (c, regions, self._stream_key(tenant, regions))
                for c in range(len(self.chips))
                if (regions := self._chip_regions(tenant, c))
            )
            if len(self._stream_memo) >= 64:
                self._stream_memo.pop(next(iter(self._stream_memo)))
            self._stream_memo[tenant] = hit
        return hit

    @contextmanager
    def tenant(
        self, tenant: Tenant | None, starts: dict[str, float] | None = None
    ) -> Iterator[None]:
        """Requests in the block use ``tenant``'s own streams on each chip it holds regions
        of (:meth:`simulator.Chip.stream`): noise and clock of its own. ``starts``: stream
        start times per chip (journal replay)."""
        if tenant is None or self._tenant is not None:
            yield
            return
        with ExitStack() as stack:
            for c, regions, key in self._tenant_streams(tenant):
                start = None if starts is None else starts.get(str(c))
                stack.enter_context(self.chips[c].stream(key, regions, start))
            self._tenant = tenant
            try:
                yield
            finally:
                self._tenant = None

    def _tenant_chips(self) -> list[int]:
        if self._tenant is None:
            return list(range(len(self.chips)))
        return sorted({r.chip for r in self._tenant.regions})

    def _tenant_starts(self) -> dict[str, float]:
        t = self._tenant
        if t is None:
            return {}
        out = {}
        for c in self._tenant_chips():
            start = self.chips[c].stream_start_s(self._stream_key(t, self._chip_regions(t, c)))
            if start is not None:
                out[str(c)] = start
        return out

    def _as_tenant(self, region: Region | None) -> Any:
        """The context of a request: the active tenant, else this driver's own (local)
        reservation holding ``region``, else none."""
        if self._tenant is not None:
            return nullcontext()
        return self.tenant(self.local_tenant(region))

    def end_tenant(self, tenant: Tenant) -> None:
        for c, chip in enumerate(self.chips):
            regions = self._chip_regions(tenant, c)
            if regions:
                chip.end_stream(self._stream_key(tenant, regions))

    def keep_tenants(self, tenants: Sequence[Tenant]) -> None:
        for c, chip in enumerate(self.chips):
            live = {
                self._stream_key(t, self._chip_regions(t, c))
                for t in tenants
                if self._chip_regions(t, c)
            }
            for key in chip.streams:
                if key not in live:
                    chip.end_stream(key)

    # ------------------------------------------------------------ hooks
    def _info(self) -> DeviceInfo:
        p = self.chips[0].params
        return DeviceInfo(
            chips=N_CHIPS,
            rows=simulator.ARRAY_SIZE,
            cols=simulator.ARRAY_SIZE,
            devices_per_cell=simulator.DEVICES_PER_CELL,
            g_min_us=p.g_min_us,
            g_max_us=p.g_max_us,
            g_net_max_us=p.g_net_max_us,
            set_step_mean_us=simulator.physics.first_set_step_us(p),
            capabilities=frozenset({CAP_TRANSPOSE, CAP_TIME, CAP_PROGRAM, CAP_SNAPSHOT})
            | ({CAP_MVM_CODES} if self.mvm_codes(0) is not None else set()),
            limits=self.limits,
            driver="sim",
            preset=p.name,
            firmware=f"pcm-hil simulator, seed {self.chips[0].seed}",
            program_tolerance_us=p.program_tolerance_us,
        )

    def mvm_codes(self, chip: int) -> MvmCodes | None:
        """The chip's DAC/ADC as codes (``simulator.Chip``'s MVM computes exactly these)."""
        c = self.chips[chip]
        p = c.params
        if p.dac_bits is None or 2 ** (p.dac_bits - 1) - 1 != DAC_CODE_MAX:
            return None
        if p.adc_bits is None or p.adc_bits > 16:
            return None
        levels = 2 ** (p.adc_bits - 1) - 1
        dtype = np.dtype(np.int8 if p.adc_bits <= 8 else np.int16)
        return MvmCodes(c.adc_full_scale_us / levels, dtype)

    def _chip(self, region: Region) -> tuple[simulator.Chip, simulator.Region]:
        return self.chips[region.chip], simulator.Region(
            region.chip, region.row0, region.row1, region.col0, region.col1
        )

    def _times(self) -> list[float]:
        return [c.time_s for c in self.chips]

    @_sim_errors
    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        chip, r = self._chip(region)
        with self._as_tenant(region):
            # x passed the driver layer's check_inputs (float32, shape, [-1, 1]): the chip
            # does not scan it again
            if transpose:
                return chip.mvm_t(r, x, inputs_checked=True)
            return chip.mvm(r, x, inputs_checked=True)

    @_sim_errors
    def _read_conductances(self, region: Region) -> np.ndarray:
        chip, r = self._chip(region)
        with self._as_tenant(region):
            return chip.read_conductances(r)

    @_sim_errors
    def true_conductances(self, region: Region) -> np.ndarray:
        """Noise-free drifted conductances ``(rows, cols, 4)`` µS (diagnostics, not contract)."""
        region = self._check_region(region)
        chip, r = self._chip(region)
        return chip.true_conductances(r)

    @_sim_errors
    def _do_pulses(self, region: Region, counts: np.ndarray, mask: np.ndarray | None):  # type: ignore[no-untyped-def]
        chip, r = self._chip(region)
        res = chip.apply_pulses(r, counts, mask)
        return PulseReport(set_pulses=res.n_set_pulses, resets=res.n_resets, time_s=res.t_s)

    @_sim_errors
    def _do_reset(self, region: Region) -> ResetReport:
        chip, r = self._chip(region)
        res = chip.reset(r)
        return ResetReport(resets=res.n_resets, time_s=res.t_s)

    @_sim_errors
    def _do_program(self, region: Region, target: np.ndarray, tol: float, iters: int):  # type: ignore[no-untyped-def]
        chip, r = self._chip(region)
        res = chip.program(r, target, tol, iters)
        return ProgramReport(
            rms_error_us=res.rms_error_us,
            max_error_us=res.max_error_us,
            pulses=res.n_pulses,
            iterations=res.iterations,
            converged=res.n_unconverged == 0,
            time_s=res.t_s,
            tolerance_us=tol,
            cells=res.n_cells,
            unconverged_cells=res.n_unconverged,
            faulty_cells=res.n_faulty,
        )

    @_sim_errors
    def _do_advance(self, dt_s: float) -> AdvanceReport:
        chips = [self.chips[c] for c in self._tenant_chips()]  # a tenant's clocks only
        for chip in chips:
            chip.advance(dt_s)
        return AdvanceReport(time_s=max(c.time_s for c in chips))

    def _apply_pulses(self, region, counts, reset_mask, request_id) -> PulseReport:  # type: ignore[no-untyped-def]
        with self._as_tenant(region):
            return self._apply_pulses_now(region, counts, reset_mask, request_id)

    def _apply_pulses_now(self, region, counts, reset_mask, request_id) -> PulseReport:  # type: ignore[no-untyped-def]
        t = self._times()
        rep = self._do_pulses(region, counts, reset_mask)
        self._record(
            "apply_pulses",
            request_id,
            region.chip,
            t,
            {"region": region.model_dump()},
            {"counts": counts, "reset_mask": reset_mask},
            rep,
        )
        return rep

    def _reset(self, region: Region, request_id: str) -> ResetReport:
        with self._as_tenant(region):
            t = self._times()
            rep = self._do_reset(region)
            self._record(
                "reset", request_id, region.chip, t, {"region": region.model_dump()}, {}, rep
            )
            return rep

    def _program(self, region, target_us, tolerance_us, max_iterations, request_id):  # type: ignore[no-untyped-def]
        with self._as_tenant(region):
            return self._program_now(region, target_us, tolerance_us, max_iterations, request_id)

    def _program_now(self, region, target_us, tolerance_us, max_iterations, request_id):  # type: ignore[no-untyped-def]
        t = self._times()
        rep = self._do_program(region, target_us, tolerance_us, max_iterations)
        self._record(
            "program",
            request_id,
            region.chip,
            t,
            {
                "region": region.model_dump(),
                "tolerance_us": tolerance_us,
                "max_iterations": max_iterations,
            },
            {"target_us": target_us},
            rep,
        )
        return rep

    def _advance(self, dt_s: float, request_id: str) -> AdvanceReport:
        with self._as_tenant(None):
            t = self._times()
            rep = self._do_advance(dt_s)
            self._record("advance", request_id, None, t, {"dt_s": dt_s}, {}, rep)
            return rep

    def _time_s(self) -> float:
        with self._as_tenant(None):
            return max(self.chips[c].time_s for c in self._tenant_chips())

    def _close_db(self) -> None:
        if self.state_db is not None:
            self.state_db.close()

    def _close(self) -> None:
        if self.state_db is None:
            return
        try:
            self.compact()
        finally:
            self._close_db()
            log.info("state_saved", state_db=str(self.state_db.path), generation=self._gen)


__all__ = ["DEFAULT_LIMITS", "SimDriver", "first_set_step_us"]

first_set_step_us = simulator.physics.first_set_step_us  # the one definition, re-exported
