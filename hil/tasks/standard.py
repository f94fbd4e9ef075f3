"""The standard JSB Chorales split shipped inside the package, bit-packed.

``hil/tasks/data/jsb_standard.npz`` is a lossless copy of the standard Boulanger-Lewandowski
pickle (229/76/77 pieces), converted by ``scripts/convert_jsb.py``. For each split
``s`` in train/valid/test it holds

- ``s_lengths``: ``uint16`` (pieces,), time steps of each piece, in the pickle's order;
- ``s_rolls``: ``uint8`` (Σ T, 11), the pieces' 88-key rolls concatenated along time and
  packed eight keys to a byte, ``np.packbits(roll, axis=1)`` (key ``k`` is bit
  ``7 − k mod 8`` of byte ``k // 8``), so ``roll = np.unpackbits(packed, axis=1)[:, :88]``.

``jsb_standard.json`` beside it is the manifest: provenance, the source file's sha256 and
size, the sha256 of the source's *notes* (:func:`notes_sha256` of the pickle's content, so a
machine without the pickle can still check the copy against it), the converter, counts per
split, and the sha256 of the ``.npz`` itself (checked on every load). Rolls are lossless because every step of the source holds distinct notes in
ascending order (the converter refuses anything else), which the test suite re-checks
against the source file.

The loaded splits carry ``meta["sha256"]`` = the *source file's* sha256, the same value a
run on the pickle itself records, so a run may move between the two copies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import DataError
from hil.tasks.pianoroll import N_KEYS, SPLITS, PianoRollSplits

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_NPZ = DATA_DIR / "jsb_standard.npz"
SHIPPED_MANIFEST = DATA_DIR / "jsb_standard.json"
PACKED_BYTES = -(-N_KEYS // 8)


def pack(splits: PianoRollSplits) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of ``splits`` (module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        rolls = splits.split(name)
        lengths = np.array([r.shape[0] for r in rolls], dtype=np.int64)
        if lengths.size and lengths.max() > np.iinfo(np.uint16).max:
            raise DataError(f"a {name} piece has {lengths.max()} steps; too long to pack")
        cat = np.concatenate(rolls) if rolls else np.zeros((0, N_KEYS), np.uint8)
        arrays[f"{name}_lengths"] = lengths.astype(np.uint16)
        arrays[f"{name}_rolls"] = np.packbits(cat.astype(bool), axis=1)
    return arrays


def unpack(arrays: Any, source: str, meta: dict[str, Any]) -> PianoRollSplits:
    """:class:`PianoRollSplits` from the arrays of :func:`pack` (an ``NpzFile`` or a dict)."""
    out: dict[str, list[np.ndarray]] = {}
    for name in SPLITS:
        lengths = np.asarray(arrays[f"{name}_lengths"], dtype=np.int64)
        packed = np.asarray(arrays[f"{name}_rolls"], dtype=np.uint8)
        if packed.ndim != 2 or packed.shape != (int(lengths.sum()), PACKED_BYTES):
            raise DataError(
                f"{source}: {name}_rolls has shape {packed.shape}, expected "
                f"({int(lengths.sum())}, {PACKED_BYTES})"
            )
        cat = np.unpackbits(packed, axis=1)[:, :N_KEYS]
        bounds = np.cumsum(lengths)[:-1]
        out[name] = [np.ascontiguousarray(r) for r in np.split(cat, bounds)] if len(lengths) else []
    return PianoRollSplits(out["train"], out["valid"], out["test"], source=source, meta=meta)


def notes_sha256(notes: dict[str, list[list[tuple[int, ...]]]]) -> str:
    """sha256 of split -> pieces -> steps -> MIDI notes, as canonical JSON (splits in
    train/valid/test order, no spaces)."""
    canon = [[[list(step) for step in piece] for piece in notes[s]] for s in SPLITS]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(manifest: Path = SHIPPED_MANIFEST) -> dict[str, Any]:
    try:
        return json.loads(Path(manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the shipped JSB manifest {manifest}: {exc}") from exc


def load_shipped(npz: Path = SHIPPED_NPZ, manifest: Path | None = None) -> PianoRollSplits:
    """The shipped standard split (or a copy in its format: ``manifest`` defaults to the
    ``.json`` beside ``npz``), after checking the ``.npz`` against its manifest.

    Raises :class:`DataError` (one line) when the file is missing, altered or malformed.
    """
    npz = Path(npz)
    manifest = npz.with_suffix(".json") if manifest is None else Path(manifest)
    note = read_manifest(manifest)
    if not Path(npz).is_file():
        raise DataError(f"the shipped JSB copy {npz} is missing (a partial install?)")
    digest = sha256_file(npz)
    if digest != note["npz_sha256"]:
        raise DataError(
            f"the shipped JSB copy {npz} has sha256 {digest[:12]}…, its manifest says "
            f"{note['npz_sha256'][:12]}…; reinstall the package"
        )
    meta = {
        "sha256": note["source"]["sha256"],
        "bytes": note["source"]["bytes"],
        "npz_sha256": digest,
        "manifest": str(manifest),
    }
    with np.load(npz) as z:
        splits = unpack(z, f"jsb-standard:{npz}", meta)
    counts = {k: v["sequences"] for k, v in splits.counts().items()}
    expected = {k: v["sequences"] for k, v in note["counts"].items()}
    if counts != expected:
        raise DataError(f"the shipped JSB copy {npz} holds {counts}, its manifest {expected}")
    return splits


def write_shipped(
    splits: PianoRollSplits,
    source: Path,
    source_notes_sha256: str,
    provenance: dict[str, Any],
    converter: str,
    npz: Path = SHIPPED_NPZ,
    manifest: Path = SHIPPED_MANIFEST,
) -> dict[str, Any]:
    """Write the ``.npz`` and its manifest; returns the manifest."""
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz, allow_pickle=False, **pack(splits))
    note = {
        "what": "the standard JSB Chorales split (Boulanger-Lewandowski et al., ICML 2012), "
        "as 88-key piano rolls, bit-packed; lossless copy of the source pickle",
        "format": "see hil/tasks/standard.py",
        "source": {
            "file": Path(source).name,
            "sha256": sha256_file(source),
            "bytes": Path(source).stat().st_size,
            "notes_sha256": source_notes_sha256,
            **provenance,
        },
        "converter": converter,
        "counts": splits.counts(),
        "npz_sha256": sha256_file(npz),
        "npz_bytes": npz.stat().st_size,
    }
    manifest.write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
    return note
