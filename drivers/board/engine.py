"""The emulated board's firmware: frames in, frames out, backed by two simulator chips.

:class:`BoardEngine` is what the real board's microcontroller does, minus the analog
periphery, which the simulator provides:

- decode frames (:class:`~drivers.board.framing.Deframer`; a frame with a bad CRC is not
  executed, since its seq cannot be trusted, and is answered with a NAK so the host
  retransmits at once), unpack and validate payloads with
  the shared command table (:mod:`drivers.board.protocol`);
- **acknowledge by sequence number**: the replies of the last ``replay_window`` seqs are
  kept with a digest of their request; a frame with a remembered seq and the same request
  is answered from memory and not executed again. IDENTIFY with a new session id clears
  that memory (a new host connection starts a new seq space);
- convert between wire codes and physical units: ``x = x_code/127``,
  ``code_y = round(y_us/adc_lsb_us)``, ``code_g = round(g_us/g_lsb_us)``; the packed MVM
  commands (firmware 1.4) pack the reply's codes with :mod:`drivers.board.packing`.

It is pure (no I/O, no clock): :mod:`drivers.board.emulator` feeds it bytes from a pty or a
TCP socket.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from drivers.board import packing
from drivers.board import protocol as P
from drivers.board.framing import REPLY_BIT, Deframer, Frame, encode_frame
from drivers.board.protocol import Command, Geometry, PayloadError, Status

log = structlog.get_logger(__name__)

FIRMWARE_VERSION = (1, 4)
"""Firmware version the emulator reports by default (``major.minor``)."""
ADC_LSB_US = 2.0**-12
"""µS per int32 MVM output code when the chip has no ADC quantisation (``ideal`` preset);
otherwise the board reports its ADC's own LSB, ``full_scale/(2^(bits-1) - 1)``."""
MEMORY_FILE = "board_memory.json"
NAK_WIRE = encode_frame(P.NAK_OPCODE | REPLY_BIT, 0, int(Status.BAD_FRAME), b"")
G_LSB_US = 2.0**-10
"""µS per uint16 conductance code on the wire (range 0..64 µS)."""
_MVM_HEAD = P.MVM.reply.struct_.size


@dataclass(frozen=True)
class BoardSpec:
    """Fixed properties of the emulated board (what IDENTIFY reports)."""

    firmware: tuple[int, int] = FIRMWARE_VERSION
    board_id: int = 0x4845_0001
    chip_ids: tuple[int, ...] = (0, 1)
    max_payload: int = 60000
    max_pulses_per_device: int = 255
    max_pulses_per_command: int = 1 << 20
    max_program_iterations: int = 1000
    temperature_c: float = 25.0
    replay_window: int = 64

    def geometry(self) -> Geometry:
        return Geometry(
            chip_ids=self.chip_ids,
            max_payload=self.max_payload,
            max_pulses_per_device=self.max_pulses_per_device,
            max_pulses_per_command=self.max_pulses_per_command,
            max_program_iterations=self.max_program_iterations,
        )


class BoardEngine:
    """Board firmware over ``chips`` (board chip id -> :class:`drivers.board.chips.ChipBackend`)."""

    def __init__(self, chips: dict[int, Any], spec: BoardSpec | None = None) -> None:
        self.spec = spec or BoardSpec(chip_ids=tuple(sorted(chips)))
        if tuple(sorted(chips)) != tuple(sorted(self.spec.chip_ids)):
            raise ValueError(f"chips {sorted(chips)} differ from spec {self.spec.chip_ids}")
        self.chips = chips
        self.geometry = self.spec.geometry()
        self.selected = self.spec.chip_ids[0]
        first = chips[self.spec.chip_ids[0]]
        self.adc_lsb_us = float(getattr(first, "adc_lsb_us", None) or ADC_LSB_US)
        levels = getattr(first, "adc_levels", None)
        self.code_bytes = (
            4 if levels is None else (1 if levels <= 127 else 2 if levels <= 32767 else 4)
        )
        self.session: int | None = None
        self.last_status = Status.OK
        self.rx_frames = self.replays = self.executed = 0
        self._deframer = Deframer()
        self._replies: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._handlers: dict[int, Callable[[dict[str, Any], dict[str, np.ndarray]], tuple]] = {
            P.IDENTIFY.opcode: self._identify,
            P.SELECT_CHIP.opcode: self._select,
            P.MVM.opcode: self._mvm,
            P.MVM_BITS.opcode: self._mvm_bits,
            P.MVM_PACKED.opcode: self._mvm_packed,
            P.MVM_BITS_PACKED.opcode: self._mvm_bits_packed,
            P.READ.opcode: self._read,
            P.PULSE.opcode: self._pulse,
            P.PULSE_SPARSE.opcode: self._pulse_sparse,
            P.PROGRAM.opcode: self._program,
            P.TEMPERATURE.opcode: self._temperature,
            P.STATUS.opcode: self._status,
        }

    def reboot(self) -> None:
        """A microcontroller reset: session, replay memory and chip selection are lost; the
        chips (non-volatile PCM) keep their state."""
        self.session = None
        self._replies.clear()
        self._deframer.clear()
        self.selected = self.spec.chip_ids[0]
        log.info("board_rebooted")

    def save_memory(self, state_dir: Path) -> None:
        """Persist the session and the reply memory (``state_dir/board_memory.json``,
        atomically): what lets a restarted board answer a resent command from memory."""
        state_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "session": self.session,
            "replies": [[seq, digest, wire.hex()] for seq, (digest, wire) in self._replies.items()],
        }
        tmp = state_dir / ".board_memory.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, state_dir / MEMORY_FILE)

    def load_memory(self, state_dir: Path) -> None:
        """Restore what :meth:`save_memory` wrote, if anything."""
        path = state_dir / MEMORY_FILE
        if not path.is_file():
            return
        doc = json.loads(path.read_text())
        self.session = doc["session"]
        self._replies = OrderedDict(
            (int(seq), (int(digest), bytes.fromhex(wire))) for seq, digest, wire in doc["replies"]
        )
        log.info("board_memory_restored", session=self.session, replies=len(self._replies))

    @property
    def bad_frames(self) -> int:
        return self._deframer.bad_frames

    def receive(self, data: bytes) -> list[bytes]:
        """Feed received bytes; return the wire bytes of every reply to send: one per
        command frame, and a NAK for every frame that failed to decode (its seq cannot be
        trusted, so the NAK carries seq 0; the host retransmits its pending command)."""
        bad_before = self._deframer.bad_frames
        frames = self._deframer.feed(data)
        naks = [NAK_WIRE] * (self._deframer.bad_frames - bad_before)
        return naks + [self.handle(frame) for frame in frames if not frame.is_reply]

    def handle(self, frame: Frame) -> bytes:
        self.rx_frames += 1
        digest = zlib.crc32(bytes([frame.opcode]) + frame.payload)
        cached = self._replies.get(frame.seq)
        if cached is not None and cached[0] == digest:
            self.replays += 1
            return cached[1]
        status, payload = self._execute(frame)
        if len(payload) > self.spec.max_payload:  # a reply must fit a frame, whatever happened
            status = Status.DEVICE_ERROR
            payload = f"reply of {len(payload)} bytes exceeds the maximum payload".encode()
        self.last_status = status
        wire = encode_frame(frame.opcode | REPLY_BIT, frame.seq, int(status), payload)
        self._replies[frame.seq] = (digest, wire)
        self._replies.move_to_end(frame.seq)
        while len(self._replies) > self.spec.replay_window:
            self._replies.popitem(last=False)
        return wire

    def _execute(self, frame: Frame) -> tuple[Status, bytes]:
        cmd: Command | None = P.COMMANDS.get(frame.opcode)
        if cmd is None or cmd.min_firmware > self.spec.firmware:
            return Status.BAD_OPCODE, f"unknown opcode 0x{frame.opcode:02x}".encode()
        try:
            fields, arrays = P.unpack(cmd.request, frame.payload)
            P.check_request(cmd, fields, arrays, self.geometry)
            if cmd.needs_session and fields["session"] != self.session:
                raise PayloadError(
                    f"{cmd.name} belongs to session {fields['session']:#010x}, but this board's "
                    f"session is {self.session!r} (it restarted?); IDENTIFY again",
                    Status.UNKNOWN_SESSION,
                )
            if "row0" in fields and fields["chip"] != self.selected:
                raise PayloadError(
                    f"{cmd.name} addresses chip {fields['chip']} but chip {self.selected} is "
                    "selected; send SELECT_CHIP first",
                    Status.WRONG_CHIP,
                )
            reply_fields, reply_arrays = self._handlers[cmd.opcode](fields, arrays)
            payload = P.pack(cmd.reply, reply_fields, reply_arrays)
        except PayloadError as exc:
            log.debug("board_command_refused", command=cmd.name, status=exc.status.name)
            return exc.status, str(exc).encode()[:200]
        except Exception as exc:  # the firmware must answer, whatever the backend raised
            log.warning("board_device_error", command=cmd.name, error=str(exc))
            return Status.DEVICE_ERROR, f"{type(exc).__name__}: {exc}".encode()[:200]
        self.executed += 1
        return Status.OK, payload

    # ----------------------------------------------------------------- handlers
    def _identify(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        if f["session"] != self.session:
            self.session = f["session"]
            self._replies.clear()
        chip = self.chips[self.spec.chip_ids[0]]
        s = self.spec
        return {
            "fw_major": s.firmware[0],
            "fw_minor": s.firmware[1],
            "board_id": s.board_id,
            "n_chips": len(s.chip_ids),
            "rows": self.geometry.rows,
            "cols": self.geometry.cols,
            "devices": self.geometry.devices,
            "max_payload": s.max_payload,
            "max_pulses_per_device": s.max_pulses_per_device,
            "max_pulses_per_command": s.max_pulses_per_command,
            "max_program_iterations": s.max_program_iterations,
            "adc_lsb_us": self.adc_lsb_us,
            "g_lsb_us": G_LSB_US,
            "g_min_us": chip.g_min_us,
            "g_max_us": chip.g_max_us,
            "g_net_max_us": chip.g_net_max_us,
            "set_step_mean_us": chip.set_step_mean_us,
        }, {"chip_ids": np.array(s.chip_ids, np.uint8)}

    def _select(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        self.selected = f["chip"]
        return {"chip": self.selected}, {}

    def _mvm(self, f: dict[str, Any], a: dict[str, np.ndarray], head: int = _MVM_HEAD) -> tuple:
        rows, cols = f["row1"] - f["row0"], f["col1"] - f["col0"]
        reply = head + f["batch"] * cols * self.code_bytes
        if reply > self.spec.max_payload:
            raise PayloadError(
                f"an MVM of batch {f['batch']} over {cols} columns needs a {reply}-byte reply, "
                f"above the board's {self.spec.max_payload}; send a smaller batch",
                Status.LIMIT_EXCEEDED,
            )
        x = a["x"].reshape(f["batch"], rows).astype(np.float32) / P.INPUT_CODE_MAX
        y_us = self.chips[f["chip"]].mvm(_key(f), x)
        codes = np.rint(np.asarray(y_us, np.float64) / self.adc_lsb_us)
        width = self.code_bytes
        limit = 2 ** (8 * width - 1) - 1
        codes = np.clip(codes, -limit, limit).astype(P.CODE_DTYPES[width])
        return {"batch": f["batch"], "cols": cols, "code_bytes": width}, {"y": codes}

    def _mvm_bits(
        self, f: dict[str, Any], a: dict[str, np.ndarray], head: int = _MVM_HEAD
    ) -> tuple:
        """MVM_BITS: input bit 1 is code 127 (x = 1), bit 0 is code 0."""
        codes = a["x"].astype(np.int8) * np.int8(P.INPUT_CODE_MAX)
        return self._mvm(f, {"x": codes}, head)

    def _mvm_packed(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        return _packed(self._mvm(f, a, P.MVM_PACKED_REPLY.struct_.size))

    def _mvm_bits_packed(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        return _packed(self._mvm_bits(f, a, P.MVM_PACKED_REPLY.struct_.size))

    def _read(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        g_us = np.asarray(self.chips[f["chip"]].read(_key(f)), np.float64)
        codes = np.clip(np.rint(g_us / G_LSB_US), 0, 0xFFFF).astype(np.uint16)
        return {"rows": f["row1"] - f["row0"], "cols": f["col1"] - f["col0"]}, {"g": codes}

    def _pulse(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        shape = (f["row1"] - f["row0"], f["col1"] - f["col0"], self.geometry.devices)
        counts = a["counts"].reshape(shape).astype(np.int32)
        reset = a["reset"].reshape(shape)
        chip = self.chips[f["chip"]]
        time_s = chip.pulse(_key(f), counts, reset if reset.any() else None)
        return {"set_pulses": int(counts.sum()), "resets": int(reset.sum()), "time_s": time_s}, {}

    def _pulse_sparse(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        n_dev = (f["row1"] - f["row0"]) * (f["col1"] - f["col0"]) * self.geometry.devices
        counts = np.zeros(n_dev, np.uint8)
        counts[a["set_index"]] = a["set_count"]
        reset = np.zeros(n_dev, bool)
        reset[a["reset_index"]] = True
        return self._pulse(f, {"counts": counts, "reset": reset})

    def _program(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        target = a["target_us"].reshape(f["row1"] - f["row0"], f["col1"] - f["col0"])
        out = self.chips[f["chip"]].program(
            _key(f), target, float(f["tolerance_us"]), int(f["max_iterations"])
        )
        return out, {}

    def _temperature(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        return {"temp_c": self.spec.temperature_c}, {}

    def _status(self, f: dict[str, Any], a: dict[str, np.ndarray]) -> tuple:
        return {
            "selected_chip": self.selected,
            "last_status": int(self.last_status),
            "rx_frames": self.rx_frames,
            "bad_frames": self.bad_frames,
            "replays": self.replays,
            "executed": self.executed,
            "time_s": self.chips[self.selected].time_s(),
        }, {}


def _packed(reply: tuple) -> tuple:
    """An MVM reply with its codes packed (frame of reference per column, or raw when that
    is not smaller): the packed commands' reply (firmware 1.4)."""
    head, arrays = reply
    kind, ref, width, data = packing.encode(
        arrays["y"].reshape(head["batch"], head["cols"]), head["code_bytes"]
    )
    fields = {**head, "packing": kind, "data_bytes": len(data)}
    return fields, {"ref": ref, "width": width, "data": np.frombuffer(data, np.uint8)}


def _key(f: dict[str, Any]) -> tuple[int, int, int, int]:
    return (f["row0"], f["row1"], f["col0"], f["col1"])
