"""The ``hil dashboard`` web app (Starlette): read-only pages and JSON endpoints.

Pages: ``/`` runs overview, ``/run/{root}/{name}`` one run, ``/compare?run=ID&run=ID``,
``/devices``. JSON: ``/api/runs``, ``/api/runs/{root}/{name}``,
``/api/runs/{root}/{name}/metrics?since=N`` (and ``/events``), ``…/matrices``,
``/api/compare?run=ID…``, ``/api/devices``. Static: ``/static/<file>`` including
``plotly.min.js`` from the installed plotly package. A run's id is ``<root>/<name>``: the
index of its ``--runs`` directory and its directory name.

Every request is checked against the token when one is set (``Authorization: Bearer T``,
the ``hil_token`` cookie, or ``?token=T``, which also sets the cookie), and its ``Host``
against ``allowed_hosts`` when given (a loopback bind allows only loopback names, which
stops DNS-rebinding pages from reading it). Bad run data give warnings, never a 500.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from hil.dashboard import arrays, rundata
from hil.dashboard.devices import Devices
from hil.dashboard.render import render, static_file
from hil.fsio import dumps
from hil.trainer.runs import list_runs

TOKEN_COOKIE = "hil_token"
NAME_RE = re.compile(r"^[^/\\]+$")


class JSON(JSONResponse):
    """Strict JSON (NaN/inf as null) of run data, numpy values included."""

    def render(self, content: Any) -> bytes:
        return dumps(rundata.jsonable(content)).encode("utf-8")


class TokenCheck(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        auth = request.headers.get("authorization", "")
        bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        query = request.query_params.get("token")
        if self._ok(bearer) or self._ok(request.cookies.get(TOKEN_COOKIE)):
            return await call_next(request)
        if self._ok(query):
            response = await call_next(request)
            response.set_cookie(TOKEN_COOKIE, query, httponly=True, samesite="strict")
            return response
        return PlainTextResponse(
            "401: this dashboard needs its token: open it as /?token=T or send "
            "'Authorization: Bearer T'",
            status_code=401,
        )


class Runs:
    """The ``--runs`` directories and lookup of a run by ``root``/``name``."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(r) for r in roots]

    def all(self) -> list[tuple[str, Path]]:
        out = []
        for i, root in enumerate(self.roots):
            out += [(f"{i}/{run.path.name}", run.path) for run in list_runs(root)]
        return out

    def find(self, run_id: str) -> Path | None:
        root, _, name = run_id.partition("/")
        if not root.isdigit() or not NAME_RE.match(name) or name in (".", ".."):
            return None
        i = int(root)
        if i >= len(self.roots):
            return None
        base = self.roots[i]
        for path in (base / name, base):
            if path.name == name and (path / "config.json").is_file():
                return path
        return None


def create_app(
    runs: Sequence[Path],
    devices: Sequence[str] = (),
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    refresh_s: float = 2.0,
) -> Starlette:
    """The app over run directories ``runs`` and ``hil serve`` URLs ``devices``."""
    store = Runs(runs)
    watch = Devices(list(devices))
    page_ctx = {"static": False, "inline": {}, "refresh_ms": int(refresh_s * 1000)}

    def run_or_404(run_id: str) -> Path:
        path = store.find(run_id)
        if path is None:
            raise LookupError(run_id)
        return path

    def page(template: str, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(render(template, **page_ctx, **ctx))

    async def overview_page(request: Request) -> HTMLResponse:
        return page("overview.html", title="Runs")

    async def run_page(request: Request) -> Any:
        run_id = f"{request.path_params['root']}/{request.path_params['name']}"
        if store.find(run_id) is None:
            return PlainTextResponse(f"404: no run {run_id}", status_code=404)
        return page("run.html", title=request.path_params["name"], run_id=run_id, data=None)

    async def compare_page(request: Request) -> HTMLResponse:
        return page("compare.html", title="Compare")

    async def devices_page(request: Request) -> HTMLResponse:
        return page("devices.html", title="Devices")

    def api_runs(request: Request) -> JSON:
        rows = [rundata.safe_overview(path, run_id) for run_id, path in store.all()]
        return JSON({"runs": rows, "roots": [str(r) for r in store.roots]})

    def api_run(request: Request) -> JSON:
        run_id = f"{request.path_params['root']}/{request.path_params['name']}"
        path = store.find(run_id)
        if path is None:
            return JSON({"error": f"no run {run_id}"}, status_code=404)
        part = request.path_params.get("part")
        if part is None:
            return JSON(rundata.detail(path, run_id))
        if part == "matrices":
            return JSON(arrays.matrices(path))
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSON({"error": "since must be an integer"}, status_code=400)
        return JSON(rundata.records_since(path, f"{part}.jsonl", since))

    def api_compare(request: Request) -> JSON:
        ids = request.query_params.getlist("run")
        found = [(i, store.find(i)) for i in ids]
        missing = [i for i, p in found if p is None]
        out = []
        configs = []
        for run_id, path in found:
            if path is None:
                continue
            row = rundata.safe_overview(path, run_id)
            records, warnings = rundata.read_records(path / "metrics.jsonl")
            row["metrics"] = records
            row["warnings"] = row["warnings"] + [w for w in warnings if w not in row["warnings"]]
            out.append(row)
            configs.append(rundata.read_json(path / "config.json", []))
        return JSON(
            {
                "runs": out,
                "differing": rundata.differing_keys(configs),
                "missing": missing,
            }
        )

    def api_devices(request: Request) -> JSON:
        return JSON({"devices": watch.poll()})

    def static(request: Request) -> Any:
        path = static_file(request.path_params["name"])
        if path is None:
            return PlainTextResponse("404: no such file", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=300"})

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    if token is not None:
        middleware.append(Middleware(TokenCheck, token=token))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        watch.close()

    app = Starlette(
        routes=[
            Route("/", overview_page),
            Route("/run/{root:int}/{name}", run_page),
            Route("/compare", compare_page),
            Route("/devices", devices_page),
            Route("/api/runs", api_runs),
            Route("/api/runs/{root:int}/{name}", api_run),
            Route("/api/runs/{root:int}/{name}/{part:str}", api_run_part(api_run)),
            Route("/api/compare", api_compare),
            Route("/api/devices", api_devices),
            Route("/static/{name}", static),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    return app


def api_run_part(handler: Any) -> Any:
    """Only the known parts of a run (metrics, events, matrices) are routes."""

    def part(request: Request) -> Any:
        if request.path_params["part"] not in ("metrics", "events", "matrices"):
            return JSON({"error": "unknown part"}, status_code=404)
        return handler(request)

    return part
