"""SHD loader on a small file written here in exactly the official HDF5 layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from hil.errors import DataError
from hil.tasks.shd import ShdBinning, load_shd, train_valid_split


def write_shd(path: Path, times: list, units: list, labels: list) -> Path:
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        t = spikes.create_dataset("times", (len(times),), dtype=h5py.vlen_dtype(np.float16))
        u = spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (ti, ui) in enumerate(zip(times, units, strict=True)):
            t[i] = np.asarray(ti, dtype=np.float16)
            u[i] = np.asarray(ui, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        extra = f.create_group("extra")
        extra.create_dataset("speaker", data=np.arange(len(labels), dtype=np.uint8) % 3)
        extra.create_dataset("keys", data=np.array([b"zero", b"one"]))
        meta = extra.create_group("meta_info")
        meta.create_dataset("gender", data=np.zeros(len(labels), dtype=np.uint8))
    return path


def test_binning_counts_spikes_per_step(tmp_path: Path) -> None:
    path = write_shd(
        tmp_path / "shd.h5",
        times=[[0.0, 0.05, 0.06, 0.95, 1.2], [0.5]],
        units=[[3, 3, 699, 10, 10], [0]],
        labels=[7, 19],
    )
    data = load_shd(path)
    assert len(data) == 2 and data.labels.tolist() == [7, 19]
    x, target, mask = data.batch(np.array([0, 1]), ShdBinning(10, 1.0, binary=False))
    assert x.shape == (10, 2, 700) and target.shape == (10, 2, 20) and mask.shape == (10, 2)
    assert x[0, 0, 3] == 2  # 0.0 and 0.05 s both in step 0
    assert x[0, 0, 699] == 1  # 0.06 s → step 0
    assert x[9, 0, 10] == 1  # 0.95 s → step 9; 1.2 s is past max_time and dropped
    assert x[:, 0].sum() == 4
    assert x[5, 1, 0] == 1
    assert target[3, 1].argmax() == 19
    xb, _, _ = data.batch(np.array([0]), ShdBinning(10, 1.0, binary=True))
    assert xb.max() == 1.0


def test_validation_split_is_stratified_and_disjoint(tmp_path: Path, rng) -> None:
    labels = [i % 4 for i in range(40)]
    times = [[0.1 * (i % 5)] for i in range(40)]
    units = [[i] for i in range(40)]
    data = load_shd(write_shd(tmp_path / "s.h5", times, units, labels))
    train, valid = train_valid_split(data, 0.3, rng)
    assert len(train) == 28 and len(valid) == 12
    assert np.bincount(valid.labels).tolist() == [3, 3, 3, 3]
    ids = {int(u[0]) for u in train.units} | {int(u[0]) for u in valid.units}
    assert len(ids) == 40


def test_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_shd(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros(2))
    with pytest.raises(DataError, match="spikes/times"):
        load_shd(tmp_path / "bad.h5")
    path = write_shd(tmp_path / "c.h5", [[0.1]], [[700]], [1])
    with pytest.raises(DataError, match="channel 700"):
        load_shd(path)
