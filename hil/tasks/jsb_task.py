"""The JSB Chorales task: next-step prediction of 88-key piano rolls.

Metric: NLL (learning-rules.md §5): the binary cross-entropy of the sigmoid readout summed
over the 88 keys, averaged over every predicted frame (lower is better). Settings: the
``data`` section of a run config (:class:`~hil.tasks.datasource.JsbDataConfig`, where the
data come from). Readout bias ``key_frequency``: the log-odds of each key's frequency in
the training targets, so training starts from the constant predictor instead of chance.
Baselines: the constant per-key predictor and logistic regression from the previous step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hil.tasks import jsb
from hil.tasks.baselines import ConstantPredictor, LogisticPredictor
from hil.tasks.datasource import JsbDataConfig, comparability, describe, resolve_jsb
from hil.tasks.pianoroll import N_KEYS, PianoRollSplits
from hil.tasks.spec import Batch, LoadContext, Logits, TaskData, TaskSpec


@dataclass
class JsbTask:
    """JSB over :class:`~hil.tasks.pianoroll.PianoRollSplits` (possibly truncated)."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    source: str
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


def jsb_task(splits: PianoRollSplits, n_train: int | None, n_eval: int | None) -> JsbTask:
    """A :class:`JsbTask` of ``splits`` cut to ``n_train`` / ``n_eval`` sequences."""

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


def load(settings: JsbDataConfig, ctx: LoadContext) -> JsbTask:
    splits = resolve_jsb(settings, progress=ctx.progress)
    task = jsb_task(splits, ctx.max_train, ctx.max_eval)
    print(f"data: {describe(splits)}", flush=True)
    print(f"      {comparable_line(task)}", flush=True)
    return task


def comparable_line(task: JsbTask) -> str:
    """Whether the run's test NLL can be set beside published numbers, in words."""
    if task.comparable:
        return f"test NLL comparable to published numbers ({task.comparable_why})"
    return f"test NLL NOT comparable to published numbers: {task.comparable_why}"


def _jsb(data: TaskData) -> JsbTask:
    if not isinstance(data, JsbTask):
        raise TypeError(f"expected the JSB task's data, got {type(data).__name__}")
    return data


def key_frequency_bias(data: TaskData) -> np.ndarray:
    """Log-odds of each key's training frequency (the constant predictor's logits)."""
    p = ConstantPredictor.fit(_jsb(data)).p
    return np.log(p) - np.log1p(-p)


def baselines(data: TaskData) -> dict[str, float]:
    """Test NLL of the constant per-key predictor and of logistic regression."""
    jsb_data = _jsb(data)
    return {
        "constant": ConstantPredictor.fit(jsb_data).nll(jsb_data.test),
        "logistic": LogisticPredictor.fit(jsb_data).nll(jsb_data.test),
    }


TASK = TaskSpec(
    name="jsb",
    section="data",
    settings=JsbDataConfig,
    n_in=N_KEYS,
    n_out=N_KEYS,
    loss="bce",
    metric="nll",
    higher_is_better=False,
    load=load,
    readout_bias={"key_frequency": key_frequency_bias},
    baselines=baselines,
)
