"""The SHD configuration trains end to end on a small file in the official HDF5 layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hil.trainer.session import TrainRequest, train

REPO = Path(__file__).resolve().parents[2]


def _write_shd(path: Path, n: int, rng: np.random.Generator) -> None:
    """Two classes: class 0 fires low channels early, class 1 high channels late."""
    labels = rng.integers(0, 2, size=n)
    vlen_t = h5py.vlen_dtype(np.float16)
    vlen_u = h5py.vlen_dtype(np.uint16)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=vlen_t)
        units = f.create_dataset("spikes/units", (n,), dtype=vlen_u)
        for i, lab in enumerate(labels):
            k = 60
            t = rng.uniform(0.0, 0.5, k) + 0.4 * lab
            u = rng.integers(0, 350, k) + 350 * lab
            times[i] = t.astype(np.float16)
            units[i] = u.astype(np.uint16)
        f.create_dataset("labels", data=labels.astype(np.uint8))
        f.create_dataset("extra/speaker", data=np.zeros(n, dtype=np.uint8))


def test_shd_osttp_learns_a_separable_toy_set(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_shd(tmp_path / "shd_train.h5", 64, rng)
    _write_shd(tmp_path / "shd_test.h5", 32, rng)
    s = train(
        TrainRequest(
            config=REPO / "configs/shd_osttp.yaml",
            run_dir=tmp_path / "run",
            epochs=4,
            overrides=(
                f"shd.train_path={tmp_path / 'shd_train.h5'}",
                f"shd.test_path={tmp_path / 'shd_test.h5'}",
                "network.hidden=[32]",
                "shd.n_steps=20",
                "optim.lr=0.01",
                "train.batch_size=16",
            ),
            progress=False,
        )
    )
    assert s["metric"] == "accuracy"
    assert s["max_test_accuracy"] >= 0.9
    assert 0.0 <= s["test_accuracy"] <= 1.0
