"""Spiking Heidelberg Digits (Cramer et al. 2020): the official HDF5 layout, binned to steps.

File layout (``shd_train.h5`` / ``shd_test.h5``)::

    spikes/times   vlen float16, spike times in s, one array per sample
    spikes/units   vlen uint16, input channel (0..699) of each spike
    labels         (N,) integer class 0..19
    extra/speaker  (N,) speaker id;  extra/keys, extra/meta_info/...  (not needed here)

Binning: a spike at time ``t_s`` on channel u lands in step ``⌊t_s / max_time_s · n_steps⌋``
(spikes at ``t_s ≥ max_time_s`` are dropped); ``x[step, u]`` counts spikes, clipped to 1 when
``binary``. The official release has no validation split: :func:`train_valid_split` holds out
a stratified, seeded fraction of the training samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hil.errors import DataError

N_CHANNELS = 700
N_CLASSES = 20


@dataclass(frozen=True)
class ShdBinning:
    """How events become time steps.

    Attributes:
        n_steps: number of time steps T.
        max_time_s: duration covered by the T steps (s).
        binary: clip counts to 1 (spike/no spike) if True.
    """

    n_steps: int = 100
    max_time_s: float = 1.4
    binary: bool = True

    def __post_init__(self) -> None:
        if self.n_steps < 1 or not self.max_time_s > 0:
            raise DataError(f"need n_steps >= 1 and max_time_s > 0, got {self}")


@dataclass(frozen=True)
class ShdSet:
    """Events of N samples: ragged ``times_s``/``units``, ``labels`` (N,), ``speakers`` (N,)."""

    times_s: list[np.ndarray]
    units: list[np.ndarray]
    labels: np.ndarray
    speakers: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ShdSet:
        return ShdSet(
            [self.times_s[i] for i in idx],
            [self.units[i] for i in idx],
            self.labels[idx],
            self.speakers[idx],
            self.source,
        )

    def batch(
        self, idx: np.ndarray, binning: ShdBinning, dtype: np.dtype | type = np.float32
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Time-major ``x`` (T, B, 700), one-hot ``target`` (T, B, 20), ``mask`` (T, B)."""
        T, B = binning.n_steps, len(idx)
        x = np.zeros((T, B, N_CHANNELS), dtype=dtype)
        for b, i in enumerate(idx):
            steps = np.floor(self.times_s[i].astype(np.float64) / binning.max_time_s * T).astype(
                np.int64
            )
            keep = steps < T
            np.add.at(x, (steps[keep], b, self.units[i][keep].astype(np.int64)), 1.0)
        if binning.binary:
            np.minimum(x, 1.0, out=x)
        onehot = np.eye(N_CLASSES, dtype=dtype)[self.labels[idx]]
        target = np.broadcast_to(onehot, (T, B, N_CLASSES)).copy()
        return x, target, np.ones((T, B), dtype=dtype)


def load_shd(path: str | Path) -> ShdSet:
    """Read one official SHD HDF5 file. Raises :class:`DataError` naming what is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SHD file {path} not found; download shd_train.h5/shd_test.h5 there")
    try:
        with h5py.File(path, "r") as f:
            for key in ("spikes/times", "spikes/units", "labels"):
                if key not in f:
                    raise DataError(f"{path} has no dataset {key!r}; is this an SHD file?")
            times = [np.asarray(t, dtype=np.float32) for t in f["spikes/times"][()]]
            units = [np.asarray(u, dtype=np.uint16) for u in f["spikes/units"][()]]
            labels = np.asarray(f["labels"][()], dtype=np.int64)
            speakers = (
                np.asarray(f["extra/speaker"][()], dtype=np.int64)
                if "extra/speaker" in f
                else np.full(len(labels), -1, dtype=np.int64)
            )
    except OSError as exc:
        raise DataError(f"cannot read SHD file {path}: {exc}") from exc
    if not len(times) == len(units) == len(labels):
        raise DataError(
            f"{path}: {len(times)} times, {len(units)} units, {len(labels)} labels disagree"
        )
    for i, (t, u) in enumerate(zip(times, units, strict=True)):
        if t.shape != u.shape:
            raise DataError(f"{path}: sample {i} has {t.size} times but {u.size} units")
        if u.size and int(u.max()) >= N_CHANNELS:
            raise DataError(f"{path}: sample {i} has channel {int(u.max())} >= {N_CHANNELS}")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataError(f"{path}: labels outside 0..{N_CLASSES - 1}")
    return ShdSet(times, units, labels, speakers, f"shd:{path}")


def train_valid_split(
    data: ShdSet, valid_fraction: float, rng: np.random.Generator
) -> tuple[ShdSet, ShdSet]:
    """Hold out ``valid_fraction`` of each class (at least one sample per present class)."""
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    valid = []
    for label in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == label)
        k = max(1, round(valid_fraction * idx.size)) if idx.size > 1 else 0
        valid.extend(rng.choice(idx, size=k, replace=False).tolist())
    vmask = np.zeros(len(data), dtype=bool)
    vmask[valid] = True
    return data.subset(np.flatnonzero(~vmask)), data.subset(np.flatnonzero(vmask))
