"""The run configuration: one pydantic model, loaded from YAML or TOML, validated at the edge.

Precedence: the config file, then CLI flags (``--device``, ``--seed``, ``--epochs``), then
``--set key=value`` overrides with dotted keys (``--set optim.lr=5e-4``); values of
``--set`` are parsed as YAML scalars/lists. Every field is checked; a bad value is reported
in one line naming the key, the value and what was expected.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from hil.errors import ConfigError
from hil.tasks.spec import TaskSpec, get_task, task_names

SOFTWARE = "software"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NetworkSection(_Strict):
    """SNU network: input and output widths come from the task."""

    hidden: list[int] = Field(default=[150], min_length=1)
    """neurons per hidden SNU layer"""
    reset: Literal["full", "soft"] = "full"
    recurrent: bool = False
    """trainable recurrent H (the paper's hardware run has none)"""
    decay: float = Field(default=0.6, ge=0.0, lt=1.0)
    pseudo: Literal["tanh", "fast_sigmoid", "triangle", "rectangle"] = "tanh"
    """pseudo-derivative kind (``tanh``: 1 − tanh²(k·v); ``fast_sigmoid``: 1/(k|v| + 1)²)"""
    pseudo_scale: float = Field(default=1.0, gt=0)
    """steepness k of the pseudo-derivative (paper: 1 for JSB, 100 for SHD)"""
    threshold_init: float = 0.0
    train_threshold: bool = True
    train_decay: bool = False
    w_scale: float = Field(default=1.0, gt=0)
    """initial Glorot range multiplier"""
    readout_bias_init: str = "zero"
    """readout bias at the start: ``zero``, or an initialisation the task offers (JSB:
    ``key_frequency``, the log-odds of each key's training frequency, so that training
    starts from the constant predictor instead of from chance)"""
    detach_reset: bool = False
    """no gradient through the reset's use of ``y_{t−1}`` (a heuristic, not the exact
    gradient; :class:`hil.learning.SNUConfig`)"""
    readout_tau: float = Field(default=0.0, ge=0.0, lt=1.0)
    """readout leak τ: 0 is a dense sigmoid layer (JSB), SHD uses a leaky integrator 0.98–0.99"""


class RuleSection(_Strict):
    name: Literal["bptt", "ostl", "ostl_rnd", "drtp", "osttp"] = "osttp"
    traces: Literal["diag", "complete"] = "diag"
    reduction: Literal["frame_mean", "sequence_mean"] = "sequence_mean"
    update: Literal["sequence", "step"] = "sequence"
    """apply accumulated updates per sequence (the paper) or every time step (fully online)"""


class OptimSection(_Strict):
    kind: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=1e-3, gt=0)
    decay_factor: float = Field(default=0.6, gt=0, le=1)
    decay_every: int = Field(default=5, ge=1)
    clip_norm: float | None = Field(default=None, gt=0)


class TrainSection(_Strict):
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seed: int = Field(default=0, ge=0)
    max_train_sequences: int | None = Field(default=None, ge=1)
    """use only the first N training sequences (short runs, demos)"""
    max_eval_sequences: int | None = Field(default=None, ge=1)
    """evaluate on the first N valid/test sequences only"""
    streams: Literal["spawned", "legacy"] = "spawned"
    """how ``seed`` seeds the initial weights and the epochs' shuffle: ``spawned`` —
    ``default_rng([seed, 0])`` and ``default_rng([seed, 1])``; ``legacy`` —
    ``default_rng(seed)`` and ``default_rng(1000 + seed)``, the streams of the software
    reproduction before the trainer ran it (kept so its recorded figures regenerate
    bit-identically)"""

    def init_rng(self) -> np.random.Generator:
        """The generator of the initial weights."""
        if self.streams == "legacy":
            return np.random.default_rng(self.seed)
        return np.random.default_rng([self.seed, 0])

    def shuffle_rng(self) -> np.random.Generator:
        """The generator of every epoch's order of the training items."""
        if self.streams == "legacy":
            return np.random.default_rng(1000 + self.seed)
        return np.random.default_rng([self.seed, 1])


class DeviceSection(_Strict):
    """Where the matrices live and how updates become pulses."""

    url: str = "sim://?preset=hermes&seed=0"
    """``software`` (no chip), ``sim://…`` (in-process simulator), ``tcp://…``/``ipc://…``
    (a ``hil serve``), ``board://…`` (the real board)"""
    w_max: dict[str, float] = Field(default_factory=dict)
    """weight magnitude mapped to the full net conductance, per matrix name
    (``h0.W``, ``out.W``, ``B0``); default: ``headroom × max|W_init|``"""
    headroom: float = Field(default=2.0, ge=1.0)
    g_net_fraction: float = Field(default=0.5, gt=0, le=1)
    """fraction of the device's net conductance range (g_max − g_min) that ``w_max`` maps to"""
    max_pulses_per_update: int = Field(default=1, ge=1)
    refresh_every: int = Field(default=10, ge=0)
    """refresh saturated cells every N batches (0: never)"""
    refresh_hi: float = Field(default=0.75, gt=0, le=1)
    refresh_lo: float = Field(default=0.25, ge=0, le=1)
    program_tolerance_us: float | None = Field(default=0.3, gt=0)
    """verify tolerance of program-and-verify and of refresh (µS). 0.3 is below one sigma
    of a hermes verify read (0.5 µS): initial programming takes more iterations (about 15 of
    the 20) for little gain, but refresh, which re-programs with noisy SET pulses, learns
    better with it (demo: test NLL 10.48 at 0.3, 10.92 at 0.5). None: the device's
    recommended tolerance (``DeviceInfo.program_tolerance_us``: 0.5 µS on hermes, 1.2 on
    aihwkit-pcm), else 0.5."""
    program_max_iterations: int = Field(default=20, ge=1)
    drift_compensation: Literal["none", "global", "per_column"] = "global"
    host_time_per_batch_s: float = Field(default=0.0, ge=0)
    """virtual-clock devices: host compute time modelled per batch (drift during training)"""
    eval_delay_s: float = Field(default=0.0, ge=0)
    """virtual-clock devices: time between the end of an epoch's training and its evaluation"""
    chip: int | None = Field(default=None, ge=0)
    """reserve every matrix on this chip (default: wherever the device side finds room)"""
    region: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] | None = None
    """``[CHIP, ROW, COL]``: reserve the run's matrices exactly there, shelf-packed from
    that corner of that chip (reproducible placement; waits while another run holds it)"""
    health: str = "device"
    """which health report placement avoids the bad rows, columns and cells of: ``device``
    (the latest one the device keeps, written by ``hil health``; none kept: nothing to
    avoid), ``none``, or the path of a report file (``runs/health/latest.json``)"""

    @model_validator(mode="after")
    def _thresholds(self) -> DeviceSection:
        if self.refresh_lo > self.refresh_hi:
            raise ValueError(
                f"refresh_lo={self.refresh_lo} must be <= refresh_hi={self.refresh_hi}"
            )
        return self

    @property
    def is_software(self) -> bool:
        return self.url == SOFTWARE


CORE_SECTIONS = ("name", "task", "network", "rule", "optim", "train", "device")


class RunConfig(_Strict):
    """A training run: task, the task's settings, network, rule, optimiser, schedule, device.

    Every other top-level key of a config file is the settings section of a task
    (:class:`hil.tasks.spec.TaskSpec.section`: ``data`` for ``jsb``, ``shd`` for ``shd``),
    validated with that task's model and kept in :attr:`task_settings`; the active task's
    section is filled with its defaults when absent. Dumped, the sections are top-level
    keys again, so a dumped config loads back unchanged.
    """

    name: str = "run"
    task: str = "jsb"
    """a task name (``jsb``, ``shd``, a registered or entry-point task) or an import path
    ``package.module:TASK`` (see :mod:`hil.tasks.spec`)"""
    network: NetworkSection = Field(default_factory=NetworkSection)
    rule: RuleSection = Field(default_factory=RuleSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    device: DeviceSection = Field(default_factory=DeviceSection)
    task_settings: dict[str, Any] = Field(default_factory=dict)
    """task settings by section key (validated models)"""

    @model_validator(mode="before")
    @classmethod
    def _gather_task_sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "task_settings" in raw:
            return raw
        out = {k: v for k, v in raw.items() if k in CORE_SECTIONS}
        out["task_settings"] = {k: v for k, v in raw.items() if k not in CORE_SECTIONS}
        return out

    @model_validator(mode="after")
    def _validate_task_sections(self) -> RunConfig:
        spec = get_task(self.task)
        owners = section_owners()
        owners[spec.section] = spec
        settings: dict[str, BaseModel] = {}
        for key, value in self.task_settings.items():
            owner = owners.get(key)
            if owner is None:
                raise ValueError(
                    f"{key}: unknown section; expected {', '.join(CORE_SECTIONS[2:])} or a "
                    f"task's settings ({', '.join(sorted(owners))})"
                )
            if isinstance(value, owner.settings):
                settings[key] = value
                continue
            try:
                settings[key] = owner.settings.model_validate(value)
            except ValidationError as exc:
                raise ValueError(_format_errors(exc, prefix=f"{key}.")) from None
        if spec.section not in settings:
            settings[spec.section] = spec.settings()
        bias = self.network.readout_bias_init
        if bias != "zero" and bias not in spec.readout_bias:
            raise ValueError(
                f"network.readout_bias_init: {bias!r} is not offered by task {spec.name!r}; "
                f"expected one of {['zero', *spec.readout_bias]}"
            )
        object.__setattr__(self, "task_settings", settings)
        return self

    @model_serializer(mode="wrap")
    def _flatten_task_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        sections = out.pop("task_settings", {})
        return {**out, **sections}

    @property
    def task_spec(self) -> TaskSpec:
        """The run's task."""
        return get_task(self.task)

    def settings_of(self, spec: TaskSpec) -> Any:
        """The settings section of ``spec`` (the run's task always has one)."""
        found = self.task_settings.get(spec.section)
        return spec.settings() if found is None else found


def section_owners() -> dict[str, TaskSpec]:
    """Settings section key -> task, for every task found by name."""
    return {spec.section: spec for spec in map(get_task, task_names())}


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if not loc and err["type"] == "value_error":  # a section's own message
            parts.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{prefix}{loc or '(top level)'}: {err['msg']}{shown}")
    return "; ".join(parts)


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping of a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(path.read_text()) or {}
        else:
            raise ConfigError(f"config file {path}: expected .yaml, .yml or .toml")
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem (context)`` of a YAML error, on one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = f"{problem}" + (f" ({context})" if context else "")
    return where + " ".join(text.split())


def yaml_key_lines(path: Path) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every key path of a YAML mapping file, e.g. ``("optim", "lr")``."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*prefix, str(key.value))
                lines[here] = key.start_mark.line + 1
                walk(value, here)

    try:
        root = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    if root is not None:
        walk(root, ())
    return lines


def _blame(
    exc: ValidationError, path: Path | None, overrides: Sequence[str], origin: str | None
) -> str:
    """One line per error, each blamed on where its value came from: the ``--set`` that
    gave it, or the config file with the key's line (YAML), or the defaults."""
    set_keys = {item.partition("=")[0]: item for item in overrides}
    key_lines = (
        yaml_key_lines(path) if path is not None and Path(path).suffix in (".yaml", ".yml") else {}
    )
    parts = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc)
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        msg = str(err["msg"])
        if not loc and err["type"] == "value_error":  # a section's own message
            parts.append(msg.removeprefix("Value error, "))
            continue
        given = next(
            (
                item
                for key, item in set_keys.items()
                if tuple(key.split(".")) == loc[: len(key.split("."))]
                or loc == tuple(key.split("."))[: len(loc)]
            ),
            None,
        )
        if given is not None:
            parts.append(f"--set {given}: {dotted}: {msg}{shown}")
            continue
        line = next(
            (key_lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in key_lines), None
        )
        where = origin or str(path or "(defaults)")
        if line is not None:
            where += f" line {line}"
        parts.append(f"invalid run config {where}: {dotted or '(top level)'}: {msg}{shown}")
    return "; ".join(parts)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=5e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[leaf] = value
    return out


def load_config(
    path: Path | None, overrides: Sequence[str] = (), origin: str | None = None
) -> RunConfig:
    """Load, override and validate a run config (``path=None``: defaults only)."""
    raw = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_blame(exc, path, overrides, origin)) from None
