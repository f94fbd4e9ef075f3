"""The Spiking Heidelberg Digits task: spoken-digit classification from 700 input channels.

Metric: accuracy (higher is better) of ``argmax_k Σ_t softmax(o_t)_k`` over the sequence,
with a leaky-integrator readout trained by softmax cross-entropy over time. Settings: the
``shd`` section of a run config (:class:`ShdDataConfig`: the two ``.h5`` files and the
binning). The validation split is held out of the training file, per class, with the run's
seed. Baseline: chance, 1/20.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hil.errors import DataError
from hil.tasks.spec import Batch, LoadContext, Logits, TaskData, TaskSpec

if TYPE_CHECKING:  # h5py is imported only when an SHD run loads its data
    from hil.tasks.shd import ShdBinning, ShdSet

N_CHANNELS, N_CLASSES = 700, 20


class ShdDataConfig(BaseModel):
    """Where the SHD files are and how spikes become steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_path: Path | None = None
    """``shd_train.h5``; default ``$HIL_DATA_DIR/shd_train.h5``"""
    test_path: Path | None = None
    """``shd_test.h5``; default ``$HIL_DATA_DIR/shd_test.h5``"""
    n_steps: int = Field(default=100, ge=1)
    max_time_s: float = Field(default=1.0, gt=0)
    binary: bool = True
    valid_fraction: float = Field(default=0.1, gt=0, lt=1)


@dataclass
class ShdTask:
    """SHD with a held-out validation split of the training file."""

    train_set: ShdSet
    valid_set: ShdSet
    test_set: ShdSet
    binning: ShdBinning
    source: str
    eval_batch: int = 128
    comparable: bool = True
    comparable_why: str = "the SHD test file"
    fingerprint: str | None = None

    @property
    def n_train(self) -> int:
        return len(self.train_set)

    def train_batch(self, idx: Sequence[int]) -> Batch:
        return self.train_set.batch(np.asarray(idx), self.binning)

    @staticmethod
    def _correct(o: np.ndarray, target: np.ndarray) -> np.ndarray:
        z = o - o.max(axis=-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        return p.sum(axis=0).argmax(axis=-1) == target[0].argmax(axis=-1)

    def batch_score(self, o: np.ndarray, batch: Batch) -> tuple[float, int]:
        return float(self._correct(o, batch[1]).sum()), int(o.shape[1])

    def evaluate(self, logits: Logits, split: str) -> float:
        data = {"valid": self.valid_set, "test": self.test_set}[split]
        n = len(data)
        correct = 0
        for k in range(0, n, self.eval_batch):
            x, target, _ = data.batch(np.arange(k, min(k + self.eval_batch, n)), self.binning)
            correct += int(self._correct(logits(x), target).sum())
        return correct / max(n, 1)


def load(settings: ShdDataConfig, ctx: LoadContext) -> ShdTask:
    from hil.tasks.shd import ShdBinning, load_shd, train_valid_split

    def where(p: Path | None, name: str) -> Path:
        if p is not None:
            return p
        if ctx.data_dir is None:
            raise DataError(
                f"SHD needs {name}: set shd.train_path/test_path in the config or HIL_DATA_DIR "
                f"(download shd_train.h5 and shd_test.h5 from the Zenke lab's SHD page)"
            )
        return ctx.data_dir / name

    full = load_shd(where(settings.train_path, "shd_train.h5"))
    test = load_shd(where(settings.test_path, "shd_test.h5"))
    rng = np.random.default_rng([ctx.seed, 3])
    train, valid = train_valid_split(full, settings.valid_fraction, rng)
    if ctx.max_train:
        train = train.subset(np.arange(min(ctx.max_train, len(train))))
    if ctx.max_eval:
        valid = valid.subset(np.arange(min(ctx.max_eval, len(valid))))
        test = test.subset(np.arange(min(ctx.max_eval, len(test))))
    binning = ShdBinning(settings.n_steps, settings.max_time_s, settings.binary)
    return ShdTask(train, valid, test, binning, test.source)


def baselines(data: TaskData) -> dict[str, float]:
    """Chance accuracy."""
    return {"chance": 1.0 / N_CLASSES}


TASK = TaskSpec(
    name="shd",
    section="shd",
    settings=ShdDataConfig,
    n_in=N_CHANNELS,
    n_out=N_CLASSES,
    loss="ce_over_time",
    metric="accuracy",
    higher_is_better=True,
    load=load,
    baselines=baselines,
)
