"""Bach chorales built offline from the music21 corpus, as 88-key piano rolls.

This is the embedded fallback of the JSB Chorales task (issue #8). It is the same music as
JSB but **not the same benchmark**: different split, keys as written, no repeat expansion.
Only the standard pickle's test split is comparable to published numbers.

Sampling. Let a chorale's four voices hold notes ``n`` with onset ``o_n`` and duration
``d_n`` (quarter notes) and MIDI pitch ``p_n``. With ``T = ⌈L⌉`` for a score of length ``L``
quarter notes, step ``t ∈ {0, …, T−1}`` holds the notes sounding at that beat::

    S_t = { p_n : o_n ≤ t < o_n + d_n },        roll[t, p − 21] = 1  for p ∈ S_t

so a step holds 0–4 notes as in JSB (a rest is an empty step; grace notes, with
``d_n = 0``, never sound). Every beat is a quarter note, whatever the time signature.
Silence is then normalised (:func:`collapse_silence`): empty steps before the first and
after the last note are dropped, and a run of several empty steps (the voices resting
through an instrumental interlude) becomes one empty step, as a phrase-end rest would be.

Selection (documented in the manifest):
- A score is a **four-part chorale** when it has exactly four parts, or exactly one part
  whose name starts with each of Soprano, Alto, Tenor and Bass (then only those four are
  used and the obbligato instruments are ignored). Other scores are skipped with a reason.
- **Duplicates**: a piece's identity is its BWV id, the corpus file's stem
  (``bwv277`` from both ``bwv277.mxl`` and ``bwv277.krn``; suffixes such as ``-a`` name
  another version and stay distinct). Of one id, the first of :data:`SCORE_SUFFIXES` is
  kept. A piece of the same length as an earlier one with at least 90 % of its steps
  identical up to transposition is also dropped (the same harmonisation, copied with a
  few edits).
- With music21 10.5.1 the 413 score files give 400 pieces: 3 skipped (BWV 227.3 and 27.6
  are five-part, with two soprano parts; BWV 846 is a keyboard prelude) and 10
  duplicates (3 ``.krn`` copies, 4 identical rolls, 3 with 95–98 % identical steps).
  The manifest lists every one.
- **Split**: pieces sorted by id, permuted by ``numpy.random.default_rng(seed)``, then
  cut 60/20/20 (at least one piece per split).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from hil.errors import DataError
from hil.fsio import atomic_write_bytes, atomic_write_json
from hil.tasks.pianoroll import SPLITS, PianoRollSplits, roll_from_steps

log = structlog.get_logger(__name__)

SCORE_SUFFIXES = (".mxl", ".xml", ".krn")
"""Score formats read from the corpus, in order of preference for one BWV id."""
VOICES = ("soprano", "alto", "tenor", "bass")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_SEED = 2012
MAX_NOTES_PER_STEP = 4
NEAR_DUPLICATE_STEPS = 0.9
"""Two equally long pieces sharing this fraction of steps (up to transposition) are one."""

Parse = Callable[[Path], Any]
"""A function that reads one score file and returns a ``music21.stream.Score``."""


@dataclass(frozen=True)
class Piece:
    """One corpus file after reading: its steps, or why it was skipped."""

    piece_id: str
    path: str
    steps: tuple[tuple[int, ...], ...] | None
    skip_reason: str | None = None


def music21_version() -> str:
    import music21

    return str(music21.__version__)


def music21_parse(path: Path) -> Any:
    """Parse one score file with music21, always from source.

    music21's own pickle cache (a shared temporary directory) is neither read nor
    written: unpickling files other users can plant there would run their code.
    """
    from music21 import converter

    conv = converter.Converter()
    conv.parseFile(Path(path), forceSource=True, storePickle=False)
    return conv.stream


def corpus_score_paths(limit: int | None = None) -> list[Path]:
    """The Bach score files of the music21 corpus, sorted by file name.

    ``limit`` keeps the first ``limit`` files (before selection and de-duplication), for
    quick builds. Raises :class:`DataError` when music21 is not installed.
    """
    try:
        from music21 import corpus
    except ImportError as exc:
        raise DataError(
            "music21 is not installed; building the chorales needs the `music` extra: "
            "pip install -e '.[music]'"
        ) from exc
    paths = sorted(
        (Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in SCORE_SUFFIXES),
        key=lambda p: p.name,
    )
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit={limit} must be a positive number of corpus files")
        paths = paths[:limit]
    return paths


def piece_id(path: Path) -> str:
    """The BWV id of a corpus file: its stem, lower case (``bwv277`` for ``bwv277.krn``)."""
    return Path(path).stem.lower()


def select_four_voices(parts: Sequence[Any]) -> list[Any] | str:
    """Return the four voice parts of a score, or the reason it is not a four-part chorale."""
    if len(parts) == 4:
        return list(parts)
    by_voice: dict[str, list[Any]] = {v: [] for v in VOICES}
    for part in parts:
        words = str(part.partName or "").split()
        first = words[0].lower() if words else ""
        if first in by_voice:
            by_voice[first].append(part)
    if all(len(found) == 1 for found in by_voice.values()):
        return [by_voice[v][0] for v in VOICES]
    names = [str(p.partName) for p in parts]
    return f"{len(parts)} parts without exactly one each of Soprano/Alto/Tenor/Bass: {names}"


def sample_quarter_beats(parts: Iterable[Any], length_ql: float) -> list[tuple[int, ...]]:
    """Notes sounding at each quarter-note beat ``t = 0 … ⌈length_ql⌉−1`` (module docstring)."""
    n_steps = math.ceil(length_ql)
    steps: list[set[int]] = [set() for _ in range(n_steps)]
    for part in parts:
        for element in part.flatten().notes:
            onset, duration = element.offset, element.duration.quarterLength
            if duration <= 0:  # grace note
                continue
            first, end = math.ceil(onset), min(math.ceil(onset + duration), n_steps)
            midis = [int(p.midi) for p in element.pitches]
            for t in range(first, end):
                steps[t].update(midis)
    return [tuple(sorted(s)) for s in steps]


def collapse_silence(steps: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Drop leading/trailing empty steps; shorten each run of empty steps to one step."""
    out: list[tuple[int, ...]] = []
    for notes in steps:
        if notes or (out and out[-1]):
            out.append(notes)
    while out and not out[-1]:
        out.pop()
    return out


def read_piece(path: Path, parse: Parse | None = None) -> Piece:
    """Parse one corpus file and sample it, or say why it is skipped."""
    score = (parse or music21_parse)(path)
    voices = select_four_voices(list(score.parts))
    pid = piece_id(path)
    if isinstance(voices, str):
        return Piece(pid, str(path), None, voices)
    steps = collapse_silence(sample_quarter_beats(voices, float(score.highestTime)))
    if not steps:
        return Piece(pid, str(path), None, "empty score")
    widest = max(len(s) for s in steps)
    if widest > MAX_NOTES_PER_STEP:
        return Piece(pid, str(path), None, f"{widest} notes at one step (a voice holds chords)")
    return Piece(pid, str(path), tuple(steps))


def _transposed_to_key0(roll: np.ndarray) -> np.ndarray:
    """The roll shifted down so that its lowest sounding key is key 0 (transposition-free)."""
    keys = np.flatnonzero(roll.any(axis=0))
    return np.roll(roll, -int(keys[0]), axis=1) if keys.size else roll


def identical_step_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of steps two equally long rolls share, up to transposition (0 if lengths differ)."""
    if a.shape != b.shape:
        return 0.0
    return float(np.mean(np.all(_transposed_to_key0(a) == _transposed_to_key0(b), axis=1)))


def deduplicate(
    pieces: Sequence[Piece],
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Keep one piece per BWV id (format preference) and per harmonisation.

    Two pieces are the same harmonisation when they have the same length and at least
    :data:`NEAR_DUPLICATE_STEPS` of their steps are identical up to transposition; the
    later one (by id) is dropped. Returns the kept rolls by id (sorted by id) and the
    dropped duplicates as ``{"piece", "same_as", "by", "identical_steps"}`` records.
    """
    rank = {suffix: i for i, suffix in enumerate(SCORE_SUFFIXES)}
    ordered = sorted(pieces, key=lambda p: (p.piece_id, rank.get(Path(p.path).suffix, 99)))
    kept: dict[str, np.ndarray] = {}
    dropped: list[dict[str, Any]] = []
    for piece in ordered:
        if piece.steps is None:  # skipped pieces have no identity to compare
            continue
        name = Path(piece.path).name
        if piece.piece_id in kept:
            dropped.append({"piece": name, "same_as": piece.piece_id, "by": "bwv id"})
            continue
        roll = roll_from_steps(piece.steps)
        match = max(
            ((identical_step_fraction(roll, other), pid) for pid, other in kept.items()),
            default=(0.0, ""),
        )
        if match[0] >= NEAR_DUPLICATE_STEPS:
            dropped.append(
                {
                    "piece": name,
                    "same_as": match[1],
                    "by": "roll content",
                    "identical_steps": round(match[0], 3),
                }
            )
            continue
        kept[piece.piece_id] = roll
    return kept, dropped


def split_pieces(
    ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> dict[str, list[str]]:
    """Deterministic train/valid/test split by piece: sort, permute with ``seed``, cut.

    Each split gets ``round(f·n)`` pieces (valid and test at least one; train the rest).
    Within a split ids are sorted. Raises :class:`DataError` for fewer than 3 pieces.
    """
    n = len(ids)
    if n < 3:
        raise DataError(f"only {n} usable chorales; a train/valid/test split needs at least 3")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [sorted(ids)[i] for i in order]
    n_valid = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_valid - n_test
    cuts = {
        "train": shuffled[:n_train],
        "valid": shuffled[n_train : n_train + n_valid],
        "test": shuffled[n_train + n_valid :],
    }
    return {name: sorted(cuts[name]) for name in SPLITS}


# --- building and caching ------------------------------------------------------------------

FORMAT = "pcm-hil/music21-chorales"
FORMAT_VERSION = 2
"""Bumped whenever the build changes its output; an older cache is rebuilt."""
DATA_FILE = "chorales.npz"
MANIFEST_FILE = "manifest.json"
SAMPLING = (
    "notes sounding at every quarter-note beat t = 0..ceil(length)-1 of the four voices; "
    "leading/trailing silence dropped, runs of empty steps collapsed to one; "
    "keys as written; repeats not expanded"
)


def chorales_dir(cache_root: Path, seed: int = DEFAULT_SEED, limit: int | None = None) -> Path:
    """Cache folder of one built set: ``<cache>/music21-chorales/seed<S>-all|first<N>``."""
    variant = "all" if limit is None else f"first{limit}"
    return Path(cache_root) / "music21-chorales" / f"seed{seed}-{variant}"


def _read_or_skip(path: Path, parse: Parse | None) -> Piece:
    try:
        return read_piece(path, parse)
    except Exception as exc:  # noqa: BLE001 - any music21 failure skips that one score
        return Piece(piece_id(path), str(path), None, f"music21 could not read it: {exc!r}")


def read_pieces(
    paths: Sequence[Path], *, parse: Parse | None = None, jobs: int = 1, progress: bool = False
) -> list[Piece]:
    """Read every path (in ``jobs`` worker processes when > 1), with an optional progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    if jobs < 1:
        raise DataError(f"jobs={jobs} must be at least 1")
    if jobs > 1 and parse is not None:
        raise DataError("a custom parse function runs in-process only; use jobs=1")
    pool = None
    if jobs > 1:  # fork before the progress bar starts its refresh thread
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    pieces: list[Piece] = []
    try:
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
            task = bar.add_task("parsing Bach chorales (music21)", total=len(paths))
            if pool is None:
                results: Iterable[Piece] = (_read_or_skip(p, parse) for p in paths)
            else:
                results = pool.map(_read_or_skip, paths, [None] * len(paths), chunksize=4)
            for piece in results:
                pieces.append(piece)
                bar.advance(task)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return pieces


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive, byte-for-byte reproducible (fixed zip timestamps)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    return out.getvalue()


def load_chorales(set_dir: Path) -> PianoRollSplits:
    """Load a built set from its folder, checking the manifest and the data file's sha256.

    Raises :class:`DataError` naming the folder when anything is missing or inconsistent.
    """
    set_dir = Path(set_dir)
    manifest_path, data_path = set_dir / MANIFEST_FILE, set_dir / DATA_FILE
    fix = f"rebuild it with `hil data build chorales --force` (or delete {set_dir})"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"no readable chorales manifest {manifest_path} ({exc}); {fix}") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{manifest_path} is not a {FORMAT} v{FORMAT_VERSION} manifest; {fix}")
    if not data_path.is_file() or sha256_file(data_path) != manifest.get("sha256"):
        raise DataError(f"{data_path} is missing or its sha256 differs from the manifest; {fix}")
    rolls: dict[str, list[np.ndarray]] = {}
    with np.load(data_path, allow_pickle=False) as npz:
        for name in SPLITS:
            flat, lengths = npz[f"{name}_rolls"], npz[f"{name}_lengths"]
            rolls[name] = [a.copy() for a in np.split(flat, np.cumsum(lengths)[:-1])]
    splits = PianoRollSplits(
        rolls["train"],
        rolls["valid"],
        rolls["test"],
        source=f"music21-chorales:{data_path}",
        meta={**manifest, "manifest": str(manifest_path)},
    )
    if splits.counts() != manifest.get("counts"):
        raise DataError(f"{data_path} does not hold the counts its manifest lists; {fix}")
    return splits


def build_chorales(
    cache_root: Path,
    *,
    seed: int = DEFAULT_SEED,
    limit: int | None = None,
    parse: Parse | None = None,
    jobs: int = 1,
    progress: bool = False,
    force: bool = False,
) -> PianoRollSplits:
    """Build (or reuse) the music21 chorales set in ``chorales_dir(cache_root, seed, limit)``.

    A valid cached set (manifest present, sha256 matching) is loaded without parsing
    anything, unless ``force``. ``limit`` reads only the first ``limit`` corpus files;
    ``parse`` replaces :func:`music21_parse` (in-process only).
    """
    out = chorales_dir(cache_root, seed, limit)
    if not force and (out / MANIFEST_FILE).exists():
        try:
            splits = load_chorales(out)
            log.info("chorales_cache_reused", path=str(out))
            return splits
        except DataError as exc:
            log.warning("chorales_cache_invalid", path=str(out), reason=str(exc))
    paths = corpus_score_paths(limit)
    log.info("chorales_build_start", files=len(paths), seed=seed, limit=limit, jobs=jobs)
    pieces = read_pieces(paths, parse=parse, jobs=jobs, progress=progress)
    skipped = [
        {"piece": Path(p.path).name, "reason": p.skip_reason} for p in pieces if p.steps is None
    ]
    kept, duplicates = deduplicate(pieces)
    split_ids = split_pieces(list(kept), seed)
    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        rolls = [kept[i] for i in split_ids[name]]
        arrays[f"{name}_rolls"] = np.concatenate(rolls).astype(np.uint8)
        arrays[f"{name}_lengths"] = np.array([r.shape[0] for r in rolls], dtype=np.int64)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / DATA_FILE, _npz_bytes(arrays))
    counts = {
        name: {"sequences": len(split_ids[name]), "steps": int(arrays[f"{name}_lengths"].sum())}
        for name in SPLITS
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "music21_version": music21_version(),
        "seed": seed,
        "limit": limit,
        "split_fractions": list(SPLIT_FRACTIONS),
        "sampling": SAMPLING,
        "corpus_files": len(paths),
        "kept": len(kept),
        "skipped": skipped,
        "duplicates": duplicates,
        "pieces": split_ids,
        "counts": counts,
        "data_file": DATA_FILE,
        "sha256": sha256_file(out / DATA_FILE),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / MANIFEST_FILE, manifest)  # written last: it commits the set
    log.info(
        "chorales_built",
        path=str(out),
        kept=len(kept),
        skipped=len(skipped),
        duplicates=len(duplicates),
        counts=counts,
    )
    return load_chorales(out)
