"""JSB Chorales: the standard pickle, batching with masks, and the NLL of learning-rules.md §5.

File format (``../shared/data/README.md``): a protocol-2 pickle of a ``dict`` with keys
``train``/``valid``/``test``; each value a list of pieces, each piece a list of time steps,
each step a tuple of MIDI note numbers (``numpy.int64`` scalars in the common copy, plain
ints in the original Montreal file). :func:`load_jsb_pickle` reads it with a restricted
unpickler that resolves only ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray
.scalar`` and ``numpy.dtype`` (integer dtypes only), plus ``_codecs.encode`` restricted to
latin-1 (how a Python 3 protocol-2 re-pickle stores the scalars' bytes); any other global
is refused.

Task (learning-rules.md §5): the input at step t is the roll at t, the target is the roll at
t+1, so a piece of T steps gives T−1 predicted frames. The NLL is the binary cross-entropy
summed over the 88 keys and averaged over every predicted frame of the split::

    NLL = −(1/N_frames) Σ_frames Σ_k [ y*_k log p_k + (1 − y*_k) log(1 − p_k) ]
"""

from __future__ import annotations

import hashlib
import io
import numbers
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy 1.26
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]

from hil.errors import DataError
from hil.tasks.pianoroll import N_KEYS, SPLITS, PianoRollSplits, roll_from_steps

_SCALAR_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_DTYPE_GLOBALS = {("numpy", "dtype")}
_CODECS_GLOBALS = {("_codecs", "encode")}  # Python 3 protocol-2 pickles wrap bytes with it


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to str -> latin-1 bytes (how protocol 2 stores bytes)."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in {"latin1", "latin-1"}:
        raise pickle.UnpicklingError(
            f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed in a JSB pickle"
        )
    return text.encode("latin-1")


def _integer_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` restricted to integer dtypes (the only kind the note numbers use)."""
    dt = np.dtype(*args)
    if dt.kind not in "iu":
        raise pickle.UnpicklingError(
            f"the pickle builds a numpy dtype {dt!r}; only integer dtypes are allowed in a JSB file"
        )
    return dt


class _JsbUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals a JSB pickle needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SCALAR_GLOBALS:
            return _np_scalar
        if (module, name) in _DTYPE_GLOBALS:
            return _integer_dtype
        if (module, name) in _CODECS_GLOBALS:
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"global {module}.{name} is not allowed in a JSB Chorales pickle (only "
            "numpy scalar and numpy.dtype are); refusing to load an arbitrary pickle"
        )


def _note(value: Any, where: str) -> int:
    if isinstance(value, numbers.Integral | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    raise DataError(f"{where}: note {value!r} is not an integer MIDI number")


def _rolls(pieces: Any, split: str) -> list[np.ndarray]:
    if not isinstance(pieces, list):
        raise DataError(f"split {split!r} is a {type(pieces).__name__}, expected a list of pieces")
    rolls = []
    for i, piece in enumerate(pieces):
        if not isinstance(piece, list | tuple) or len(piece) < 2:
            raise DataError(
                f"{split}[{i}] must be a list of at least 2 time steps, got {type(piece).__name__}"
            )
        steps = []
        for t, step in enumerate(piece):
            if not isinstance(step, tuple | list):
                raise DataError(f"{split}[{i}][{t}] is a {type(step).__name__}, expected a tuple")
            steps.append([_note(n, f"{split}[{i}][{t}]") for n in step])
        try:
            rolls.append(roll_from_steps(steps))
        except ValueError as exc:
            raise DataError(f"{split}[{i}]: {exc}") from exc
    return rolls


def _read_pickle(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read JSB pickle {path}: {exc}; check the path") from exc
    try:
        data = _JsbUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a valid JSB Chorales pickle: {exc}") from exc
    if not isinstance(data, dict) or set(data) != set(SPLITS):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"{path}: expected a dict with keys {list(SPLITS)}, got {keys}; "
            "is this the JSB Chorales pickle?"
        )
    return data, raw


def jsb_pickle_notes(path: str | Path) -> dict[str, list[list[tuple[int, ...]]]]:
    """The pickle's content as plain ints: split -> pieces -> steps -> notes, as stored
    (same checks as :func:`load_jsb_pickle`; used to verify lossless copies)."""
    data, _ = _read_pickle(Path(path))
    return {
        split: [
            [tuple(_note(n, f"{split}[{i}][{t}]") for n in step) for t, step in enumerate(piece)]
            for i, piece in enumerate(data[split])
        ]
        for split in SPLITS
    }


def load_jsb_pickle(path: str | Path) -> PianoRollSplits:
    """Load the standard JSB Chorales pickle into 88-key piano rolls.

    Accepts the original file (plain int notes) and the numpy-scalar variant. Raises
    :class:`~hil.errors.DataError` naming the problem for a missing file, a pickle with any
    global other than numpy scalar/dtype, or a structure other than the standard one.
    """
    path = Path(path)
    data, raw = _read_pickle(path)
    rolls = {split: _rolls(data[split], split) for split in SPLITS}
    return PianoRollSplits(
        train=rolls["train"],
        valid=rolls["valid"],
        test=rolls["test"],
        source=f"jsb-standard:{path}",
        meta={"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)},
    )


class JsbBatch(NamedTuple):
    """A time-major batch: input x (T, B, 88) = roll[t], target (T, B, 88) = roll[t+1],
    mask (T, B) = 1 on real frames (T = longest piece − 1; shorter pieces are zero-padded)."""

    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray


def make_batch(rolls: Sequence[np.ndarray], dtype: np.dtype | type = np.float32) -> JsbBatch:
    """Stack pieces into one padded, time-major :class:`JsbBatch`."""
    if not rolls:
        raise DataError("cannot build a batch from zero pieces")
    T = max(r.shape[0] for r in rolls) - 1
    B = len(rolls)
    x = np.zeros((T, B, N_KEYS), dtype=dtype)
    target = np.zeros((T, B, N_KEYS), dtype=dtype)
    mask = np.zeros((T, B), dtype=dtype)
    for b, r in enumerate(rolls):
        n = r.shape[0] - 1
        x[:n, b] = r[:-1]
        target[:n, b] = r[1:]
        mask[:n, b] = 1.0
    return JsbBatch(x, target, mask)


def iter_batches(
    rolls: Sequence[np.ndarray],
    batch_size: int,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
) -> Iterator[JsbBatch]:
    """Batches of ``batch_size`` pieces, shuffled with ``rng`` (in order when None)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(len(rolls)) if rng is None else rng.permutation(len(rolls))
    for i in range(0, len(order), batch_size):
        yield make_batch([rolls[j] for j in order[i : i + batch_size]], dtype)


def frame_bce(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """BCE of each frame summed over the 88 keys, from logits ``o`` (…, 88): shape (…)."""
    o = logits.astype(np.float64)
    t = target.astype(np.float64)
    return t * np.logaddexp(0.0, -o) + (1.0 - t) * np.logaddexp(0.0, o)


def nll_sum(logits: np.ndarray, batch: JsbBatch) -> tuple[float, int]:
    """``(Σ_frames BCE, number of frames)`` over the masked frames of a batch."""
    per_frame = frame_bce(logits, batch.target).sum(axis=-1)
    return float((per_frame * batch.mask).sum()), int(batch.mask.sum())


def split_nll(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    rolls: Sequence[np.ndarray],
    batch_size: int = 64,
) -> float:
    """The NLL of learning-rules.md §5 of a predictor over a split.

    ``logits_fn(x)`` maps inputs (T, B, 88) to logits (T, B, 88) (causal: step t may use
    inputs up to t). Returns the BCE summed over keys, averaged over every predicted frame.
    """
    total, frames = 0.0, 0
    for batch in iter_batches(rolls, batch_size, dtype=np.float64):
        s, n = nll_sum(logits_fn(batch.x), batch)
        total, frames = total + s, frames + n
    return total / frames


__all__ = [
    "JsbBatch",
    "frame_bce",
    "iter_batches",
    "jsb_pickle_notes",
    "load_jsb_pickle",
    "make_batch",
    "nll_sum",
    "split_nll",
]
