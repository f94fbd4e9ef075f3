"""A pcm-hil wire client written from docs/protocol.md alone: pyzmq, json and numpy only.

It imports nothing of the project on purpose (the test of the document is that this is
enough); tests/drivers/test_wire_client.py runs it against a real ``hil serve`` and
compares its results with ``RemoteDriver``'s. Section numbers (§) refer to
docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

VERSION = 3  # §10
DTYPES = {  # §2: name -> little-endian numpy dtype
    "bool": "|b1",
    "int8": "|i1",
    "uint8": "|u1",
    "int16": "<i2",
    "uint16": "<u2",
    "int32": "<i4",
    "int64": "<i8",
    "float32": "<f4",
    "float64": "<f8",
}
NAME_OF = {np.dtype(v): k for k, v in DTYPES.items()}


class WireError(Exception):
    """An ``error`` reply (§8)."""

    def __init__(self, header: dict[str, Any]) -> None:
        super().__init__(f"{header['code']}: {header['message']}")
        self.code: str = header["code"]
        self.request_id: str = header["request_id"]
        self.header = header


class NoReply(Exception):
    """No reply within the client's timeout."""


def read_key_file(path: str | Path) -> dict[str, bytes]:
    """``{"public-key": Z85, "secret-key": Z85}`` of a key file (§12: the value between the
    double quotes of the line whose first word is public-key / secret-key)."""
    keys = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0] in ("public-key", "secret-key") and '"' in line:
            keys[words[0]] = line.split('"')[1].encode("ascii")
    return keys


def new_id() -> str:
    return uuid.uuid4().hex


class WireClient:
    """One DEALER socket to a ``hil serve`` (§1), optionally with CURVE (§12)."""

    def __init__(
        self,
        endpoint: str,
        *,
        server_key_file: str | Path | None = None,
        client_key_file: str | Path | None = None,
        routing_id: bytes | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.routing_id = routing_id or f"w-{uuid.uuid4().hex[:16]}".encode()
        self.session: str | None = None
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if server_key_file is not None and client_key_file is not None:
            server = read_key_file(server_key_file)
            mine = read_key_file(client_key_file)
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, server["public-key"])
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, mine["public-key"])
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, mine["secret-key"])
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        self.sock.connect(endpoint)

    def close(self) -> None:
        if self.sock.closed:
            return
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- handshake
    def handshake(self, timeout_s: float = 30.0) -> str:
        """The first handshake outcome the monitor reports: ``"ok"``, ``"auth"`` (key
        refused), ``"protocol"`` or ``"no_detail"`` (§12)."""
        names = {
            zmq.EVENT_HANDSHAKE_SUCCEEDED: "ok",
            zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
        }
        if not self.monitor.poll(int(timeout_s * 1000)):
            raise NoReply(f"no handshake with {self.endpoint} within {timeout_s} s")
        return names[recv_monitor_message(self.monitor)["event"]]

    # ---------------------------------------------------------------- framing (§2)
    def frames(
        self,
        kind: str,
        arrays: dict[str, np.ndarray] | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> tuple[str, list[bytes]]:
        """``(request_id, [header, *buffers])`` of one request."""
        rid = request_id or new_id()
        specs, buffers = [], []
        for name, arr in (arrays or {}).items():
            a = np.ascontiguousarray(arr)
            dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
            a = a.astype(np.dtype(DTYPES[NAME_OF[np.dtype(dtype)]]), copy=False)
            specs.append(
                {"name": name, "dtype": NAME_OF[a.dtype], "shape": list(a.shape),
                 "nbytes": a.nbytes}
            )  # fmt: skip
            buffers.append(a.tobytes(order="C"))
        header: dict[str, Any] = {"version": VERSION, "kind": kind, "request_id": rid, **fields}
        if specs:
            header["arrays"] = specs
        if self.session and kind != "hello":  # §5: every request but hello carries it
            header["session"] = self.session
        return rid, [json.dumps(header, allow_nan=False).encode("utf-8"), *buffers]

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def receive(self, request_id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The reply carrying ``request_id`` (or ``"-"``, §4); others are dropped."""
        while self.sock.poll(self.timeout_ms):
            frames = self.sock.recv_multipart()
            header = json.loads(frames[0].decode("utf-8"))
            if header.get("version") != VERSION:  # §10: check the version first
                raise WireError(
                    {"code": "version_mismatch", "request_id": header.get("request_id", "-"),
                     "message": f"server speaks version {header.get('version')!r}"}
                )  # fmt: skip
            if header["request_id"] not in (request_id, "-"):
                continue
            arrays = {}
            specs = header.get("arrays", [])
            if len(specs) != len(frames) - 1:
                raise ValueError(f"{len(specs)} specs but {len(frames) - 1} buffers")
            for spec, buf in zip(specs, frames[1:], strict=True):
                dtype = np.dtype(DTYPES[spec["dtype"]])
                count = math.prod(spec["shape"])
                if len(buf) != spec["nbytes"] or spec["nbytes"] != count * dtype.itemsize:
                    raise ValueError(f"array {spec['name']} has the wrong size")
                arrays[spec["name"]] = np.frombuffer(buf, dtype, count).reshape(spec["shape"])
            return header, arrays
        raise NoReply(f"no reply to {request_id} from {self.endpoint}")

    def call(
        self,
        kind: str,
        arrays: dict[str, np.ndarray] | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request and return its reply; an ``error`` reply raises WireError."""
        rid, frames = self.frames(kind, arrays, request_id, **fields)
        self.send(frames)
        header, out = self.receive(rid)
        if header["kind"] == "error":
            raise WireError(header)
        if header["kind"] != REPLY_KIND.get(kind, f"{kind}_reply"):
            raise ValueError(f"{kind} answered with {header['kind']}")
        return header, out

    # ---------------------------------------------------------------- verbs (§6)
    def hello(self, name: str = "wire", session: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"client": name}
        if session is not None:
            fields["session"] = session
        header, _ = self.call("hello", **fields)
        self.session = header["session"] or None  # "" under CURVE: nothing to send
        self.info_ = header["info"]
        return header

    def info(self) -> dict[str, Any]:
        return self.call("info")[0]["info"]

    def mvm(
        self, region: dict[str, int], x: np.ndarray, transpose: bool = False, codes: bool = False
    ) -> np.ndarray:
        """``y`` (float32 µS) of ``x``; with ``codes``, as DAC/ADC codes (§6, MVM as codes)."""
        if not codes:
            _, out = self.call("mvm", {"x": np.asarray(x, np.float32)}, region=region,
                               transpose=transpose)  # fmt: skip
            return out["y"]
        xq = np.multiply(np.asarray(x, np.float32), np.float32(127), dtype=np.float32)
        x_code = np.rint(xq).astype(np.int8)
        header, out = self.call("mvm", {"x_code": x_code}, region=region, transpose=transpose)
        return out["y_code"].astype(np.float32) * np.float32(header["y_lsb_us"])

    def read_conductances(self, region: dict[str, int]) -> np.ndarray:
        return self.call("read_conductances", region=region)[1]["g_us"]

    def apply_pulses(
        self,
        region: dict[str, int],
        counts: np.ndarray,
        reset_mask: np.ndarray | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        arrays = {"counts": counts}
        if reset_mask is not None:
            arrays["reset_mask"] = reset_mask
        return self.call("apply_pulses", arrays, request_id, region=region)[0]["report"]

    def reset(self, region: dict[str, int], request_id: str | None = None) -> dict[str, Any]:
        return self.call("reset", None, request_id, region=region)[0]["report"]

    def program(
        self,
        region: dict[str, int],
        target_us: np.ndarray,
        tolerance_us: float,
        max_iterations: int,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        header, _ = self.call(
            "program", {"target_us": np.asarray(target_us, np.float32)}, request_id,
            region=region, tolerance_us=tolerance_us, max_iterations=max_iterations,
        )  # fmt: skip
        return header["report"]

    def advance(self, dt_s: float, request_id: str | None = None) -> float:
        return self.call("advance", None, request_id, dt_s=dt_s)[0]["report"]["time_s"]

    def time(self) -> float:
        return self.call("time")[0]["time_s"]

    def lease_acquire(
        self, region: dict[str, int], mode: str = "write", request_id: str | None = None
    ) -> dict[str, Any]:
        return self.call("lease_acquire", None, request_id, region=region, mode=mode)[0]

    def lease_release(self, lease_id: str, request_id: str | None = None) -> dict[str, Any]:
        return self.call("lease_release", None, request_id, lease_id=lease_id)[0]

    def leases(self) -> dict[str, Any]:
        return self.call("leases")[0]

    def heartbeat(self) -> int:
        return self.call("heartbeat")[0]["leases"]

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        return self.call("audit", **filters)[0]["rows"]

    def status(self) -> dict[str, Any]:
        return self.call("status")[0]

    def wear(self, region: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        out = self.call("wear", region=region)[1]
        return out["set_pulses"], out["resets"]


REPLY_KIND = {  # request kind -> reply kind, where it is not KIND_reply (§6)
    "lease_acquire": "lease_reply",
    "lease_release": "lease_released",
}
