"""JSON Schema of every wire message, generated from the pydantic models.

``python -m protocols.schema --out docs/schema`` writes

- ``request.json`` and ``reply.json``: the discriminated unions (field ``kind``) a server
  accepts and a client receives;
- ``messages/KIND.json``: one schema per message kind.

Each message's schema carries ``x-arrays`` (the buffers that follow the header:
``required``, ``optional``, ``one_of`` and ``together`` names, and per array its accepted dtypes,
shape, unit and meaning; docs/protocol.md §2, §6) and pins
``version`` to :data:`~protocols.messages.PROTOCOL_VERSION`. Validation is strict
(docs/protocol.md, "Types"): a JSON string or boolean never stands for a number, a
non-integral number never for an integer. ``--check`` compares instead of writing and
exits 1 when the committed files are stale (the test suite does the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from protocols.messages import (
    PROTOCOL_VERSION,
    REPLY_ADAPTER,
    REQUEST_ADAPTER,
    ReplyMessage,
    RequestMessage,
)

_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _message_classes() -> list[type[Any]]:
    return [*get_args(RequestMessage), *get_args(ReplyMessage)]


_INTEGERS = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"]
ARRAYS: dict[str, dict[str, dict[str, Any]]] = {
    # kind -> array name -> accepted dtypes, shape, unit and meaning (docs/protocol.md §6)
    "mvm": {
        "x": {"dtype": ["float32", "float64"], "shape": "(batch, rows); (batch, cols) if "
              "transpose", "unit": "", "meaning": "inputs in [-1, 1], finite; float32 on "
              "the device"},
        "x_code": {"dtype": ["int8"], "shape": "as x", "unit": "", "meaning": "DAC codes "
                   "in [-127, 127], x = x_code/127 (capability mvm_codes)"},
    },
    "mvm_reply": {
        "y": {"dtype": ["float32"], "shape": "(batch, cols); (batch, rows) if transpose",
              "unit": "µS", "meaning": "y = x_q @ G_net (G_net.T if transpose)"},
        "y_code": {"dtype": ["int8", "int16"], "shape": "as y", "unit": "y_lsb_us",
                   "meaning": "ADC codes: y = float32(y_code) * float32(y_lsb_us)"},
    },
    "read_conductances_reply": {
        "g_us": {"dtype": ["float32"], "shape": "(rows, cols, 4)", "unit": "µS",
                 "meaning": "one read of each device, order A+, B+, A-, B-"},
    },
    "apply_pulses": {
        "counts": {"dtype": _INTEGERS, "shape": "(rows, cols, 4)", "unit": "pulses",
                   "meaning": "SET pulses per device, 0..limits.max_pulses_per_device "
                   "(dense form)"},
        "pulse_index": {"dtype": ["uint32"], "shape": "(k,)", "unit": "", "meaning":
                        "sparse form: flat C-order indices into (rows, cols, 4) of the "
                        "devices that get pulses, strictly increasing, < rows*cols*4"},
        "pulse_count": {"dtype": ["uint8"], "shape": "(k,)", "unit": "pulses",
                        "meaning": "sparse form: SET pulses of the device at the same "
                        "position of pulse_index, 1..limits.max_pulses_per_device"},
        "reset_mask": {"dtype": ["bool"], "shape": "(rows, cols, 4)", "unit": "",
                       "meaning": "devices RESET before the SET pulses"},
    },
    "program": {
        "target_us": {"dtype": ["float32", "float64"], "shape": "(rows, cols)",
                      "unit": "µS", "meaning": "net conductance targets G_net = ((A+ + B+)"
                      " - (A- + B-))/2, |value| <= info.g_net_max_us; float32 on the device"},
    },
    "wear_reply": {
        "set_pulses": {"dtype": ["int64"], "shape": "(rows, cols, 4)", "unit": "pulses",
                       "meaning": "SET pulses per device in the wear ledger"},
        "resets": {"dtype": ["int64"], "shape": "(rows, cols, 4)", "unit": "RESETs",
                   "meaning": "RESETs per device in the wear ledger"},
    },
    "health_put": {
        "report": {"dtype": ["uint8"], "shape": "(n,)", "unit": "bytes", "meaning": "UTF-8 "
                   "JSON text of a hil health report (an object of kind pcm-hil-health), "
                   "at most 32 MiB"},
    },
    "health_reply": {
        "report": {"dtype": ["uint8"], "shape": "(n,)", "unit": "bytes", "meaning": "UTF-8 "
                   "JSON text of the kept hil health report; absent: none kept"},
    },
}  # fmt: skip
"""What the framing cannot say: each array's dtypes, shape, unit and meaning."""


def _annotate(schema: dict[str, Any], cls: type[Any]) -> dict[str, Any]:
    """Add ``x-arrays`` and the pinned version to the object schema of ``cls``."""
    kind = cls.model_fields["kind"].default
    schema["x-arrays"] = {
        "required": list(cls.REQUIRED_ARRAYS),
        "optional": list(cls.OPTIONAL_ARRAYS),
        "one_of": list(cls.ONE_OF_ARRAYS),
        "together": [list(g) for g in cls.ARRAY_GROUPS],
        "arrays": ARRAYS.get(kind, {}),
    }
    schema["properties"]["version"]["const"] = PROTOCOL_VERSION
    return schema


def _union(adapter: Any, title: str) -> dict[str, Any]:
    schema: dict[str, Any] = adapter.json_schema()
    by_name = {cls.__name__: cls for cls in _message_classes()}
    for name, sub in schema.get("$defs", {}).items():
        if name in by_name:
            _annotate(sub, by_name[name])
    return {"$schema": _SCHEMA_DIALECT, "title": title, **schema}


def schemas() -> dict[str, str]:
    """Relative path -> file text of every schema file (deterministic)."""
    files: dict[str, Any] = {
        "request.json": _union(REQUEST_ADAPTER, f"pcm-hil request (protocol {PROTOCOL_VERSION})"),
        "reply.json": _union(REPLY_ADAPTER, f"pcm-hil reply (protocol {PROTOCOL_VERSION})"),
    }
    for cls in _message_classes():
        kind = cls.model_fields["kind"].default
        schema = _annotate(cls.model_json_schema(), cls)
        files[f"messages/{kind}.json"] = {"$schema": _SCHEMA_DIALECT, **schema}
    return {
        path: json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
        for path, obj in sorted(files.items())
    }


def stale(out: Path) -> list[str]:
    """Files under ``out`` that differ from, lack or outlive the generated schemas."""
    want = schemas()
    have = {
        str(p.relative_to(out)): p for p in sorted(out.rglob("*.json")) if p.is_file()
    }  # fmt: skip
    problems = [f"{p} missing" for p in want if p not in have]
    problems += [f"{p} is not generated (delete it)" for p in have if p not in want]
    problems += [
        f"{p} differs"
        for p, text in want.items()
        if p in have and have[p].read_text(encoding="utf-8") != text
    ]
    return problems


def write(out: Path) -> list[Path]:
    """Write every schema under ``out`` (removing generated files no longer produced)."""
    want = schemas()
    for p in out.rglob("*.json"):
        if str(p.relative_to(out)) not in want:
            p.unlink()
    written = []
    for rel, text in want.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocols.schema", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("docs/schema"), help="target folder")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files under --out are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for line in problems:
            print(f"{args.out}: {line}", file=sys.stderr)
        if problems:
            print(f"regenerate with: python -m protocols.schema --out {args.out}", file=sys.stderr)
        return 1 if problems else 0
    written = write(args.out)
    print(f"wrote {len(written)} schema files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
