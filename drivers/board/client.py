"""Typed calls of the board's commands over a :class:`~drivers.board.serial_link.SerialLink`.

One generic :meth:`BoardClient.call` packs a request with the command table, sends it,
checks the reply's status and unpacks the reply; the thin methods below only name the
fields. Requests are validated with the same validator the firmware runs, so a request the
board would refuse is refused here, before anything is written.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.board import protocol as P
from drivers.board.errors import BoardRestarted, BoardStatusError, DeviceTimeout
from drivers.board.protocol import Command, Geometry, Status
from drivers.board.serial_link import SerialLink


@dataclass(frozen=True)
class Identity:
    """What IDENTIFY reported."""

    firmware: str
    board_id: int
    geometry: Geometry
    adc_lsb_us: float
    g_lsb_us: float
    g_min_us: float
    g_max_us: float
    g_net_max_us: float
    set_step_mean_us: float


class BoardClient:
    """Command-level access to one board. Not thread-safe (one command in flight)."""

    def __init__(self, link: SerialLink) -> None:
        self.link = link
        self.session = secrets.randbits(32)
        self.geometry: Geometry | None = None
        self.selected: int | None = None

    def call(
        self,
        cmd: Command,
        fields: dict[str, Any] | None = None,
        arrays: dict[str, Any] | None = None,
        *,
        reply_bytes_hint: int = 0,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        fields = dict(fields or {})
        if cmd.needs_session:
            fields.setdefault("session", self.session)
        payload = P.pack(cmd.request, fields, arrays)
        if self.geometry is not None:
            P.check_request(cmd, fields, P.unpack(cmd.request, payload)[1], self.geometry)
        reply = self.link.transact(
            cmd.opcode,
            payload,
            name=cmd.name,
            idempotent=cmd.idempotent,
            reply_bytes_hint=reply_bytes_hint,
            timeout_scale=cmd.timeout_scale,
        )
        if reply.status != Status.OK:
            try:
                name = Status(reply.status).name
            except ValueError:
                name = f"status {reply.status}"
            detail = reply.payload.decode("utf-8", "replace")
            message = f"board refused {cmd.name}: {name}: {detail}"
            if reply.status == Status.UNKNOWN_SESSION:
                raise BoardRestarted(message, reply.status, self.link.last_attempts > 1)
            raise BoardStatusError(message, reply.status)
        return P.unpack(cmd.reply, reply.payload)

    # ------------------------------------------------------------------ commands
    def identify(self) -> Identity:
        f, a = self.call(P.IDENTIFY, {"session": self.session})
        geometry = Geometry(
            chip_ids=tuple(int(c) for c in a["chip_ids"]),
            rows=f["rows"],
            cols=f["cols"],
            devices=f["devices"],
            max_payload=f["max_payload"],
            max_pulses_per_device=f["max_pulses_per_device"],
            max_pulses_per_command=f["max_pulses_per_command"],
            max_program_iterations=f["max_program_iterations"],
        )
        self.geometry = geometry
        self.selected = None
        return Identity(
            firmware=f"{f['fw_major']}.{f['fw_minor']}",
            board_id=f["board_id"],
            geometry=geometry,
            adc_lsb_us=f["adc_lsb_us"],
            g_lsb_us=f["g_lsb_us"],
            g_min_us=f["g_min_us"],
            g_max_us=f["g_max_us"],
            g_net_max_us=f["g_net_max_us"],
            set_step_mean_us=f["set_step_mean_us"],
        )

    def select(self, chip: int) -> None:
        if self.selected != chip:
            self.call(P.SELECT_CHIP, {"chip": chip})
            self.selected = chip

    def region_call(
        self,
        cmd: Command,
        fields: dict[str, Any],
        arrays: dict[str, Any] | None = None,
        reply_bytes_hint: int = 0,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Select ``fields['chip']`` if needed, then call. A WRONG_CHIP refusal (the board
        lost its selection, e.g. after a power cycle) was not executed, so it reselects and
        sends once more under a new seq."""
        self.select(fields["chip"])
        try:
            return self.call(cmd, fields, arrays, reply_bytes_hint=reply_bytes_hint)
        except BoardStatusError as exc:
            if exc.status != Status.WRONG_CHIP:
                raise
        self.selected = None
        self.select(fields["chip"])
        return self.call(cmd, fields, arrays, reply_bytes_hint=reply_bytes_hint)

    def temperature_c(self) -> float:
        return float(self.call(P.TEMPERATURE)[0]["temp_c"])

    def status(self) -> dict[str, Any]:
        return self.call(P.STATUS)[0]

    def ping(self) -> bool:
        """True when the board answers STATUS; False on timeout."""
        try:
            self.status()
        except DeviceTimeout:
            return False
        return True
