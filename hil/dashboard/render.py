"""Templates and static files shared by the web app and the static ``report.html``.

One renderer: the run page of ``hil dashboard`` and the ``report.html`` written at the end
of a run are the same template (``run.html``) and the same script (``run.js``). The app
serves the script files and plotly's bundled ``plotly.min.js`` (from the installed
``plotly`` package, nothing fetched at run time); the static export inlines them together
with the run's data, so ``report.html`` works offline as a single file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"


def plotly_js_path() -> Path:
    """plotly.js as bundled in the ``plotly`` Python package."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly")
    return path


def static_file(name: str) -> Path | None:
    """A file the pages load from ``/static/``: ours, or plotly's bundle; None if unknown."""
    if name == "plotly.min.js":
        return plotly_js_path()
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file():
        return None
    return path


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """A page; ``context`` needs ``static`` (bool) and, for a static page, ``inline``."""
    return environment().get_template(template).render(**context)


def inline_assets(*names: str) -> dict[str, str]:
    """Contents of static files by name, for a self-contained page."""
    return {n: static_file(n).read_text(encoding="utf-8") for n in names}  # type: ignore[union-attr]
