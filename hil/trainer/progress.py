"""Rich progress bars for the operator: epoch, batch, ETA and the running train loss."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Two bars (epochs, batches of the current epoch); a no-op when disabled."""

    def __init__(self, enabled: bool | None = None, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self._epochs: Any = None
        self._batches: Any = None

    def __enter__(self) -> TrainingProgress:
        self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._p.stop()

    def start_epoch(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        if self._epochs is None:
            self._epochs = self._p.add_task("epochs", total=epochs, completed=epoch, loss="")
        else:
            self._p.update(self._epochs, completed=epoch)
        if self._batches is not None:
            self._p.remove_task(self._batches)
        self._batches = self._p.add_task(
            f"epoch {epoch + 1}", total=n_batches, completed=done, loss=""
        )

    def batch_done(self, metric: str, value: float) -> None:
        label = "NLL" if metric == "nll" else metric
        self._p.update(self._batches, advance=1, loss=f"train {label} {value:.3f}")

    def epoch_done(self) -> None:
        self._p.update(self._epochs, advance=1)


class WaitDisplay:
    """While a run waits in a server's queue: a "waiting for chip …" bar with the queue
    position (terminal), or one stderr line per change of position."""

    def __init__(self, enabled: bool | None, url: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.url = url
        self._p: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> WaitDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()

    def update(self, position: int, why: str) -> None:
        text = f"waiting for chip at {self.url}: position {position} in the queue ({why})"
        if not self.enabled:
            self.console.print(f"hil: {text}", highlight=False, soft_wrap=True)
            return
        if self._p is None:
            self._p = Progress(
                TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=self.console
            )
            self._p.start()
            self._task = self._p.add_task(text, total=None)
        else:
            self._p.update(self._task, description=text)
