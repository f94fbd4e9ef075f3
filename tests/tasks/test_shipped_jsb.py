"""The standard JSB split shipped in the package: equal to its source, checked on load.

Only :func:`test_shipped_copy_equals_the_source` reads the source pickle (``HIL_DATA_DIR`` or
``../shared/data``; CI has it); without it, that test checks the copy against the digest of
the source's notes recorded in the manifest. Nothing here skips on a fresh machine.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from hil.errors import DataError
from hil.tasks import datasource, standard
from hil.tasks.jsb import jsb_pickle_notes, load_jsb_pickle
from hil.tasks.pianoroll import LOWEST_MIDI, SPLITS, PianoRollSplits
from tests.conftest import JSB_FILENAME, REPO_ROOT, source_if_present

SOURCE_SHA256 = "be67b1e1d0ea22a0c64eb72db53a83dae65650a7b470ca09a34a1e43a3fb4405"
"""sha256 of ``jsb_chorales.pickle`` as documented in ``shared/data/README.md``."""


def notes_of(splits: PianoRollSplits) -> dict[str, list[list[tuple[int, ...]]]]:
    """The piano rolls back as split -> pieces -> steps -> ascending MIDI notes."""
    return {
        name: [
            [tuple(int(k) + LOWEST_MIDI for k in np.flatnonzero(step)) for step in roll]
            for roll in splits.split(name)
        ]
        for name in SPLITS
    }


def test_shipped_copy_equals_the_source(jsb_splits: PianoRollSplits) -> None:
    """The shipped notes equal the source's: against the digest of the source's notes that
    the converter recorded (everywhere), and against the pickle itself wherever it is (CI
    must have it: ``source_if_present`` fails there when it is missing)."""
    manifest = standard.read_manifest()
    shipped = notes_of(jsb_splits)
    assert standard.notes_sha256(shipped) == manifest["source"]["notes_sha256"]
    source = source_if_present(JSB_FILENAME)
    if source is None:  # a fresh machine without the pickle: the recorded digest is the check
        return
    raw = source.read_bytes()
    assert standard.sha256_file(source) == manifest["source"]["sha256"] == SOURCE_SHA256
    assert len(raw) == manifest["source"]["bytes"]
    # every piece, step and note, in the source's order, exactly as the pickle stores them
    from_notes = jsb_pickle_notes(source)
    assert shipped == from_notes
    assert standard.notes_sha256(from_notes) == manifest["source"]["notes_sha256"]
    from_pickle = load_jsb_pickle(source)
    assert from_pickle.meta["sha256"] == jsb_splits.meta["sha256"]
    for name in SPLITS:
        assert all(
            np.array_equal(a, b)
            for a, b in zip(from_pickle.split(name), jsb_splits.split(name), strict=True)
        )


def test_shipped_copy_matches_its_manifest(jsb_splits: PianoRollSplits) -> None:
    manifest = standard.read_manifest()
    assert (
        jsb_splits.counts()
        == manifest["counts"]
        == {
            "train": {"sequences": 229, "steps": 13807},
            "valid": {"sequences": 76, "steps": 4602},
            "test": {"sequences": 77, "steps": 4725},
        }
    )
    assert manifest["source"]["sha256"] == SOURCE_SHA256 == jsb_splits.meta["sha256"]
    assert manifest["converter"] == "scripts/convert_jsb.py"
    assert (REPO_ROOT / manifest["converter"]).is_file()
    assert standard.sha256_file(standard.SHIPPED_NPZ) == manifest["npz_sha256"]
    assert standard.SHIPPED_NPZ.stat().st_size < 300_000
    # the statistics of shared/data/README.md
    assert sum(int(r.sum()) for r in jsb_splits.train) == 53824
    assert sum(int((r.sum(axis=1) == 0).sum()) for r in jsb_splits.train) == 18
    notes = np.flatnonzero(sum(r.sum(axis=0) for s in SPLITS for r in jsb_splits.split(s)))
    assert (notes.min() + LOWEST_MIDI, notes.max() + LOWEST_MIDI) == (43, 96)
    assert all(r.dtype == np.uint8 and r.shape[1] == 88 for r in jsb_splits.test)


def test_pack_round_trips(rng: np.random.Generator) -> None:
    rolls = {
        name: [(rng.random((int(t), 88)) < 0.05).astype(np.uint8) for t in rng.integers(2, 40, n)]
        for name, n in (("train", 5), ("valid", 2), ("test", 3))
    }
    splits = PianoRollSplits(rolls["train"], rolls["valid"], rolls["test"], source="x:y")
    back = standard.unpack(standard.pack(splits), "x:y", {})
    for name in SPLITS:
        assert all(np.array_equal(a, b) for a, b in zip(rolls[name], back.split(name), strict=True))


def test_an_altered_copy_is_refused_and_resolution_moves_on(tmp_path: Path) -> None:
    copy = tmp_path / "jsb_standard.npz"
    shutil.copy(standard.SHIPPED_NPZ, copy)
    shutil.copy(standard.SHIPPED_MANIFEST, copy.with_suffix(".json"))
    assert standard.load_shipped(copy).counts()["test"]["sequences"] == 77
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(DataError, match="manifest says"):
        standard.load_shipped(copy)
    # as data.path it is an error; the shipped copy in the package is untouched
    with pytest.raises(DataError, match="manifest says"):
        datasource.resolve_jsb(datasource.JsbDataConfig(path=copy), env={})


def test_explicit_npz_path_gives_the_standard_split(jsb_path: Path) -> None:
    splits = datasource.resolve_jsb(datasource.JsbDataConfig(path=jsb_path), env={})
    assert splits.meta["origin"] == "explicit"
    assert datasource.comparability(splits) == (True, "the standard split, whole test set")


def test_a_standard_pickle_rebuilt_from_the_copy_loads_identically(
    tmp_path: Path, jsb_splits: PianoRollSplits
) -> None:
    """The pickle loader on a full-size standard file, without needing the original."""
    as_pickle = tmp_path / "jsb_chorales.pickle"
    as_pickle.write_bytes(pickle.dumps(notes_of(jsb_splits), protocol=2))
    again = load_jsb_pickle(as_pickle)
    assert notes_of(again) == notes_of(jsb_splits)
    datasource.check_standard_split(again, str(as_pickle))


def test_the_copy_is_package_data() -> None:
    """``pip install`` (not only an editable checkout) carries the ``.npz`` and its manifest."""
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = cfg["package-data"]["hil.tasks"]
    for f in (standard.SHIPPED_NPZ, standard.SHIPPED_MANIFEST):
        rel = f.relative_to(REPO_ROOT / "hil" / "tasks").as_posix()
        assert any(fnmatch(rel, p) for p in patterns), (rel, patterns)
    assert json.loads(standard.SHIPPED_MANIFEST.read_text())["npz_bytes"] > 0
