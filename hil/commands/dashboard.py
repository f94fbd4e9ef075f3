"""``hil dashboard [--runs DIR …] [--device URL …] [--bind HOST:PORT] [--token T]``.

A read-only web app (optional extra ``dashboard``) over run directories and ``hil serve``
servers. It binds to loopback by default; a non-loopback bind is refused without a token
(``--token`` or ``HIL_DASHBOARD_TOKEN``), which is then checked on every request.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from pathlib import Path

from hil.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_TOKEN_CHARS = 16


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); raises ConfigError with the form."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--bind {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (and a token too short to be one)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"--token must be at least {MIN_TOKEN_CHARS} characters; make one with: "
            f"python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"refusing to serve run data on {host}, which is not a loopback address, without "
            f"a token: pass --token T (or set HIL_DASHBOARD_TOKEN), or bind 127.0.0.1"
        )


def _run(args: argparse.Namespace) -> int:
    host, port = parse_bind(args.bind)
    token = args.token or os.environ.get("HIL_DASHBOARD_TOKEN") or None
    check_exposure(host, token)
    try:
        import uvicorn

        from hil.dashboard.app import create_app
        from hil.dashboard.devices import check_device_url
    except ImportError as exc:
        raise ConfigError(
            f"hil dashboard needs the 'dashboard' extra ({exc.name} is missing): "
            f"pip install 'pcm-hil[dashboard]'"
        ) from None
    try:
        devices = [check_device_url(u) for u in args.device]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    runs = args.runs or [Path("runs")]
    for d in runs:
        if not d.is_dir():
            print(f"hil dashboard: note: {d} does not exist (yet); its runs appear once it does")
    allowed = None if not is_loopback(host) else ["localhost", "127.0.0.1", "[::1]", "::1"]
    app = create_app(runs, devices, token=token, allowed_hosts=allowed, refresh_s=args.refresh)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    suffix = "/?token=…" if token else "/"
    print(f"dashboard on http://{shown}:{bound}{suffix}", flush=True)
    config = uvicorn.Config(
        app, log_level=args.log_level_http, access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="web dashboard: runs (live), compare, device servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs",
        action="append",
        type=Path,
        metavar="DIR",
        help="a directory of runs (or one run), repeatable (default: runs)",
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="URL",
        help="a 'hil serve' server to watch, tcp://host:port or ipc://path "
        "(?server_key=…&client_key=… with CURVE), repeatable",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8765; port 0 picks a free one)",
    )
    p.add_argument(
        "--token",
        help="required for a non-loopback --bind; checked on every request "
        "(default: $HIL_DASHBOARD_TOKEN)",
    )
    p.add_argument(
        "--refresh", type=float, default=2.0, metavar="S", help="page refresh period (default 2)"
    )
    p.add_argument(
        "--log-level-http",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default warning)",
    )
    p.set_defaults(func=_run)
