"""What the dashboard and the static report show of a run, read tolerantly from its directory.

Every reader returns data plus a list of warnings and never raises for bad files: a missing
file, an unreadable JSON file, a torn last line of ``metrics.jsonl`` (a write cut short by
a crash) or a corrupt line in the middle are reported as warnings and skipped, so one bad
run never breaks a page. The best epoch is the one with the best validation metric
(lowest NLL, highest accuracy), as in ``summary.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hil.fsio import dumps
from hil.trainer.status import RunStatus, run_status

Records = list[dict[str, Any]]


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (numpy values converted), NaN and ±inf as None, which
    browsers cannot parse."""
    return _finite(json.loads(dumps(obj)))


def read_records(path: Path) -> tuple[Records, list[str]]:
    """Records of a JSON-lines file and warnings about lines that could not be used."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{path.name} cannot be read: {exc}"]
    lines = text.split("\n")
    warnings: list[str] = []
    if lines[-1].strip():
        warnings.append(
            f"the last line of {path.name} is incomplete (a write cut short, e.g. by a "
            f"crash); ignored"
        )
    records: Records = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            warnings.append(f"line {number} of {path.name} is not valid JSON; skipped")
            continue
        if not isinstance(rec, dict):
            warnings.append(f"line {number} of {path.name} is not a JSON object; skipped")
            continue
        records.append(rec)
    return records, warnings


def read_json(path: Path, warnings: list[str], *, required: bool = False) -> Any:
    """The JSON in ``path`` or None; a problem (or a missing required file) is a warning."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            warnings.append(f"{path.name} is missing")
    except (OSError, ValueError) as exc:
        warnings.append(f"{path.name} cannot be read: {exc}")
    return None


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def metric_of(config: Any, summary: Any, metrics: Records) -> str:
    """``nll`` or ``accuracy``: from the summary, else the metric keys, else the task."""
    if isinstance(summary, dict) and summary.get("metric") in ("nll", "accuracy"):
        return str(summary["metric"])
    for rec in metrics:
        if "valid_accuracy" in rec:
            return "accuracy"
        if "valid_nll" in rec:
            return "nll"
    return "accuracy" if _get(config, "task") == "shd" else "nll"


def best_epoch(metrics: Records, metric: str) -> dict[str, Any] | None:
    """The record with the best validation metric, as ``{epoch, valid, test}``."""
    key = f"valid_{metric}"
    scored = [r for r in metrics if isinstance(r.get(key), int | float)]
    if not scored:
        return None
    pick = max if metric == "accuracy" else min
    best = pick(scored, key=lambda r: r[key])
    return {"epoch": best.get("epoch"), "valid": best[key], "test": best.get(f"test_{metric}")}


def _epochs_total(config: Any, events: Records) -> int | None:
    for ev in reversed(events):  # a resume may extend the run with --epochs
        if ev.get("event") in ("start", "resume") and isinstance(ev.get("epochs"), int):
            return int(ev["epochs"])
    total = _get(config, "train", "epochs")
    return int(total) if isinstance(total, int) else None


def overview(path: Path, run_id: str) -> dict[str, Any]:
    """One row of the runs overview."""
    warnings: list[str] = []
    config = read_json(path / "config.json", warnings, required=True)
    summary = read_json(path / "summary.json", warnings)
    data = read_json(path / "data.json", warnings)
    metrics, w_metrics = read_records(path / "metrics.jsonl")
    events, w_events = read_records(path / "events.jsonl")
    warnings += w_metrics + w_events
    status = run_status(path)
    if not (path / "metrics.jsonl").exists() and status.status is not RunStatus.RUNNING:
        warnings.append("metrics.jsonl is missing (no epoch was recorded)")
    if status.status is RunStatus.FINISHED and summary is None:
        warnings.append("summary.json is missing")
    metric = metric_of(config, summary, metrics)
    started = next((e.get("time") for e in events if e.get("event") == "start"), None)
    if started is None:
        try:
            started = (path / "config.json").stat().st_mtime
        except OSError:
            started = None
    last = metrics[-1] if metrics else {}
    return {
        "id": run_id,
        "name": path.name,
        "path": str(path),
        "status": status.status.value,
        "reason": status.reason,
        "task": _get(config, "task"),
        "rule": _get(config, "rule", "name"),
        "device": _get(config, "device", "url"),
        "data_source": _get(data, "source") or _get(summary, "data_source"),
        "comparable": _get(summary, "comparable_to_published"),
        "metric": metric,
        "epochs_done": len(metrics),
        "epochs_total": _epochs_total(config, events),
        "best": best_epoch(metrics, metric),
        "last_test": last.get(f"test_{metric}"),
        "started": started,
        "updated": last.get("time"),
        "warnings": warnings,
    }


def safe_overview(path: Path, run_id: str) -> dict[str, Any]:
    """:func:`overview`, or a row that says why the run cannot be shown."""
    try:
        return overview(path, run_id)
    except Exception as exc:  # noqa: BLE001 - one odd run must not break the page
        return {
            "id": run_id,
            "name": path.name,
            "path": str(path),
            "status": "failed",
            "reason": "unreadable run directory",
            "warnings": [f"cannot read this run: {type(exc).__name__}: {exc}"],
        }


def detail(path: Path, run_id: str) -> dict[str, Any]:
    """Everything of the run page except the per-epoch records, events and arrays."""
    row = overview(path, run_id)
    warnings = row["warnings"]
    placement = read_json(path / "placement.json", warnings)
    return {
        **row,
        "config": read_json(path / "config.json", []),
        "summary": read_json(path / "summary.json", []),
        "device_info": read_json(path / "device.json", warnings),
        "environment": read_json(path / "environment.json", warnings),
        "placement": _get(placement, "placement"),
        "programming": _get(placement, "programming"),
        "health": health_summary(_get(placement, "health")),
        "drift": read_json(path / "drift_eval.json", warnings),
    }


def health_summary(rec: Any) -> dict[str, Any] | None:
    """The placement record's ``health`` in a few numbers: the report used, per chip the
    bad rows and columns and the number of bad cells avoided, per matrix the bad cells its
    region still holds (None for a run without the record)."""
    if not isinstance(rec, dict):
        return None
    out: dict[str, Any] = {"report": rec.get("source"), "report created": rec.get("created")}
    avoided = rec.get("avoided")
    for chip, a in (avoided if isinstance(avoided, dict) else {}).items():
        if isinstance(a, dict):
            out[f"chip {chip} bad rows avoided"] = a.get("bad_rows")
            out[f"chip {chip} bad columns avoided"] = a.get("bad_cols")
            out[f"chip {chip} bad cells avoided"] = len(a.get("bad_cells") or [])
    inside = rec.get("bad_cells_inside")
    for name, cells in (inside if isinstance(inside, dict) else {}).items():
        out[f"{name} bad cells inside"] = len(cells) if isinstance(cells, list) else cells
    return {k: v for k, v in out.items() if v is not None}


def records_since(path: Path, name: str, since: int) -> dict[str, Any]:
    """``name`` (metrics.jsonl or events.jsonl) records from index ``since`` on.

    ``reset`` is true when the file holds fewer records than ``since`` (a resume rewrote it
    from the checkpoint's history): the client then drops what it had and takes all.
    """
    records, warnings = read_records(path / name)
    reset = since > len(records)
    start = 0 if reset else max(since, 0)
    return {
        "records": records[start:],
        "total": len(records),
        "reset": reset,
        "warnings": warnings,
        "status": run_status(path).status.value,
    }


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def differing_keys(configs: list[Any]) -> dict[str, list[Any]]:
    """Config keys (dotted) whose values differ between ``configs``, with each value."""
    flat = [flatten(c) if isinstance(c, dict) else {} for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {
        k: [f.get(k) for f in flat]
        for k in keys
        if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    }
