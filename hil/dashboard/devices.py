"""The devices page's data: each ``hil serve`` server's ``status``, or its ``info``.

A server that answers the ``status`` request (clients, reservations, queue, request rates,
per-chip use and temperatures) is shown with it; an older server without that verb is
shown with what ``info`` and the hello reply give (identity, shape, capabilities, limits,
lease TTL, device clock). One connection per server is kept open and rebuilt after an
error; each query waits at most ``timeout_s`` and is never retried, so a dead server costs
one page refresh at most ``timeout_s``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

from drivers import DriverError, InvalidRequest
from drivers.remote import RemoteDriver
from protocols.models import CAP_TIME

SCHEMES = ("tcp", "ipc")


def check_device_url(url: str) -> str:
    """``url`` if it names a ``hil serve`` endpoint; raises ValueError with the fix otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not (parts.netloc or parts.path):
        raise ValueError(
            f"--device {url!r}: give a 'hil serve' address, tcp://host:port or ipc://path "
            f"(a sim:// or board:// device lives inside the process that opened it)"
        )
    known = {"server_key", "client_key", "timeout_s"}
    if unknown := set(parse_qs(parts.query)) - known:
        raise ValueError(f"--device {url!r}: unknown option(s) {sorted(unknown)}; known {known}")
    return url


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if callable(dump) else obj


class DeviceWatch:
    """Polls one server on demand (:meth:`poll`), keeping its connection between polls."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = check_device_url(url)
        parts = urlsplit(url)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.timeout_s = float(q.get("timeout_s", timeout_s))
        self.server_key, self.client_key = q.get("server_key"), q.get("client_key")
        self._driver: RemoteDriver | None = None
        self._lock = threading.Lock()

    def _connect(self) -> RemoteDriver:
        if self._driver is None:
            self._driver = RemoteDriver(
                self.endpoint,
                timeout_s=self.timeout_s,
                retries=0,
                client_name="hil-dashboard",
                heartbeats=False,
                server_key=self.server_key,
                client_key=self.client_key,
            )
        return self._driver

    def poll(self) -> dict[str, Any]:
        """``{url, ok, kind: status|info, data, error, polled}`` for this server."""
        out: dict[str, Any] = {"url": self.url, "polled": time.time()}
        with self._lock:
            try:
                driver = self._connect()
                status = getattr(driver, "status", None)
                data = None
                if callable(status):
                    try:
                        data, out["kind"] = _jsonable(status()), "status"
                    except InvalidRequest:  # a server without the status verb
                        data = None
                if data is None:
                    info = driver.refresh_info()
                    data = {
                        "info": info.model_dump(mode="json"),
                        "server": {
                            "lease_ttl_s": driver.lease_ttl_s,
                            "heartbeat_interval_s": driver.heartbeat_interval_s,
                        },
                    }
                    if info.has(CAP_TIME):
                        data["server"]["device_time_s"] = driver.time_s()
                    out["kind"] = "info"
                out.update(ok=True, data=data, error=None)
            except (DriverError, OSError) as exc:
                self.close_locked()
                out.update(ok=False, kind=None, data=None, error=f"{type(exc).__name__}: {exc}")
        return out

    def close_locked(self) -> None:
        if self._driver is not None:
            try:
                self._driver.close()
            except (DriverError, OSError):
                pass
            self._driver = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


class Devices:
    """All ``--device`` servers, polled in parallel."""

    def __init__(self, urls: list[str], timeout_s: float = 2.0) -> None:
        self.watches = [DeviceWatch(u, timeout_s) for u in urls]
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(urls))))

    def poll(self) -> list[dict[str, Any]]:
        return list(self._pool.map(lambda w: w.poll(), self.watches))

    def close(self) -> None:
        for w in self.watches:
            w.close()
        self._pool.shutdown(wait=False)
