"""Shared pytest fixtures and options.

- ``rng``: a seeded ``numpy.random.Generator``; tests never touch global RNG state.
- ``--device-url URL``: runs tests marked ``hardware`` against that device; they skip
  otherwise.
- ``jsb_path``: a file holding the standard JSB Chorales split, usable as ``data.path``: the
  copy shipped in the package (:mod:`hil.tasks.standard`), so every test runs on a fresh
  machine with no data directory; ``jsb_splits``: that split, loaded.
- ``jsb_source``: the original pickle the shipped copy was converted from, from
  ``HIL_DATA_DIR`` or ``../shared/data`` beside the checkout (only the provenance tests use
  it). Missing, it skips the test locally but **fails** it when ``CI=true``.
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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device-url",
        default=None,
        help="driver URL of a real device for tests marked 'hardware' (e.g. board://lab.yaml)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--device-url"):
        return
    skip_hw = pytest.mark.skip(reason="needs a real device: pass --device-url URL")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip_hw)


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


def require_data_file(name: str) -> Path:
    """Return the path of a shared data file, skipping (locally) or failing (CI) if absent."""
    path = data_dir() / name
    if not path.is_file():
        msg = f"data file {path} not found; set HIL_DATA_DIR to the folder holding {name}"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def jsb_source() -> Path:
    return require_data_file(JSB_FILENAME)


@pytest.fixture(scope="session")
def jsb_path() -> Path:
    from hil.tasks.standard import SHIPPED_NPZ

    return SHIPPED_NPZ


@pytest.fixture(scope="session")
def jsb_splits(jsb_path: Path) -> object:
    from hil.tasks.standard import load_shipped

    return load_shipped(jsb_path)
