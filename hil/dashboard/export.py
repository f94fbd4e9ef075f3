"""The static export of the dashboard's run page: ``report.html``, one self-contained file.

It is the same template (``run.html``) and script (``run.js``) as the live page; the data
the live page polls from ``/api/runs/…`` (detail, metrics, events, matrices) are embedded
as JSON, and the stylesheet, the scripts and plotly's bundled ``plotly.min.js`` are inlined,
so the file opens offline, without a server, wherever it is copied. Needs no web server
packages (only jinja2 and plotly).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hil.dashboard import arrays, rundata
from hil.dashboard.render import inline_assets, render
from hil.fsio import atomic_write_bytes

ASSETS = ("dashboard.css", "common.js", "run.js", "plotly.min.js")


def run_page_data(run: Path, run_id: str = "", metric: str | None = None) -> dict[str, Any]:
    """Everything the run page shows, as its JSON endpoints give it (``metric`` overrides
    the metric the page plots)."""
    detail = rundata.detail(run, run_id or run.name)
    if metric is not None:
        detail["metric"] = metric
    return {
        "detail": detail,
        "metrics": rundata.records_since(run, "metrics.jsonl", 0),
        "events": rundata.records_since(run, "events.jsonl", 0),
        "matrices": arrays.matrices(run),
        "exported": time.time(),
    }


def static_run_page(run: Path, metric: str | None = None) -> str:
    """The run page of ``run`` as one HTML document with its data and scripts inlined."""
    data = rundata.jsonable(run_page_data(run, metric=metric))
    return render(
        "run.html",
        static=True,
        inline=inline_assets(*ASSETS),
        refresh_ms=0,
        title=run.name,
        run_id=run.name,
        data=data,
    )


def write_static_run_page(run: Path, dest: Path, metric: str | None = None) -> Path:
    """Write :func:`static_run_page` of ``run`` to ``dest`` atomically; returns ``dest``."""
    atomic_write_bytes(dest, static_run_page(run, metric).encode("utf-8"))
    return dest
