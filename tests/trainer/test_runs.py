"""End-to-end training runs: run directory contents, device path exactness, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hil.cli import main
from hil.errors import HilError
from hil.tasks.jsb_task import JsbTask
from hil.trainer.runs import RunDir
from hil.trainer.session import TrainRequest, check_data, train
from tests.conftest import NEEDS_MUSIC
from tests.trainer.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


def test_software_run_writes_a_complete_run_dir(
    tmp_path: Path, small_overrides: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    rd = tmp_path / "run"
    args = [
        "--log-level",
        "warning",
        "train",
        str(REPO / "configs/jsb_osttp_hil.yaml"),
        "--device",
        "software",
        "--run-dir",
        str(rd),
        "--epochs",
        "2",
        "--no-progress",
    ]
    for o in small_overrides:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test NLL" in out and str(rd) in out
    run = RunDir.open(rd)
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(np.isfinite(m[k]) for m in metrics for k in ("train_nll", "valid_nll", "test_nll"))
    summary = run.summary()
    assert summary is not None
    for key in ("test_nll", "best_epoch", "epochs", "wall_s", "data_source"):
        assert key in summary
    # the standard split, but its test split cut to 4 pieces: the terminal and summary say so
    assert summary["comparable_to_published"] is False
    assert summary["comparability"] == "the test split is cut to 4 of 77 pieces"
    assert "test NLL NOT comparable to published numbers (the test split is cut" in out
    assert {e["event"] for e in run.events()} >= {"start", "finished"}
    report = (rd / "report.html").read_text()  # the dashboard's run page, exported
    assert "window.HIL_STATIC" in report and "plotly.js" in report
    assert json.dumps(summary["test_nll"]) in report
    assert json.loads((rd / "config.json").read_text())["device"]["url"] == "software"
    assert json.loads((rd / "environment.json").read_text())["python"]
    # hil runs list / show read it back
    capsys.readouterr()
    assert main(["runs", "list", str(tmp_path)]) == 0
    header, line = capsys.readouterr().out.splitlines()  # one run below tmp_path
    assert header.split()[:2] == ["run", "status"] and line.split()[0] == rd.name
    assert " finished " in line and "software | jsb-standard:" in line
    assert main(["runs", "list", "--json", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    metrics = [json.loads(ln) for ln in (rd / "metrics.jsonl").read_text().splitlines()]
    best = min(metrics, key=lambda r: r["valid_nll"])
    assert row["status"] == "finished" and row["epochs"] == len(metrics)
    assert row["data_source"] == summary["data_source"] and row["metric"] == "nll"
    assert (row["best_epoch"], row["best_valid"], row["test_at_best"]) == (
        best["epoch"],
        best["valid_nll"],
        best["test_nll"],
    )
    assert main(["runs", "show", str(rd)]) == 0
    assert "epoch   2" in capsys.readouterr().out


def test_hil_run_on_a_noisy_chip_records_the_device(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    s = train(
        TrainRequest(
            device="sim://?preset=hermes&seed=3",
            run_dir=tmp_path / "hw",
            epochs=2,
            overrides=small_overrides,
            progress=False,
        )
    )
    run = RunDir.open(tmp_path / "hw")
    m = run.metrics()
    assert all(r["pulses"] > 0 for r in m) and s["pulses"] == sum(r["pulses"] for r in m)
    assert all("saturated_cells" in r and "refreshes" in r for r in m)
    placement = run.read_json("placement.json")
    assert set(placement["placement"]) == {"h0.W", "out.W", "B0"}
    assert placement["regions"]["B0"]["chip"] == 1
    assert all(p["rms_error_us"] < 2.0 for p in placement["programming"].values())
    assert run.read_json("device.json")["info"]["preset"] == "hermes"
    for f in (
        "conductances_before.npz",
        "conductances_after.npz",
        "programming.npz",
        "report.html",
    ):
        assert (tmp_path / "hw" / f).is_file(), f


def test_ideal_chip_follows_the_software_run(
    tmp_path: Path, small_overrides: tuple[str, ...]
) -> None:
    """The device path is exact: forward, learning signals and evaluation through an ideal
    chip equal the software run; with learning, only the pulse quantisation ε differs
    (``W_device + χ = W_software`` is pinned in test_device_matrix)."""
    frozen = (*small_overrides, "optim.lr=1e-9")  # χ stays below ε: no pulse is sent
    sw = train(
        TrainRequest(
            device="software", run_dir=tmp_path / "sw0", epochs=1, overrides=frozen, progress=False
        )
    )
    hw = train(
        TrainRequest(
            device="sim://?preset=ideal&seed=0",
            run_dir=tmp_path / "hw0",
            epochs=1,
            overrides=frozen,
            progress=False,
        )
    )
    assert hw["pulses"] == 0
    prog = RunDir.open(tmp_path / "hw0").read_json("placement.json")["programming"]
    assert all(p["rms_error_us"] < 1e-4 for p in prog.values())
    for key in ("train_nll", "valid_nll", "test_nll"):
        assert hw[key] == pytest.approx(sw[key], rel=1e-5), key

    learning = (*small_overrides, "device.max_pulses_per_update=100", "device.g_net_fraction=1.0")
    sw = train(
        TrainRequest(
            device="software", run_dir=tmp_path / "sw", epochs=2, overrides=learning, progress=False
        )
    )
    hw = train(
        TrainRequest(
            device="sim://?preset=ideal&seed=0",
            run_dir=tmp_path / "hw",
            epochs=2,
            overrides=learning,
            progress=False,
        )
    )
    assert hw["pulses"] > 0
    for key in ("train_nll", "valid_nll", "test_nll"):
        assert hw[key] == pytest.approx(sw[key], rel=0.03), key


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hil", "--log-level", "error", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "network.hidden=[300]"], "reduce the layer width"),
        (["--set", "network.hidden=[200, 200]"], "do not fit the device"),
        (["--set", "optim.lr=-3"], "optim.lr"),
        (["--device", "tcp://127.0.0.1:9?timeout_s=0.2&retries=1"], "cannot open device"),
        (["--device", "warp://nowhere"], "unknown driver URL scheme"),
    ],
)
def test_bad_runs_fail_with_one_clear_line(
    tmp_path: Path, jsb_path: Path, extra: list[str], fragment: str
) -> None:
    res = _cli(
        "train",
        str(REPO / "configs/jsb_osttp_hil.yaml"),
        "--run-dir",
        str(tmp_path / "r"),
        "--set",
        f"data.path={jsb_path}",
        "--epochs",
        "1",
        *extra,
    )
    assert res.returncode != 0
    err_lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(err_lines) == 1, res.stderr
    assert fragment in err_lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()  # a refused run leaves nothing behind


@pytest.mark.parametrize("device", ["software", "sim://?preset=hermes&seed=0"])
def test_per_step_online_updates_train(
    tmp_path: Path, small_overrides: tuple[str, ...], device: str
) -> None:
    sets = (*small_overrides, "rule.update=step", "train.max_train_sequences=4")
    s = train(
        TrainRequest(
            device=device, run_dir=tmp_path / "r", epochs=1, overrides=sets, progress=False
        )
    )
    assert np.isfinite(s["test_nll"])
    m = RunDir.open(tmp_path / "r").metrics()[0]
    if device != "software":  # one pulse request per time step with a non-zero update
        assert m["pulse_requests"] > 10


def test_data_chorales_is_an_explicit_choice_and_says_it_is_not_comparable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("music21", reason=NEEDS_MUSIC)
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    sets = [a for o in SMALL for a in ("--set", o)]
    args = ["train", str(REPO / "configs/jsb_osttp_hil.yaml"), "--device", "software"]
    args += ["--epochs", "1", "--no-progress", *sets, "--set", "data.build_limit=4"]
    assert main([*args, "--run-dir", str(tmp_path / "c"), "--data", "chorales"]) == 0
    out = capsys.readouterr().out
    assert "Bach chorales built from music21's corpus" in out
    assert "NOT comparable to published numbers: the music21 chorales are a different set" in out
    summary = RunDir.open(tmp_path / "c").summary()
    assert summary is not None and summary["data_source"].startswith("music21-chorales:")
    # the same command without --data trains on the standard split, never on the built set
    assert main([*args, "--run-dir", str(tmp_path / "s")]) == 0
    assert "standard split" in capsys.readouterr().out
    summary = RunDir.open(tmp_path / "s").summary()
    assert summary is not None and summary["data_source"].startswith("jsb-standard:")


def test_resume_accepts_another_copy_of_the_same_data(tmp_path: Path) -> None:
    """A run may move between copies of the same file (the pickle in HIL_DATA_DIR and the
    shipped copy carry the same sha256); other data are refused."""
    run = RunDir.create(tmp_path / "r")
    rolls = [np.zeros((3, 88), np.uint8)]

    def task(source: str, sha: str | None) -> JsbTask:
        return JsbTask(rolls, rolls, rolls, source, fingerprint=sha)

    check_data(run, task("jsb-standard:/data/jsb_chorales.pickle", "be67"), new=True)
    check_data(run, task("jsb-standard:/venv/hil/tasks/data/jsb_standard.npz", "be67"), new=False)
    with pytest.raises(HilError, match="data now resolve to jsb-standard:/elsewhere"):
        check_data(run, task("jsb-standard:/elsewhere", "0123"), new=False)
    with pytest.raises(HilError, match="this run used jsb-standard:/data/jsb_chorales.pickle"):
        check_data(run, task("music21-chorales:/c", None), new=False)
