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


def _selfcheck(out, *extra: str) -> int:
    return main(["--no-log-json", "--log-level", "warning", "selfcheck", "--out", str(out), *extra])


def test_selfcheck_passes_hermes_with_a_verdict_per_check(tmp_path, capsys) -> None:
    """hermes converges at its own tolerance (one sigma of a verify read, 0.5 µS) within
    the iteration cap; its stuck and dead devices are counted apart, not as unconverged."""
    assert _selfcheck(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    verdicts = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    assert [v.split(":")[0] for v in verdicts] == [
        "PASS program-and-verify converged",
        "PASS programming error",
        "PASS MVM error at 1 s",
        "PASS drift compensation at 1 day",
    ]
    assert lines[-1] == "selfcheck: PASS (0 of 4 failed)"
    result = json.loads((tmp_path / "selfcheck.json").read_text())
    prog = result["program"]
    assert result["tolerance_us"] == 0.5 and prog["tolerance_us"] == 0.5
    assert prog["converged"] and prog["unconverged_cells"] == 0
    assert prog["iterations"] <= 20 and prog["cells"] == 150 * 88
    assert prog["faulty_cells"] > 0  # hermes has stuck/dead devices (0.4 % of devices)
    assert prog["rms_error_us"] < 0.5


def test_selfcheck_fails_a_tolerance_below_the_noise_and_exits_1(tmp_path, capsys) -> None:
    """0.1 µS is below the verify read's own noise: three iterations cannot reach it."""
    code = _selfcheck(tmp_path, "--tolerance-us", "0.1", "--max-iterations", "3")
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[-1] == "selfcheck: FAIL (2 of 4 failed)"
    fails = [line for line in out if line.startswith("FAIL ")]
    assert fails[0].startswith("FAIL program-and-verify converged: ")
    assert "after 3/3 iterations" in fails[0]
    assert fails[1].startswith("FAIL programming error: rms ") and "> 0.10 µS" in fails[1]
