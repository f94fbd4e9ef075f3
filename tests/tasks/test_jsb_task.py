"""JSB task: batching with masks, the NLL of learning-rules.md §5, and the library baselines."""

from __future__ import annotations

import numpy as np
import pytest

from hil.tasks.baselines import ConstantPredictor, LogisticPredictor
from hil.tasks.jsb import iter_batches, make_batch, nll_sum, split_nll
from hil.tasks.pianoroll import PianoRollSplits


def _roll(T: int, keys: list[list[int]]) -> np.ndarray:
    r = np.zeros((T, 88), dtype=np.uint8)
    for t, ks in enumerate(keys):
        r[t, ks] = 1
    return r


def test_batch_shifts_targets_and_masks_padding() -> None:
    a = _roll(4, [[0], [1], [2], [3]])
    b = _roll(2, [[5], [6]])
    batch = make_batch([a, b])
    assert batch.x.shape == (3, 2, 88) and batch.mask.shape == (3, 2)
    np.testing.assert_array_equal(batch.mask, [[1, 1], [1, 0], [1, 0]])
    np.testing.assert_array_equal(batch.x[:, 0], a[:-1])
    np.testing.assert_array_equal(batch.target[:, 0], a[1:])
    assert batch.target[0, 1, 6] == 1 and batch.x[1:, 1].sum() == 0


def test_nll_is_bce_summed_over_keys_averaged_over_frames() -> None:
    rolls = [_roll(3, [[0], [0, 1], []]), _roll(2, [[2], [2]])]
    p = 0.25  # every key predicted with probability 1/4
    logits_fn = lambda x: np.full(x.shape, np.log(p / (1 - p)))  # noqa: E731
    # frames: (0→{0,1}), ({0,1}→{}), ({2}→{2}): 2 + 0 + 1 keys on out of 3 frames
    on, frames = 3, 3
    expected = -(on * np.log(p) + (frames * 88 - on) * np.log(1 - p)) / frames
    assert split_nll(logits_fn, rolls) == pytest.approx(expected, rel=1e-12)
    batch = make_batch(rolls, dtype=np.float64)
    total, n = nll_sum(logits_fn(batch.x), batch)
    assert n == 3 and total / n == pytest.approx(expected, rel=1e-12)


def test_iter_batches_covers_every_piece_once(rng) -> None:
    rolls = [_roll(t, [[t]] * t) for t in range(2, 9)]
    seen = []
    for batch in iter_batches(rolls, 3, rng):
        seen.extend(int(batch.mask[:, b].sum()) + 1 for b in range(batch.mask.shape[1]))
    assert sorted(seen) == list(range(2, 9))


def test_constant_predictor_gives_11_09(jsb_splits: PianoRollSplits) -> None:
    data = jsb_splits
    assert ConstantPredictor.fit(data).nll(data.test) == pytest.approx(11.09, abs=0.005)


def test_logistic_regression_gives_about_9_06(jsb_splits: PianoRollSplits) -> None:
    data = jsb_splits
    nll = LogisticPredictor.fit(data).nll(data.test)
    assert nll == pytest.approx(9.06, abs=0.05)
