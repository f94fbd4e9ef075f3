"""Tasks as plug-ins: what a task declares (:class:`TaskSpec`) and how the trainer finds it.

A task is one module holding a :class:`TaskSpec`:

- ``name``, and ``section``: the key of its settings in a run config (a pydantic model,
  ``settings``; JSB's is ``data``, SHD's ``shd``);
- ``n_in``, ``n_out``: input and output widths of the network;
- ``loss``: the readout's loss (``bce``: sigmoid per output; ``ce_over_time``: softmax
  cross-entropy of a leaky-integrator readout, one label per sequence);
- ``metric`` and whether higher is better; the summary reports ``test_<metric>`` etc.;
- ``load(settings, ctx)``: the loader, returning :class:`TaskData` (batches, the batch
  score, split evaluation);
- ``readout_bias``: named readout-bias initialisations beyond ``zero`` (JSB:
  ``key_frequency``);
- ``baselines(data)``: reference scores of trivial predictors.

:func:`get_task` finds a task by name among the built-ins (``jsb``, ``shd``), tasks
registered with :func:`register_task`, the entry-point group ``pcm_hil.tasks`` of
installed packages, or an import path ``package.module:ATTRIBUTE`` (so a task in your own
module needs no installation: ``task: mytasks.toy:TASK``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel

from hil.errors import ConfigError

ENTRY_POINT_GROUP = "pcm_hil.tasks"
BUILTIN_TASKS = {"jsb": "hil.tasks.jsb_task:TASK", "shd": "hil.tasks.shd_task:TASK"}

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Time-major ``x`` (T, B, n_in), ``target`` (T, B, n_out), ``mask`` (T, B)."""
Logits = Callable[[np.ndarray], np.ndarray]
"""The network's readout outputs ``o`` (T, B, n_out) for an input batch (T, B, n_in)."""


class TaskData(Protocol):
    """A loaded task: what the trainer and the evaluator call."""

    @property
    def source(self) -> str:
        """Where the data came from (recorded in the run; checked on resume)."""
        ...

    @property
    def n_train(self) -> int:
        """Number of training items (sequences)."""
        ...

    def train_batch(self, idx: Sequence[int]) -> Batch:
        """The training items ``idx`` as one time-major batch."""
        ...

    def batch_score(self, o: np.ndarray, batch: Batch) -> tuple[float, int]:
        """``(metric sum, count)`` of readout outputs ``o`` on ``batch`` (training metric)."""
        ...

    def evaluate(self, logits: Logits, split: str) -> float:
        """The metric of ``logits`` over split ``valid`` or ``test``."""
        ...

    @property
    def comparable(self) -> bool:
        """The test metric is comparable to published numbers (recorded in the summary)."""
        ...

    @property
    def comparable_why(self) -> str:
        """Why (or why not), in words."""
        ...

    @property
    def fingerprint(self) -> str | None:
        """Content identity of the data (e.g. the source file's sha256): a resumed run may
        read a copy at another path with the same fingerprint."""
        ...


@dataclass(frozen=True)
class LoadContext:
    """What a loader may use beside its settings."""

    seed: int
    """the run's seed (e.g. for a validation split drawn from the training file)"""
    max_train: int | None = None
    """use only the first N training items"""
    max_eval: int | None = None
    """evaluate on the first N valid/test items only"""
    data_dir: Path | None = None
    """``$HIL_DATA_DIR``, if set"""
    progress: bool = True
    """the loader may print what it is doing"""


@dataclass(frozen=True)
class TaskSpec:
    """Everything the trainer needs to know about a task (see the module docstring)."""

    name: str
    section: str
    settings: type[BaseModel]
    n_in: int
    n_out: int
    loss: Literal["bce", "ce_over_time"]
    metric: str
    higher_is_better: bool
    load: Callable[[Any, LoadContext], TaskData]
    readout_bias: Mapping[str, Callable[[TaskData], np.ndarray]] = field(default_factory=dict)
    baselines: Callable[[TaskData], dict[str, float]] | None = None

    def better(self, a: float, b: float) -> bool:
        """True when metric value ``a`` is better than ``b``."""
        return a > b if self.higher_is_better else a < b


_registry: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make ``spec`` available by its name (replacing a task of the same name)."""
    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"register_task needs a TaskSpec, got {type(spec).__name__}")
    _registry[spec.name] = spec
    return spec


def _import(ref: str, what: str) -> TaskSpec:
    module, _, attr = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"task {what}: cannot import {ref!r} ({exc})") from None
    if not isinstance(obj, TaskSpec):
        raise ConfigError(f"task {what}: {ref!r} is a {type(obj).__name__}, not a TaskSpec")
    return obj


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> list[str]:
    """Names of every task :func:`get_task` finds by name."""
    return sorted({*BUILTIN_TASKS, *_registry, *_entry_points()})


def get_task(name: str) -> TaskSpec:
    """The task called ``name`` (see the module docstring for where it is looked up)."""
    if name in _registry:
        return _registry[name]
    if name in BUILTIN_TASKS:
        spec = _import(BUILTIN_TASKS[name], repr(name))
    elif (ep := _entry_points().get(name)) is not None:
        spec = _import(ep.value, f"{name!r} (entry point of {ep.dist.name if ep.dist else '?'})")
    elif ":" in name:
        spec = _import(name, repr(name))
    else:
        raise ConfigError(
            f"unknown task {name!r}; known: {', '.join(task_names())} "
            f"(or give an import path package.module:TASK)"
        )
    _registry[name] = spec
    return spec
