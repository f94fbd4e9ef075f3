"""What the operator sees while a sweep runs, and the table at its end.

Live (a rich display on a terminal, one line per change otherwise): trials running,
waiting for a chip, queued (waiting for a CPU), done, failed and stopped early, and the
best value of the metric so far. ``sweep.json``/``sweep.png`` are rewritten whenever a
trial ends, so they are current while the sweep runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hil.sweep import results
from hil.sweep.spec import SweepSpec, Trial

REFRESH_S = 0.5
MAX_ROWS = 20


class SweepProgress:
    def __init__(self, spec: SweepSpec, trials: list[Trial], sweep_dir: Path, enabled: bool | None):
        self.spec, self.trials, self.sweep_dir = spec, trials, sweep_dir
        self.console = Console(stderr=False)
        self.live_mode = self.console.is_terminal if enabled is None else enabled
        self.live: Live | None = None
        self.state: dict[str, str] = {}
        self.summary: dict[str, Any] | None = None
        self._last_line = ""
        self._last_draw = 0.0

    # ------------------------------------------------------------------ terminal
    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def __enter__(self) -> SweepProgress:
        self.refresh(force=True)
        if self.live_mode:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def status_line(self, summary: dict[str, Any]) -> str:
        c = summary["counts"]
        best = summary["best_trial"]
        shown = f"{best[self.spec.metric]:.4f} ({best['id']})" if best else "-"
        return (
            f"running {c['running']} | waiting for a chip {c['waiting for a chip']} | "
            f"queued {c['queued']} | done {c['done']} | failed {c['failed']} | "
            f"stopped early {c['stopped early']} | best {self.spec.metric} {shown}"
        )

    def table(self, summary: dict[str, Any]) -> Table:
        sign = 1.0 if self.spec.mode == "min" else -1.0
        pts = sorted(
            summary["points"],
            key=lambda p: (p["mean"] is None, sign * (p["mean"] or 0.0)),
        )
        t = Table(title=f"sweep {self.spec.name}: {self.spec.metric} at the best-valid epoch")
        for col in ("point", "done", "mean", "std (ddof=1)", "per seed"):
            t.add_column(col, justify="left" if col in ("point", "per seed") else "right")
        for p in pts[:MAX_ROWS]:
            best = p["label"] == summary["best_point"]
            t.add_row(
                ("* " if best else "") + p["label"],
                f"{p['n']}/{p['trials']}",
                f"{p['mean']:.4f}" if p["mean"] is not None else "-",
                f"{p['std']:.4f}" if p["std"] is not None else "-",
                " ".join(f"{v:.3f}" for v in p["values"]),
                style="bold green" if best else None,
            )
        if len(pts) > MAX_ROWS:
            t.caption = f"{len(pts) - MAX_ROWS} more points in sweep.json"
        return t

    def _render(self) -> Group:
        summary = self.summary or results.aggregate(self.spec, self.trials, self.sweep_dir)
        return Group(Text(self.status_line(summary)), self.table(summary))

    def refresh(self, force: bool = False, write: bool = False) -> None:
        now = time.monotonic()
        if not force and not write and now - self._last_draw < REFRESH_S:
            return
        self._last_draw = now
        self.summary = results.aggregate(self.spec, self.trials, self.sweep_dir, self.state)
        if write:
            results.write(self.summary, self.sweep_dir)
        if self.live is not None:
            self.live.update(self._render())
        else:
            line = self.status_line(self.summary)
            if line != self._last_line:
                print(line, flush=True)
                self._last_line = line

    def final(self, summary: dict[str, Any]) -> None:
        self.console.print(self.table(summary))
        self.console.print(self.status_line(summary), highlight=False)
        if summary["best"]:
            b = summary["best"]
            std = f" ± {b['std']:.4f}" if b["std"] is not None else ""
            self.console.print(
                f"best point: {b['label']}: {self.spec.metric} {b['mean']:.4f}{std} (n={b['n']})",
                highlight=False,
            )
        self.console.print(f"results: {self.sweep_dir}/sweep.json, sweep.png", highlight=False)
        sys.stdout.flush()
