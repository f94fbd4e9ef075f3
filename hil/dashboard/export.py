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


def run_page_data(run: Path, run_id: str = "") -> dict[str, Any]:
    """Everything the run page shows, as its JSON endpoints give it."""
    return {
        "detail": rundata.detail(run, run_id or run.name),
        "metrics": rundata.records_since(run, "metrics.jsonl", 0),
        "events": rundata.records_since(run, "events.jsonl", 0),
        "matrices": arrays.matrices(run),
        "exported": time.time(),
    }


def static_run_page(run: Path) -> str:
    """The run page of ``run`` as one HTML document with its data and scripts inlined."""
    data = rundata.jsonable(run_page_data(run))
    return render(
        "run.html",
        static=True,
        inline=inline_assets(*ASSETS),
        refresh_ms=0,
        title=run.name,
        run_id=run.name,
        data=data,
    )


def write_static_run_page(run: Path, dest: Path) -> Path:
    """Write :func:`static_run_page` of ``run`` to ``dest`` atomically; returns ``dest``."""
    atomic_write_bytes(dest, static_run_page(run).encode("utf-8"))
    return dest
