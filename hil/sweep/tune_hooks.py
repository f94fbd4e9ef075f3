"""Ray Tune hooks of a sweep (imported only once Ray runs): progress and ASHA bookkeeping.

Tune pickles its callbacks and scheduler with the experiment state, so they hold only
plain data and find the (unpicklable) terminal view through :data:`VIEWS`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from hil.sweep import results
from hil.sweep.trial import state_dir

VIEWS: dict[str, Any] = {}
"""sweep directory -> its :class:`hil.sweep.progress.SweepProgress` (this process only)"""


def _tid(trial: Any) -> str:
    return trial.config["job"]["trial"]["id"]


class ProgressCallback(Callback):
    """Feeds Tune's trial states (running, pending) to the view; writes sweep.json live, and
    appends every change of the set of running trials to ``.sweep/schedule.jsonl`` (time,
    running ids, ids waiting for a chip): what ran when, as Ray scheduled it."""

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir
        self._last: tuple[list[str], list[str]] | None = None

    def _view(self) -> Any:
        return VIEWS.get(self.sweep_dir)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        state = {}
        for tr in trials:
            job = tr.config["job"]["trial"]
            if tr.status == "RUNNING":
                state[job["id"]] = "running"
            elif tr.status == "PENDING":
                state[job["id"]] = "waiting for a chip" if job["resource"] else "queued"
        self._log_schedule(state)
        view = self._view()
        if view is None:
            return
        view.state = state
        view.refresh()

    def _log_schedule(self, state: dict[str, str]) -> None:
        now = (
            sorted(k for k, v in state.items() if v == "running"),
            sorted(k for k, v in state.items() if v == "waiting for a chip"),
        )
        if now == self._last:
            return
        self._last = now
        line = json.dumps({"time": time.time(), "running": now[0], "waiting_for_chip": now[1]})
        with open(state_dir(Path(self.sweep_dir)) / "schedule.jsonl", "a") as f:
            f.write(line + "\n")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view = self._view()
        if view is not None:
            view.state.pop(_tid(trial), None)
            view.refresh(write=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        err = trial.error_file
        try:
            text = Path(err).read_text().strip().splitlines()[-1] if err else "trial failed"
        except OSError:
            text = "trial failed"
        results.mark(Path(self.sweep_dir), "failed", _tid(trial), text[-300:])
        view = self._view()
        if view is not None:
            view.state.pop(_tid(trial), None)
            view.refresh(write=True)


class RecordingASHA(ASHAScheduler):
    """ASHA that records which trials it stopped early (``.sweep/stopped/<id>``), so that
    ``--resume`` counts them as finished rather than running them again."""

    def __init__(self, sweep_dir: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.sweep_dir = sweep_dir

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get("epoch", 0) < self._max_t:
            results.mark(Path(self.sweep_dir), "stopped", _tid(trial))
        return decision
