"""Driver URL schemes are plug-ins: a separately installed package adds ``ideal://``.

The example driver package (``tests/plugins/pcm_hil_example_driver``, the driver of
``docs/writing-a-driver.md``) is pip-installed offline into a temporary folder; with that
folder on ``PYTHONPATH``, ``hil driver check``, ``hil train --device`` and ``hil serve``
accept ``ideal://`` through the package's ``pcm_hil.drivers`` entry point, without any
edit of this project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers import InvalidRequest, open_driver
from drivers.conformance import run_conformance
from drivers.registry import register_scheme, schemes
from hil.procs import ServeProcess

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tests" / "plugins" / "pcm_hil_example_driver"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example package pip-installed (offline, no deps) into a folder; the env to see it."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(PACKAGE)],
        check=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(build), "PIP_NO_CACHE_DIR": "1"},
    )  # fmt: skip
    assert list(target.glob("pcm_hil_example_driver-*.dist-info"))
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", str(REPO))])
    return {**os.environ, "PYTHONPATH": path}


def _hil(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hil", "--log-level", "warning", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown driver URL scheme 'nope'.*sim://"):
        open_driver("nope://x")
    assert {"sim", "tcp", "ipc", "board"} <= set(schemes())


def test_a_scheme_registered_in_process_passes_the_conformance_suite() -> None:
    sys.path.insert(0, str(PACKAGE))
    try:
        import pcm_hil_example_driver as example
    finally:
        sys.path.remove(str(PACKAGE))
    register_scheme("idealtest", example.IdealCrossbar)
    assert isinstance(open_driver("idealtest://?rows=16&cols=16"), example.IdealCrossbar)
    report = run_conformance("idealtest://")
    assert report.passed, [o for o in report.outcomes if not o.passed]


@pytest.mark.slow
def test_an_installed_package_adds_a_scheme_to_every_command(
    installed: dict[str, str], tmp_path: Path, jsb_path: Path
) -> None:
    check = _hil(installed, "driver", "check", "ideal://")
    assert check.returncode == 0, check.stdout + check.stderr

    run = _hil(
        installed, "train", str(REPO / "configs/jsb_osttp_hil.yaml"), "--device", "ideal://",
        "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--no-progress",
        "--set", "network.hidden=[16]", "--set", "train.max_train_sequences=8",
        "--set", "train.max_eval_sequences=4", "--set", f"data.path={jsb_path}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"driver": "ideal-example"' in (tmp_path / "run" / "device.json").read_text()

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = installed["PYTHONPATH"]  # the server process sees the plug-in
    try:
        with ServeProcess("ideal://", "tcp://127.0.0.1:*") as srv:
            served = _hil(installed, "driver", "check", srv.endpoint)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert served.returncode == 0, served.stdout + served.stderr
