"""The music21 Bach chorales set: beat sampling, selection, duplicates, split, cache reuse.

Builds read only the first few corpus files (``limit``) into a temporary cache. Parse calls
are counted through ``build_chorales(parse=...)``, a wrapper around the real music21 parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import NEEDS_MUSIC

music21 = pytest.importorskip("music21", reason=NEEDS_MUSIC)
from music21 import chord, note, stream  # noqa: E402

from hil.errors import DataError  # noqa: E402
from hil.tasks import chorales  # noqa: E402
from hil.tasks.pianoroll import N_KEYS, SPLITS, roll_from_steps  # noqa: E402

LIMIT = 6


class CountingParse:
    """The real music21 parser, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> Any:
        self.calls.append(Path(path))
        return chorales.music21_parse(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CountingParse]:
    cache = tmp_path_factory.mktemp("cache")
    parse = CountingParse()
    chorales.build_chorales(cache, limit=LIMIT, parse=parse)
    return cache, parse


def _part(name: str, elements: list[tuple[float, Any]]) -> stream.Part:
    part = stream.Part()
    part.partName = name
    for offset, element in elements:
        part.insert(offset, element)
    return part


def _note(pitch: str, ql: float) -> note.Note:
    return note.Note(pitch, quarterLength=ql)


def test_sampling_takes_the_notes_sounding_on_each_beat() -> None:
    # S_t = {p_n : o_n <= t < o_n + d_n}; an eighth note between beats is never sampled.
    soprano = _part("Soprano", [(0, _note("C5", 2)), (2, _note("D5", 1))])
    alto = _part("Alto", [(0, _note("E4", 0.5)), (0.5, _note("F4", 0.5)), (1, _note("G4", 2))])
    tenor = _part("Tenor", [(0, _note("C4", 1)), (2, note.Rest(quarterLength=1))])
    bass = _part("Bass", [(0, chord.Chord(["C3", "G3"], quarterLength=1.5))])
    steps = chorales.sample_quarter_beats([soprano, alto, tenor, bass], 3.0)
    assert steps == [(48, 55, 60, 64, 72), (48, 55, 67, 72), (67, 74)]


def test_collapse_silence() -> None:
    a, b = (60,), (62,)
    assert chorales.collapse_silence([(), (), a, (), (), (), b, (), ()]) == [a, (), b]
    assert chorales.collapse_silence([a, (), b]) == [a, (), b]
    assert chorales.collapse_silence([(), ()]) == []


def test_four_voices_selected_by_name_and_others_refused() -> None:
    satb = [_part(n, []) for n in ("Soprano", "Alto", "Tenor", "Bass")]
    horn = _part("Horn 2", [])
    assert chorales.select_four_voices([horn, *satb]) == satb
    assert chorales.select_four_voices(satb) == satb
    two_sopranos = [_part(n, []) for n in ("Soprano 1", "Soprano 2", "Alto", "Tenor", "Bass")]
    reason = chorales.select_four_voices(two_sopranos)
    assert isinstance(reason, str) and "5 parts" in reason and "Soprano 2" in reason


def test_corpus_piano_piece_is_skipped_with_a_reason() -> None:
    path = next(p for p in chorales.corpus_score_paths() if p.name == "bwv846.mxl")
    piece = chorales.read_piece(path)
    assert piece.steps is None and "2 parts" in str(piece.skip_reason)


def test_same_bwv_in_two_formats_and_transposed_copies_are_duplicates() -> None:
    paths = {p.name: p for p in chorales.corpus_score_paths()}
    mxl, krn = (chorales.read_piece(paths[f"bwv277.{ext}"]) for ext in ("mxl", "krn"))
    up = tuple(tuple(n + 2 for n in step) for step in mxl.steps or ())
    copy = chorales.Piece("bwv999", "bwv999.mxl", up)
    kept, dropped = chorales.deduplicate([krn, copy, mxl])
    assert list(kept) == ["bwv277"]
    assert dropped == [
        {"piece": "bwv277.krn", "same_as": "bwv277", "by": "bwv id"},
        {"piece": "bwv999.mxl", "same_as": "bwv277", "by": "roll content", "identical_steps": 1.0},
    ]
    assert np.array_equal(kept["bwv277"], roll_from_steps(mxl.steps or ()))


def test_split_is_deterministic_and_disjoint() -> None:
    ids = [f"bwv{i}" for i in range(50)]
    first = chorales.split_pieces(ids, seed=7)
    assert first == chorales.split_pieces(list(reversed(ids)), seed=7)
    assert first != chorales.split_pieces(ids, seed=8)
    assert [len(first[s]) for s in SPLITS] == [30, 10, 10]
    assert sorted(sum(first.values(), [])) == sorted(ids)
    assert [len(v) for v in chorales.split_pieces(ids[:3], seed=1).values()] == [1, 1, 1]
    with pytest.raises(DataError, match="at least 3"):
        chorales.split_pieces(ids[:2], seed=1)


def test_built_rolls_have_jsb_shape_and_polyphony(built: tuple[Path, CountingParse]) -> None:
    cache, parse = built
    splits = chorales.load_chorales(chorales.chorales_dir(cache, limit=LIMIT))
    assert len(parse.calls) == LIMIT
    rolls = splits.train + splits.valid + splits.test
    assert len(rolls) == LIMIT  # the first six corpus files are distinct four-part chorales
    for roll in rolls:
        assert roll.dtype == np.uint8 and roll.ndim == 2 and roll.shape[1] == N_KEYS
        assert roll.shape[0] > 10 and set(np.unique(roll)) <= {0, 1}
        per_step = roll.sum(axis=1)
        assert per_step.max() <= 4 and np.mean(per_step >= 3) > 0.9  # unisons give 3
        assert roll[0].any() and roll[-1].any()  # silence trimmed
    assert splits.source.startswith("music21-chorales:") and splits.source.endswith(".npz")


def test_manifest_records_provenance(built: tuple[Path, CountingParse]) -> None:
    cache, _ = built
    folder = chorales.chorales_dir(cache, limit=LIMIT)
    manifest = json.loads((folder / chorales.MANIFEST_FILE).read_text())
    assert manifest["music21_version"] == music21.__version__
    assert manifest["sha256"] == chorales.sha256_file(folder / chorales.DATA_FILE)
    assert manifest["corpus_files"] == LIMIT and manifest["limit"] == LIMIT
    assert sum(len(v) for v in manifest["pieces"].values()) == manifest["kept"]
    assert manifest["counts"] == chorales.load_chorales(folder).counts()


def test_same_seed_same_pieces_and_same_bytes(
    built: tuple[Path, CountingParse], tmp_path: Path
) -> None:
    cache, _ = built
    again = chorales.build_chorales(tmp_path, limit=LIMIT)
    first = chorales.load_chorales(chorales.chorales_dir(cache, limit=LIMIT))
    assert again.meta["pieces"] == first.meta["pieces"]
    assert again.meta["sha256"] == first.meta["sha256"]  # byte-reproducible .npz
    other = chorales.split_pieces(sum(first.meta["pieces"].values(), []), seed=1)
    assert other != first.meta["pieces"]


def test_valid_cache_is_reused_without_parsing(built: tuple[Path, CountingParse]) -> None:
    cache, _ = built
    manifest = chorales.chorales_dir(cache, limit=LIMIT) / chorales.MANIFEST_FILE
    mtime = manifest.stat().st_mtime_ns
    parse = CountingParse()
    splits = chorales.build_chorales(cache, limit=LIMIT, parse=parse)
    assert parse.calls == []
    assert manifest.stat().st_mtime_ns == mtime
    assert splits.counts() == json.loads(manifest.read_text())["counts"]


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path: Path) -> None:
    chorales.build_chorales(tmp_path, limit=3)
    folder = chorales.chorales_dir(tmp_path, limit=3)
    data = folder / chorales.DATA_FILE
    data.write_bytes(data.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="sha256 differs.*--force"):
        chorales.load_chorales(folder)
    parse = CountingParse()
    rebuilt = chorales.build_chorales(tmp_path, limit=3, parse=parse)
    assert len(parse.calls) == 3
    assert rebuilt.meta["sha256"] == chorales.sha256_file(data)


def test_missing_set_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path)):
        chorales.load_chorales(tmp_path)
    with pytest.raises(DataError, match="limit=0"):
        chorales.corpus_score_paths(limit=0)


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chorales.build_chorales(tmp_path, limit=3, progress=True)
    captured = capsys.readouterr()
    assert "parsing Bach chorales" in captured.err and "3/3" in captured.err


def test_near_copy_is_a_duplicate_and_a_different_piece_is_not() -> None:
    base = [(48 + t % 5, 55, 64, 72 - t % 3) for t in range(40)]
    near = list(base)
    near[5] = near[17] = (48, 55, 64, 71)  # 38/40 = 95 % of steps identical
    far = list(base)
    for t in range(0, 40, 8):
        far[t] = (47, 54, 62, 67)  # 35/40 = 87.5 % identical
    pieces = [
        chorales.Piece(pid, f"{pid}.mxl", tuple(steps))
        for pid, steps in (("bwv1", base), ("bwv2", near), ("bwv3", far))
    ]
    assert chorales.identical_step_fraction(
        roll_from_steps(base), roll_from_steps(near)
    ) == pytest.approx(0.95)
    kept, dropped = chorales.deduplicate(pieces)
    assert list(kept) == ["bwv1", "bwv3"]
    assert dropped == [
        {"piece": "bwv2.mxl", "same_as": "bwv1", "by": "roll content", "identical_steps": 0.95}
    ]
