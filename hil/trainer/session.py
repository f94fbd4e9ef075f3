"""One training run end to end: config → run dir → data → device → model → epochs → report.

This is what ``hil train`` and ``hil demo`` call. Chip state across a resume:

- a device with the ``snapshot`` capability (the in-process simulator) saves its complete
  state beside every checkpoint; ``--resume`` restores it, so a resumed run on the
  deterministic simulator reproduces an uninterrupted run exactly;
- any other device (a server, the board) is non-volatile and cannot be rolled back:
  ``--resume`` continues on the chip as it is, after checking it is the same device, and
  records that in ``events.jsonl``. Pulses are never re-sent: request ids of a resumed
  attempt differ from the crashed attempt's, and the crashed attempt's retries were
  answered from the device's idempotency record.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from drivers import DriverError
from hil.errors import ConfigError, HilError
from hil.faults import fault_point
from hil.fsio import atomic_save_npz, remove_temp_files
from hil.tasks.spec import LoadContext, TaskData
from hil.trainer import checkpoint as ckpt
from hil.trainer.backend import Backend, SoftwareBackend
from hil.trainer.chip_backend import ChipBackend
from hil.trainer.config import RunConfig, load_config
from hil.trainer.model import layer_configs, matrix_shapes
from hil.trainer.progress import TrainingProgress, WaitDisplay
from hil.trainer.report import write_report
from hil.trainer.runs import RunDir, environment
from hil.trainer.status import RunLock
from hil.trainer.trainer import Interrupted, Trainer
from protocols.region import Region

log = structlog.get_logger(__name__)

ATTEMPT_EVENTS = frozenset({"start", "resume", "restart"})
"""Events that open an attempt of a run (their count numbers the next attempt)."""


@dataclass(frozen=True)
class TrainRequest:
    """What the operator asked for (``hil train`` flags)."""

    config: Path | None = None
    device: str | None = None
    run_dir: Path | None = None
    data: str | None = None
    """``standard``, ``chorales`` or the path of a JSB pickle / built chorales folder"""
    resume: bool = False
    seed: int | None = None
    epochs: int | None = None
    overrides: tuple[str, ...] = ()
    progress: bool | None = None
    checkpoint_every: int = 0
    runs_root: Path = Path("runs")
    wait: bool = True
    """wait in the server's queue when the chip regions are held (``--no-wait``: refuse)"""


def resolve_request(req: TrainRequest) -> RunConfig:
    """The run config from the file, then CLI flags, then ``--set`` overrides."""
    flags = []
    if req.device is not None:
        flags.append(f"device.url={req.device}")
    if req.data in ("standard", "chorales"):
        flags.append(f"data.dataset={req.data}")
    elif req.data is not None:
        flags.append(f"data.path={req.data}")
    if req.seed is not None:
        flags.append(f"train.seed={req.seed}")
    if req.epochs is not None:
        flags.append(f"train.epochs={req.epochs}")
    return load_config(req.config, [*flags, *req.overrides])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def train(req: TrainRequest, notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a training run; returns the summary (also in ``summary.json``).

    Everything that can be refused (config, data, device, placement) is checked before a
    new run directory is created, so a refused run leaves nothing behind. ``notify`` gets
    the lines an operator should read (what a resume continues from; a finished run that
    a resume leaves alone).

    A device that fails for good during training (:class:`~drivers.DriverError`: gone,
    timed out, refusing) ends the run with one :class:`DeviceLost` line: the cause, the
    last checkpoint and the exact ``hil train --resume`` command; ``events.jsonl`` gets an
    ``error`` event with the same facts, and the checkpoint is left as it was, resumable.
    """
    with ExitStack() as stack:
        guard = _RunGuard(stack)
        try:
            return _train(req, guard, notify or (lambda line: None))
        except Interrupted:
            raise  # the trainer recorded the stop with its checkpoint
        except KeyboardInterrupt:
            guard.record_end("interrupted", msg="stopped at once (second Ctrl-C)")
            raise
        except DriverError as exc:
            if guard.run is None:
                raise HilError(f"device error before training started: {one_line(exc)}") from exc
            lost = DeviceLost.of(exc, guard.run)
            guard.record_end(
                "error",
                error=f"{type(exc).__name__}: {one_line(exc)}",
                checkpoint=lost.checkpoint,
                resume=lost.resume_command,
            )
            raise lost from exc
        except Exception as exc:
            guard.record_end("failed", error=f"{type(exc).__name__}: {exc}")
            raise


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (whitespace runs collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def resume_command(run: Path) -> str:
    """The exact command that continues the run in ``run``."""
    return f"hil train --resume --run-dir {shlex.quote(str(run))}"


class DeviceLost(HilError):
    """The device failed for good during a run; the run can be resumed from its checkpoint."""

    exit_code = 3

    def __init__(self, message: str, checkpoint: dict[str, Any] | None, resume: str) -> None:
        super().__init__(message)
        self.checkpoint, self.resume_command = checkpoint, resume

    @classmethod
    def of(cls, exc: BaseException, run: RunDir) -> DeviceLost:
        where = last_checkpoint(run)
        if where is None:
            at = "no checkpoint yet: the resume starts the run again"
        else:
            at = f"last checkpoint: end of epoch {where['epoch']}"
            if where["batch"]:
                at = f"last checkpoint: epoch {where['epoch'] + 1} after batch {where['batch']}"
        cmd = resume_command(run.path)
        msg = f"device lost: {one_line(exc)} ({at}); continue with: {cmd}"
        return cls(msg, where, cmd)


def last_checkpoint(run: RunDir) -> dict[str, Any] | None:
    """``{epoch, batch, generation}`` of the run's last committed checkpoint, or None."""
    try:
        meta = json.loads((run.checkpoint_dir / ckpt.STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return {k: meta.get(k) for k in ("epoch", "batch", "generation")}


class _RunGuard:
    """Holds the run's lock (:class:`RunLock`) for this process and, once training has
    started, records an abnormal end in ``events.jsonl`` (the run's status reads it)."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.run: RunDir | None = None

    def lock(self, run: RunDir) -> None:
        self.stack.enter_context(RunLock(run.path))

    def started(self, run: RunDir) -> None:
        self.run = run

    def record_end(self, name: str, **fields: Any) -> None:
        if self.run is not None:
            self.run.event(name, **fields)


def _train(req: TrainRequest, guard: _RunGuard, notify: Callable[[str], None]) -> dict[str, Any]:
    t_start = time.time()
    if req.resume:
        if req.run_dir is None:
            raise ConfigError("--resume needs --run-dir RUN (the run to continue)")
        if req.overrides or req.seed is not None or req.config is not None or req.data:
            raise ConfigError(
                "--resume continues a run with its recorded config; drop CONFIG, --seed, "
                "--data and --set (only --epochs, to extend it, and --device, if the chip "
                "moved, apply)"
            )
        opened = RunDir.open(req.run_dir)
        guard.lock(opened)  # refuses a run that another process trains
        cfg = RunConfig.model_validate(opened.read_json("config.json"))
        if req.epochs is not None:
            cfg = cfg.model_copy(
                update={"train": cfg.train.model_copy(update={"epochs": req.epochs})}
            )
        if req.device is not None:  # same chip at a new address; its identity is checked
            cfg = cfg.model_copy(
                update={"device": cfg.device.model_copy(update={"url": req.device})}
            )
        done = finished_summary(opened, cfg.train.epochs)
        if done is not None:  # nothing to do: leave every file as it is
            notify(
                f"run {opened.path} already finished {done['epochs']} "
                f"{plural(done['epochs'], 'epoch')}; nothing to resume, nothing changed "
                f"(--epochs N with N > {done['epochs']} extends it)"
            )
            return done
        remove_temp_files(opened.path)
        checkpointer = ckpt.Checkpointer(opened.checkpoint_dir)
        ck = checkpointer.load()  # None: stopped before its first checkpoint: start afresh
        generation = checkpointer.generation
        run: RunDir | None = opened
        notify(resume_note(opened, ck, generation, cfg.train.epochs))
    else:
        cfg = resolve_request(req)
        run, ck, generation = None, None, 0

    data = load_task(cfg, progress=req.progress is not False)
    log.info("data", task=cfg.task, source=data.source, train_items=data.n_train)

    restore = None
    if run is not None and ck is not None and ck.chip_snapshot:
        restore = run.checkpoint_dir / ck.chip_snapshot
    path = req.run_dir or req.runs_root / f"{_slug(cfg.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    fixed = recorded_regions(run) if run is not None and ck is not None else None
    with WaitDisplay(req.progress, cfg.device.url) as waiting:
        backend = build_backend(
            cfg,
            _slug(path.name),
            restore,
            wait=req.wait,
            on_wait=waiting.update,
            fixed=fixed,
            session_file=None if run is None else run.path / SESSION_FILE,
        )
    try:
        if run is None:
            run = RunDir.create(path)
            guard.lock(run)
            run.write_json("config.json", cfg.model_dump(mode="json"))
            fault_point("run.config_written")
            run.write_json("environment.json", environment())
        if isinstance(backend, ChipBackend):
            record_reservation(run, backend)
        attempt = sum(e.get("event") in ATTEMPT_EVENTS for e in run.events())
        check_data(run, data, new=ck is None, task_name=cfg.task_spec.name)
        fault_point("run.data_recorded")
        run.event(
            ("resume" if ck else "restart") if req.resume else "start",
            epoch=ck.epoch if ck else 0,
            epochs=cfg.train.epochs,
            attempt=attempt,
            device=cfg.device.url,
            data_source=data.source,
        )
        guard.started(run)
        history = _train_on(cfg, req, run, data, backend, ck, generation, attempt, notify)
        if isinstance(backend, ChipBackend):
            held = backend.reservation_id
            backend.release()  # finished: the regions are free for the next run
            run.event("reservation_released", reservation_id=held)
    finally:
        backend.close()
    fault_point("run.trained")
    summary = summarise(cfg, history, data, time.time() - t_start, run)
    run.write_json("summary.json", summary)
    fault_point("run.summary_written")
    metric = cfg.task_spec.metric
    run.event("finished", **{k: summary[k] for k in (f"test_{metric}", "best_epoch", "epochs")})
    write_report(run, metric)  # after the finished event, so the report shows it
    return summary


def programming_line(name: str, region: str, rep: dict[str, Any]) -> str:
    """One line of a matrix's program-and-verify outcome: achieved error against the
    tolerance, iterations against the cap, cells within tolerance."""
    tol, its = f"±{rep['tolerance_us']:.2f} µS", f"{rep['iterations']}/{rep['max_iterations']}"
    cells, open_, faulty = rep.get("cells"), rep.get("unconverged_cells"), rep.get("faulty_cells")
    if cells is not None and open_ is not None:
        ok = cells - (faulty or 0)
        verdict = f"{ok - open_}/{ok} cells verified within {tol} in {its} iterations"
        if faulty:
            verdict += f" (and {faulty} cells with a stuck or dead device)"
    else:
        done = "converged" if rep["converged"] else "NOT converged"
        verdict = f"{done} to {tol} in {its} iterations"
    return (
        f"programmed {name} on {region}: {verdict}; rms error of the programmed "
        f"conductances {rep['rms_error_us']:.3f} µS"
    )


def plural(n: int, word: str, many: str | None = None) -> str:
    """``word`` for a count of 1, else its plural (``many``, default ``word + "s"``)."""
    return word if n == 1 else many or f"{word}s"


def finished_summary(run: RunDir, epochs: int) -> dict[str, Any] | None:
    """The run's summary when it finished (its last event) with at least ``epochs``
    epochs, else None."""
    summary = run.summary()
    events = run.events()
    if summary is None or not events or events[-1].get("event") != "finished":
        return None
    return summary if int(summary.get("epochs", 0)) >= epochs else None


def resume_note(run: RunDir, ck: ckpt.Checkpoint | None, generation: int, epochs: int) -> str:
    """One line: where a resume of ``run`` continues from."""
    if ck is None:
        return (
            f"resuming {run.path}: no checkpoint was committed, so the run starts again "
            f"from the beginning ({epochs} {plural(epochs, 'epoch')})"
        )
    at = f"epoch {ck.epoch + 1}/{epochs}" + (f", batch {ck.batch + 1}" if ck.batch else "")
    done = (
        f"{ck.epoch} {plural(ck.epoch, 'epoch')}"
        + (f" and {ck.batch} {plural(ck.batch, 'batch', 'batches')}" if ck.batch else "")
        + " done"
    )
    chips = "with its chip snapshot" if ck.chip_snapshot else "chips continue as they are"
    return (
        f"resuming {run.path} at {at} ({done}) from checkpoint generation "
        f"{generation} ({run.checkpoint_dir / ckpt.STATE_FILE}; {chips})"
    )


def check_data(run: RunDir, task: TaskData, *, new: bool, task_name: str | None = None) -> None:
    """Record the run's data source (new run) or refuse data that differ from the record."""
    if new:
        run.write_json(
            "data.json",
            {"task": task_name, "source": task.source, "sha256": task.fingerprint},
        )
        return
    recorded = run.read_json("data.json")
    same_content = recorded.get("sha256") is not None and recorded["sha256"] == task.fingerprint
    if recorded["source"] != task.source and not same_content:
        raise HilError(
            f"this run used {recorded['source']}, but the data now resolve to {task.source}; "
            f"point data.path or HIL_DATA_DIR at the run's data to continue or evaluate it"
        )


def load_task(cfg: RunConfig, progress: bool) -> TaskData:
    """The run's task data, loaded by its task's loader with the run's settings."""
    spec = cfg.task_spec
    env_dir = os.environ.get("HIL_DATA_DIR")
    ctx = LoadContext(
        seed=cfg.train.seed,
        max_train=cfg.train.max_train_sequences,
        max_eval=cfg.train.max_eval_sequences,
        data_dir=Path(env_dir) if env_dir else None,
        progress=progress,
    )
    return spec.load(cfg.settings_of(spec), ctx)


SESSION_FILE = "session.token"
"""A server session token (secret, mode 0600) that makes a resumed run the same client."""


def record_reservation(run: RunDir, backend: ChipBackend) -> None:
    """``RUN/reservation.json`` and, for a server session, ``RUN/session.token``."""
    run.write_json("reservation.json", backend.reservation_record())
    token = backend.driver.resume_token()
    if token:
        f = run.path / SESSION_FILE
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")


def recorded_regions(run: RunDir) -> dict[str, Region] | None:
    """The regions a run's matrices were programmed into (to reserve them again)."""
    for name in ("reservation.json", "placement.json"):
        if (run.path / name).is_file():
            regions = run.read_json(name).get("regions")
            if regions:
                return {k: Region.model_validate(v) for k, v in regions.items()}
    return None


def build_backend(
    cfg: RunConfig,
    run_id: str,
    restore: Path | None = None,
    *,
    wait: bool = True,
    on_wait: Any = None,
    fixed: dict[str, Region] | None = None,
    session_file: Path | None = None,
    placement: dict[str, Region] | None = None,
) -> Backend:
    """The run's backend: software, or the chips at ``cfg.device.url`` (restored from a
    snapshot when given), with the network's regions reserved before anything is written
    (exactly ``fixed`` or ``placement`` when given: a resumed run's recorded regions,
    whatever a newer health report says; waiting in the server's queue unless ``wait`` is
    False)."""
    if cfg.device.is_software:
        return SoftwareBackend()
    backend = ChipBackend.open(
        cfg.device,
        run_id,
        cfg.train.seed,
        restore,
        session_file=session_file,
        wait=wait,
        on_wait=on_wait,
        fixed=fixed or placement,
    )
    backend.fixed_placement = fixed or placement
    try:
        backend.place(matrix_shapes(cfg))  # refuse before writing
    except BaseException:
        backend.close()
        raise
    return backend


def build_trainer(
    cfg: RunConfig,
    task: TaskData,
    backend: Backend,
    *,
    program: bool = True,
    run: RunDir | None = None,
    checkpointer: ckpt.Checkpointer | None = None,
    checkpoint_every: int = 0,
    progress: Any = None,
) -> Trainer:
    """The network of ``cfg`` built on ``backend`` (programmed unless ``program`` is False:
    a resumed or restored run) and its :class:`Trainer`."""
    layers, readout = layer_configs(cfg)
    net = backend.build_network(
        layers, readout, cfg.train.init_rng(), w_scale=cfg.network.w_scale, program=program
    )
    bias = cfg.network.readout_bias_init
    if bias != "zero" and net.readout.c is not None:
        net.readout.c.assign(cfg.task_spec.readout_bias[bias](task))
    return Trainer(
        cfg,
        task,
        net,
        backend,
        run=run,
        checkpointer=checkpointer,
        checkpoint_every=checkpoint_every,
        progress=progress,
    )


def _train_on(
    cfg: RunConfig,
    req: TrainRequest,
    run: RunDir,
    data: TaskData,
    backend: Backend,
    ck: ckpt.Checkpoint | None,
    generation: int,
    attempt: int,
    notify: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
    # request ids of this attempt differ from every earlier attempt's (a device that keeps
    # an idempotency record would otherwise answer them from it and apply nothing)
    backend.resume_requests(attempt, ck.request_seq if ck else 0)
    identity = backend.identity()
    if identity is not None:
        if ck is None:
            run.write_json("device.json", {"url": cfg.device.url, "info": identity})
            fault_point("run.device_recorded")
        else:
            recorded = run.read_json("device.json")["info"]
            # fields a newer version added to the identity are not a different chip
            if {k: identity.get(k) for k in recorded} != recorded:
                raise HilError(
                    f"the device at {cfg.device.url} is not the one this run used "
                    f"(recorded {recorded.get('driver')}/{recorded.get('preset')}/"
                    f"{recorded.get('firmware')}); refusing to resume on another chip"
                )
            if not ck.chip_snapshot:
                run.event("chip_not_restorable", msg="continuing on the non-volatile chip as it is")
    with TrainingProgress(req.progress) as progress:
        trainer = build_trainer(
            cfg,
            data,
            backend,
            program=ck is None,
            run=run,
            checkpointer=ckpt.Checkpointer(run.checkpoint_dir, generation),
            checkpoint_every=req.checkpoint_every,
            progress=progress,
        )
        if ck is None and isinstance(backend, ChipBackend):
            run.write_json("placement.json", backend.placement_record())
            fault_point("run.programmed")
            run.event("programmed", report=backend.programming)
            for name, rep in backend.programming.items():
                notify(programming_line(name, str(backend.placement[name]), rep))
            atomic_save_npz(run.path / "conductances_before.npz", backend.read_conductances())
            atomic_save_npz(
                run.path / "programming.npz",
                {
                    **{f"{k}_target": v for k, v in backend.targets.items()},
                    **{f"{k}_achieved": v for k, v in backend.read_weights().items()},
                },
            )
        trainer.attempt = attempt
        if ck is not None:
            trainer.restore(ck, attempt)
            if not ck.chip_snapshot:  # a chip that cannot be rolled back: still ours?
                agreement = backend.check_fingerprint(ck.arrays)
                run.event("fingerprint_checked", correlation=agreement)
        elif backend.can_snapshot or not backend.on_device:
            trainer.save_checkpoint()  # the initial state, chips included
        history = trainer.run_epochs(cfg.train.epochs)
    if isinstance(backend, ChipBackend):
        atomic_save_npz(run.path / "conductances_after.npz", backend.read_conductances())
    return history


def summarise(
    cfg: RunConfig, history: list[dict[str, Any]], data: TaskData, wall_s: float, run: RunDir
) -> dict[str, Any]:
    if not history:
        raise HilError("the run finished without a single epoch")
    spec = cfg.task_spec
    m, higher = spec.metric, spec.higher_is_better
    sign = -1.0 if higher else 1.0
    best = min(history, key=lambda r: sign * r[f"valid_{m}"])
    last = history[-1]
    return {
        "run": str(run.path),
        "task": cfg.task,
        "rule": cfg.rule.name,
        "device": cfg.device.url,
        "data_source": data.source,
        "comparable_to_published": data.comparable,
        "comparability": data.comparable_why,
        "metric": m,
        f"test_{m}": last[f"test_{m}"],
        f"valid_{m}": last[f"valid_{m}"],
        f"train_{m}": last[f"train_{m}"],
        "best_epoch": best["epoch"],
        f"best_valid_{m}": best[f"valid_{m}"],
        f"test_{m}_at_best": best[f"test_{m}"],
        f"max_test_{m}" if higher else f"min_test_{m}": (max if higher else min)(
            r[f"test_{m}"] for r in history
        ),
        "epochs": len(history),
        "pulses": sum(r.get("pulses", 0) for r in history),
        "refreshes": sum(r.get("refreshes", 0) for r in history),
        "wall_s": wall_s,
        "seed": cfg.train.seed,
    }
