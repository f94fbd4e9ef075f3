"""Run a sweep's trials on Ray Tune: local embedded Ray, or a cluster with ``--address``.

Resources: every trial takes ``cpus_per_trial`` CPUs; a trial on a chip (``tcp://``,
``ipc://``, ``board://``) also takes one unit of the chip's custom resource, so a chip
declared with capacity N runs at most N trials at once and the others wait for it;
``sim://`` and ``software`` trials take CPUs only. Locally the resources are declared from
the spec; on a cluster the node hosting a chip declares them (``ray start --resources``)
and a missing one is refused before any trial starts.

Sweep directory: the trials' run directories, ``sweep.json``/``sweep.png`` and ``.sweep/``
(the resolved spec and its fingerprint, per-trial locks, logs, pids, outcome markers and
Tune's own state). ``--resume`` submits only trials that are neither finished nor stopped
early; each of them continues from its run directory's checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hil.errors import ConfigError, HilError
from hil.fsio import atomic_write_json
from hil.sweep import results
from hil.sweep.progress import SweepProgress
from hil.sweep.spec import SweepSpec, Trial, fingerprint
from hil.sweep.trial import run_trial, state_dir
from hil.trainer.config import load_config


class SweepInterrupted(HilError):
    exit_code = 130


def _trainable(config: dict[str, Any]) -> None:  # runs in a Ray worker
    from ray import tune

    run_trial(config["job"], tune.report)


def load_state(sweep_dir: Path) -> tuple[SweepSpec, list[Trial]]:
    """The spec and trials recorded in a sweep directory (``--resume`` without a SPEC)."""
    f = state_dir(sweep_dir) / "spec.json"
    if not f.is_file():
        raise ConfigError(f"{sweep_dir} holds no sweep to resume (no .sweep/spec.json)")
    import json

    raw = json.loads(f.read_text())
    return SweepSpec.model_validate(raw["spec"]), [Trial.model_validate(t) for t in raw["trials"]]


def prepare_dir(spec: SweepSpec, trials: list[Trial], sweep_dir: Path, resume: bool) -> None:
    f = state_dir(sweep_dir) / "spec.json"
    fp = fingerprint(spec, trials)
    if f.is_file():
        if not resume:
            raise ConfigError(
                f"{sweep_dir} already holds a sweep; pass --resume to continue it or choose "
                f"another --sweep-dir"
            )
        _, old = load_state(sweep_dir)
        import json

        if json.loads(f.read_text())["fingerprint"] != fp:
            raise ConfigError(
                f"the spec changed since the sweep in {sweep_dir} started (its trials or "
                f"settings differ); resume with the original spec or choose another --sweep-dir"
            )
    elif resume:
        raise ConfigError(f"{sweep_dir} holds no sweep to resume (no .sweep/spec.json)")
    else:
        atomic_write_json(
            f,
            {
                "fingerprint": fp,
                "spec": spec.model_dump(mode="json"),
                "trials": [t.model_dump() for t in trials],
            },
        )


def _epochs(spec: SweepSpec) -> int:
    return spec.epochs or load_config(spec.base).train.epochs


def _init_ray(spec: SweepSpec, address: str | None, num_cpus: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("hil sweep needs Ray: pip install 'pcm-hil[sweep]'") from None
    needed: dict[str, float] = {}
    for d in spec.devices:
        if d.resource_name:
            needed[d.resource_name] = needed.get(d.resource_name, 0) + d.slots
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, resources=needed, **common)
        return
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]} (is it "
            f"running; with token authentication: RAY_AUTH_MODE=token and its token in "
            f"~/.ray/auth_token or RAY_AUTH_TOKEN_PATH)"
        ) from None
    have = ray.cluster_resources()
    missing = [r for r in needed if have.get(r, 0) < 1]
    if missing:
        ray.shutdown()
        raise ConfigError(
            f"no node of the Ray cluster at {address} offers {', '.join(missing)}; on the "
            f"machine hosting the chip run: ray start --address=... "
            f"--resources='{{\"{missing[0]}\": 1}}'"
        )


def run_sweep(
    spec: SweepSpec,
    trials: list[Trial],
    sweep_dir: Path,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run every unfinished trial; returns the final ``sweep.json`` content."""
    sweep_dir = Path(sweep_dir).resolve()
    prepare_dir(spec, trials, sweep_dir, resume)
    by_id = {t.id: t for t in trials}
    start = results.aggregate(spec, trials, sweep_dir)
    todo = [by_id[r["id"]] for r in start["trials"] if r["status"] not in ("done", "stopped early")]
    for t in todo:  # a resumed sweep tries failed trials again
        (state_dir(sweep_dir) / "failed" / t.id).unlink(missing_ok=True)
    view = SweepProgress(spec, trials, sweep_dir, progress)
    if todo:
        view.note(
            f"sweep {spec.name}: {len(todo)} of {len(trials)} trials to run "
            f"({len(trials) - len(todo)} finished before) in {sweep_dir}"
        )
        try:
            _fit(spec, todo, sweep_dir, address, max_concurrent, num_cpus, view)
        except ConfigError:  # Ray refused (no cluster, missing chip): nothing ran, so the
            if not resume:  # same command can simply be run again
                (state_dir(sweep_dir) / "spec.json").unlink(missing_ok=True)
            raise
    summary = results.aggregate(spec, trials, sweep_dir)
    results.write(summary, sweep_dir)
    view.final(summary)
    unfinished = [r["id"] for r in summary["trials"] if r["status"] in ("queued", "running")]
    if unfinished:
        raise SweepInterrupted(
            f"{len(unfinished)} trials unfinished; continue with: hil sweep --resume "
            f"--sweep-dir {sweep_dir}"
        )
    return summary


def _fit(
    spec: SweepSpec,
    todo: list[Trial],
    sweep_dir: Path,
    address: str | None,
    max_concurrent: int | None,
    num_cpus: int | None,
    view: SweepProgress,
) -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _init_ray(spec, address, num_cpus)
    import ray
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from hil.sweep.tune_hooks import VIEWS, ProgressCallback, RecordingASHA

    try:
        env = {k: v for k, v in os.environ.items() if k.startswith("HIL_")}
        drift = spec.evaluate.drift.model_dump(mode="json") if spec.evaluate.drift else None
        jobs = [
            {
                "trial": t.model_dump(),
                "sweep_dir": str(sweep_dir),
                "base": t.base,
                "epochs": spec.epochs,
                "metric": spec.metric,
                "checkpoint_every": spec.checkpoint_every,
                "drift": drift,
                "env": env,
            }
            for t in todo
        ]

        def resources(config: dict[str, Any]) -> PlacementGroupFactory:
            res = config["job"]["trial"]["resource"]
            return PlacementGroupFactory(
                [{"CPU": spec.cpus_per_trial, **({res: 1.0} if res else {})}]
            )

        scheduler = None
        if spec.early_stopping is not None:
            scheduler = RecordingASHA(
                str(sweep_dir),
                time_attr="epoch",
                metric=f"valid_{spec.metric_kind}",
                mode=spec.mode,
                max_t=_epochs(spec),
                grace_period=spec.early_stopping.grace_epochs,
                reduction_factor=spec.early_stopping.reduction_factor,
            )
        VIEWS[str(sweep_dir)] = view
        tuner = tune.Tuner(
            tune.with_resources(_trainable, resources),
            param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                max_concurrent_trials=max_concurrent,
                reuse_actors=True,
                trial_name_creator=lambda t: t.config["job"]["trial"]["id"],
                trial_dirname_creator=lambda t: t.config["job"]["trial"]["id"],
            ),
            run_config=tune.RunConfig(
                name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(state_dir(sweep_dir) / "tune"),
                failure_config=tune.FailureConfig(max_failures=spec.retries),
                callbacks=[ProgressCallback(str(sweep_dir))],
                verbose=0,
                log_to_file=True,
            ),
        )
        with view:
            tuner.fit()
    finally:
        VIEWS.pop(str(sweep_dir), None)
        ray.shutdown()
        sys.stdout.flush()
