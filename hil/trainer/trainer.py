"""The trainer: epochs of batches of a task, on any backend, through one training step.

One batch: ``task.train_batch(idx)`` → :func:`hil.learning.train_step` (forward, the rule's
gradients, the optimiser's update — on a chip backend the update becomes SET pulses) →
``task.batch_score`` → ``backend.after_batch`` (device clock, refresh). At the end of an
epoch the :class:`~hil.trainer.evaluator.Evaluator` scores valid and test, one metrics
record is appended to the history (and to the run directory, if any), and a checkpoint is
committed. A checkpoint is also written every ``checkpoint_every`` batches and when the
operator presses Ctrl-C (then :class:`Interrupted` is raised).

The trainer works without a run directory (``run=None``: nothing is written), which is
how tests and sweeps can drive it in-process.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from hil.errors import HilError
from hil.faults import fault_point
from hil.learning import Network, OptimConfig, Optimizer, RuleConfig, train_step
from hil.tasks.spec import TaskData
from hil.trainer import checkpoint as ckpt
from hil.trainer.backend import Backend
from hil.trainer.config import RunConfig
from hil.trainer.evaluator import Evaluator
from hil.trainer.runs import RunDir

log = structlog.get_logger(__name__)


class Interrupted(HilError):
    """Training stopped at a batch boundary on the operator's request (checkpoint written)."""

    exit_code = 130  # the shell's convention for a command ended by SIGINT
    label = "stopped"  # the operator asked for it: not an error


@dataclass
class EpochStats:
    """Running training metric of the current epoch: ``score_sum / count``."""

    score_sum: float = 0.0
    count: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"score_sum": self.score_sum, "count": float(self.count)}

    @property
    def mean(self) -> float:
        return self.score_sum / max(self.count, 1)


class StopFlag:
    """SIGINT handler: the first Ctrl-C asks for a stop at the next batch boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> StopFlag:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop_requested", msg="finishing the batch, then writing a checkpoint")

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    """Trains ``net`` (built by ``backend``) on ``task`` as ``cfg`` says.

    Args:
        cfg: the run config (rule, optimiser, schedule, device section).
        task: the loaded task data.
        net: the network, its matrices built by ``backend``.
        backend: where the matrices live.
        run: the run directory to record into, or None.
        checkpointer: commits checkpoints (None: none are written).
        checkpoint_every: also checkpoint every N batches (0: at epoch ends only).
        progress: an object with ``start_epoch``/``batch_done``/``epoch_done``, or None.
        shuffle: the generator of each epoch's order (default: the run's seed stream).
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: TaskData,
        net: Network,
        backend: Backend,
        *,
        run: RunDir | None = None,
        checkpointer: ckpt.Checkpointer | None = None,
        checkpoint_every: int = 0,
        progress: Any = None,
        shuffle: np.random.Generator | None = None,
    ) -> None:
        self.cfg, self.task, self.net, self.backend = cfg, task, net, backend
        self._link_mark: tuple[int, int] | None = None
        self.run, self.checkpointer = run, checkpointer
        self.checkpoint_every, self.progress = checkpoint_every, progress
        self.rule = RuleConfig(cfg.rule.name, cfg.rule.traces, cfg.rule.reduction)
        o = cfg.optim
        self.opt = Optimizer(
            net.parameters(), OptimConfig(o.kind, o.lr, o.decay_factor, o.decay_every, o.clip_norm)
        )
        self.spec = cfg.task_spec
        self.metric = self.spec.metric
        self.evaluator = Evaluator(task, self.metric, net, backend, cfg.device)
        self.shuffle = shuffle if shuffle is not None else cfg.train.shuffle_rng()
        self.history: list[dict[str, Any]] = []
        self.epoch, self.batch = 0, 0
        self.order: list[int] = []
        self.partial = EpochStats()
        self.attempt = 0

    # ------------------------------------------------------------------ steps
    def train_batch(self, idx: Sequence[int]) -> tuple[float, int]:
        """One training step on items ``idx``; returns the task's ``(score sum, count)``."""
        batch = self.task.train_batch(idx)
        outcome = train_step(self.net, self.rule, self.opt, batch, self.cfg.rule.update)
        return self.task.batch_score(outcome.o, batch)

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.task.n_train // self.cfg.train.batch_size)

    def _link_metrics(self) -> dict[str, Any]:
        """Bytes on the device link since the last record (training, evaluation and the
        per-epoch reads) and, for a serial link, their time at its baud rate (8N1: 10 bits
        per byte). Nothing for an in-process device; a resumed epoch counts from the resume."""
        link = self.backend.link_bytes()
        if link is None:
            return {}
        sent0, recv0 = self._link_mark or (0, 0)
        self._link_mark = (link[0], link[1])
        sent, recv = link[0] - sent0, link[1] - recv0
        out: dict[str, Any] = {
            "link_bytes": sent + recv,
            "link_bytes_sent": sent,
            "link_bytes_received": recv,
        }
        if link[2]:
            out["link_s_est"] = 10.0 * (sent + recv) / link[2]
        return out

    def run_epochs(self, epochs: int) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete; returns the metrics history."""
        link = self.backend.link_bytes()
        self._link_mark = None if link is None else (link[0], link[1])
        bs, n_batches = self.cfg.train.batch_size, self.batches_per_epoch
        with StopFlag() as stop:
            while self.epoch < epochs:
                self.opt.set_epoch(self.epoch)
                if self.batch == 0:
                    self.order = [int(i) for i in self.shuffle.permutation(self.task.n_train)]
                    self.partial = EpochStats()
                t0, c0 = time.perf_counter(), time.process_time()
                if self.progress is not None:
                    self.progress.start_epoch(self.epoch, epochs, n_batches, self.batch)
                while self.batch < n_batches:
                    s, n = self.train_batch(self.order[self.batch * bs : (self.batch + 1) * bs])
                    self.partial.score_sum += s
                    self.partial.count += n
                    self.batch += 1
                    self.backend.after_batch(self.batch)
                    if self.progress is not None:
                        self.progress.batch_done(self.metric, self.partial.mean)
                    if stop.requested:
                        self._interrupted(epochs)
                    if self.checkpoint_every and self.batch % self.checkpoint_every == 0:
                        self.save_checkpoint()
                self._end_epoch(t0, time.perf_counter() - t0, time.process_time() - c0)
                if self.progress is not None:
                    self.progress.epoch_done()
        return self.history

    def _end_epoch(self, t0: float, train_s: float, train_cpu_s: float) -> None:
        e0 = time.perf_counter()
        scores = self.evaluator.epoch_scores()
        eval_s = time.perf_counter() - e0
        record = {
            "epoch": self.epoch + 1,
            f"train_{self.metric}": self.partial.mean,
            **scores,
            "lr": self.opt.lr,
            **self.backend.epoch_metrics(),
            **self._link_metrics(),
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,
            "eval_s": eval_s,
            "epoch_s": time.perf_counter() - t0,
            "time": time.time(),
        }
        self.history.append(record)
        if self.run is not None:
            self.run.log_metrics(record)
            fault_point("epoch.metrics_logged")
        log.info("epoch", **{k: v for k, v in record.items() if k != "time"})
        self.epoch, self.batch = self.epoch + 1, 0
        self.save_checkpoint()

    def _interrupted(self, epochs: int) -> None:
        """Checkpoint and stop. Epochs are numbered from 1, as the progress bar shows them:
        the stop is in epoch ``epoch + 1`` after ``batch`` of its batches."""
        self.save_checkpoint()
        where = "" if self.run is None else f" --run-dir {shlex.quote(str(self.run.path))}"
        if self.run is not None:
            self.run.event(
                "interrupted", epoch=self.epoch, batch=self.batch, in_epoch=self.epoch + 1
            )
        raise Interrupted(
            f"on request, in epoch {self.epoch + 1}/{epochs} after batch "
            f"{self.batch}/{self.batches_per_epoch}; checkpoint written; "
            f"continue with: hil train --resume{where}"
        )

    # ------------------------------------------------------------ checkpoints
    def host_arrays(self) -> dict[str, np.ndarray]:
        """Host parameter values, and every device matrix's χ, counter and counters."""
        on_device = self.backend.device_params
        arrays = {
            name: np.array(p.value())  # type: ignore[union-attr]
            for name, p in self.net.parameters().items()
            if name not in on_device
        }
        return {**arrays, **self.backend.state()}

    def checkpoint(self) -> ckpt.Checkpoint:
        """The complete software state at this batch boundary."""
        return ckpt.Checkpoint(
            epoch=self.epoch,
            batch=self.batch,
            order=[int(i) for i in self.order],
            arrays=self.host_arrays(),
            rng_state=dict(self.shuffle.bit_generator.state),
            optim=self.opt.state_dict(),
            request_seq=self.backend.request_seq,
            attempt=self.attempt,
            history=self.history,
            partial=self.partial.as_dict(),
        )

    def save_checkpoint(self) -> None:
        if self.checkpointer is not None:
            ck = self.checkpoint()
            # a read of the device weights (one probe MVM per matrix), checked on resume
            ck.arrays.update(self.backend.fingerprint())
            self.checkpointer.save(ck, self.backend.snapshot)

    def load_weights(self, ck: ckpt.Checkpoint) -> None:
        """Host parameters and every device matrix's χ/counter/counters from ``ck``."""
        on_device = self.backend.device_params
        for name, p in self.net.parameters().items():
            if name not in on_device:
                p.assign(ck.arrays[name])  # type: ignore[union-attr]
        self.backend.load_state(ck.arrays)

    def restore(self, ck: ckpt.Checkpoint, attempt: int = 0) -> None:
        """Continue from ``ck`` as attempt ``max(attempt, ck.attempt + 1)`` (the chips'
        state is the backend's business)."""
        self.epoch, self.batch = ck.epoch, ck.batch
        self.order = list(ck.order)
        self.shuffle.bit_generator.state = ck.rng_state
        self.opt.load_state_dict(ck.optim)
        self.history = list(ck.history)
        self.partial = EpochStats(ck.partial.get("score_sum", 0.0), int(ck.partial.get("count", 0)))
        self.attempt = max(attempt, ck.attempt + 1)
        self.backend.resume_requests(self.attempt, ck.request_seq)
        self.load_weights(ck)
        if self.run is not None:
            self.run.rewrite_metrics(self.history)
