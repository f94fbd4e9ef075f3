"""docs/schema/ is the JSON Schema of the current models (a stale copy fails here, which is
how CI checks it), and real messages validate against it while loose types do not."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from protocols import PROTOCOL_VERSION, Region, encode
from protocols.messages import (
    AdvanceRequest,
    ErrorReply,
    LeaseAcquire,
    LeaseReply,
    LeasesReply,
    MvmReply,
    MvmRequest,
    OwnLease,
    ProgramRequest,
    PulseRequest,
)
from protocols.schema import ARRAYS, _message_classes, main, schemas, stale, write

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"
R = Region(0, 0, 2, 0, 3)


def test_committed_schema_is_fresh() -> None:
    problems = stale(SCHEMA_DIR)
    assert not problems, (
        f"docs/schema is stale ({'; '.join(problems[:5])}); regenerate it with "
        f"'python -m protocols.schema --out docs/schema' and commit the result"
    )


def test_staleness_is_detected(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale(tmp_path) == [] and main(["--out", str(tmp_path), "--check"]) == 0
    mvm = tmp_path / "messages" / "mvm.json"
    mvm.write_text(mvm.read_text().replace('"transpose"', '"transposed"'))
    (tmp_path / "messages" / "old_verb.json").write_text("{}")
    (tmp_path / "reply.json").unlink()
    problems = stale(tmp_path)
    assert "messages/mvm.json differs" in problems
    assert "messages/old_verb.json is not generated (delete it)" in problems
    assert "reply.json missing" in problems
    assert main(["--out", str(tmp_path), "--check"]) == 1


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(schemas()[name])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


REQUESTS = [
    MvmRequest(request_id="a", region=R, transpose=True),
    PulseRequest(request_id="b", region=R),
    ProgramRequest(request_id="c", region=R, tolerance_us=0.5, max_iterations=4),
    AdvanceRequest(request_id="d", dt_s=3),
    LeaseAcquire(request_id="e", region=R, session="tok"),
]
REPLIES = [
    MvmReply(request_id="a", y_lsb_us=0.25),
    LeaseReply(request_id="e", lease_id="L1", region=R, mode="read", ttl_s=10),
    LeasesReply(
        request_id="f",
        leases=(OwnLease(lease_id="L1", region=R, mode="write", request_id="e", granted=1.5),),
    ),
    ErrorReply(request_id="-", code="bad_request", message="no"),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: m.kind)
def test_requests_validate_against_the_schema(msg) -> None:  # type: ignore[no-untyped-def]
    arrays = {
        "mvm": {"x": np.zeros((1, 2), np.float32)},
        "apply_pulses": {"counts": np.zeros((2, 3, 4), np.uint8)},
        "program": {"target_us": np.zeros((2, 3), np.float32)},
    }.get(msg.kind)
    header = json.loads(encode(msg, arrays)[0])
    _validator("request.json").validate(header)
    _validator(f"messages/{msg.kind}.json").validate(header)


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: m.kind)
def test_replies_validate_against_the_schema(msg) -> None:  # type: ignore[no-untyped-def]
    header = json.loads(msg.model_dump_json())
    _validator("reply.json").validate(header)


@pytest.mark.parametrize(
    ("field", "value"),
    [("transpose", "true"), ("transpose", 1), ("version", PROTOCOL_VERSION - 1), ("extra", 1)],
)
def test_the_schema_refuses_what_the_server_refuses(field: str, value: object) -> None:
    x = {"x": np.zeros((1, 2), np.float32)}
    header = json.loads(encode(MvmRequest(request_id="a", region=R), x)[0])
    _validator("messages/mvm.json").validate(header)
    header[field] = value
    with pytest.raises(jsonschema.ValidationError):
        _validator("messages/mvm.json").validate(header)
    header = json.loads(encode(MvmRequest(request_id="a", region=R), x)[0])
    header["region"]["chip"] = "0"
    with pytest.raises(jsonschema.ValidationError):
        _validator("request.json").validate(header)


def test_the_schema_names_each_kinds_buffers() -> None:
    mvm = json.loads(schemas()["messages/mvm.json"])
    arrays = mvm["x-arrays"]
    assert arrays["optional"] == arrays["one_of"] == ["x", "x_code"] and arrays["required"] == []
    assert arrays["arrays"]["x_code"]["dtype"] == ["int8"]
    pulses = json.loads(schemas()["messages/apply_pulses.json"])
    assert pulses["x-arrays"]["required"] == []
    assert pulses["x-arrays"]["one_of"] == ["counts", "pulse_index"]
    assert pulses["x-arrays"]["together"] == [["pulse_index", "pulse_count"]]
    # every array a message can carry is described, and nothing else
    for cls in _message_classes():
        kind = cls.model_fields["kind"].default
        names = set(cls.REQUIRED_ARRAYS) | set(cls.OPTIONAL_ARRAYS)
        assert set(ARRAYS.get(kind, {})) == names, kind
    assert pulses["properties"]["version"]["const"] == PROTOCOL_VERSION
