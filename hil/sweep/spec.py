"""The sweep spec: which ``hil train`` runs a sweep is made of, validated before Ray starts.

A spec (YAML) names a base run config and the axes that vary around it::

    name: hil_lr                       # default sweep dir: runs/sweep-<name>
    base: ../jsb_osttp_hil_tuned.yaml  # any `hil train` config (relative to this file)
    epochs: 15                         # train.epochs of every trial (default: the base's)
    set: {train.batch_size: 16}        # fixed --set overrides of every trial
    grid: {optim.lr: [1.0e-3, 2.0e-2]} # every combination of these --set values
    variants:                          # named override groups, one axis per entry; a
      rule: {bptt: {rule.name: bptt, network.decay: 0.4}, ostl: {rule.name: ostl}}
      # variant may also name its own base config: {base: ../jsb_software/tuned_bptt.yaml}
    random: {samples: 8, seed: 0, axes: {optim.lr: {loguniform: [1.0e-4, 1.0e-1]}}}
    seeds: [0, 1, 2]                   # every point runs once per seed
    devices:                           # where trials run (default: the base's device.url)
      - url: "sim://?preset=hermes&seed={seed}"      # in-process, needs no chip
      - {url: "tcp://lab1:5555", capacity: 2}        # a chip: at most 2 runs at once
    device_mode: spread                # spread trials over the devices, or `axis`: each on all
    metric: test_nll                   # ranked at the best-valid epoch
    retries: 2                         # a crashed trial is resumed up to 2 times
    early_stopping: {grace_epochs: 2}  # ASHA on the valid split of the metric
    evaluate: {drift: {at: [0, 1h, 1d, 30d]}}        # `hil runs eval` after each trial

Points are the product grid × variants × random samples (random values are drawn once,
from ``random.seed``, so a resumed sweep has the same trials); trials are points × seeds
(× devices with ``device_mode: axis``). Every trial's overrides are validated against the
run config here, so a typo fails in one line before any trial starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.registry import schemes as driver_schemes
from hil.errors import ConfigError
from hil.trainer.config import load_config, read_config_file

SCHEMES = ("software", "sim", "tcp", "ipc", "board")
CHIP_SCHEMES = ("tcp", "ipc", "board")
"""schemes whose device is a shared physical or served chip (a Ray resource); ``sim://`` is
in-process (one per trial) and ``software`` has no chip. A scheme of a driver plug-in
(:mod:`drivers.registry`) counts as a chip."""
RESERVED = {
    "train.seed": "seeds",
    "train.epochs": "epochs",
    "device.url": "devices",
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def url_scheme(url: str) -> str:
    return "software" if url == "software" else url.partition("://")[0]


class DeviceEntry(_Strict):
    url: str
    """a `hil train --device` URL; ``{seed}`` is replaced by the trial's seed"""
    capacity: int | None = Field(default=None, ge=1)
    """concurrent runs this chip takes (tcp/ipc/board; default 1)"""
    resource: str | None = None
    """Ray custom resource name (default ``chip-<url>``); on a cluster, the node hosting the
    board declares it: ``ray start --resources='{"chip-...": N}'``"""

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme = url_scheme(url)
        known = scheme in SCHEMES or scheme in driver_schemes()
        if not known or (scheme != "software" and "://" not in url):
            raise ValueError(
                f"unknown device scheme {scheme!r} in {url!r} (expected software, sim://, "
                f"tcp://, ipc://, board:// or a driver plug-in's scheme)"
            )
        try:
            url.format(seed=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{url!r}: only {{seed}} may be substituted ({exc})") from None
        return url

    @model_validator(mode="after")
    def _chip_only(self) -> DeviceEntry:
        if not self.needs_chip and (self.capacity is not None or self.resource is not None):
            raise ValueError(
                f"{self.url!r} needs no chip (runs in-process): drop capacity/resource"
            )
        return self

    @property
    def needs_chip(self) -> bool:
        scheme = url_scheme(self.url)
        return scheme in CHIP_SCHEMES or scheme not in (*SCHEMES, "inproc")

    @property
    def resource_name(self) -> str | None:
        if not self.needs_chip:
            return None
        return self.resource or "chip-" + re.sub(r"[^A-Za-z0-9]+", "-", self.url).strip("-")

    @property
    def slots(self) -> int:
        return self.capacity or 1


class RandomAxis(_Strict):
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> RandomAxis:
        given = [k for k in ("uniform", "loguniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform: [lo, hi], loguniform: [lo, hi], choice")
        if self.loguniform is not None and min(self.loguniform) <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self

    def draw(self, rng: np.random.Generator) -> Any:
        if self.choice is not None:
            return self.choice[int(rng.integers(len(self.choice)))]
        if self.uniform is not None:
            return float(rng.uniform(*self.uniform))
        lo, hi = self.loguniform  # type: ignore[misc]
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class RandomSection(_Strict):
    samples: int = Field(ge=1)
    seed: int = 0
    axes: dict[str, RandomAxis] = Field(min_length=1)


class EarlyStopping(_Strict):
    """ASHA (asynchronous successive halving) on the valid split of the spec's metric."""

    grace_epochs: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=3.0, gt=1)


class DriftEval(_Strict):
    at: list[str | float] = Field(default=["0", "1h", "1d", "30d"], min_length=1)
    compensation: list[Literal["none", "global", "per_column"]] = Field(
        default=["none", "global", "per_column"], min_length=1
    )


class EvaluateSection(_Strict):
    drift: DriftEval | None = None


NonEmpty = Annotated[list[Any], Field(min_length=1)]


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: Path
    epochs: int | None = Field(default=None, ge=1)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, NonEmpty] = Field(default_factory=dict)
    variants: dict[str, Annotated[dict[str, dict[str, Any]], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    random: RandomSection | None = None
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default=[0], min_length=1)
    devices: list[DeviceEntry] = Field(default_factory=list)
    device_mode: Literal["spread", "axis"] = "spread"
    metric: str = Field(default="test_nll", pattern=r"^(train|valid|test)_(nll|accuracy)$")
    retries: int = Field(default=2, ge=0)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    checkpoint_every: int = Field(default=0, ge=0)
    early_stopping: EarlyStopping | None = None
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    @model_validator(mode="after")
    def _keys(self) -> SweepSpec:
        keys = [*self.set, *self.grid]
        keys += [k for v in self.variants.values() for o in v.values() for k in o]
        keys += list(self.random.axes) if self.random else []
        for key in keys:
            if key in RESERVED:
                raise ValueError(f"{key} is set by the spec's {RESERVED[key]}: field")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        return self

    @property
    def metric_kind(self) -> str:
        return self.metric.split("_", 1)[1]

    @property
    def mode(self) -> Literal["min", "max"]:
        return "max" if self.metric_kind == "accuracy" else "min"


class Trial(_Strict):
    """One `hil train` run of a sweep (everything a Ray worker needs, JSON-serialisable)."""

    id: str
    base: str
    """the run config file the trial starts from (the spec's base or its variant's)"""
    point: int
    label: str
    params: dict[str, Any]
    seed: int
    device: str
    resource: str | None
    overrides: list[str]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60]


def points(spec: SweepSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every point as (params shown in tables, --set overrides)."""
    axes: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []
    for key, values in spec.grid.items():
        axes.append([({key: v}, {key: v}) for v in values])
    for axis, named in spec.variants.items():
        axes.append([({axis: name}, dict(over)) for name, over in named.items()])
    out = [
        (
            {k: v for p, _ in combo for k, v in p.items()},
            {k: v for _, o in combo for k, v in o.items()},
        )
        for combo in itertools.product(*axes)
    ]
    if spec.random is not None:
        rng = np.random.default_rng(spec.random.seed)
        samples = [
            {k: ax.draw(rng) for k, ax in spec.random.axes.items()}
            for _ in range(spec.random.samples)
        ]
        out = [({**p, **s}, {**o, **s}) for p, o in out for s in samples]
    return out


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def expand(spec: SweepSpec) -> list[Trial]:
    """The trials of ``spec`` in launch order: point-major, then devices (axis), then seeds."""
    devices = list(spec.devices)
    trials: list[Trial] = []
    for p, (params, over) in enumerate(points(spec)):
        label = ",".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "base"
        axis = spec.device_mode == "axis" and len(devices) > 1
        per_point = [(d, s) for d in devices for s in spec.seeds] if axis else spec.seeds
        for item in per_point:
            if axis:
                dev, seed = item  # type: ignore[misc]
            else:  # spread: round-robin over the devices, in launch order
                dev, seed = devices[len(trials) % len(devices)], item
            url = dev.url.format(seed=seed)
            sets = {**spec.set, **over}
            base = str(sets.pop("base", spec.base))
            dev_tag = f"-d{devices.index(dev)}" if axis else ""
            shown = {**params, **({"device": url} if dev_tag else {})}
            trials.append(
                Trial(
                    id=f"{p:03d}-{_slug(label)}{dev_tag}-s{seed}",
                    base=base,
                    point=p,
                    label=label + (f",device={url}" if dev_tag else ""),
                    params=shown,
                    seed=seed,
                    device=url,
                    resource=dev.resource_name,
                    overrides=[_override(k, v) for k, v in sets.items()],
                )
            )
    return trials


def _one_line(exc: ValidationError, origin: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "too_short":
            msg = "empty (an axis needs at least one value)"
        parts.append(f"{loc or '(top level)'}: {msg}")
    return f"invalid sweep spec {origin}: " + "; ".join(parts)


def load_spec(path: Path) -> tuple[SweepSpec, list[Trial]]:
    """Read, validate and expand a spec; every trial's run config is validated too."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep spec {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep spec {path} must hold a mapping at the top level")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, str(path))) from None

    def resolve(p: Any) -> Path:
        return Path(p) if Path(p).is_absolute() else (path.parent / p).resolve()

    base = resolve(spec.base)
    variants = {
        axis: {
            n: {**o, **({"base": str(resolve(o["base"]))} if "base" in o else {})}
            for n, o in named.items()
        }
        for axis, named in spec.variants.items()
    }
    spec = spec.model_copy(update={"base": base, "variants": variants})
    if not spec.devices:  # the base config's device (after the spec's fixed overrides)
        sets = [_override(k, v) for k, v in spec.set.items()]
        url = load_config(base, sets, origin=str(base)).device.url
        spec = spec.model_copy(update={"devices": [DeviceEntry(url=url)]})
    if spec.evaluate.drift is not None and any(url_scheme(d.url) != "sim" for d in spec.devices):
        raise ConfigError(
            f"invalid sweep spec {path}: evaluate.drift needs sim:// devices (it replays the chips)"
        )
    return spec, validate_trials(spec)


def validate_trials(spec: SweepSpec) -> list[Trial]:
    trials = expand(spec)
    for t in trials:
        read_config_file(Path(t.base))  # one-line error for a missing/unreadable base
        flags = [*t.overrides, f"train.seed={t.seed}", f"device.url={t.device}"]
        if spec.epochs:
            flags.append(f"train.epochs={spec.epochs}")
        try:
            load_config(Path(t.base), flags, origin=f"{t.base} (trial {t.id})")
        except ConfigError as exc:
            raise ConfigError(f"sweep {spec.name}: {exc}") from None
    return trials


def fingerprint(spec: SweepSpec, trials: list[Trial]) -> str:
    """Identity of what a sweep runs (changes when the spec's trials or settings change)."""
    text = json.dumps(
        {"spec": spec.model_dump(mode="json"), "trials": [t.model_dump() for t in trials]},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
