"""``hil runs eval``: the trained chips of a simulator run, scored again after delays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil.cli import main
from hil.errors import HilError
from hil.trainer.evaluate import drift_evaluation
from hil.trainer.session import TrainRequest, train


def test_drift_evaluation_restores_the_trained_chips(
    tmp_path: Path, small_overrides: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    s = train(
        TrainRequest(
            device="sim://?preset=hermes&seed=1",
            run_dir=tmp_path / "r",
            epochs=1,
            overrides=small_overrides,
            progress=False,
        )
    )
    out = drift_evaluation(tmp_path / "r", [0.0, 86400.0], ["none", "global"])
    assert set(out["modes"]) == {"none", "global"}
    for rows in out["modes"].values():
        assert [r["delay_s"] for r in rows] == [0.0, 86400.0]
    # right after training, the restored chips score what the run scored up to fresh read
    # noise: on 4 test sequences that moves the NLL by up to ~0.1 (seeds 1-3 measured
    # 0.001-0.09); wrong or missing weights move it by whole units
    assert out["modes"]["none"][0]["test_nll"] == pytest.approx(s["test_nll"], abs=0.15)
    # a day of drift changes what the uncompensated chips compute
    assert out["modes"]["none"][1]["test_nll"] != out["modes"]["none"][0]["test_nll"]
    assert json.loads((tmp_path / "r" / "drift_eval.json").read_text())["delays_s"] == [0, 86400]
    assert (
        main(
            ["runs", "eval", str(tmp_path / "r"), "--at", "0", "1h", "--compensation", "per_column"]
        )
        == 0
    )
    assert "per_column" in capsys.readouterr().out


def test_drift_evaluation_needs_a_simulator_run(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    train(
        TrainRequest(
            device="software",
            run_dir=tmp_path / "sw",
            epochs=1,
            overrides=small_overrides,
            progress=False,
        )
    )
    with pytest.raises(HilError, match="no chip snapshot"):
        drift_evaluation(tmp_path / "sw", [0.0])
