"""``hil runs export RUN… --to mlflow``: runs into an MLflow tracking store (extra ``mlflow``).

Each run directory becomes one MLflow run in experiment ``experiment``:

- params: the resolved config as dotted keys (``optim.lr``, ``device.url``, …), the data
  source and the device identity (driver, preset, firmware);
- metrics: every numeric key of every ``metrics.jsonl`` line at ``step = epoch`` (with the
  epoch's wall time), and the numeric entries of ``summary.json`` as ``summary.<key>``;
- tags: the run directory, its status (:func:`hil.trainer.status.run_status`), task, rule;
- artifacts: the run's JSON files, ``metrics.jsonl``, ``events.jsonl`` and ``report.html``.

The default store is offline: a SQLite file (``sqlite:///mlflow.db``), artifacts beside it
in ``mlartifacts/``. A run exported before (same run directory, same start) is skipped
unless ``replace`` is given, so exporting twice never duplicates it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import ConfigError
from hil.trainer.runs import RunDir
from hil.trainer.status import RunStatus, run_status

DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS = (
    "config.json",
    "summary.json",
    "data.json",
    "device.json",
    "placement.json",
    "environment.json",
    "drift_eval.json",
    "metrics.jsonl",
    "events.jsonl",
    "report.html",
)
END_STATUS = {
    RunStatus.FINISHED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.STOPPED: "KILLED",
}
RUN_TAG = "pcm_hil.run"
MAX_PARAM_CHARS = 500
BATCH = 1000


@dataclass(frozen=True)
class Exported:
    run: Path
    mlflow_run_id: str
    skipped: bool


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            "hil runs export --to mlflow needs the 'mlflow' extra: pip install 'pcm-hil[mlflow]'"
        ) from None
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment(client: Any, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):  # artifacts beside the database file
        db = Path(tracking_uri[len("sqlite:///") :]).resolve()
        location = (db.parent / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def export_runs(
    runs: list[Path],
    tracking_uri: str = DEFAULT_URI,
    experiment: str = "pcm-hil",
    *,
    replace: bool = False,
) -> list[Exported]:
    """Export each run directory in ``runs``; returns what happened to each."""
    dirs = [RunDir.open(r) for r in runs]  # refuse a non-run before touching the store
    client = _client(tracking_uri)
    exp_id = _experiment(client, experiment, tracking_uri)
    return [_export_one(client, exp_id, run, replace) for run in dirs]


def _export_one(client: Any, exp_id: str, run: RunDir, replace: bool) -> Exported:
    from mlflow.entities import Metric, Param, RunTag

    events = run.events()
    starts = [e["time"] for e in events if e.get("event") == "start" and "time" in e]
    start_s = starts[0] if starts else run.config_file.stat().st_mtime
    key = f"{run.path.resolve()}@{start_s:.6f}"
    found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{key}'")
    if found and not replace:
        return Exported(run.path, found[0].info.run_id, skipped=True)
    for old in found:
        client.delete_run(old.info.run_id)

    config = run.read_json("config.json")
    summary = run.summary() or {}
    status = run_status(run.path)
    data = (
        json.loads((run.path / "data.json").read_text())
        if (run.path / "data.json").is_file()
        else {}
    )
    device = (
        run.read_json("device.json").get("info", {}) if (run.path / "device.json").is_file() else {}
    )
    tags = {
        RUN_TAG: key,
        "mlflow.runName": run.path.name,
        "pcm_hil.run_dir": str(run.path.resolve()),
        "pcm_hil.status": status.status.value,
        "pcm_hil.task": str(config.get("task")),
        "pcm_hil.rule": str(config.get("rule", {}).get("name")),
    }
    created = client.create_run(exp_id, start_time=int(start_s * 1000), tags=tags)
    run_id = created.info.run_id
    params = {
        **{f"config.{k}": v for k, v in _flatten(config).items()},
        "data.source": data.get("source"),
        **{f"device.{k}": device.get(k) for k in ("driver", "preset", "firmware") if k in device},
    }
    param_list = [
        Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()
    ]
    param_list = [Param(p.key, p.value[:MAX_PARAM_CHARS]) for p in param_list]
    metrics: list[Any] = []
    for rec in run.metrics():
        step = int(rec.get("epoch", 0))
        when = int(1000 * float(rec.get("time", start_s)))
        for k, v in rec.items():
            value = _number(v)
            if k not in ("epoch", "time") and value is not None:
                metrics.append(Metric(k, value, when, step))
    last_step = max((m.step for m in metrics), default=0)
    for k, v in summary.items():
        value = _number(v)
        if value is not None:
            metrics.append(Metric(f"summary.{k}", value, int(1000 * start_s), last_step))
    for i in range(0, max(len(param_list), 1), 100):
        client.log_batch(run_id, params=param_list[i : i + 100])
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    for name in ARTIFACTS:
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    end = END_STATUS.get(status.status)
    if end is not None:
        end_s = max((e.get("time", start_s) for e in events), default=start_s)
        client.set_terminated(run_id, status=end, end_time=int(1000 * end_s))
    return Exported(run.path, run_id, skipped=False)
