"""The operator's end-of-run report: ``report.html``, the static export of the run page.

It is the page ``hil dashboard`` shows for the run (:mod:`hil.dashboard.export`): the same
template and script, with the run's data, the scripts and plotly's bundled JavaScript
inlined, so the two never disagree and the report opens offline as one file. It holds the
learning curves, the per-epoch table, SET pulses and refreshed cells per epoch, the
programming quality (errors per matrix, target against programmed weights), conductance
histograms and a net-conductance heat map per matrix, the drift evaluation when there is
one, the config, device and environment, and the events log.
"""

from __future__ import annotations

from pathlib import Path

from hil.trainer.runs import RunDir


def write_report(run: RunDir, metric: str | None = None) -> Path:
    """Write ``RUN/report.html`` atomically; returns its path.

    ``metric`` (``nll`` or ``accuracy``) is what the page plots; by default the page takes
    it from the run (its summary, else its metric records).
    """
    from hil.dashboard.export import write_static_run_page

    return write_static_run_page(run.path, run.report_file, metric=metric)
