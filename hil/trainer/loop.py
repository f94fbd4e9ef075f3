"""The training loop: epochs of batches of a task (JSB, SHD), in software or through chips.

One batch (``rule.update = sequence``, the paper's form):

1. forward the time-major batch through the network; a layer without on-chip recurrence
   sends all T·B input vectors in one MVM request (:class:`DeviceMatrix.matmul`);
2. the rule computes ``∇θ = Σ_t L_t·e_t`` (traces on the host, learning signals ``y*·B``
   through chip 2) and the optimiser turns it into ``Δθ``;
3. each device matrix accumulates ``Δθ`` in χ and sends ``⌊|χ|/ε⌋`` SET pulses;
4. every ``device.refresh_every`` batches, saturated cells are refreshed.

``rule.update = step`` computes and applies an update after every time step instead
(fully online; on a device each step's update is its own pulse request).

At the end of an epoch: drift compensation is calibrated, the virtual clock advances by
``device.eval_delay_s`` (simulators), the valid and test metric are evaluated through the chips,
one metrics line and one log line are written, and a checkpoint is committed. A checkpoint
is also written every ``checkpoint_every`` batches and when the operator presses Ctrl-C.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from drivers.base import Driver
from hil.errors import HilError
from hil.learning import (
    OnlineLearner,
    OptimConfig,
    Optimizer,
    RuleConfig,
    frame_weights,
    sequence_grads,
)
from hil.trainer import checkpoint as ckpt
from hil.trainer.config import RunConfig
from hil.trainer.device_matrix import RequestIds
from hil.trainer.model import Model
from hil.trainer.runs import RunDir
from hil.trainer.tasks import Task
from protocols.models import CAP_TIME

log = structlog.get_logger(__name__)

PROBE_ROWS = 16


class Interrupted(HilError):
    """Training stopped at a batch boundary on the operator's request (checkpoint written)."""

    exit_code = 130  # the shell's convention for a command ended by SIGINT


@dataclass
class EpochStats:
    score_sum: float = 0.0
    count: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"score_sum": self.score_sum, "count": float(self.count)}


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


class Loop:
    """Runs epochs of ``cfg`` on ``model``; the run directory records everything."""

    def __init__(
        self,
        cfg: RunConfig,
        run: RunDir,
        model: Model,
        task: Task,
        driver: Driver | None,
        ids: RequestIds | None,
        *,
        snapshot: Callable[[Path], str | None] | None = None,
        checkpoint_every: int = 0,
        progress: Any = None,
    ) -> None:
        self.cfg, self.run, self.model, self.driver, self.ids = cfg, run, model, driver, ids
        self._link_mark: tuple[int, int] | None = None
        self.net = model.net
        self.rule = RuleConfig(cfg.rule.name, cfg.rule.traces, cfg.rule.reduction)
        o = cfg.optim
        self.opt = Optimizer(
            self.net.parameters(),
            OptimConfig(o.kind, o.lr, o.decay_factor, o.decay_every, o.clip_norm),
        )
        self.task = task
        self.metric = task.metric
        self.shuffle = np.random.default_rng([cfg.train.seed, 1])
        self.snapshot = snapshot
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.generation = 0
        self.epoch, self.batch = 0, 0
        self.order: list[int] = []
        self.partial = EpochStats()
        self.attempt = 0
        probe_rng = np.random.default_rng([cfg.train.seed, 2])
        self.probes = {
            name: probe_rng.choice([-1.0, 1.0], size=(PROBE_ROWS, m.shape[0])).astype(np.float32)
            for name, m in model.matrices.items()
        }

    # ------------------------------------------------------------ checkpoints
    def _params(self) -> dict[str, np.ndarray]:
        """Host parameter values, and every device matrix's χ, counter and counters."""
        arrays: dict[str, np.ndarray] = {}
        for name, p in self.net.parameters().items():
            if name not in self.model.matrices:
                arrays[name] = np.array(p.value())
        for name, m in self.model.matrices.items():
            for k, v in m.state().items():
                arrays[f"{name}:{k}"] = v
        return arrays

    def save_checkpoint(self) -> None:
        self.generation += 1
        snap = None
        if self.snapshot is not None:
            snap = self.snapshot(self.run.checkpoint_dir / f"chips-{self.generation:06d}")
        ck = ckpt.Checkpoint(
            epoch=self.epoch,
            batch=self.batch,
            order=[int(i) for i in self.order],
            arrays=self._params(),
            rng_state=dict(self.shuffle.bit_generator.state),
            optim=self.opt.state_dict(),
            request_seq=self.ids.seq if self.ids else 0,
            attempt=self.attempt,
            history=self.history,
            partial=self.partial.as_dict(),
            chip_snapshot=snap,
        )
        ckpt.save(self.run.checkpoint_dir, ck, self.generation)
        for old in self.run.checkpoint_dir.glob("chips-*"):
            if snap is None or old.name != Path(snap).name:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, ck: ckpt.Checkpoint, generation: int) -> None:
        """Continue from ``ck`` (the chip state is the caller's business)."""
        self.generation = generation
        self.epoch, self.batch = ck.epoch, ck.batch
        self.order = list(ck.order)
        self.shuffle.bit_generator.state = ck.rng_state
        self.opt.load_state_dict(ck.optim)
        self.history = list(ck.history)
        self.partial = EpochStats(ck.partial.get("score_sum", 0.0), int(ck.partial.get("count", 0)))
        self.attempt = ck.attempt + 1
        if self.ids is not None:
            self.ids.attempt, self.ids.seq = self.attempt, ck.request_seq
        self.load_weights(ck)
        self.run.rewrite_metrics(self.history)

    def load_weights(self, ck: ckpt.Checkpoint) -> None:
        """Host parameters and every device matrix's χ/counter/counters from ``ck``."""
        for name, p in self.net.parameters().items():
            if name not in self.model.matrices:
                p.assign(ck.arrays[name])  # type: ignore[union-attr]
        for name, m in self.model.matrices.items():
            m.load_state(
                {k.split(":", 1)[1]: v for k, v in ck.arrays.items() if k.startswith(f"{name}:")}
            )

    # ------------------------------------------------------------------ steps
    def _train_batch(self, idx: Sequence[int]) -> tuple[float, int]:
        batch = self.task.train_batch(idx)
        x, target, mask = batch
        if self.cfg.rule.update == "sequence":
            (_, grads), traj = sequence_grads(self.net, self.rule, x, target, mask)
            self.opt.step(grads)
            return self.task.batch_score(traj.o, batch)
        learner = OnlineLearner(self.net, self.rule)
        state = learner.init_state(x.shape[1])
        w = frame_weights(mask, self.rule.reduction)
        o = np.empty_like(target)
        for t in range(x.shape[0]):
            res, state = learner.step(x[t], target[t], w[t], state)
            self.opt.step(res.grads)
            o[t] = state.o
        return self.task.batch_score(o, batch)

    def _device_tick(self, batches_done: int) -> None:
        if self.driver is None or self.ids is None:
            return
        dev = self.cfg.device
        if dev.host_time_per_batch_s > 0 and self.driver.info().has(CAP_TIME):
            self.driver.advance(dev.host_time_per_batch_s, request_id=self.ids.next("advance"))
        if dev.refresh_every and batches_done % dev.refresh_every == 0:
            for m in self.model.matrices.values():
                if m.trainable:
                    m.refresh()

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.net.forward(x.astype(np.float32)).o

    def calibrate(self) -> dict[str, np.ndarray]:
        """Probe outputs of every device matrix now: the drift-compensation reference."""
        return {n: m.calibrate(self.probes[n]) for n, m in self.model.matrices.items()}

    def scores(self, refs: dict[str, np.ndarray] | None, mode: str) -> dict[str, float]:
        """Valid and test metric through the chip at its current time, compensated against
        ``refs`` (from :meth:`calibrate`) with ``mode`` when given."""
        for n, m in self.model.matrices.items():
            if refs:
                m.compensate(self.probes[n], refs[n], mode)
        try:
            return {
                f"valid_{self.metric}": self.task.evaluate(self._logits, "valid"),
                f"test_{self.metric}": self.task.evaluate(self._logits, "test"),
            }
        finally:
            for m in self.model.matrices.values():
                m.compensation = 1.0

    def evaluate(self) -> dict[str, float]:
        """The epoch's evaluation: calibrate, let ``device.eval_delay_s`` pass (simulators),
        compensate drift as configured, then score."""
        dev = self.cfg.device
        if self.driver is None or self.ids is None:
            return self.scores(None, "none")
        refs = self.calibrate() if dev.drift_compensation != "none" else None
        if dev.eval_delay_s > 0 and self.driver.info().has(CAP_TIME):
            self.driver.advance(dev.eval_delay_s, request_id=self.ids.next("eval-delay"))
        return self.scores(refs, dev.drift_compensation)

    def _device_metrics(self) -> dict[str, Any]:
        if not self.model.matrices:
            return {}
        mats = self.model.matrices.values()
        out: dict[str, Any] = {
            "pulses": sum(m.stats.pulses for m in mats),
            "pulse_requests": sum(m.stats.requests for m in mats),
            "refreshes": sum(m.stats.refreshes for m in mats),
            "clipped_updates": sum(m.stats.clipped for m in mats),
            "mvm_requests": sum(m.stats.mvm_requests for m in mats),
            "mvm_rows": sum(m.stats.mvm_rows for m in mats),
            "mvm_rows_skipped": sum(m.stats.mvm_rows_skipped for m in mats),
            "saturated_cells": sum(m.saturated_cells() for m in mats if m.trainable),
        }
        if self.driver is not None and self.driver.info().has(CAP_TIME):
            out["device_time_s"] = self.driver.time_s()
        for m in mats:
            m.stats.reset()
        return out

    def _link_metrics(self) -> dict[str, Any]:
        """Bytes on the device link since the last epoch's record (training, evaluation and
        the per-epoch reads) and, for a serial link, their time at its baud rate (8N1:
        10 bits per byte). Nothing for an in-process device. A resumed epoch counts from
        the resume."""
        link = None if self.driver is None else self.driver.link_bytes()
        if link is None:
            return {}
        sent0, recv0 = self._link_mark or (0, 0)
        self._link_mark = (link.sent, link.received)
        sent, recv = link.sent - sent0, link.received - recv0
        out: dict[str, Any] = {
            "link_bytes": sent + recv,
            "link_bytes_sent": sent,
            "link_bytes_received": recv,
        }
        if link.baud:
            out["link_s_est"] = 10.0 * (sent + recv) / link.baud
        return out

    # ------------------------------------------------------------------- run
    def run_epochs(self, epochs: int) -> list[dict[str, Any]]:
        bs = self.cfg.train.batch_size
        n_batches = -(-self.task.n_train // bs)
        link = None if self.driver is None else self.driver.link_bytes()
        self._link_mark = None if link is None else (link.sent, link.received)
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
                    idx = self.order[self.batch * bs : (self.batch + 1) * bs]
                    s, n = self._train_batch(idx)
                    self.partial.score_sum += s
                    self.partial.count += n
                    self.batch += 1
                    self._device_tick(self.batch)
                    if self.progress is not None:
                        self.progress.batch_done(
                            self.metric, self.partial.score_sum / max(self.partial.count, 1)
                        )
                    if stop.requested:
                        self.save_checkpoint()
                        self.run.event("interrupted", epoch=self.epoch, batch=self.batch)
                        raise Interrupted(
                            f"stopped at epoch {self.epoch} batch {self.batch}; checkpoint "
                            f"written; continue with: hil train --resume --run-dir {self.run.path}"
                        )
                    if self.checkpoint_every and self.batch % self.checkpoint_every == 0:
                        self.save_checkpoint()
                train_s = time.perf_counter() - t0
                train_cpu_s = time.process_time() - c0
                scores = self.evaluate()
                eval_s = time.perf_counter() - t0 - train_s
                record = {
                    "epoch": self.epoch + 1,
                    f"train_{self.metric}": self.partial.score_sum / max(self.partial.count, 1),
                    **scores,
                    "lr": self.opt.lr,
                    **self._device_metrics(),
                    **self._link_metrics(),
                    "train_s": train_s,
                    "train_cpu_s": train_cpu_s,
                    "eval_s": eval_s,
                    "epoch_s": time.perf_counter() - t0,
                    "time": time.time(),
                }
                self.history.append(record)
                self.run.log_metrics(record)
                log.info("epoch", **{k: v for k, v in record.items() if k != "time"})
                self.epoch, self.batch = self.epoch + 1, 0
                self.save_checkpoint()
                if self.progress is not None:
                    self.progress.epoch_done()
        return self.history
