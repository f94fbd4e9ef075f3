"""Tasks are plug-ins: a task defined in a test module trains end to end through `hil train`."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.errors import ConfigError
from hil.tasks.spec import get_task, register_task, task_names
from hil.trainer.config import load_config
from hil.trainer.runs import RunDir
from hil.trainer.session import TrainRequest, train
from tests.trainer import toy_task

TOY = (
    "network.hidden=[16]",
    "train.batch_size=8",
    "train.epochs=6",
    "optim.kind=adam",
    "optim.lr=0.02",
    "toy.n_items=48",
)


def test_a_registered_task_trains_end_to_end(tmp_path: Path) -> None:
    register_task(toy_task.TASK)
    assert "toy" in task_names() and get_task("toy") is toy_task.TASK
    summary = train(
        TrainRequest(
            device="software",
            run_dir=tmp_path / "run",
            overrides=("task=toy", *TOY, "rule.name=ostl"),
            progress=False,
        )
    )
    assert summary["task"] == "toy" and summary["metric"] == "bits"
    assert "max_test_bits" in summary  # higher is better: the best is the largest
    run = RunDir.open(tmp_path / "run")
    first, last = run.metrics()[0], run.metrics()[-1]
    assert set(first) >= {"train_bits", "valid_bits", "test_bits"}
    assert last["test_bits"] > 0.9 > 0.7  # learnt to echo; silence scores 1 - density = 0.7
    assert run.read_json("data.json") == {"task": "toy", "source": "toy:seed=0", "sha256": None}
    assert run.read_json("config.json")["toy"]["n_items"] == 48


def test_a_task_by_import_path_on_a_chip(tmp_path: Path) -> None:
    summary = train(
        TrainRequest(
            device="sim://?preset=hermes&seed=0",
            run_dir=tmp_path / "run",
            overrides=(
                "task=tests.trainer.toy_task:TASK",
                *TOY,
                "train.epochs=2",
                "network.readout_bias_init=silence",
            ),
            progress=False,
        )
    )
    assert summary["pulses"] > 0 and 0.0 <= summary["test_bits"] <= 1.0
    placement = RunDir.open(tmp_path / "run").read_json("placement.json")["placement"]
    assert set(placement) == {"h0.W", "B0", "out.W"}


def test_task_settings_and_names_are_checked() -> None:
    register_task(toy_task.TASK)
    with pytest.raises(ConfigError, match=r"toy\.density"):
        load_config(None, ["task=toy", "toy.density=2"])
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_config(None, ["task=nope"])
    with pytest.raises(ConfigError, match="not offered by task 'jsb'"):
        load_config(None, ["network.readout_bias_init=silence"])
