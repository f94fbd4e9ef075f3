"""Device presets from YAML files: the schema of :class:`DeviceParams`, validated at the edge.

A preset file is a YAML mapping of :class:`~simulator.presets.DeviceParams` fields (the
same names, units and meaning as the built-in presets), plus an optional ``base`` naming
the built-in preset that supplies every field the file leaves out (default ``hermes``)::

    base: hermes            # optional
    name: chip-17           # default: the file's stem
    g_max_us: 11.2
    set_mu_0: 0.91
    p_dead: 0.0004

Validation is a pydantic model generated from the dataclass fields (frozen,
``extra="forbid"``, strict types: a string where a number belongs is refused), with the
physical ranges of :data:`RANGES`, then the cross-field checks of ``DeviceParams``. Every
failure is a :class:`PresetError` with one line naming the file and the field.
:func:`write_preset_file` writes all fields back (what ``hil characterize`` produces).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, create_model

from simulator.errors import PresetError
from simulator.presets import PRESETS, DeviceParams

PRESET_SUFFIXES = (".yaml", ".yml")

RANGES: dict[str, dict[str, float]] = {
    "g_max_us": {"gt": 0, "le": 1000},
    "g_max_spread": {"ge": 0, "le": 0.5},
    "step_spread": {"ge": 0, "le": 2},
    "g_reset_us": {"ge": 0, "le": 1000},
    "g_reset_std_us": {"ge": 0, "le": 100},
    "g_min_us": {"ge": 0, "le": 1000},
    "set_history_decay_pulses": {"gt": 0, "le": 1000},
    "set_scale_us": {"gt": 0, "le": 1000},
    "prog_noise_scale": {"ge": 0, "le": 100},
    "t0_s": {"gt": 0, "le": 1e6},
    "t_read_s": {"gt": 0, "le": 1},
    "adc_full_scale_us": {"gt": 0, "le": 1e6},
    "mvm_latency_s": {"ge": 0, "le": 1},
    "pulse_time_s": {"ge": 0, "le": 1},
    "p_stuck_reset": {"ge": 0, "le": 1},
    "p_stuck_gmax": {"ge": 0, "le": 1},
    "p_dead": {"ge": 0, "le": 1},
    "fill_fraction": {"gt": 0, "le": 1},
    "program_tolerance_us": {"ge": 0, "le": 1000},
    "nu_mu_min": {"ge": 0, "le": 1},
    "nu_mu_max": {"ge": 0, "le": 1},
    "nu_sigma_min": {"ge": 0, "le": 1},
    "nu_sigma_max": {"ge": 0, "le": 1},
    "read_q_amp": {"ge": 0, "le": 10},
    "read_q_exp": {"ge": -5, "le": 5},
    "read_q_floor": {"gt": 0, "le": 1},
    "read_q_cap": {"ge": 0, "le": 10},
    "dac_bits": {"ge": 2, "le": 16},
    "adc_bits": {"ge": 2, "le": 16},
}
"""Physical ranges of the numeric fields (pydantic ``Field`` bounds); other numeric
fields must merely be finite."""


def _model() -> type:
    hints = typing.get_type_hints(DeviceParams)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(DeviceParams):
        kwargs: dict[str, Any] = dict(RANGES.get(f.name, {}))
        if hints[f.name] is float:
            kwargs["allow_inf_nan"] = False
        fields[f.name] = (hints[f.name], Field(None, **kwargs))
    config = ConfigDict(strict=True, extra="forbid", frozen=True)
    return create_model("PresetFile", __config__=config, **fields)


PresetFile = _model()
"""Pydantic model of a preset file (every field optional; ``None`` = from ``base``)."""


def is_preset_path(spec: str) -> bool:
    """True when a preset spec names a file (``.yaml``/``.yml``) rather than a built-in."""
    return spec.lower().endswith(PRESET_SUFFIXES)


def _one_line(err: ValidationError, where: str) -> PresetError:
    e = err.errors()[0]
    field = ".".join(str(p) for p in e["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return PresetError(f"{where}: field {field}: {e['msg']}, got {e.get('input')!r}{more}")


def params_from_mapping(data: object, where: str, default_name: str) -> DeviceParams:
    """Validate a preset mapping (see module doc) into :class:`DeviceParams`."""
    if not isinstance(data, dict):
        raise PresetError(f"{where}: expected a mapping of DeviceParams fields, got {data!r}")
    data = dict(data)
    base_name = data.pop("base", "hermes")
    if base_name not in PRESETS:
        raise PresetError(
            f"{where}: field base: unknown built-in preset {base_name!r}; "
            f"valid: {', '.join(sorted(PRESETS))}"
        )
    try:
        model = PresetFile(**data)
    except ValidationError as err:
        raise _one_line(err, where) from None
    values = {k: v for k, v in model.model_dump().items() if k in data}
    values.setdefault("name", default_name)
    try:
        return PRESETS[base_name]().replace(**values)
    except PresetError as exc:
        raise PresetError(f"{where}: {exc}") from None


def load_preset_file(path: str | Path) -> DeviceParams:
    """The :class:`DeviceParams` of a YAML preset file; :class:`PresetError` (one line) when
    the file is missing, not YAML, or has an unknown, mistyped or out-of-range field."""
    path = Path(path)
    where = f"preset file {path}"
    try:
        text = path.read_text()
    except OSError as exc:
        raise PresetError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise PresetError(
            f"{where}: not valid YAML{line}: {getattr(exc, 'problem', exc)}"
        ) from None
    return params_from_mapping(data, where, path.stem)


def write_preset_file(params: DeviceParams, path: str | Path, header: str = "") -> Path:
    """Write every field of ``params`` as a preset file (``header`` lines become comments);
    :func:`load_preset_file` reads it back equal."""
    path = Path(path)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(params.to_dict(), sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*lines, body]) if lines else body)
    return path
