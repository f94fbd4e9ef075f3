"""Save and load a chip's full state: one ``.npz`` holding the device arrays and a JSON
metadata string (format, preset parameters, chip id, seed, clock, both RNG states, ADC
range, and the anchor times of the MVM caches so a loaded chip reproduces them exactly).

Writes are atomic: a temporary file in the same directory is written, flushed, fsynced
and renamed over the target (then the directory is fsynced). This is the simulator's only
I/O and it is never called by the physics.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.clock import Clock
from simulator.errors import ChipStateError
from simulator.population import FIELDS, Population
from simulator.presets import DeviceParams
from simulator.region import Region

if TYPE_CHECKING:
    from simulator.chip import Chip

FORMAT = "pcm-hil-chip"
FORMAT_VERSION = 1
META_KEY = "__meta__"


def chip_to_bytes(chip: Chip) -> bytes:
    """The chip's full state as the bytes of one ``.npz`` (what :func:`save_chip` writes)."""
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "chip_id": chip.chip_id,
        "seed": chip.seed,
        "params": chip.params.to_dict(),
        "clock": chip.clock.state(),
        "adc_full_scale_us": chip.adc_full_scale_us,
        "cache_rel_tol": chip.cache_rel_tol,
        "write_rng": _jsonable(chip._write_rng.bit_generator.state),
        "read_rng": _jsonable(chip._read_rng.bit_generator.state),
        "cache_anchors": [[*key, entry.t_s] for key, entry in chip._cache.items()],
        "aged_s": chip._aged_s,
        "streams": [
            {
                "key": list(key),
                "clock": st.clock.state(),
                "write_rng": _jsonable(st.write_rng.bit_generator.state),
                "read_rng": _jsonable(st.read_rng.bit_generator.state),
                "cache_anchors": [[*k, e.t_s] for k, e in st.cache.items()],
                "start_s": st.start_s,
            }
            for key, st in chip._streams.items()
        ],
    }
    arrays = dict(chip._pop.arrays)
    arrays[META_KEY] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def save_chip(chip: Chip, path: Path) -> Path:
    data = chip_to_bytes(chip)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _jsonable(obj: Any) -> Any:
    """RNG state with uint64 arrays (SFC64) as ``{"uint64": [...]}`` for JSON."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"uint64": [int(v) for v in obj.astype(np.uint64)]}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"uint64"}:
            return np.array(obj["uint64"], dtype=np.uint64)
        return {k: _from_jsonable(v) for k, v in obj.items()}
    return obj


def _rng(state: dict[str, Any]) -> np.random.Generator:
    state = _from_jsonable(state)
    kinds = {"PCG64": np.random.PCG64, "SFC64": np.random.SFC64}
    if state.get("bit_generator") not in kinds:
        raise ChipStateError(f"unknown bit generator {state.get('bit_generator')!r}")
    bg = kinds[state["bit_generator"]]()
    bg.state = state
    return np.random.Generator(bg)


def load_chip(cls: type[Chip], path: Path, clock_mode: str | None = None) -> Chip:
    if not path.is_file():
        raise ChipStateError(f"chip state file {path} does not exist")
    return chip_from_bytes(cls, path.read_bytes(), clock_mode, source=str(path))


def chip_from_bytes(
    cls: type[Chip], blob: bytes, clock_mode: str | None = None, source: str = "chip state"
) -> Chip:
    """A chip from the bytes :func:`chip_to_bytes` made; ``source`` names them in errors."""
    path = source
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            meta = json.loads(str(data[META_KEY]))
            arrays = {name: data[name] for name in FIELDS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ChipStateError(f"{path} is not a readable chip state file: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ChipStateError(
            f"{path}: format {meta.get('format')!r} v{meta.get('format_version')!r}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    params = DeviceParams.from_dict(meta["params"])
    chip = cls.__new__(cls)
    chip._chip_id = int(meta["chip_id"])
    chip._params = params
    chip._seed = int(meta["seed"])
    clock_state = dict(meta["clock"])
    if clock_mode is not None:
        clock_state["mode"] = clock_mode
    chip._clock = Clock.from_state(clock_state)
    chip.adc_full_scale_us = float(meta["adc_full_scale_us"])
    chip.cache_rel_tol = float(meta["cache_rel_tol"])
    chip._write_rng = _rng(meta["write_rng"])
    chip._read_rng = _rng(meta["read_rng"])
    try:
        chip._pop = Population(arrays, params)
    except ValueError as exc:
        raise ChipStateError(f"{path}: {exc}") from exc
    chip._scratch_bufs = {}
    chip._cache = {}
    for r0, r1, c0, c1, t_s in meta["cache_anchors"]:
        region = Region(chip.chip_id, r0, r1, c0, c1)
        chip._cache[region.key] = chip._build_entry(region, float(t_s))
    from simulator.chip import _Stream

    chip._in_stream = False
    chip._aged_s = float(meta.get("aged_s", 0.0))
    chip._streams = {}
    for st in meta.get("streams", []):  # tenant streams (absent in older files)
        stream_clock = dict(st["clock"])
        if clock_mode is not None:
            stream_clock["mode"] = clock_mode
        cache = {}
        for r0, r1, c0, c1, t_s in st["cache_anchors"]:
            region = Region(chip.chip_id, r0, r1, c0, c1)
            cache[region.key] = chip._build_entry(region, float(t_s))
        chip._streams[tuple(st["key"])] = _Stream(
            Clock.from_state(stream_clock),
            _rng(st["write_rng"]),
            _rng(st["read_rng"]),
            cache,
            float(st["start_s"]),
        )
    return chip
