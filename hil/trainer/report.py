"""The operator's end-of-run report: ``report.html`` with PNG plots beside it.

Plots (each only when its data exists in the run directory):

- ``curves.png``: train/valid/test metric per epoch (NLL or accuracy);
- ``pulses.png``: SET pulses and refreshed cells per epoch;
- ``conductance_hist.png``: per-device conductance histograms before and after training
  (``conductances_before.npz`` / ``conductances_after.npz``, one array per placed matrix);
- ``weights_programmed.png``: programmed against target weights at placement
  (``programming.npz``: ``<name>_target`` and ``<name>_achieved``).

A "Cost per epoch" table lists ``train_s``, ``eval_s``, ``epoch_s`` and, when the device is
behind a link, ``link_bytes`` and (serial board) ``link_s_est``, the serial time of those
bytes at the board's baud rate.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from hil.trainer.runs import RunDir


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _curves(run: RunDir, metrics: list[dict[str, Any]], metric: str) -> str | None:
    if not metrics:
        return None
    plt = _pyplot()
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in ("train", "valid", "test"):
        key = f"{split}_{metric}"
        vals = [m.get(key) for m in metrics]
        if any(v is not None for v in vals):
            ax.plot(epochs, [np.nan if v is None else v for v in vals], marker="o", label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")  # loc='best' warns when it is slow
    fig.tight_layout()
    fig.savefig(run.path / "curves.png", dpi=100)
    plt.close(fig)
    return "curves.png"


def _pulses(run: RunDir, metrics: list[dict[str, Any]]) -> str | None:
    if not metrics or "pulses" not in metrics[0]:
        return None
    plt = _pyplot()
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(epochs, [m.get("pulses", 0) for m in metrics], label="SET pulses")
    ax.set_xlabel("epoch")
    ax.set_ylabel("SET pulses")
    ax2 = ax.twinx()
    ax2.plot(epochs, [m.get("refreshes", 0) for m in metrics], "r.-", label="refreshed cells")
    ax2.set_ylabel("refreshed cells", color="r")
    fig.tight_layout()
    fig.savefig(run.path / "pulses.png", dpi=100)
    plt.close(fig)
    return "pulses.png"


def _hist(run: RunDir) -> str | None:
    before, after = run.path / "conductances_before.npz", run.path / "conductances_after.npz"
    if not (before.exists() and after.exists()):
        return None
    plt = _pyplot()
    with np.load(before) as b, np.load(after) as a:
        names = sorted(set(b.files) & set(a.files))
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            ax.hist(b[name].ravel(), bins=60, alpha=0.6, label="before")
            ax.hist(a[name].ravel(), bins=60, alpha=0.6, label="after")
            ax.set_title(name)
            ax.set_xlabel("G (µS)")
            ax.set_yscale("log")
            ax.legend(loc="upper right")  # loc='best' warns when it is slow
    fig.tight_layout()
    fig.savefig(run.path / "conductance_hist.png", dpi=100)
    plt.close(fig)
    return "conductance_hist.png"


def _programmed(run: RunDir) -> str | None:
    file = run.path / "programming.npz"
    if not file.exists():
        return None
    plt = _pyplot()
    with np.load(file) as z:
        names = sorted(k[: -len("_target")] for k in z.files if k.endswith("_target"))
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            t, a = z[f"{name}_target"].ravel(), z[f"{name}_achieved"].ravel()
            ax.plot(t, a, ",", alpha=0.5)
            lim = float(max(np.abs(t).max(), np.abs(a).max(), 1e-9))
            ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
            ax.set_title(name)
            ax.set_xlabel("target weight")
            ax.set_ylabel("programmed weight")
    fig.tight_layout()
    fig.savefig(run.path / "weights_programmed.png", dpi=100)
    plt.close(fig)
    return "weights_programmed.png"


COST_KEYS = ("train_s", "eval_s", "epoch_s", "link_bytes", "link_s_est")
"""Per-epoch costs the report tabulates when the metrics have them: host time of training and
of evaluation, and the bytes the epoch moved over the device link with their serial time
at the board's baud rate."""


def _costs(metrics: list[dict[str, Any]]) -> str:
    """HTML table of :data:`COST_KEYS` per epoch (only the keys the run recorded)."""
    keys = [k for k in COST_KEYS if any(k in m for m in metrics)]
    if not keys:
        return ""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    head = "".join(f"<th>{k}</th>" for k in ("epoch", *keys))
    rows = "".join(
        "<tr>" + "".join(f"<td>{cell(m.get(k))}</td>" for k in ("epoch", *keys)) + "</tr>"
        for m in metrics
    )
    return f"<h2>Cost per epoch</h2><table><tr>{head}</tr>{rows}</table>"


def write_report(run: RunDir, metric: str) -> Path:
    """Write ``report.html`` (and its PNGs) for ``run``; returns the HTML path."""
    metrics = run.metrics()
    summary = run.summary() or {}
    images = [
        img
        for img in (
            _curves(run, metrics, metric),
            _pulses(run, metrics),
            _hist(run),
            _programmed(run),
        )
        if img
    ]
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
        if not isinstance(v, dict | list)
    )
    body = [
        f"<h1>Run {html.escape(run.path.name)}</h1>",
        f"<table>{rows}</table>",
        _costs(metrics),
        *(f'<p><img src="{img}" alt="{img}"></p>' for img in images),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>pcm-hil run report</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    run.report_file.write_text(page, encoding="utf-8")
    return run.report_file
