"""Array framing: ``[header_json, *raw_buffers]``. Never pickle.

The header is the JSON of one message (:mod:`protocols.messages`); its ``arrays`` field
lists one :class:`~protocols.messages.ArraySpec` (name, dtype, shape, nbytes) per raw
buffer frame that follows, in order. Decoding checks, before any ``np.frombuffer``:

1. the header is at most :data:`MAX_HEADER_BYTES` (else :class:`MessageTooLarge`) of
   UTF-8 JSON holding an object;
2. ``version`` is the integer :data:`~protocols.messages.PROTOCOL_VERSION` (else
   :class:`VersionMismatchError`);
3. the message validates *strictly* against the request (or reply) union: no coercion of
   strings or booleans into numbers or flags, no floats into integers;
4. the number of buffer frames equals the number of specs, names are unique and are
   exactly the kind's required names plus allowed optional ones, with exactly one of
   its ``ONE_OF_ARRAYS`` and each of its ``ARRAY_GROUPS`` whole or absent;
5. each dtype is whitelisted, ``prod(shape) * itemsize == nbytes == len(buffer)`` and
   ``nbytes <= MAX_ARRAY_BYTES``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from protocols import MalformedMessage, MessageTooLarge, VersionMismatchError
from protocols.messages import (
    DTYPES,
    PROTOCOL_VERSION,
    REPLY_ADAPTER,
    REQUEST_ADAPTER,
    AnyMessage,
    ArraySpec,
    DTypeName,
    ReplyMessage,
    RequestMessage,
)

M = TypeVar("M", RequestMessage, ReplyMessage)

MAX_HEADER_BYTES = 64 * 1024
"""Largest header frame (bytes of UTF-8 JSON)."""
MAX_ARRAY_BYTES = 256 * 1024 * 1024
"""Largest array buffer the framing accepts (the server's message bound is tighter)."""
MAX_BODY_FRAMES = 5
"""Frames of a message (after a ROUTER's routing id): a header and at most 4 arrays."""
MAX_MESSAGE_BYTES = 64 * 2**20
"""Largest message a ``hil serve`` accepts, all frames together (and any one frame: a
larger frame makes libzmq drop the connection, ZMQ_MAXMSGSIZE). The largest valid request,
a batch-4096 float64 MVM input, is 8 MiB."""
MAX_REQUEST_ID_CHARS = 128

_NAME_OF_DTYPE: dict[np.dtype, DTypeName] = {
    np.dtype(v): k  # type: ignore[misc]  # DTYPES' keys are exactly the DTypeName literals
    for k, v in DTYPES.items()
}


def _dtype_name(arr: np.ndarray) -> DTypeName:
    name = _NAME_OF_DTYPE.get(arr.dtype)  # fast path: equal only to a little-endian dtype
    if name is not None:
        return name
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    name = _NAME_OF_DTYPE.get(np.dtype(dt.str.replace("=", "<")))
    if name is None:
        raise MalformedMessage(
            f"dtype {arr.dtype} cannot travel on the wire; use one of {sorted(DTYPES)}"
        )
    return name


def encode(
    message: AnyMessage, arrays: Mapping[str, np.ndarray] | None = None
) -> list[bytes | memoryview]:
    """Frames of ``message`` with ``arrays`` attached as raw little-endian C-order buffers.

    Args:
        message: a request or reply model from :mod:`protocols.messages`; its own
            ``arrays`` field is replaced by the specs of ``arrays``.
        arrays: name -> array; names must match the kind's required/optional arrays.

    Returns:
        ``[header_json_bytes, *buffers]``; buffers are byte views of the (contiguous)
        arrays, not copies: do not modify the arrays until the frames are sent.
    """
    names: list[str] = []
    specs: list[str] = []
    buffers: list[bytes | memoryview] = []
    for name, arr in (arrays or {}).items():
        a = np.asarray(arr)
        dname = _dtype_name(a)
        a = np.require(a, dtype=np.dtype(DTYPES[dname]), requirements="C")
        # computed from the array itself: nothing to validate (decoding checks specs); the
        # JSON of its ArraySpec written directly (a model per array costs more than the
        # rest of the header)
        shape = ",".join(map(str, a.shape))
        specs.append(
            f'{{"name":{json.dumps(name)},"dtype":"{dname}","shape":[{shape}],"nbytes":{a.nbytes}}}'
        )
        names.append(name)
        buffers.append(a.data.cast("B") if a.size else b"")  # no copy
    _check_names(message, names)
    # the message's own ``arrays`` are replaced by these specs (key order is immaterial)
    rest = message.model_dump_json(exclude=_ARRAYS).encode()
    head = b'{"arrays":[' + ",".join(specs).encode() + (b"]," if len(rest) > 2 else b"]")
    return [head + rest[1:], *buffers]


_ARRAYS = {"arrays"}


def _check_names(msg: AnyMessage, names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        raise MalformedMessage(f"duplicate array names {names} in a {msg.kind!r} message")
    required = set(msg.REQUIRED_ARRAYS)
    allowed = required | set(msg.OPTIONAL_ARRAYS)
    if missing := required - set(names):
        raise MalformedMessage(f"{msg.kind!r} message lacks array(s) {sorted(missing)}")
    if extra := set(names) - allowed:
        raise MalformedMessage(
            f"{msg.kind!r} message carries unexpected array(s) {sorted(extra)}; "
            f"allowed: {sorted(allowed)}"
        )
    one_of = set(msg.ONE_OF_ARRAYS)
    if one_of and len(one_of & set(names)) != 1:
        raise MalformedMessage(
            f"{msg.kind!r} message needs exactly one of the arrays {sorted(one_of)}, "
            f"got {sorted(one_of & set(names))}"
        )
    for group in msg.ARRAY_GROUPS:
        present = set(group) & set(names)
        if present and present != set(group):
            raise MalformedMessage(
                f"{msg.kind!r} message: the arrays {list(group)} travel together, "
                f"got only {sorted(present)}"
            )


def request_id_of(header: object) -> str | None:
    """The ``request_id`` of a decoded JSON header when it is well formed (a string of
    1-128 characters), else ``None``."""
    if isinstance(header, dict):
        rid = header.get("request_id")
        if isinstance(rid, str) and 1 <= len(rid) <= MAX_REQUEST_ID_CHARS:
            return rid
    return None


def peek_request_id(raw: bytes | memoryview) -> str | None:
    """The ``request_id`` of a raw header frame, if it parses (used to answer a message
    refused for its size with the id of its request); ``None`` otherwise."""
    if len(raw) > MAX_HEADER_BYTES:
        return None
    try:
        return request_id_of(json.loads(bytes(raw).decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _parse_header(raw: bytes | memoryview, adapter: TypeAdapter[M]) -> M:
    """Validate one header strictly (no coercion: ``"1"`` is no number, ``1`` no boolean).

    Every error raised after the JSON parsed carries the header's ``request_id`` (when it
    is well formed), so the error reply can be matched to its request."""
    if len(raw) > MAX_HEADER_BYTES:
        raise MessageTooLarge(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    raw = bytes(raw)
    try:
        # strict: JSON types must match the schema exactly (docs/protocol.md §3); one parse
        # on the good path, the diagnosis below only for a header that fails
        msg = adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        if "version" not in msg.model_fields_set or msg.version != PROTOCOL_VERSION:
            given = msg.version if "version" in msg.model_fields_set else None
            raise VersionMismatchError(_version_message(given), msg.request_id)
        return msg
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"header must be a JSON object, got {type(obj).__name__}")
    rid = request_id_of(obj)
    version = obj.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise VersionMismatchError(_version_message(version), rid)
    errs = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5]
    )
    raise MalformedMessage(f"invalid {obj.get('kind', '?')!r} message: {errs}", rid)


def _version_message(version: object) -> str:
    return (
        f"protocol version {version!r} is not supported; this side speaks version "
        f"{PROTOCOL_VERSION}. Upgrade the older of client and server."
    )


def _decode_arrays(msg: AnyMessage, buffers: Sequence[bytes | memoryview]) -> dict[str, np.ndarray]:
    try:
        return _arrays(msg, buffers)
    except MalformedMessage as exc:
        exc.request_id = msg.request_id  # the header parsed: the error names its request
        raise


def _arrays(msg: AnyMessage, buffers: Sequence[bytes | memoryview]) -> dict[str, np.ndarray]:
    specs: tuple[ArraySpec, ...] = msg.arrays
    if len(buffers) != len(specs):
        raise MalformedMessage(
            f"header lists {len(specs)} array(s) but {len(buffers)} buffer frame(s) followed"
        )
    _check_names(msg, [s.name for s in specs])
    out: dict[str, np.ndarray] = {}
    for spec, buf in zip(specs, buffers, strict=True):
        dtype = np.dtype(DTYPES[spec.dtype])
        count = math.prod(spec.shape)
        expected = count * dtype.itemsize
        if spec.nbytes != expected:
            raise MalformedMessage(
                f"array {spec.name!r}: nbytes={spec.nbytes} but shape {spec.shape} of "
                f"{spec.dtype} needs {expected}"
            )
        if spec.nbytes > MAX_ARRAY_BYTES:
            raise MalformedMessage(
                f"array {spec.name!r} of {spec.nbytes} bytes exceeds {MAX_ARRAY_BYTES}"
            )
        if len(buf) != spec.nbytes:
            raise MalformedMessage(
                f"array {spec.name!r}: header says {spec.nbytes} bytes, frame has {len(buf)}"
            )
        out[spec.name] = np.frombuffer(buf, dtype=dtype, count=count).reshape(spec.shape)
    return out


def decode_request(
    frames: Sequence[bytes | memoryview],
) -> tuple[RequestMessage, dict[str, np.ndarray]]:
    """Parse ``[header, *buffers]`` into a request model and its named read-only arrays."""
    if not frames:
        raise MalformedMessage("empty message: expected [header_json, *buffers]")
    msg = _parse_header(frames[0], REQUEST_ADAPTER)
    return msg, _decode_arrays(msg, frames[1:])


def decode_reply(
    frames: Sequence[bytes | memoryview],
) -> tuple[ReplyMessage, dict[str, np.ndarray]]:
    """Parse ``[header, *buffers]`` into a reply model and its named read-only arrays."""
    if not frames:
        raise MalformedMessage("empty message: expected [header_json, *buffers]")
    msg = _parse_header(frames[0], REPLY_ADAPTER)
    return msg, _decode_arrays(msg, frames[1:])
