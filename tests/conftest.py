"""Shared pytest fixtures and options.

- ``rng``: a seeded ``numpy.random.Generator``; tests never touch global RNG state.
- ``--device-url URL``: runs tests marked ``hardware`` against that device; without it they
  are deselected (the report header says how many).
- ``jsb_path``: a file holding the standard JSB Chorales split, usable as ``data.path``: the
  copy shipped in the package (:mod:`hil.tasks.standard`), so every test runs on a fresh
  machine with no data directory; ``jsb_splits``: that split, loaded.
- ``source_if_present(name)``: a shared data file (``HIL_DATA_DIR`` or ``../shared/data``
  beside the checkout), or None where absent; it **fails** the test when ``CI=true``. Only
  the provenance test of the shipped JSB copy uses it, and it never skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
JSB_FILENAME = "jsb_chorales.pickle"
NEEDS_MUSIC = "needs the `music` extra (music21): pip install -e '.[music]'"
NEEDS_REFERENCE = "needs the `reference` extra (torch 2.13.0): pip install -e '.[reference]'"


_HARDWARE_DESELECTED = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device-url",
        default=None,
        help="driver URL of a real device for tests marked 'hardware' (e.g. board://lab.yaml)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``--device-url`` the ``hardware`` tests are deselected (not skipped: there is
    nothing for them to run against), and the report header says how many."""
    if config.getoption("--device-url"):
        return
    hardware = [item for item in items if "hardware" in item.keywords]
    if hardware:
        config.hook.pytest_deselected(items=hardware)
        items[:] = [item for item in items if "hardware" not in item.keywords]
    config.stash[_HARDWARE_DESELECTED] = len(hardware)


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    n = config.stash.get(_HARDWARE_DESELECTED, 0)
    return f"{n} hardware tests deselected: pass --device-url URL to run them" if n else None


@pytest.fixture
def device_url(request: pytest.FixtureRequest) -> str | None:
    return request.config.getoption("--device-url")


@pytest.fixture(autouse=True)
def _reset_structlog() -> object:
    """A test that runs the CLI configures structlog; undo it for the next test."""
    import structlog

    yield
    structlog.reset_defaults()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20231128)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def data_dir() -> Path:
    env = os.environ.get("HIL_DATA_DIR")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def source_if_present(name: str) -> Path | None:
    """The shared data file ``name``, or None where it is absent (a fresh machine); under
    ``CI=true`` an absent file fails the test, since CI always has ``../shared/data``."""
    path = data_dir() / name
    if path.is_file():
        return path
    if in_ci():
        pytest.fail(f"data file {path} not found; set HIL_DATA_DIR to the folder holding {name}")
    return None


@pytest.fixture(scope="session")
def jsb_path() -> Path:
    from hil.tasks.standard import SHIPPED_NPZ

    return SHIPPED_NPZ


@pytest.fixture(scope="session")
def jsb_splits(jsb_path: Path) -> object:
    from hil.tasks.standard import load_shipped

    return load_shipped(jsb_path)
