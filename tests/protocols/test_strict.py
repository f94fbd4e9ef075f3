"""Strict wire types: no string or boolean is coerced into a number or a flag, no float into
an integer; and every error after the header parsed names the request's id."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from protocols import (
    PROTOCOL_VERSION,
    MalformedMessage,
    MessageTooLarge,
    Region,
    VersionMismatchError,
    decode_request,
    encode,
)
from protocols.framing import MAX_HEADER_BYTES, peek_request_id
from protocols.messages import MvmRequest

REGION = {"chip": 0, "row0": 0, "row1": 2, "col0": 0, "col1": 2}
X_SPEC = {"name": "x", "dtype": "float32", "shape": [1, 2], "nbytes": 8}
COUNTS_SPEC = {"name": "counts", "dtype": "uint8", "shape": [2, 2, 4], "nbytes": 16}
TARGET_SPEC = {"name": "target_us", "dtype": "float32", "shape": [2, 2], "nbytes": 16}
BUFFERS = {"x": b"\0" * 8, "counts": b"\0" * 16, "target_us": b"\0" * 16}


def _msg(kind: str, **fields: Any) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "request_id": "r-1", "kind": kind, **fields}


VALID: dict[str, dict[str, Any]] = {
    "hello": _msg("hello", client="c"),
    "mvm": _msg("mvm", region=REGION, transpose=False, arrays=[X_SPEC]),
    "apply_pulses": _msg("apply_pulses", region=REGION, arrays=[COUNTS_SPEC]),
    "program": _msg(
        "program", region=REGION, tolerance_us=0.5, max_iterations=3, arrays=[TARGET_SPEC]
    ),
    "advance": _msg("advance", dt_s=1.5),
    "lease_acquire": _msg("lease_acquire", region=REGION, mode="write"),
    "lease_release": _msg("lease_release", lease_id="L1"),
    "audit": _msg("audit", since=0.0, limit=10),
    "wear": _msg("wear", region=REGION),
}

# (kind, path to the field, a loosely typed value lax pydantic would have accepted)
LOOSE = [
    ("mvm", ("transpose",), 1),
    ("mvm", ("transpose",), "true"),
    ("mvm", ("transpose",), "false"),
    ("mvm", ("region", "chip"), "0"),
    ("mvm", ("region", "chip"), True),
    ("mvm", ("region", "row1"), 2.0),
    ("wear", ("region", "col1"), "2"),
    ("program", ("tolerance_us",), "0.5"),
    ("program", ("tolerance_us",), True),
    ("program", ("max_iterations",), "3"),
    ("program", ("max_iterations",), 3.0),
    ("program", ("max_iterations",), True),
    ("advance", ("dt_s",), "1.5"),
    ("advance", ("dt_s",), False),
    ("audit", ("limit",), "10"),
    ("audit", ("limit",), 10.0),
    ("audit", ("since",), "0"),
    ("lease_release", ("lease_id",), 1),
    ("hello", ("client",), 7),
    ("hello", ("session",), 123),
    ("lease_acquire", ("mode",), 1),
    ("mvm", ("arrays", 0, "nbytes"), "8"),
    ("mvm", ("arrays", 0, "shape", 0), "1"),
    ("mvm", ("arrays", 0, "shape", 0), 1.0),
]


def _frames(header: dict[str, Any]) -> list[bytes]:
    return [json.dumps(header).encode()] + [BUFFERS[s["name"]] for s in header.get("arrays", [])]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_the_valid_headers_pass(kind: str) -> None:
    msg, _ = decode_request(_frames(VALID[kind]))
    assert msg.kind == kind


@pytest.mark.parametrize(("kind", "path", "value"), LOOSE)
def test_loose_types_are_refused_with_the_request_id(
    kind: str, path: tuple[Any, ...], value: Any
) -> None:
    header = copy.deepcopy(VALID[kind])
    node = header
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(MalformedMessage) as err:
        decode_request(_frames(header))
    assert err.value.request_id == "r-1"
    assert err.value.code == "bad_request"
    assert str(path[-1]) in str(err.value) or path[-1] == 0


def test_region_is_strict_in_python_too_but_takes_numpy_integers() -> None:
    assert Region(np.int64(1), 0, 2, 0, 2).chip == 1
    for bad in (True, "1", 1.0):
        with pytest.raises(ValueError, match="must be an integer"):
            Region(bad, 0, 2, 0, 2)


def test_integers_are_numbers() -> None:
    # an integer is a valid number: 1 for a float field is no coercion
    msg, _ = decode_request(_frames(_msg("advance", dt_s=1)))
    assert msg.dt_s == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("version", [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, "3", None, 3.0])
def test_other_versions_are_their_own_error_with_the_id(version: Any) -> None:
    header = {**VALID["advance"], "version": version}
    with pytest.raises(VersionMismatchError) as err:
        decode_request(_frames(header))
    assert err.value.request_id == "r-1" and err.value.code == "version_mismatch"


@pytest.mark.parametrize(
    ("header", "buffers"),
    [
        ({**VALID["advance"], "extra": 1}, []),  # unknown field
        ({**VALID["mvm"], "arrays": []}, []),  # missing buffer
        (VALID["mvm"], [b"\0" * 4]),  # buffer of the wrong size
        ({**VALID["mvm"], "region": {**REGION, "row1": 0}}, [b"\0" * 8]),  # empty region
        ({**VALID["advance"], "kind": "nope"}, []),
    ],
)
def test_every_error_after_the_header_parsed_carries_its_id(
    header: dict[str, Any], buffers: list[bytes]
) -> None:
    with pytest.raises(MalformedMessage) as err:
        decode_request([json.dumps(header).encode(), *buffers])
    assert err.value.request_id == "r-1"


@pytest.mark.parametrize("rid", ["", "x" * 129, 5, None])
def test_a_malformed_request_id_is_not_echoed(rid: Any) -> None:
    with pytest.raises(MalformedMessage) as err:
        decode_request(_frames({**VALID["advance"], "request_id": rid}))
    assert err.value.request_id is None


def test_an_oversized_header_is_limit_exceeded() -> None:
    with pytest.raises(MessageTooLarge) as err:
        decode_request([b" " * (MAX_HEADER_BYTES + 1)])
    assert err.value.code == "limit_exceeded"
    assert peek_request_id(json.dumps(VALID["advance"]).encode()) == "r-1"
    assert peek_request_id(b"\xff") is None


def test_encode_round_trips_strictly() -> None:
    frames = encode(MvmRequest(request_id="m", region=Region(0, 0, 2, 0, 2), transpose=True),
                    {"x": np.zeros((3, 2), np.float32)})  # fmt: skip
    msg, arrays = decode_request(frames)
    assert msg.transpose is True and arrays["x"].shape == (3, 2)  # type: ignore[union-attr]
