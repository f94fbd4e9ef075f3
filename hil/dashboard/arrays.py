"""Per-matrix conductance views of a run: histograms, heat maps, programming quality.

Sources, each used when present:

- ``conductances_before.npz``: every placed matrix's devices after programming,
  ``(rows, cols, 4)`` µS;
- the latest conductances: ``conductances_after.npz`` at the end of a run, else, while a
  simulator run trains, the chip snapshot of the last checkpoint
  (``checkpoint/chips-N/chip<c>.npz``, programmed conductances ``g_prog_us`` before drift)
  cut to each matrix's region from ``placement.json``;
- ``programming.npz``: target and achieved weights at placement.

Heat maps show each cell's net conductance
``G_net = ((G_A+ + G_B+) − (G_A− + G_B−))/2`` (µS, :func:`protocols.cell.net_conductance`).
Results are cached per file version (path, size, mtime), so polling a page is cheap.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from protocols.cell import net_conductance

HIST_BINS = 60
SCATTER_POINTS = 2000


def _version(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _load_npz(version: tuple[str, int, int]) -> dict[str, np.ndarray]:
    with np.load(version[0]) as z:
        return {k: z[k] for k in z.files}


def _npz(path: Path, warnings: list[str]) -> dict[str, np.ndarray] | None:
    version = _version(path)
    if version is None:
        return None
    try:
        return _load_npz(version)
    except (OSError, ValueError, KeyError) as exc:
        warnings.append(f"{path.name} cannot be read: {exc}")
        return None


def _checkpoint_conductances(run: Path, warnings: list[str]) -> tuple[dict, str] | None:
    """Each placed matrix's devices from the last checkpoint's chip snapshot (simulator)."""
    try:
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        regions = json.loads((run / "placement.json").read_text())["regions"]
    except (OSError, ValueError, KeyError):
        return None
    snap = state.get("chip_snapshot")
    if not snap:
        return None
    out: dict[str, np.ndarray] = {}
    for name, r in regions.items():
        chip = _npz(run / "checkpoint" / snap / f"chip{r['chip']}.npz", warnings)
        if chip is None or "g_prog_us" not in chip:
            return None
        out[name] = chip["g_prog_us"][r["row0"] : r["row1"], r["col0"] : r["col1"]]
    label = f"checkpoint after epoch {state.get('epoch')} (batch {state.get('batch')})"
    return out, label


def _hist(g: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(g.ravel(), bins=edges)[0].tolist()


def _round(a: np.ndarray, digits: int = 3) -> list:
    return np.round(a.astype(np.float64), digits).tolist()


def matrices(run: Path) -> dict[str, Any]:
    """Per matrix: conductance histograms (before, latest), a net-conductance heat map
    (latest), and target-vs-programmed weights; plus where the latest state came from."""
    warnings: list[str] = []
    before = _npz(run / "conductances_before.npz", warnings)
    latest = _npz(run / "conductances_after.npz", warnings)
    latest_label = "after training"
    if latest is None:
        found = _checkpoint_conductances(run, warnings)
        if found is not None:
            latest, latest_label = found
    prog = _npz(run / "programming.npz", warnings)
    names = sorted(set(before or {}) | set(latest or {}))
    if prog is not None:
        names = sorted(set(names) | {k[: -len("_target")] for k in prog if k.endswith("_target")})
    out: dict[str, Any] = {}
    for name in names:
        g_before = None if before is None else before.get(name)
        g_latest = None if latest is None else latest.get(name)
        entry: dict[str, Any] = {}
        present = [g for g in (g_before, g_latest) if g is not None]
        if present:
            hi = max(float(np.max(g)) for g in present)
            edges = np.linspace(0.0, max(hi, 1e-6), HIST_BINS + 1)
            entry["hist"] = {
                "edges_us": _round(edges),
                "before": None if g_before is None else _hist(g_before, edges),
                "latest": None if g_latest is None else _hist(g_latest, edges),
            }
        heat = g_latest if g_latest is not None else g_before
        if heat is not None and heat.ndim == 3 and heat.shape[-1] == 4:
            entry["heatmap_us"] = _round(net_conductance(heat), 2)
            entry["heatmap_of"] = "latest" if g_latest is not None else "before"
        if prog is not None and f"{name}_target" in prog and f"{name}_achieved" in prog:
            t = prog[f"{name}_target"].ravel()
            a = prog[f"{name}_achieved"].ravel()
            pick = np.linspace(0, t.size - 1, min(t.size, SCATTER_POINTS)).astype(int)
            entry["programming"] = {
                "target": _round(t[pick], 4),
                "achieved": _round(a[pick], 4),
                "rms_error_w": float(np.sqrt(np.mean((t - a) ** 2))),
            }
        out[name] = entry
    return {
        "matrices": out,
        "latest": latest_label if latest is not None else None,
        "warnings": warnings,
    }
