"""The board's command set, declared in ONE table (opcode, request, reply, validator).

Every payload is a fixed little-endian head (a :mod:`struct` format) followed by zero or
more raw arrays whose element counts follow from the head. Both the host driver and the
emulator pack and unpack through :func:`pack` / :func:`unpack` with the same
:data:`COMMANDS` entries, so the two ends cannot disagree about a layout. The wire framing
(COBS, CRC-32, seq, opcode, status) is in :mod:`drivers.board.framing`; the prose spec is
``docs/board-protocol.md``.

Units on the wire: MVM inputs are int8 codes ``x_code = round(127·x)``; MVM outputs are
signed ADC codes (1, 2 or 4 bytes, named in the reply) with ``y_us = code · adc_lsb_us``;
conductances are uint16 codes with ``g_us = code · g_lsb_us``; both LSBs are reported by
IDENTIFY. The layout machinery (:func:`pack`, :func:`unpack`, :class:`Status`) lives in
:mod:`drivers.board.layout` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.board.layout import (
    NAK_OPCODE,
    ArraySpec,
    Layout,
    PayloadError,
    Status,
    pack,
    unpack,
)

__all__ = [
    "NAK_OPCODE",
    "COMMANDS",
    "CODE_DTYPES",
    "INPUT_CODE_MAX",
    "ArraySpec",
    "Command",
    "Geometry",
    "Layout",
    "PayloadError",
    "Status",
    "check_request",
    "pack",
    "unpack",
]

INPUT_CODE_MAX = 127
"""8-bit signed PWM inputs: x in [-1, 1] travels as round(127·x) in [-127, 127]."""


CODE_DTYPES = {1: "i1", 2: "<i2", 4: "<i4"}
"""MVM output code width in bytes -> dtype; the board picks the narrowest that holds its
ADC's codes (8-bit HERMES ADC: 1 byte) and says so in each MVM reply."""


def _code_dtype(f: Mapping[str, Any]) -> str:
    try:
        return CODE_DTYPES[f["code_bytes"]]
    except KeyError:
        raise PayloadError(f"MVM code width {f['code_bytes']} bytes is not 1, 2 or 4") from None


@dataclass(frozen=True)
class Geometry:
    """What IDENTIFY reports; the validators check requests against it."""

    chip_ids: tuple[int, ...]
    rows: int = 256
    cols: int = 256
    devices: int = 4
    max_payload: int = 60000
    max_pulses_per_device: int = 255
    max_pulses_per_command: int = 1 << 20
    max_program_iterations: int = 1000


Validator = Callable[[Mapping[str, Any], Mapping[str, np.ndarray], Geometry], None]


@dataclass(frozen=True)
class Command:
    name: str
    opcode: int
    request: Layout
    reply: Layout
    idempotent: bool
    """True: executing it twice has the same effect as once (reads). False (pulse,
    program): a retransmission must reuse the seq so the board replays its first reply."""
    validate: Validator | None = None
    timeout_scale: float = 1.0
    """Multiplies the link's reply timeout: the board answers only after executing."""
    min_firmware: tuple[int, int] = (1, 0)
    """Oldest firmware (major, minor) that knows the command; older boards answer BAD_OPCODE."""

    @property
    def needs_session(self) -> bool:
        """Non-idempotent commands carry the IDENTIFY session id; a board that restarted
        (and so forgot its replies) refuses them with UNKNOWN_SESSION instead of running a
        retransmission a second time."""
        return "session" in self.request.fields and self.opcode != 0x01


REGION = ("chip", "row0", "row1", "col0", "col1")
REGION_HEAD = "BHHHH"


def _cells(f: Mapping[str, Any]) -> int:
    return max(f["row1"] - f["row0"], 0) * max(f["col1"] - f["col0"], 0)


def _check_region(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    if f["chip"] not in g.chip_ids:
        raise PayloadError(f"chip {f['chip']} not on this board {g.chip_ids}", Status.BAD_REGION)
    if not (0 <= f["row0"] < f["row1"] <= g.rows and 0 <= f["col0"] < f["col1"] <= g.cols):
        raise PayloadError(
            f"region rows [{f['row0']},{f['row1']}) cols [{f['col0']},{f['col1']}) is empty or "
            f"outside the {g.rows}x{g.cols} array",
            Status.BAD_REGION,
        )


def _check_read(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    _check_region(f, a, g)
    reply = 4 + 2 * _DEV * _cells(f)
    if reply > g.max_payload:
        raise PayloadError(
            f"a read of {_cells(f)} cells needs a {reply}-byte reply, above the board's "
            f"{g.max_payload}; read a smaller region",
            Status.LIMIT_EXCEEDED,
        )


def _check_mvm(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    _check_region(f, a, g)
    if f["batch"] < 1:
        raise PayloadError("MVM batch must be >= 1")
    if a["x"].dtype != np.bool_ and a["x"].size and int(np.min(a["x"])) < -INPUT_CODE_MAX:
        raise PayloadError(f"MVM input code {int(np.min(a['x']))} < -{INPUT_CODE_MAX}")


def _check_pulse(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    _check_region(f, a, g)
    counts = a["counts"]
    if counts.size and int(counts.max()) > g.max_pulses_per_device:
        raise PayloadError(
            f"{int(counts.max())} pulses on one device exceeds the board's "
            f"{g.max_pulses_per_device} per command",
            Status.LIMIT_EXCEEDED,
        )
    total = int(counts.sum(dtype=np.int64))
    if total > g.max_pulses_per_command:
        raise PayloadError(
            f"{total} pulses exceed the board's {g.max_pulses_per_command} per command",
            Status.LIMIT_EXCEEDED,
        )


def _check_pulse_sparse(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    _check_region(f, a, g)
    n_dev = _cells(f) * _DEV
    for name in ("reset_index", "set_index"):
        idx = a[name].astype(np.int64)
        if idx.size and (int(idx[-1]) >= n_dev or (idx.size > 1 and np.any(np.diff(idx) <= 0))):
            raise PayloadError(f"{name} must be strictly increasing device indices < {n_dev}")
    counts = a["set_count"]
    if counts.size and int(counts.min()) < 1:
        raise PayloadError("set_count entries must be >= 1 (list only pulsed devices)")
    _check_pulse(f, {"counts": counts}, g)


def _check_program(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    _check_region(f, a, g)
    t = a["target_us"]
    if not np.all(np.isfinite(t)):
        raise PayloadError("program targets (net µS per cell) must be finite")
    if not (f["tolerance_us"] > 0.0 and 1 <= f["max_iterations"] <= g.max_program_iterations):
        raise PayloadError(
            f"program needs tolerance_us > 0 (got {f['tolerance_us']}) and max_iterations in "
            f"[1, {g.max_program_iterations}] (got {f['max_iterations']})",
            Status.LIMIT_EXCEEDED,
        )


def _check_chip(f: Mapping[str, Any], a: Mapping[str, np.ndarray], g: Geometry) -> None:
    if f["chip"] not in g.chip_ids:
        raise PayloadError(f"chip {f['chip']} not on this board {g.chip_ids}", Status.BAD_REGION)


_DEV = 4  # devices per cell on the wire; Geometry.devices must equal it


IDENTIFY = Command(
    "identify",
    0x01,
    Layout("<I", ("session",)),
    Layout(
        "<BBIBHHBHBIHffffff",
        (
            "fw_major",
            "fw_minor",
            "board_id",
            "n_chips",
            "rows",
            "cols",
            "devices",
            "max_payload",
            "max_pulses_per_device",
            "max_pulses_per_command",
            "max_program_iterations",
            "adc_lsb_us",
            "g_lsb_us",
            "g_min_us",
            "g_max_us",
            "g_net_max_us",
            "set_step_mean_us",
        ),
        (ArraySpec("chip_ids", "u1", lambda f: f["n_chips"]),),
    ),
    idempotent=True,
)
SELECT_CHIP = Command(
    "select_chip", 0x02, Layout("<B", ("chip",)), Layout("<B", ("chip",)), True, _check_chip
)
MVM = Command(
    "mvm",
    0x03,
    Layout(
        "<" + REGION_HEAD + "H",
        (*REGION, "batch"),
        (ArraySpec("x", "i1", lambda f: f["batch"] * max(f["row1"] - f["row0"], 0)),),
    ),
    Layout(
        "<HHB",
        ("batch", "cols", "code_bytes"),
        (ArraySpec("y", _code_dtype, lambda f: f["batch"] * f["cols"]),),
    ),
    idempotent=True,
    validate=_check_mvm,
)
MVM_BITS = Command(
    "mvm_bits",
    0x0A,
    Layout(
        "<" + REGION_HEAD + "H",
        (*REGION, "batch"),
        (ArraySpec("x", "bits", lambda f: f["batch"] * max(f["row1"] - f["row0"], 0)),),
    ),
    MVM.reply,
    idempotent=True,
    validate=_check_mvm,
    min_firmware=(1, 3),
)
"""MVM with binary inputs (spikes, piano rolls): each input is one bit, ``x ∈ {0, 1}``
(code 0 or 127), packed 8 per byte LSB first; the reply is MVM's. Firmware ≥ 1.3."""


def _if_packed(f: Mapping[str, Any]) -> int:
    return f["cols"] if f["packing"] else 0


MVM_PACKED_REPLY = Layout(
    "<HHBBH",
    ("batch", "cols", "code_bytes", "packing", "data_bytes"),
    (
        ArraySpec("ref", _code_dtype, _if_packed),
        ArraySpec("width", "u1", _if_packed),
        ArraySpec("data", "u1", lambda f: f["data_bytes"]),
    ),
)
"""The reply of the packed MVM commands: MVM's head plus ``packing`` (0: the codes follow
raw, as in MVM; 1: frame of reference per column, :mod:`drivers.board.packing`) and the
length of ``data``; when packed, ``ref`` (the column minima, code dtype) and ``width``
(bits per value, u8) per column precede the bit-packed records."""
MVM_PACKED = Command(
    "mvm_packed",
    0x0B,
    MVM.request,
    MVM_PACKED_REPLY,
    idempotent=True,
    validate=_check_mvm,
    min_firmware=(1, 4),
)
"""MVM (int8 inputs) whose reply carries the ADC codes packed losslessly. Firmware ≥ 1.4."""
MVM_BITS_PACKED = Command(
    "mvm_bits_packed",
    0x0C,
    MVM_BITS.request,
    MVM_PACKED_REPLY,
    idempotent=True,
    validate=_check_mvm,
    min_firmware=(1, 4),
)
"""MVM_BITS (binary inputs as bits) whose reply carries the ADC codes packed. Firmware ≥ 1.4."""
MVM_REPLY_HEAD = max(MVM.reply.struct_.size, MVM_PACKED_REPLY.struct_.size)
"""The largest MVM reply head (bytes): the host sizes MVM frames with it for every MVM
command, so a run splits its MVMs the same way whichever command the firmware offers."""
READ = Command(
    "read",
    0x04,
    Layout("<" + REGION_HEAD, REGION),
    Layout(
        "<HH", ("rows", "cols"), (ArraySpec("g", "<u2", lambda f: f["rows"] * f["cols"] * _DEV),)
    ),
    idempotent=True,
    validate=_check_read,
)
PULSE = Command(
    "pulse",
    0x05,
    Layout(
        "<" + REGION_HEAD + "I",
        (*REGION, "session"),
        (
            ArraySpec("counts", "u1", lambda f: _cells(f) * _DEV),
            ArraySpec("reset", "bits", lambda f: _cells(f) * _DEV),
        ),
    ),
    Layout("<IId", ("set_pulses", "resets", "time_s")),
    idempotent=False,
    validate=_check_pulse,
)
PULSE_SPARSE = Command(
    "pulse_sparse",
    0x09,
    Layout(
        "<" + REGION_HEAD + "III",
        (*REGION, "session", "n_reset", "n_set"),
        (
            ArraySpec("reset_index", "<u4", lambda f: f["n_reset"]),
            ArraySpec("set_index", "<u4", lambda f: f["n_set"]),
            ArraySpec("set_count", "u1", lambda f: f["n_set"]),
        ),
    ),
    Layout("<IId", ("set_pulses", "resets", "time_s")),
    idempotent=False,
    validate=_check_pulse_sparse,
)
"""PULSE with the devices listed (flat index ``(r·cols + c)·4 + d`` within the region):
the same effect, fewer bytes when few devices are pulsed (training updates)."""
PROGRAM = Command(
    "program",
    0x06,
    Layout(
        "<" + REGION_HEAD + "IfH",
        (*REGION, "session", "tolerance_us", "max_iterations"),
        (ArraySpec("target_us", "<f4", _cells),),
    ),
    Layout(
        "<ffIHBd", ("rms_error_us", "max_error_us", "pulses", "iterations", "converged", "time_s")
    ),
    idempotent=False,
    validate=_check_program,
    timeout_scale=20.0,  # up to max_iterations read/pulse rounds before the reply
)
TEMPERATURE = Command("temperature", 0x07, Layout("<"), Layout("<f", ("temp_c",)), True)
STATUS = Command(
    "status",
    0x08,
    Layout("<"),
    Layout(
        "<BBIIIId",
        (
            "selected_chip",
            "last_status",
            "rx_frames",
            "bad_frames",
            "replays",
            "executed",
            "time_s",
        ),
    ),
    idempotent=True,
)

COMMANDS: dict[int, Command] = {
    c.opcode: c
    for c in (
        IDENTIFY,
        SELECT_CHIP,
        MVM,
        READ,
        PULSE,
        PROGRAM,
        TEMPERATURE,
        STATUS,
        PULSE_SPARSE,
        MVM_BITS,
        MVM_PACKED,
        MVM_BITS_PACKED,
    )
}
"""The one command table, by opcode."""


def check_request(
    cmd: Command, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray], geometry: Geometry
) -> None:
    """Run the command's validator (both the host and the board call this)."""
    if cmd.validate is not None:
        cmd.validate(fields, arrays, geometry)
