"""The lab set-up file: which port, which instruments, which limits (pydantic v2, YAML).

Example (``docs/board-protocol.md`` explains every field)::

    link:
      port: /dev/ttyUSB0            # or socket://host:port, rfc2217://host:port
      baudrate: 921600
      timeout_s: 0.5
      retries: 3
      max_payload_bytes: 4096        # <= the board's own maximum (IDENTIFY)
    board:
      chip_ids: [0, 1]               # contract chip index i -> board chip id chip_ids[i]
      firmware: ["1.2", "1.3", "1.4"]  # accepted "major.minor" versions; others are refused
      board_id: null                 # optional: refuse any other board
    visa:
      backend: "@sim"                # "@sim" (shipped pyvisa-sim YAML), "@py" or ""
      pulse_generator: TCPIP0::192.168.0.10::inst0::INSTR
      thermometer: GPIB0::12::INSTR
    pulse:
      amplitude_v: 1.2               # programming-pulse amplitude set on the generator
      width_ns: 50.0
      limits:
        amplitude_v: [0.5, 2.0]
        width_ns: [10.0, 500.0]
        max_pulses_per_device: 20    # per apply_pulses request
        max_pulses_per_request: 200000
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.board.errors import SetupError


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LinkSetup(_Model):
    port: str = Field(description="device path or pyserial URL of the board")
    baudrate: int = Field(default=921600, gt=0, description="line rate (bit/s)")
    timeout_s: float = Field(default=0.5, gt=0, description="reply timeout per attempt (s)")
    retries: int = Field(default=3, ge=0, le=100, description="retransmissions per command")
    max_payload_bytes: int = Field(
        default=16384,
        ge=64,
        le=65535,
        description="largest payload the driver sends or asks for; on a noisy line the driver "
        "halves its frames after each damaged exchange (down to 64 bytes) on its own",
    )
    adaptive_payload: bool = Field(
        default=True,
        description="halve frames after a damaged exchange and grow them back; false keeps "
        "max_payload_bytes fixed (the same tiling on any line, so a run on the simulator is "
        "bit-identical on a clean and a lossy line)",
    )
    reconnect_s: float = Field(
        default=10.0,
        ge=0,
        description="how long a failed port is reopened (board or emulator restarting), s",
    )


class BoardSetup(_Model):
    chip_ids: tuple[int, ...] = Field(default=(0, 1), min_length=1)
    firmware: tuple[str, ...] = Field(default=("1.2", "1.3", "1.4"), min_length=1)
    board_id: int | None = None


class VisaSetup(_Model):
    backend: str = Field(default="@sim", description="pyvisa backend: '@sim', '@py' or ''")
    pulse_generator: str = "TCPIP0::192.168.0.10::inst0::INSTR"
    thermometer: str = "GPIB0::12::INSTR"
    timeout_ms: int = Field(default=2000, gt=0)


class PulseLimits(_Model):
    amplitude_v: tuple[float, float] = (0.5, 2.0)
    width_ns: tuple[float, float] = (10.0, 500.0)
    max_pulses_per_device: int = Field(default=20, ge=1, le=65535)
    max_pulses_per_request: int = Field(default=1 << 20, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> PulseLimits:
        for name in ("amplitude_v", "width_ns"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"pulse.limits.{name} = [{lo}, {hi}] must satisfy 0 <= lo <= hi")
        return self


class PulseSetup(_Model):
    amplitude_v: float = 1.2
    width_ns: float = 50.0
    limits: PulseLimits = PulseLimits()


class LabSetup(_Model):
    """The whole set-up file."""

    link: LinkSetup
    board: BoardSetup = BoardSetup()
    visa: VisaSetup = VisaSetup()
    pulse: PulseSetup = PulseSetup()
    max_batch: int = Field(default=4096, ge=1, description="largest MVM batch per request")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> LabSetup:
        """Read a YAML set-up file; ``overrides`` replace top-level sections' fields,
        e.g. ``link={"port": "socket://127.0.0.1:5000"}``."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as exc:
            raise SetupError(
                f"cannot read the lab set-up file {str(p)!r}: {exc}; pass board://PATH with an "
                "existing YAML file (see docs/board-protocol.md for an example)"
            ) from exc
        except yaml.YAMLError as exc:
            raise SetupError(f"lab set-up file {str(p)!r} is not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(p), **overrides)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "<dict>", **overrides: Any
    ) -> LabSetup:
        if not isinstance(data, dict):
            raise SetupError(
                f"lab set-up {source} must be a YAML mapping, got {type(data).__name__}"
            )
        merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for section, values in overrides.items():
            merged.setdefault(section, {}).update(values)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise SetupError(f"invalid lab set-up {source}: {exc}") from exc
