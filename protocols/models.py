"""Typed values shared by the driver contract and the wire: device info and verb reports.

They are pydantic v2 models (frozen, ``extra="forbid"``) so that a driver's reply and the
message carrying it over ZeroMQ are the same object, validated once at the edge.
Conductances in µS, times in s.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

CAP_TRANSPOSE = "transpose_mvm"
"""Capability: ``mvm(..., transpose=True)`` drives the columns and reads the rows."""
CAP_TIME = "time_control"
"""Capability: ``advance(dt_s)`` moves the device clock (simulators only)."""
CAP_PROGRAM = "program_verify"
"""Capability: ``program`` runs closed-loop program-and-verify on the device."""
CAP_SNAPSHOT = "snapshot"
"""Capability: in-process ``driver.snapshot(dest)`` saves the complete device state and
``restore=dest`` in the driver URL reopens it (the simulator; never over the wire)."""
CAP_MVM_CODES = "mvm_codes"
"""Capability: the device's periphery is integer (8-bit signed DAC, ADC of at most 16 bits),
so an MVM can travel as DAC codes in and ADC codes out (``Driver.mvm_codes``; on the wire
``x_code``/``y_code``, docs/protocol.md)."""
KNOWN_CAPABILITIES = frozenset({CAP_TRANSPOSE, CAP_TIME, CAP_PROGRAM, CAP_SNAPSHOT, CAP_MVM_CODES})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    """Per-request limits a driver enforces (requests beyond them raise ``LimitExceeded``)."""

    max_pulses_per_device: int = Field(
        ge=1, description="max SET pulses per device in one apply_pulses request"
    )
    max_batch: int = Field(ge=1, description="max MVM batch (input vectors per request)")
    max_program_iterations: int = Field(ge=1, description="max program-and-verify iterations")


class DeviceInfo(_Frozen):
    """What a device is: shape, conductance range, capabilities, limits and identity."""

    chips: int = Field(ge=1, description="number of crossbar chips")
    rows: int = Field(ge=1, description="rows of each chip's array")
    cols: int = Field(ge=1, description="columns of each chip's array")
    devices_per_cell: int = Field(
        default=4, ge=1, description="PCM devices per unit cell, order A+, B+, A-, B-"
    )
    g_min_us: float = Field(ge=0.0, description="lowest conductance of a device (µS)")
    g_max_us: float = Field(gt=0.0, description="highest conductance of a device (µS)")
    g_net_max_us: float | None = Field(
        default=None,
        gt=0.0,
        description="largest |G_net| program() accepts (µS); default g_max_us - g_min_us",
    )
    set_step_mean_us: float = Field(
        gt=0.0, description="mean conductance step of one SET pulse from RESET (µS), ε"
    )
    capabilities: frozenset[str] = Field(default=frozenset(), description="capability flags")
    limits: Limits
    driver: str = Field(description="driver kind, e.g. 'sim', 'remote', 'board'")
    preset: str = Field(default="", description="device preset or model name")
    firmware: str = Field(default="", description="firmware / simulator version identity")
    program_tolerance_us: float | None = Field(
        default=None,
        ge=0.0,
        description="the device's recommended program-and-verify tolerance (µS): about one "
        "standard deviation of a verify read (programming plus read noise); None: unknown",
    )

    @model_validator(mode="after")
    def _range(self) -> DeviceInfo:
        if self.g_max_us <= self.g_min_us:
            raise ValueError(f"g_max_us={self.g_max_us} must exceed g_min_us={self.g_min_us}")
        if self.g_net_max_us is None:
            object.__setattr__(self, "g_net_max_us", self.g_max_us - self.g_min_us)
        return self

    @field_serializer("capabilities")
    def _sorted_capabilities(self, caps: frozenset[str]) -> list[str]:
        # sorted, so the JSON of an info is the same in every process (set order is not)
        return sorted(caps)

    def has(self, capability: str) -> bool:
        """True when the device offers ``capability`` (one of the ``CAP_*`` names)."""
        return capability in self.capabilities


class PulseReport(_Frozen):
    """Reply of ``apply_pulses``: what was applied and the device time afterwards."""

    set_pulses: int = Field(ge=0, description="total SET pulses applied")
    resets: int = Field(ge=0, description="devices RESET before the SET pulses")
    time_s: float = Field(description="device clock when the request was applied (s)")


class ResetReport(_Frozen):
    """Reply of ``reset``: how many devices were RESET and when."""

    resets: int = Field(ge=0, description="devices RESET")
    time_s: float = Field(description="device clock when the request was applied (s)")


class ProgramReport(_Frozen):
    """Reply of ``program``: program-and-verify outcome against the targets (µS)."""

    rms_error_us: float = Field(ge=0.0, description="RMS of read-back minus target (µS)")
    max_error_us: float = Field(ge=0.0, description="max |read-back - target| (µS)")
    pulses: int = Field(ge=0, description="SET pulses applied in total")
    iterations: int = Field(ge=0, description="program-and-verify iterations run")
    converged: bool = Field(
        description="every cell within tolerance at the end, but those with a stuck or dead "
        "device (counted in faulty_cells)"
    )
    time_s: float = Field(description="device clock at the end (s)")
    tolerance_us: float | None = Field(default=None, description="the tolerance used (µS)")
    cells: int | None = Field(default=None, ge=0, description="cells programmed")
    unconverged_cells: int | None = Field(
        default=None, ge=0, description="cells of responsive devices still outside tolerance"
    )
    faulty_cells: int | None = Field(
        default=None, ge=0, description="cells outside tolerance for a stuck or dead device"
    )


class AdvanceReport(_Frozen):
    """Reply of ``advance``: the device clock afterwards."""

    time_s: float = Field(description="device clock after advancing (s)")
