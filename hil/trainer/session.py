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

import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from drivers import DriverError, open_driver
from drivers.base import Driver
from hil.errors import ConfigError, HilError
from hil.fsio import atomic_save_npz
from hil.tasks.baselines import ConstantPredictor
from hil.tasks.datasource import describe, resolve_jsb
from hil.trainer import checkpoint as ckpt
from hil.trainer.config import RunConfig, load_config
from hil.trainer.device_matrix import RequestIds
from hil.trainer.loop import Interrupted, Loop
from hil.trainer.model import Model, build_model, matrix_shapes
from hil.trainer.placement import place
from hil.trainer.progress import TrainingProgress
from hil.trainer.report import write_report
from hil.trainer.runs import RunDir, environment
from hil.trainer.status import RunLock
from hil.trainer.tasks import Task, jsb_task, shd_task
from protocols.models import CAP_SNAPSHOT

log = structlog.get_logger(__name__)


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


def open_device(url: str, restore: Path | None) -> Driver:
    """Open ``url``; for a snapshot-capable simulator, restore from ``restore`` if given."""
    if restore is not None:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}restore={restore}"
    try:
        return open_driver(url)
    except DriverError as exc:
        raise HilError(f"cannot open device {url!r}: {exc}") from exc
    except OSError as exc:
        raise HilError(f"cannot open device {url!r}: {exc}") from exc


def _identity(driver: Driver) -> dict[str, Any]:
    info = driver.info()
    return info.model_dump(mode="json")


def _save_conductances(run: RunDir, model: Model, name: str) -> None:
    arrays = {k: m.driver.read_conductances(m.region) for k, m in model.matrices.items()}
    atomic_save_npz(run.path / name, arrays)


def train(req: TrainRequest) -> dict[str, Any]:
    """Run (or resume) a training run; returns the summary (also in ``summary.json``).

    Everything that can be refused (config, data, device, placement) is checked before a
    new run directory is created, so a refused run leaves nothing behind.
    """
    with ExitStack() as stack:
        guard = _RunGuard(stack)
        try:
            return _train(req, guard)
        except Interrupted:
            raise  # the loop recorded the stop with its checkpoint
        except KeyboardInterrupt:
            guard.record_end("interrupted", msg="stopped at once (second Ctrl-C)")
            raise
        except Exception as exc:
            guard.record_end("failed", error=f"{type(exc).__name__}: {exc}")
            raise


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


def _train(req: TrainRequest, guard: _RunGuard) -> dict[str, Any]:
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
        ck, generation = ckpt.load(opened.checkpoint_dir)
        run: RunDir | None = opened
    else:
        cfg = resolve_request(req)
        run, ck, generation = None, None, 0

    data = load_task(cfg, progress=req.progress is not False)
    log.info("data", task=cfg.task, source=data.source, train_items=data.n_train)

    driver: Driver | None = None
    try:
        if not cfg.device.is_software:
            restore = None
            if run is not None and ck is not None and ck.chip_snapshot:
                restore = run.checkpoint_dir / ck.chip_snapshot
            driver = open_device(cfg.device.url, restore)
            info = driver.info()
            place(matrix_shapes(cfg), info.chips, info.rows, info.cols)  # refuse before writing
        if run is None:
            path = (
                req.run_dir or req.runs_root / f"{_slug(cfg.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            run = RunDir.create(path)
            guard.lock(run)
            run.write_json("config.json", cfg.model_dump(mode="json"))
            run.write_json("environment.json", environment())
        check_data(run, data, new=ck is None)
        run.event(
            "resume" if ck else "start",
            epoch=ck.epoch if ck else 0,
            epochs=cfg.train.epochs,
            device=cfg.device.url,
            data_source=data.source,
        )
        guard.started(run)
        history = _train_on(cfg, req, run, data, driver, ck, generation)
    finally:
        if driver is not None:
            driver.close()
    summary = summarise(cfg, history, data, time.time() - t_start, run)
    run.write_json("summary.json", summary)
    write_report(run, data.metric)
    run.event(
        "finished", **{k: summary[k] for k in (f"test_{data.metric}", "best_epoch", "epochs")}
    )
    return summary


def check_data(run: RunDir, task: Task, *, new: bool) -> None:
    """Record the run's data source (new run) or refuse data that differ from the record."""
    if new:
        run.write_json(
            "data.json",
            {"task": task.name, "source": task.source, "sha256": task.fingerprint},
        )
        return
    recorded = run.read_json("data.json")
    same_content = recorded.get("sha256") is not None and recorded["sha256"] == task.fingerprint
    if recorded["source"] != task.source and not same_content:
        raise HilError(
            f"this run used {recorded['source']}, but the data now resolve to {task.source}; "
            f"point data.path or HIL_DATA_DIR at the run's data to continue or evaluate it"
        )


def load_task(cfg: RunConfig, progress: bool) -> Task:
    n_train, n_eval = cfg.train.max_train_sequences, cfg.train.max_eval_sequences
    if cfg.task == "shd":
        env_dir = os.environ.get("HIL_DATA_DIR")
        return shd_task(
            cfg.shd, cfg.train.seed, n_train, n_eval, Path(env_dir) if env_dir else None
        )
    splits = resolve_jsb(cfg.data, progress=progress)
    task = jsb_task(splits, n_train, n_eval)
    print(f"data: {describe(splits)}", flush=True)
    print(f"      {comparable_line(task)}", flush=True)
    return task


def comparable_line(task: Task) -> str:
    """Whether the run's test metric can be set beside published numbers, in words."""
    if task.comparable:
        return f"test {task.metric.upper()} comparable to published numbers ({task.comparable_why})"
    return f"test {task.metric.upper()} NOT comparable to published numbers: {task.comparable_why}"


def _train_on(
    cfg: RunConfig,
    req: TrainRequest,
    run: RunDir,
    data: Task,
    driver: Driver | None,
    ck: ckpt.Checkpoint | None,
    generation: int,
) -> list[dict[str, Any]]:
    ids: RequestIds | None = None
    if driver is not None:
        ids = RequestIds(_slug(run.path.name))
        identity = _identity(driver)
        if ck is None:
            run.write_json("device.json", {"url": cfg.device.url, "info": identity})
        else:
            recorded = run.read_json("device.json")["info"]
            if recorded != identity:
                raise HilError(
                    f"the device at {cfg.device.url} is not the one this run used "
                    f"(recorded {recorded.get('driver')}/{recorded.get('preset')}/"
                    f"{recorded.get('firmware')}); refusing to resume on another chip"
                )
            if not ck.chip_snapshot:
                run.event("chip_not_restorable", msg="continuing on the non-volatile chip as it is")
    model = build_model(cfg, driver, ids, program=ck is None)
    if cfg.network.readout_bias_init == "key_frequency":
        if cfg.task != "jsb":
            raise ConfigError("network.readout_bias_init=key_frequency is for the jsb task only")
        p = ConstantPredictor.fit(data).p  # type: ignore[arg-type]
        model.net.readout.c.assign(np.log(p) - np.log1p(-p))  # type: ignore[union-attr]
    if ck is None and model.on_device:
        run.write_json(
            "placement.json",
            {
                "placement": {k: str(r) for k, r in model.placement.items()},
                "regions": {k: r.model_dump() for k, r in model.placement.items()},
                "programming": model.programming,
            },
        )
        run.event("programmed", report=model.programming)
        _save_conductances(run, model, "conductances_before.npz")
        atomic_save_npz(
            run.path / "programming.npz",
            {
                **{f"{k}_target": model.targets[k] for k in model.matrices},
                **{f"{k}_achieved": m.value() for k, m in model.matrices.items()},
            },
        )
    snapshot = None
    if driver is not None and driver.info().has(CAP_SNAPSHOT):

        def snapshot(dest: Path) -> str:
            driver.snapshot(dest)  # type: ignore[attr-defined]
            return dest.name

    with TrainingProgress(req.progress) as progress:
        loop = Loop(
            cfg,
            run,
            model,
            data,
            driver,
            ids,
            snapshot=snapshot,
            checkpoint_every=req.checkpoint_every,
            progress=progress,
        )
        if ck is not None:
            loop.restore(ck, generation)
        elif snapshot is not None or driver is None:
            loop.save_checkpoint()  # the initial state, chips included
        history = loop.run_epochs(cfg.train.epochs)
    if model.on_device:
        _save_conductances(run, model, "conductances_after.npz")
    return history


def summarise(
    cfg: RunConfig, history: list[dict[str, Any]], data: Task, wall_s: float, run: RunDir
) -> dict[str, Any]:
    if not history:
        raise HilError("the run finished without a single epoch")
    m = data.metric
    sign = -1.0 if m == "accuracy" else 1.0
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
        f"max_test_{m}" if m == "accuracy" else f"min_test_{m}": (max if m == "accuracy" else min)(
            r[f"test_{m}"] for r in history
        ),
        "epochs": len(history),
        "pulses": sum(r.get("pulses", 0) for r in history),
        "refreshes": sum(r.get("refreshes", 0) for r in history),
        "wall_s": wall_s,
        "seed": cfg.train.seed,
    }
