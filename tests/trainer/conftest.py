"""Small, fast run configs over the real JSB file for the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL = (
    "network.hidden=[24]",
    "train.batch_size=4",
    "train.max_train_sequences=8",
    "train.max_eval_sequences=4",
    "optim.lr=0.01",
)


@pytest.fixture
def small_overrides(jsb_path: Path) -> tuple[str, ...]:
    return (*SMALL, f"data.path={jsb_path}")
