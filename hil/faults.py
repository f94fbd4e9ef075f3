"""Named fault points: where a run directory is written, a test can kill the process.

Each write step of a run calls :func:`fault_point` with a name from :data:`FAULT_POINTS`.
Normally that does nothing. With ``HIL_FAULT=NAME`` (or ``NAME@N``: at the N-th time the
point is reached) in the environment, the process dies right there: ``SIGKILL`` to itself
(``HIL_FAULT_ACTION=kill``, the default: nothing is flushed, no ``finally`` runs) or an
:class:`InjectedFault` exception (``HIL_FAULT_ACTION=abort``). ``tests/trainer/
test_crash_points.py`` kills a run at every point and checks that ``hil train --resume``
then continues exactly or starts the run afresh, with nothing for a person to delete.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_FAULT, ENV_ACTION = "HIL_FAULT", "HIL_FAULT_ACTION"

FAULT_POINTS: dict[str, str] = {
    "run.created": "the run directory exists, config.json not yet written",
    "run.config_written": "config.json written, environment.json and data.json not yet",
    "run.data_recorded": "data.json written, the start event not yet",
    "run.device_recorded": "device.json written (chip runs), nothing programmed yet",
    "run.programmed": "chips programmed and placement.json written, no conductances saved",
    "checkpoint.snapshot_written": "the chips' snapshot chips-<n> written, arrays not yet",
    "checkpoint.arrays_written": "arrays-<n>.npz written, state.json not yet (uncommitted)",
    "checkpoint.committed": "state.json names generation n, older generations still there",
    "epoch.metrics_logged": "the epoch's metrics line appended, its checkpoint not yet",
    "run.trained": "the last epoch's checkpoint committed, summary.json not yet",
    "run.summary_written": "summary.json written, report.html not yet",
    "fsio.temp_written": "an atomic write's temp file written and synced, not yet renamed",
}
"""Every fault point and the state a kill there leaves behind."""

_hits: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """Raised at a fault point when ``HIL_FAULT_ACTION=abort``."""


def fault_point(name: str) -> None:
    """Die here if ``HIL_FAULT`` names this point (see the module docstring)."""
    spec = os.environ.get(ENV_FAULT)
    if not spec:
        return
    if name not in FAULT_POINTS:  # pragma: no cover - a typo in the code
        raise ValueError(f"unknown fault point {name!r}")
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] != (int(nth) if nth else 1):
        return
    if os.environ.get(ENV_ACTION, "kill") == "abort":
        raise InjectedFault(f"injected fault at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
