"""``hil selfcheck`` runs end to end on the simulator and writes its JSON and PNG."""

from __future__ import annotations

import json

from hil.cli import main


def test_selfcheck_writes_results_showing_drift(tmp_path, capsys) -> None:
    out = tmp_path / "selfcheck"
    code = main(
        [
            "--no-log-json",
            "--log-level",
            "warning",
            "selfcheck",
            "--out",
            str(out),
            "--rows",
            "40",
            "--cols",
            "24",
            "--batch",
            "32",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    result = json.loads((out / "selfcheck.json").read_text())
    assert (out / "selfcheck.png").stat().st_size > 1000
    gains = [row["output_gain_vs_ideal"] for row in result["mvm"]]
    assert gains[0] > gains[1] > gains[2]  # drift lowers the outputs over time
    assert 0.6 < gains[2] < 0.8  # nu ~ 0.05: factor ~0.66 after a day (pcm-physics §4)
    assert result["program"]["rms_error_us"] < 1.0
    assert str(out / "selfcheck.json") in capsys.readouterr().out
