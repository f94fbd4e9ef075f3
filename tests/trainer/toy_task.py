"""A toy task in one module, as a researcher would add one: echo the input spikes.

Input: ``n`` channels of random spikes (density ``density``) over ``n_steps`` steps; target:
the same spikes (the network must pass each channel through its hidden layer). Metric: the
fraction of (step, channel) bits the sigmoid readout gets right at threshold 0 (higher is
better); predicting silence scores ``1 − density``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hil.tasks.spec import Batch, LoadContext, Logits, TaskData, TaskSpec

N = 4


class ToySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_items: int = Field(default=64, ge=4)
    n_steps: int = Field(default=8, ge=1)
    density: float = Field(default=0.3, gt=0, lt=1)


@dataclass
class ToyData:
    x: dict[str, np.ndarray]  # split -> (items, T, N)
    source: str
    comparable = False
    comparable_why = "a toy task"
    fingerprint = None

    @property
    def n_train(self) -> int:
        return len(self.x["train"])

    def _batch(self, split: str, idx: Sequence[int]) -> Batch:
        x = np.ascontiguousarray(self.x[split][list(idx)].transpose(1, 0, 2))
        return x, x.copy(), np.ones(x.shape[:2], dtype=np.float32)

    def train_batch(self, idx: Sequence[int]) -> Batch:
        return self._batch("train", idx)

    def batch_score(self, o: np.ndarray, batch: Batch) -> tuple[float, int]:
        right = ((o > 0) == (batch[1] > 0.5)).mean(axis=(0, 2))
        return float(right.sum()), int(right.size)

    def evaluate(self, logits: Logits, split: str) -> float:
        batch = self._batch(split, range(len(self.x[split])))
        score, count = self.batch_score(logits(batch[0]), batch)
        return score / count


def load(settings: ToySettings, ctx: LoadContext) -> ToyData:
    rng = np.random.default_rng([ctx.seed, 7])
    shape = (settings.n_items, settings.n_steps, N)
    x = {
        s: (rng.random(shape) < settings.density).astype(np.float32)
        for s in ("train", "valid", "test")
    }
    if ctx.max_train:
        x["train"] = x["train"][: ctx.max_train]
    return ToyData(x, f"toy:seed={ctx.seed}")


def silence(data: TaskData) -> np.ndarray:
    """Readout bias that predicts no spike anywhere."""
    return np.full(N, -3.0)


TASK = TaskSpec(
    name="toy",
    section="toy",
    settings=ToySettings,
    n_in=N,
    n_out=N,
    loss="bce",
    metric="bits",
    higher_is_better=True,
    load=load,
    readout_bias={"silence": silence},
    baselines=lambda data: {"silence": 0.7},
)
