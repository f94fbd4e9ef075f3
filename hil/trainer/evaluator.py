"""Scoring a network on a task's valid and test splits, through its backend.

:meth:`Evaluator.scores` runs the task's evaluation with the backend's drift compensation
in force; :meth:`Evaluator.epoch_scores` is the end-of-epoch evaluation of a training run:

1. the drift-compensation reference is taken right after training (if
   ``device.drift_compensation`` is not ``none``): a fixed probe through every matrix;
2. ``device.eval_delay_s`` passes on the device clock (virtual-clock devices);
3. a fresh probe read sets each matrix's compensation, then valid and test are scored.

``hil runs eval`` (:mod:`hil.trainer.evaluate`) uses the same :meth:`scores` after
letting hours or days pass.
"""

from __future__ import annotations

import numpy as np

from hil.learning import Network
from hil.tasks.spec import TaskData
from hil.trainer.backend import Backend, DriftReference
from hil.trainer.config import DeviceSection

SPLITS = ("valid", "test")


class Evaluator:
    """Valid/test metric of ``net`` on ``task`` through ``backend``."""

    def __init__(
        self, task: TaskData, metric: str, net: Network, backend: Backend, device: DeviceSection
    ) -> None:
        self.task, self.metric, self.net, self.backend, self.dev = (
            task,
            metric,
            net,
            backend,
            device,
        )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Readout outputs ``o`` (T, B, k) of a time-major input batch."""
        return self.net.forward(x.astype(np.float32)).o

    def scores(self, refs: DriftReference | None = None, mode: str = "none") -> dict[str, float]:
        """``valid_<metric>`` and ``test_<metric>`` now, compensated against ``refs``."""
        with self.backend.compensate(refs, mode):
            return {f"{s}_{self.metric}": self.task.evaluate(self.logits, s) for s in SPLITS}

    def epoch_scores(self) -> dict[str, float]:
        """The end-of-epoch evaluation (see the module docstring)."""
        if not self.backend.on_device:
            return self.scores()
        mode = self.dev.drift_compensation
        refs = self.backend.drift_reference() if mode != "none" else None
        self.backend.let_time_pass(self.dev.eval_delay_s, "eval-delay")
        return self.scores(refs, mode)
