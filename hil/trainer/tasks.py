"""The trainer's view of a task: batches, a training metric and an evaluation metric.

- ``jsb``: next-step prediction of 88-key piano rolls; metric NLL (learning-rules.md §5,
  lower is better); sigmoid readout with BCE.
- ``shd``: Spiking Heidelberg Digits classification; metric accuracy (higher is better) of
  ``argmax_k Σ_t softmax(o_t)_k``; leaky-integrator readout with softmax cross-entropy
  over time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hil.errors import DataError
from hil.tasks import jsb
from hil.tasks.datasource import comparability
from hil.tasks.pianoroll import N_KEYS, PianoRollSplits

if TYPE_CHECKING:  # h5py is imported only when an SHD run loads its data
    from hil.tasks.shd import ShdBinning, ShdSet

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Time-major ``x`` (T, B, m), ``target`` (T, B, k), ``mask`` (T, B)."""
Logits = Callable[[np.ndarray], np.ndarray]


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


class Task(Protocol):
    name: str
    metric: Literal["nll", "accuracy"]
    n_in: int
    n_out: int
    source: str
    comparable: bool
    """the test metric is comparable to published numbers"""
    comparable_why: str
    fingerprint: str | None
    """content identity of the data (sha256 of the source file), the same for two copies"""

    @property
    def n_train(self) -> int: ...

    def train_batch(self, idx: Sequence[int]) -> Batch: ...
    def batch_score(self, o: np.ndarray, batch: Batch) -> tuple[float, int]: ...
    def evaluate(self, logits: Logits, split: str) -> float: ...


def better(metric: str, a: float, b: float) -> bool:
    """True when metric value ``a`` is better than ``b``."""
    return a > b if metric == "accuracy" else a < b


@dataclass
class JsbTask:
    """JSB Chorales over :class:`~hil.tasks.pianoroll.PianoRollSplits` (possibly truncated)."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    source: str
    name: str = "jsb"
    metric: Literal["nll", "accuracy"] = "nll"
    n_in: int = N_KEYS
    n_out: int = N_KEYS
    comparable: bool = False
    comparable_why: str = ""
    fingerprint: str | None = None

    @property
    def n_train(self) -> int:
        return len(self.train)

    def train_batch(self, idx: Sequence[int]) -> Batch:
        return tuple(jsb.make_batch([self.train[i] for i in idx]))  # type: ignore[return-value]

    def batch_score(self, o: np.ndarray, batch: Batch) -> tuple[float, int]:
        return jsb.nll_sum(o, jsb.JsbBatch(*batch))

    def evaluate(self, logits: Logits, split: str) -> float:
        return jsb.split_nll(logits, getattr(self, split))


@dataclass
class ShdTask:
    """SHD with a held-out validation split of the training file."""

    train_set: ShdSet
    valid_set: ShdSet
    test_set: ShdSet
    binning: ShdBinning
    source: str
    name: str = "shd"
    metric: Literal["nll", "accuracy"] = "accuracy"
    n_in: int = 700
    n_out: int = 20
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


def jsb_task(splits: PianoRollSplits, n_train: int | None, n_eval: int | None) -> JsbTask:
    def cut(rolls: list[np.ndarray], n: int | None) -> list[np.ndarray]:
        return list(rolls[:n] if n else rolls)

    comparable, why = comparability(splits, n_eval)
    return JsbTask(
        cut(splits.train, n_train),
        cut(splits.valid, n_eval),
        cut(splits.test, n_eval),
        splits.source,
        comparable=comparable,
        comparable_why=why,
        fingerprint=splits.meta.get("sha256"),
    )


def shd_task(
    cfg: ShdDataConfig, seed: int, n_train: int | None, n_eval: int | None, data_dir: Path | None
) -> ShdTask:
    from hil.tasks.shd import ShdBinning, load_shd, train_valid_split

    def where(p: Path | None, name: str) -> Path:
        if p is not None:
            return p
        if data_dir is None:
            raise DataError(
                f"SHD needs {name}: set shd.train_path/test_path in the config or HIL_DATA_DIR "
                f"(download shd_train.h5 and shd_test.h5 from the Zenke lab's SHD page)"
            )
        return data_dir / name

    full = load_shd(where(cfg.train_path, "shd_train.h5"))
    test = load_shd(where(cfg.test_path, "shd_test.h5"))
    train, valid = train_valid_split(full, cfg.valid_fraction, np.random.default_rng([seed, 3]))
    if n_train:
        train = train.subset(np.arange(min(n_train, len(train))))
    if n_eval:
        valid = valid.subset(np.arange(min(n_eval, len(valid))))
        test = test.subset(np.arange(min(n_eval, len(test))))
    binning = ShdBinning(cfg.n_steps, cfg.max_time_s, cfg.binary)
    return ShdTask(train, valid, test, binning, test.source)
