"""Wire messages: one pydantic model per request and reply, discriminated by ``kind``.

Every message is frozen, forbids unknown fields, carries ``version`` (the protocol
version, checked before anything else) and a client-chosen ``request_id``. A retried
request reuses its ``request_id``; the server then returns the original reply of a
state-changing request and applies nothing. Arrays do not travel inside the JSON: the
message lists :class:`ArraySpec` entries and the raw buffers follow as extra frames (see
:mod:`protocols.framing`). ``REQUIRED_ARRAYS`` / ``OPTIONAL_ARRAYS`` name the buffers each
kind carries.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from protocols.models import (
    AdvanceReport,
    DeviceInfo,
    ProgramReport,
    PulseReport,
    ResetReport,
)
from protocols.region import Region

PROTOCOL_VERSION = 3
"""Bumped on any incompatible change of a message or of the framing (docs/protocol.md,
"Version history")."""

DTYPES: dict[str, str] = {
    "bool": "|b1",
    "int8": "|i1",
    "uint8": "|u1",
    "int16": "<i2",
    "uint16": "<u2",
    "int32": "<i4",
    "uint32": "<u4",
    "int64": "<i8",
    "float32": "<f4",
    "float64": "<f8",
}
"""Whitelisted array dtypes on the wire (name -> little-endian numpy dtype string)."""

DTypeName = Literal[
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"
]

ErrorCode = Literal[
    "bad_request",
    "not_found",
    "lease_conflict",
    "limit_exceeded",
    "device_error",
    "version_mismatch",
    "unauthorised",
    "outcome_unknown",
    "internal",
]
ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]

LeaseMode = Literal["read", "write"]

_ID = Field(min_length=1, max_length=128, description="client-chosen id; retries reuse it")


class ArraySpec(BaseModel):
    """Metadata of one raw buffer frame: checked before ``np.frombuffer``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=32, description="the array's name, e.g. 'x'")
    dtype: DTypeName = Field(description="element type; bytes are little-endian")
    shape: tuple[Annotated[int, Field(ge=0)], ...] = Field(
        max_length=4, description="C-order (row-major) shape"
    )
    nbytes: int = Field(ge=0, description="prod(shape) * itemsize = length of the frame")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    REQUIRED_ARRAYS: ClassVar[tuple[str, ...]] = ()
    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = ()
    ONE_OF_ARRAYS: ClassVar[tuple[str, ...]] = ()
    """when set, exactly one of these (optional) arrays must be present"""
    ARRAY_GROUPS: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """(optional) arrays that travel together: all of a group or none of it"""

    version: int = Field(default=PROTOCOL_VERSION, description="protocol version")
    request_id: str = _ID
    arrays: tuple[ArraySpec, ...] = Field(
        default=(), max_length=4, description="specs of the buffer frames that follow, in order"
    )


# ---------------------------------------------------------------- requests


class _Request(_Message):
    session: str | None = Field(
        default=None,
        max_length=64,
        description="the session token of hello_reply (servers without CURVE): it, not the "
        "routing id, says who the client is; omitted under CURVE",
    )


class Hello(_Request):
    """Opens (or, with ``session``, resumes) a session."""

    kind: Literal["hello"] = "hello"
    client: str = Field(default="", max_length=128, description="free-form client name")


class InfoRequest(_Request):
    kind: Literal["info"] = "info"


class MvmRequest(_Request):
    """Exactly one of ``x`` (float32 inputs in [-1, 1]) or ``x_code`` (int8 DAC codes,
    ``x = x_code/127``; only to a device with the ``mvm_codes`` capability)."""

    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = ("x", "x_code")
    ONE_OF_ARRAYS: ClassVar[tuple[str, ...]] = ("x", "x_code")
    kind: Literal["mvm"] = "mvm"
    region: Region
    transpose: bool = Field(
        default=False,
        description="false: x drives the rows, y = x @ G_net (batch, cols); true: x drives "
        "the columns, y = x @ G_net.T (batch, rows); needs capability transpose_mvm",
    )


class ReadRequest(_Request):
    kind: Literal["read_conductances"] = "read_conductances"
    region: Region


class PulseRequest(_Request):
    """SET pulse counts either dense (``counts``) or sparse (``pulse_index``: uint32 flat
    C-order indices into ``(rows, cols, 4)``, strictly increasing; ``pulse_count``: uint8
    counts >= 1 of those devices; every other device gets 0): exactly one of the two."""

    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = (
        "counts",
        "pulse_index",
        "pulse_count",
        "reset_mask",
    )
    ONE_OF_ARRAYS: ClassVar[tuple[str, ...]] = ("counts", "pulse_index")
    ARRAY_GROUPS: ClassVar[tuple[tuple[str, ...], ...]] = (("pulse_index", "pulse_count"),)
    kind: Literal["apply_pulses"] = "apply_pulses"
    region: Region


class ResetRequest(_Request):
    kind: Literal["reset"] = "reset"
    region: Region


class ProgramRequest(_Request):
    REQUIRED_ARRAYS: ClassVar[tuple[str, ...]] = ("target_us",)
    kind: Literal["program"] = "program"
    region: Region
    tolerance_us: float = Field(description="stop when every |G_net - target| <= this (µS)")
    max_iterations: int = Field(description="program-and-verify rounds at most (1..limit)")


class AdvanceRequest(_Request):
    kind: Literal["advance"] = "advance"
    dt_s: float = Field(description="seconds to move the device clock, 0..315576000")


class TimeRequest(_Request):
    kind: Literal["time"] = "time"


class LeaseAcquire(_Request):
    kind: Literal["lease_acquire"] = "lease_acquire"
    region: Region
    mode: LeaseMode = Field(
        default="write", description="'write': exclusive; 'read': shared with other readers"
    )


class LeaseRelease(_Request):
    kind: Literal["lease_release"] = "lease_release"
    lease_id: str = Field(min_length=1, max_length=64, description="from lease_reply")


class Heartbeat(_Request):
    kind: Literal["heartbeat"] = "heartbeat"


class LeasesRequest(_Request):
    """The caller's own live leases and run reservations."""

    kind: Literal["leases"] = "leases"


class AuditRequest(_Request):
    """The server's audit trail, oldest first, filtered (all filters optional)."""

    kind: Literal["audit"] = "audit"
    since: float | None = Field(default=None, description="Unix time (s): rows at or after it")
    identity: str | None = Field(default=None, max_length=128)
    region: Region | None = Field(default=None, description="rows overlapping this region")
    limit: int = Field(default=10_000, ge=1, le=10_000)


class StatusRequest(_Request):
    kind: Literal["status"] = "status"


class WearRequest(_Request):
    """Per-device wear of ``region`` (SET pulses and RESETs since the ledger began)."""

    kind: Literal["wear"] = "wear"
    region: Region


class HealthRequest(_Request):
    """The latest health report the server keeps (``hil health``)."""

    kind: Literal["health"] = "health"


class HealthPut(_Request):
    """Keep a health report as the server's latest: the array ``report`` is its JSON text
    (uint8, UTF-8), an object of kind ``pcm-hil-health``."""

    REQUIRED_ARRAYS: ClassVar[tuple[str, ...]] = ("report",)
    kind: Literal["health_put"] = "health_put"


# ---------------------------------------------------------------- replies


class HelloReply(_Message):
    kind: Literal["hello_reply"] = "hello_reply"
    server: str
    client_id: str = Field(description="this client's identity (key:NAME or NAME-N)")
    session: str = Field(
        default="", description="token to send in every request ('' under CURVE); secret"
    )
    info: DeviceInfo
    heartbeat_interval_s: float = Field(gt=0)
    lease_ttl_s: float = Field(gt=0)


class InfoReply(_Message):
    kind: Literal["info_reply"] = "info_reply"
    info: DeviceInfo


class MvmReply(_Message):
    """``y`` (float32 µS) to an ``x`` request; ``y_code`` (int8 or int16 ADC codes,
    ``y = y_code·y_lsb_us``) to an ``x_code`` request."""

    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = ("y", "y_code")
    ONE_OF_ARRAYS: ClassVar[tuple[str, ...]] = ("y", "y_code")
    kind: Literal["mvm_reply"] = "mvm_reply"
    y_lsb_us: float | None = Field(default=None, gt=0, description="µS per ADC code")


class ReadReply(_Message):
    REQUIRED_ARRAYS: ClassVar[tuple[str, ...]] = ("g_us",)
    kind: Literal["read_conductances_reply"] = "read_conductances_reply"


class PulseReply(_Message):
    kind: Literal["apply_pulses_reply"] = "apply_pulses_reply"
    report: PulseReport


class ResetReply(_Message):
    kind: Literal["reset_reply"] = "reset_reply"
    report: ResetReport


class ProgramReply(_Message):
    kind: Literal["program_reply"] = "program_reply"
    report: ProgramReport


class AdvanceReply(_Message):
    kind: Literal["advance_reply"] = "advance_reply"
    report: AdvanceReport


class TimeReply(_Message):
    kind: Literal["time_reply"] = "time_reply"
    time_s: float = Field(description="the device clock (s)")


class LeaseReply(_Message):
    kind: Literal["lease_reply"] = "lease_reply"
    lease_id: str = Field(description="the lease's id (L<n>), for lease_release")
    region: Region
    mode: LeaseMode
    ttl_s: float = Field(gt=0, description="lease lapses this long after the last heartbeat")


class LeaseReleased(_Message):
    kind: Literal["lease_released"] = "lease_released"
    lease_id: str


class OwnLease(BaseModel):
    """A lease the caller holds (``leases_reply``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lease_id: str
    region: Region
    mode: LeaseMode
    request_id: str = Field(description="the request_id of the lease_acquire that took it")
    granted: float = Field(description="Unix time (s) it was granted")


class OwnReservation(BaseModel):
    """A run reservation the caller holds (``leases_reply``): server-allocated space of a
    run (docs/protocol.md, reservations)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reservation_id: str
    run_id: str
    name: str = Field(description="the run's name for the reserved space")
    region: Region
    whole_chip: bool = Field(description="the reservation holds its whole chip")
    created: float = Field(description="Unix time (s) it was made")
    expires: float = Field(description="Unix time (s) it lapses unless renewed")


class LeasesReply(_Message):
    """The caller's own live leases and run reservations, oldest first."""

    kind: Literal["leases_reply"] = "leases_reply"
    leases: tuple[OwnLease, ...]
    reservations: tuple[OwnReservation, ...] = ()


class HeartbeatReply(_Message):
    kind: Literal["heartbeat_reply"] = "heartbeat_reply"
    leases: int = Field(ge=0, description="leases this client still holds")


class AuditRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    time: float = Field(description="Unix time (s) the request was handled")
    identity: str
    run_id: str
    verb: str
    chip: int | None
    row0: int | None
    row1: int | None
    col0: int | None
    col1: int | None
    pulses: int = Field(description="SET pulses the request applied (0 if refused)")
    outcome: str = Field(description="'ok' or the error code")
    request_id: str


class AuditReply(_Message):
    kind: Literal["audit_reply"] = "audit_reply"
    rows: tuple[AuditRow, ...]


class ClientStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str
    last_seen_s: float = Field(description="seconds since its last message")
    requests: int = Field(ge=0)
    leases: int = Field(ge=0)


class LeaseStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lease_id: str
    identity: str
    region: Region
    mode: LeaseMode


class ChipUse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chip: int
    leased_fraction: float = Field(ge=0, le=1, description="share of cells under a lease")
    set_pulses: int = Field(ge=0, description="SET pulses in the wear ledger")
    resets: int = Field(ge=0, description="RESETs in the wear ledger")


class StatusReply(_Message):
    kind: Literal["status_reply"] = "status_reply"
    server: str
    server_version: str = Field(description="pcm-hil version of the server")
    protocol: int
    uptime_s: float
    driver: str
    preset: str
    state_dir: str | None
    clients: tuple[ClientStatus, ...]
    leases: tuple[LeaseStatus, ...]
    request_rates: dict[str, float] = Field(description="verb -> requests/s, last 60 s")
    chips: tuple[ChipUse, ...]
    temperatures_c: dict[str, float] = Field(description="board/lab thermometers, if any")


class WearReply(_Message):
    REQUIRED_ARRAYS: ClassVar[tuple[str, ...]] = ("set_pulses", "resets")
    kind: Literal["wear_reply"] = "wear_reply"


class HealthReply(_Message):
    """The kept health report as the array ``report`` (JSON text, uint8); absent: none."""

    OPTIONAL_ARRAYS: ClassVar[tuple[str, ...]] = ("report",)
    kind: Literal["health_reply"] = "health_reply"


class ErrorReply(_Message):
    """A typed failure. ``request_id`` is the request's id whenever its header parsed as
    a JSON object with a well-formed ``request_id``; ``"-"`` only when it did not."""

    kind: Literal["error"] = "error"
    code: ErrorCode = Field(description="what went wrong (docs/protocol.md, Errors)")
    message: str = Field(description="one line for a person: the bad value and the fix")


RequestMessage = (
    Hello
    | InfoRequest
    | MvmRequest
    | ReadRequest
    | PulseRequest
    | ResetRequest
    | ProgramRequest
    | AdvanceRequest
    | TimeRequest
    | LeaseAcquire
    | LeaseRelease
    | Heartbeat
    | LeasesRequest
    | AuditRequest
    | WearRequest
    | HealthRequest
    | HealthPut
    | StatusRequest
)
"""Every request model (the static type of a decoded request)."""
ReplyMessage = (
    HelloReply
    | InfoReply
    | MvmReply
    | ReadReply
    | PulseReply
    | ResetReply
    | ProgramReply
    | AdvanceReply
    | TimeReply
    | LeaseReply
    | LeaseReleased
    | HeartbeatReply
    | LeasesReply
    | AuditReply
    | WearReply
    | HealthReply
    | StatusReply
    | ErrorReply
)
"""Every reply model (the static type of a decoded reply)."""
AnyMessage = RequestMessage | ReplyMessage

Request = Annotated[RequestMessage, Field(discriminator="kind")]
Reply = Annotated[ReplyMessage, Field(discriminator="kind")]
Message = Annotated[AnyMessage, Field(discriminator="kind")]

REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)
REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)

STATE_CHANGING_KINDS = frozenset({"apply_pulses", "reset", "program", "advance"})
"""Request kinds that change a chip; their ``request_id`` makes retries idempotent."""
LEASE_KINDS = frozenset({"lease_acquire", "lease_release"})
"""Request kinds that change the lease table; idempotent by ``request_id`` too."""
