"""The layering contract is enforced: a forbidden import makes ``lint-imports`` fail.

The test copies the four packages and ``pyproject.toml`` into a scratch directory, checks
that the clean copy passes, then plants ``import hil`` inside ``simulator`` and checks that
the contract breaks. It needs import-linter (the ``dev`` extra, installed by ``.ci/run``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("hil", "drivers", "simulator", "protocols")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd)},
        timeout=300,
    )


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="needs the `dev` extra (import-linter): pip install -e '.[dev]'",
)
def test_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(
            REPO_ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")

    clean = _lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    with (tmp_path / "simulator" / "__init__.py").open("a") as f:
        f.write("\nimport hil  # planted layering violation\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "simulator and protocols import neither drivers nor hil" in broken.stdout
    assert "BROKEN" in broken.stdout
