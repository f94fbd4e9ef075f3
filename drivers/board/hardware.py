"""HardwareDriver: the driver contract on the real two-chip PCM board (serial + VISA).

Open sequence (:meth:`HardwareDriver.open`): check the set-up's pulse shape against its
limits (nothing is opened on failure) -> open the serial link -> IDENTIFY, refusing an
unknown firmware version, a different board id or missing chips -> open the VISA
instruments and set the pulse generator's amplitude and width (each write read back).

Units: the base class hands the hooks µS and floats in [-1, 1]; on the wire MVM inputs are
int8 codes ``round(127·x)`` (binary inputs as bits, firmware ≥ 1.3), outputs signed ADC codes
with ``y_us = code·adc_lsb_us`` (packed per column, firmware ≥ 1.4), reads
uint16 codes with ``g_us = code·g_lsb_us`` (both LSBs from IDENTIFY).

Requests larger than one frame are split into tiles (sub-rectangles of the region; MVM
batches and column blocks; pulse passes of at most the board's per-command pulse count),
each its own command with its own seq. Rows of an MVM are never split: the row sum happens
in the analog domain before the ADC. The whole request stays idempotent at the contract
level through the base class's request-id record.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import structlog

from drivers import DeviceError
from drivers.base import Driver, LinkBytes
from drivers.board import packing
from drivers.board import protocol as P
from drivers.board.client import BoardClient, Identity
from drivers.board.errors import (
    BoardRestarted,
    DeviceTimeout,
    FirmwareMismatch,
    SafetyLimitError,
    SetupError,
)
from drivers.board.serial_link import SerialLink
from drivers.board.setup import LabSetup
from drivers.board.tiling import plan_pulses, tiles
from drivers.board.visa import LabInstruments
from protocols.models import (
    CAP_PROGRAM,
    DeviceInfo,
    Limits,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region

log = structlog.get_logger(__name__)

DEVICES = 4
MIN_PAYLOAD = 64
"""smallest frame payload the driver shrinks to on a noisy line (bytes)"""
PAYLOAD_GROW_AFTER = 32
"""clean exchanges after which frames double again"""


class HardwareDriver(Driver):
    """Driver contract over the board. Build with :meth:`open` or ``open_board(url)``."""

    def __init__(
        self,
        setup: LabSetup,
        link: SerialLink,
        client: BoardClient,
        identity: Identity,
        instruments: LabInstruments | None,
    ) -> None:
        super().__init__()
        self.setup = setup
        self.link = link
        self.client = client
        self.identity = identity
        self.instruments = instruments
        self._payload_max = min(setup.link.max_payload_bytes, identity.geometry.max_payload)
        self._payload = self._payload_max
        self._clean = 0
        self._code_bytes = 4
        self._binary_inputs = _version(identity.firmware) >= P.MVM_BITS.min_firmware
        self._packed_codes = _version(identity.firmware) >= P.MVM_PACKED.min_firmware

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, setup: LabSetup, *, instruments: bool = True) -> HardwareDriver:
        check_pulse_shape(setup, setup.pulse.amplitude_v, setup.pulse.width_ns)
        link = SerialLink(
            setup.link.port,
            baudrate=setup.link.baudrate,
            timeout_s=setup.link.timeout_s,
            retries=setup.link.retries,
            reconnect_s=setup.link.reconnect_s,
        )
        lab: LabInstruments | None = None
        try:
            client = BoardClient(link)
            identity = client.identify()
            check_identity(setup, identity, setup.link.port)
            if instruments:
                if setup.visa.backend == "@sim":
                    log.warning(
                        "board_visa_simulated",
                        port=setup.link.port,
                        hint="VISA backend '@sim': pulse amplitude/width go to simulated "
                        "instruments; set visa.backend for a real lab",
                    )
                lab = LabInstruments(
                    setup.visa.backend,
                    setup.visa.pulse_generator,
                    setup.visa.thermometer,
                    setup.visa.timeout_ms,
                )
                lab.pulse_generator.set("amplitude_v", setup.pulse.amplitude_v)
                lab.pulse_generator.set("width_s", setup.pulse.width_ns * 1e-9)
                lab.pulse_generator.set("output", 1)
            driver = cls(setup, link, client, identity, lab)
        except BaseException:
            if lab is not None:
                lab.close()
            link.close()
            raise
        driver._log.info(
            "board_open",
            port=setup.link.port,
            firmware=identity.firmware,
            board_id=f"{identity.board_id:08x}",
            chips=list(setup.board.chip_ids),
        )
        return driver

    def set_pulse_shape(self, amplitude_v: float, width_ns: float) -> None:
        """Set the programming pulse on the generator, within the set-up's limits."""
        check_pulse_shape(self.setup, amplitude_v, width_ns)
        if self.instruments is None:
            raise SetupError("this driver was opened without VISA instruments")
        self.instruments.pulse_generator.set("amplitude_v", amplitude_v)
        self.instruments.pulse_generator.set("width_s", width_ns * 1e-9)
        self._log.info("pulse_shape", amplitude_v=amplitude_v, width_ns=width_ns)

    def temperature_c(self) -> float:
        """The board's on-board temperature sensor (°C)."""
        self._check_open()
        return self.client.temperature_c()

    def lab_temperature_c(self) -> float:
        """The lab thermometer over VISA (°C)."""
        if self.instruments is None:
            raise SetupError("this driver was opened without VISA instruments")
        return float(self.instruments.thermometer.get("temperature_c"))

    # -------------------------------------------------------------------- hooks
    def _info(self) -> DeviceInfo:
        ident = self.identity
        return DeviceInfo(
            chips=len(self.setup.board.chip_ids),
            rows=ident.geometry.rows,
            cols=ident.geometry.cols,
            devices_per_cell=ident.geometry.devices,
            g_min_us=ident.g_min_us,
            g_max_us=ident.g_max_us,
            g_net_max_us=ident.g_net_max_us,
            set_step_mean_us=ident.set_step_mean_us,
            capabilities=frozenset({CAP_PROGRAM}),
            limits=Limits(
                max_pulses_per_device=self.setup.pulse.limits.max_pulses_per_device,
                max_batch=self.setup.max_batch,
                max_program_iterations=ident.geometry.max_program_iterations,
            ),
            driver="board",
            preset="",
            firmware=f"{ident.firmware} board {ident.board_id:08x}",
        )

    def _fields(self, region: Region, r0: int, r1: int, c0: int, c1: int) -> dict[str, Any]:
        return {
            "chip": self.setup.board.chip_ids[region.chip],
            "row0": region.row0 + r0,
            "row1": region.row0 + r1,
            "col0": region.col0 + c0,
            "col1": region.col0 + c1,
        }

    def _call(
        self,
        cmd: P.Command,
        fields: dict[str, Any],
        arrays: dict[str, Any] | None = None,
        reply_bytes_hint: int = 0,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A region command; after a board restart, re-identify and resend only when the
        refused command had been transmitted once (so it cannot have been applied)."""
        try:
            out = self.client.region_call(cmd, fields, arrays, reply_bytes_hint)
            self._adapt_payload()
            return out
        except BoardRestarted as exc:
            if exc.retransmitted:
                raise DeviceError(
                    f"the board restarted while {cmd.name} on {fields} was being retransmitted; "
                    "it may or may not have been applied. Read the region back before retrying."
                ) from exc
            self._log.warning("board_restarted", command=cmd.name, port=self.setup.link.port)
            self.identity = self.client.identify()
            check_identity(self.setup, self.identity, self.setup.link.port)
            return self.client.region_call(cmd, fields, arrays, reply_bytes_hint)

    def _adapt_payload(self) -> None:
        """Frames halve after an exchange that needed retransmissions (a frame is lost when
        any of its bytes is: on a noisy line short frames get through) and double again
        after ``PAYLOAD_GROW_AFTER`` clean exchanges, between ``MIN_PAYLOAD`` and the set-up's
        ``link.max_payload_bytes``."""
        if not self.setup.link.adaptive_payload:
            return
        if self.link.last_attempts > 1:
            self._clean = 0
            if self._payload > MIN_PAYLOAD:
                self._payload = max(MIN_PAYLOAD, self._payload // 2)
                self._log.info("board_frames_smaller", payload_bytes=self._payload)
            return
        self._clean += 1
        if self._clean >= PAYLOAD_GROW_AFTER and self._payload < self._payload_max:
            self._payload = min(self._payload_max, 2 * self._payload)
            self._clean = 0

    def _idempotent(self, op: Any) -> Any:
        """Run a read-only request again with smaller frames when the line damaged every
        attempt of one of its commands (reads and MVMs may be repeated; pulses may not)."""
        while True:
            try:
                return op()
            except DeviceTimeout:
                if (
                    not self.setup.link.adaptive_payload
                    or not self.link.last_heard
                    or self._payload <= MIN_PAYLOAD
                ):
                    raise
                self._payload = max(MIN_PAYLOAD, self._payload // 4)
                self._clean = 0
                self._log.info("board_frames_smaller", payload_bytes=self._payload)

    def _mvm(self, region: Region, x: np.ndarray, transpose: bool) -> np.ndarray:
        return self._idempotent(lambda: self._mvm_once(region, x))  # type: ignore[no-any-return]

    def _mvm_once(self, region: Region, x: np.ndarray) -> np.ndarray:
        rows, cols = region.shape
        payload = min(self._payload_max, max(self._payload, rows + P.MVM.request.struct_.size + 1))
        room = payload - P.MVM.request.struct_.size
        if rows > room:
            raise SetupError(
                f"an MVM over {rows} rows needs {rows + P.MVM.request.struct_.size}-byte frames but "
                f"link.max_payload_bytes is {payload}; raise it (rows are summed in the "
                "analog domain and cannot be split)"
            )
        x_code = np.clip(np.rint(x * P.INPUT_CODE_MAX), -P.INPUT_CODE_MAX, P.INPUT_CODE_MAX)
        x_code = x_code.astype(np.int8)
        cmd, x_send, fit = P.MVM, x_code, room // rows
        if self._binary_inputs and not np.any((x_code != 0) & (x_code != P.INPUT_CODE_MAX)):
            # spikes and piano rolls: one bit per input instead of one byte (firmware >= 1.3)
            cmd, x_send, fit = P.MVM_BITS, x_code != 0, 8 * room // rows
        if self._packed_codes:
            # ADC codes packed losslessly in the reply (firmware >= 1.4); same frames
            cmd = P.MVM_BITS_PACKED if cmd is P.MVM_BITS else P.MVM_PACKED
        width = min(cols, (payload - P.MVM_REPLY_HEAD) // 4)
        y = np.empty((x.shape[0], cols), np.float32)
        for c0 in range(0, cols, width):
            c1 = min(c0 + width, cols)
            b0 = 0
            while b0 < x.shape[0]:
                # Reply size bound from the code width the board used last (4 until known).
                per_vector = self._code_bytes * (c1 - c0)
                batch = max(1, min(fit, (payload - P.MVM_REPLY_HEAD) // per_vector))
                xb = x_send[b0 : b0 + min(batch, 0xFFFF)]
                f = {**self._fields(region, 0, rows, c0, c1), "batch": xb.shape[0]}
                head, a = self._call(cmd, f, {"x": xb}, reply_bytes_hint=per_vector * xb.shape[0])
                if (head["batch"], head["cols"]) != (xb.shape[0], c1 - c0):
                    raise DeviceError(
                        f"board answered {cmd.name} of {xb.shape[0]}x{c1 - c0} with "
                        f"{head['batch']}x{head['cols']} codes"
                    )
                self._code_bytes = head["code_bytes"]
                codes = a["y"] if "y" in a else _unpack_codes(head, a)
                y[b0 : b0 + xb.shape[0], c0:c1] = (
                    codes.reshape(xb.shape[0], c1 - c0) * self.identity.adc_lsb_us
                )
                b0 += xb.shape[0]
        return y

    def link_bytes(self) -> LinkBytes:
        """Bytes written to and read from the serial line, and its baud rate."""
        s = self.link.stats
        return LinkBytes(s.bytes_written, s.bytes_read, self.setup.link.baudrate)

    def _read_conductances(self, region: Region) -> np.ndarray:
        return self._idempotent(lambda: self._read_once(region))  # type: ignore[no-any-return]

    def _read_once(self, region: Region) -> np.ndarray:
        g = np.empty((*region.shape, DEVICES), np.float32)
        for r0, r1, c0, c1 in tiles(*region.shape, (self._payload - 4) // (2 * DEVICES)):
            _, a = self._call(
                P.READ,
                self._fields(region, r0, r1, c0, c1),
                reply_bytes_hint=8 * (r1 - r0) * (c1 - c0),
            )
            g[r0:r1, c0:c1] = a["g"].reshape(r1 - r0, c1 - c0, DEVICES) * self.identity.g_lsb_us
        return g

    def _apply_pulses(
        self, region: Region, counts: np.ndarray, reset_mask: np.ndarray | None, request_id: str
    ) -> PulseReport:
        limit = self.setup.pulse.limits.max_pulses_per_request
        total = int(counts.sum(dtype=np.int64))
        if total > limit:
            raise SafetyLimitError(
                f"{total} SET pulses in one request exceed pulse.limits.max_pulses_per_request="
                f"{limit} of the lab set-up; split the update or raise the limit. Nothing was sent."
            )
        mask = np.zeros(counts.shape, bool) if reset_mask is None else reset_mask
        return self._pulse(region, counts, mask)

    def _reset(self, region: Region, request_id: str) -> ResetReport:
        shape = (*region.shape, DEVICES)
        rep = self._pulse(region, np.zeros(shape, np.int32), np.ones(shape, bool))
        return ResetReport(resets=rep.resets, time_s=rep.time_s)

    def _pulse(self, region: Region, counts: np.ndarray, mask: np.ndarray) -> PulseReport:
        """Passes of at most ``max_pulses_per_device`` per device (RESETs in the first pass
        only); each pass is cut into dense or sparse commands by :func:`plan_pulses`."""
        geo = self.identity.geometry
        remaining = counts.astype(np.int64)
        totals = [0, 0]
        time_s = 0.0
        first = True
        while first or remaining.any():
            step = np.minimum(remaining, geo.max_pulses_per_device).astype(np.uint8)
            pass_mask = mask if first else np.zeros(mask.shape, bool)
            plan = plan_pulses(step, pass_mask, self._payload, geo.max_pulses_per_command)
            for kind, r0, r1, c0, c1 in plan:
                t_counts, t_mask = step[r0:r1, c0:c1], pass_mask[r0:r1, c0:c1]
                fields = self._fields(region, r0, r1, c0, c1)
                if kind == "dense":
                    f, _ = self._call(P.PULSE, fields, {"counts": t_counts, "reset": t_mask})
                else:
                    set_index = np.flatnonzero(t_counts.reshape(-1))
                    reset_index = np.flatnonzero(t_mask.reshape(-1))
                    f, _ = self._call(
                        P.PULSE_SPARSE,
                        {**fields, "n_reset": reset_index.size, "n_set": set_index.size},
                        {
                            "reset_index": reset_index,
                            "set_index": set_index,
                            "set_count": t_counts.reshape(-1)[set_index],
                        },
                    )
                totals[0] += f["set_pulses"]
                totals[1] += f["resets"]
                time_s = f["time_s"]
            remaining = remaining - step
            first = False
        set_pulses, resets = totals
        if set_pulses == 0 and resets == 0:  # nothing to send: report the chip's clock
            self.client.select(self.setup.board.chip_ids[region.chip])
            time_s = float(self.client.status()["time_s"])
        return PulseReport(set_pulses=set_pulses, resets=resets, time_s=time_s)

    def _program(
        self,
        region: Region,
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
        request_id: str,
    ) -> ProgramReport:
        sq_sum = 0.0
        n = 0
        max_err = 0.0
        pulses = iterations = 0
        converged = True
        time_s = 0.0
        for r0, r1, c0, c1 in tiles(
            *region.shape, (self._payload - P.PROGRAM.request.struct_.size) // 4
        ):
            f, _ = self._call(
                P.PROGRAM,
                {
                    **self._fields(region, r0, r1, c0, c1),
                    "tolerance_us": tolerance_us,
                    "max_iterations": max_iterations,
                },
                {"target_us": target_us[r0:r1, c0:c1]},
            )
            cells = (r1 - r0) * (c1 - c0)
            sq_sum += float(f["rms_error_us"]) ** 2 * cells
            n += cells
            max_err = max(max_err, float(f["max_error_us"]))
            pulses += f["pulses"]
            iterations = max(iterations, f["iterations"])
            converged = converged and bool(f["converged"])
            time_s = f["time_s"]
        return ProgramReport(
            rms_error_us=math.sqrt(sq_sum / n),
            max_error_us=max_err,
            pulses=pulses,
            iterations=iterations,
            converged=converged,
            time_s=time_s,
        )

    def _close(self) -> None:
        try:
            if self.instruments is not None:
                self.instruments.pulse_generator.set("output", 0)
                self.instruments.close()
        finally:
            self.link.close()


def check_pulse_shape(setup: LabSetup, amplitude_v: float, width_ns: float) -> None:
    """Refuse a pulse shape outside the set-up's limits (before any instrument write)."""
    lim = setup.pulse.limits
    for name, value, (lo, hi) in (
        ("amplitude_v", amplitude_v, lim.amplitude_v),
        ("width_ns", width_ns, lim.width_ns),
    ):
        if not (math.isfinite(value) and lo <= value <= hi):
            raise SafetyLimitError(
                f"pulse {name}={value} is outside the set-up limit [{lo}, {hi}] "
                f"(pulse.limits.{name}); nothing was sent. Fix the value or the set-up file."
            )


def check_identity(setup: LabSetup, ident: Identity, port: str) -> None:
    """Refuse an unknown firmware, another board, or a board without the set-up's chips."""
    if ident.firmware not in setup.board.firmware:
        raise FirmwareMismatch(
            f"board on {port!r} runs firmware {ident.firmware}, but the set-up accepts only "
            f"{', '.join(setup.board.firmware)} (board.firmware). Refusing to talk to it: "
            "update the firmware or, after checking the protocol notes, the set-up file."
        )
    if setup.board.board_id is not None and ident.board_id != setup.board.board_id:
        raise FirmwareMismatch(
            f"board on {port!r} has id {ident.board_id:#010x}, the set-up expects "
            f"{setup.board.board_id:#010x} (board.board_id); wrong port?"
        )
    missing = set(setup.board.chip_ids) - set(ident.geometry.chip_ids)
    if missing:
        raise SetupError(
            f"set-up chip ids {sorted(missing)} are not on the board (it has "
            f"{list(ident.geometry.chip_ids)}); fix board.chip_ids"
        )
    geo = ident.geometry
    if geo.max_pulses_per_command < DEVICES * geo.max_pulses_per_device:
        raise FirmwareMismatch(
            f"board allows {geo.max_pulses_per_command} pulses per command, fewer than one "
            f"cell's {DEVICES}x{geo.max_pulses_per_device}; this driver cannot split below a cell"
        )
    if ident.geometry.devices != DEVICES:
        raise FirmwareMismatch(f"board reports {ident.geometry.devices} devices per cell, not 4")


def _unpack_codes(head: dict[str, Any], a: dict[str, np.ndarray]) -> np.ndarray:
    """The ADC codes of a packed MVM reply (:mod:`drivers.board.packing`)."""
    return packing.decode(
        head["packing"],
        head["batch"],
        head["cols"],
        head["code_bytes"],
        a["ref"],
        a["width"],
        a["data"],
    )


def _version(text: str) -> tuple[int, int]:
    """``"1.3"`` -> ``(1, 3)`` (identify reports the firmware as ``major.minor``)."""
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)
