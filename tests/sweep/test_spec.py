"""The sweep spec alone (no Ray): expansion, determinism and one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hil.errors import ConfigError
from hil.sweep.results import _stats
from hil.sweep.spec import expand, load_spec
from tests.sweep.conftest import REPO, write_spec


def test_grid_variants_seeds_and_devices_expand_in_launch_order(tmp_path: Path, jsb_path: Path):
    spec, trials = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            jsb_path,
            grid={"optim.lr": [0.001, 0.01]},
            variants={"rule": {"ostl": {"rule.name": "ostl"}, "osttp": {"rule.name": "osttp"}}},
            seeds=[0, 1],
            devices=[{"url": "sim://?preset=hermes&seed={seed}"}],
        )
    )
    assert len(trials) == 8
    assert [t.seed for t in trials[:2]] == [0, 1]
    assert trials[0].params == {"optim.lr": 0.001, "rule": "ostl"}
    assert "rule.name=ostl" in trials[0].overrides and "optim.lr=0.001" in trials[0].overrides
    assert [t.device for t in trials[:2]] == [
        "sim://?preset=hermes&seed=0",
        "sim://?preset=hermes&seed=1",
    ]
    assert all(t.resource is None for t in trials)  # sim:// needs no chip
    assert len({t.id for t in trials}) == 8


def test_a_variant_may_name_its_own_base_config(tmp_path: Path, jsb_path: Path):
    paper = REPO / "configs" / "jsb_osttp_hil.yaml"
    spec, trials = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            jsb_path,
            variants={"config": {"tuned": {}, "paper": {"base": str(paper)}}},
            base=str(REPO / "configs" / "jsb_osttp_hil_tuned.yaml"),
        )
    )
    bases = {t.params["config"]: Path(t.base).name for t in trials}
    assert bases == {"tuned": "jsb_osttp_hil_tuned.yaml", "paper": "jsb_osttp_hil.yaml"}
    assert not any(o.startswith("base=") for t in trials for o in t.overrides)
    bad = write_spec(tmp_path / "b.yaml", jsb_path, variants={"c": {"x": {"base": "nope.yaml"}}})
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_spec(bad)


def test_random_axes_are_drawn_once_from_the_spec_seed(tmp_path: Path, jsb_path: Path):
    fields = {
        "random": {"samples": 3, "seed": 5, "axes": {"optim.lr": {"loguniform": [1e-4, 1e-1]}}}
    }
    a = load_spec(write_spec(tmp_path / "a.yaml", jsb_path, **fields))[1]
    b = load_spec(write_spec(tmp_path / "b.yaml", jsb_path, **fields))[1]
    assert [t.params for t in a] == [t.params for t in b]
    lrs = [t.params["optim.lr"] for t in a]
    assert len(set(lrs)) == 3 and all(1e-4 <= v <= 1e-1 for v in lrs)


def test_chip_devices_are_resources_and_spread_round_robin(tmp_path: Path, jsb_path: Path):
    spec, trials = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            jsb_path,
            seeds=[0, 1, 2],
            devices=[{"url": "tcp://lab1:5555", "capacity": 2}, {"url": "board://lab.yaml"}],
        )
    )
    assert [t.device for t in trials] == ["tcp://lab1:5555", "board://lab.yaml", "tcp://lab1:5555"]
    assert (
        trials[0].resource == "chip-tcp-lab1-5555" and trials[1].resource == "chip-board-lab-yaml"
    )
    axis = expand(spec.model_copy(update={"device_mode": "axis"}))
    assert len(axis) == 6 and {t.device for t in axis[:3]} == {"tcp://lab1:5555"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"grids": {"optim.lr": [0.1]}}, "grids: unknown key"),
        ({"grid": {"optim.lr": []}}, "grid.optim.lr: empty"),
        ({"devices": [{"url": "gpu://0"}]}, "unknown device scheme 'gpu'"),
        ({"grid": {"optim.lrr": [0.1]}}, "optim.lrr"),
        ({"grid": {"train.seed": [1, 2]}}, "train.seed is set by the spec's seeds"),
        ({"devices": [{"url": "sim://?preset=hermes", "capacity": 2}]}, "needs no chip"),
        ({"metric": "test_loss"}, "metric"),
    ],
)
def test_bad_spec_is_refused_in_one_line(tmp_path: Path, jsb_path: Path, fields, expected):
    with pytest.raises(ConfigError) as err:
        load_spec(write_spec(tmp_path / "s.yaml", jsb_path, **fields))
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"grid": {"optim.lr": [0.1]}, "seeds": [0], "bogus": 1}, "bogus: unknown key"),
        ({"grid": {"optim.lr": []}}, "grid.optim.lr: empty"),
        ({"devices": [{"url": "usb://chip"}]}, "unknown device scheme 'usb'"),
    ],
)
def test_cli_refuses_a_bad_spec_in_one_line_before_ray_starts(
    tmp_path: Path, jsb_path: Path, fields, expected
):
    spec = write_spec(tmp_path / "s.yaml", jsb_path, **fields)
    code = (
        "import sys; from hil.cli import main; rc = main(sys.argv[1:]); "
        "print('RAY_IMPORTED' if 'ray' in sys.modules else 'NO_RAY'); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "sweep", str(spec), "--sweep-dir", str(tmp_path / "sw")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hil sweep: error: ") and expected in lines[0]
    assert out.stdout.strip() == "NO_RAY"  # refused before Ray was even imported
    assert not (tmp_path / "sw").exists()


def test_point_std_is_the_sample_std():
    values = [9.7, 9.9, 9.6]
    mean, std = _stats(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert _stats([1.0]) == (1.0, None)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=str)
def test_the_figure_specs_are_valid(path: Path):
    spec, trials = load_spec(path)
    assert trials and len({t.id for t in trials}) == len(trials)
    assert len(spec.seeds) >= 2  # every figure is a mean ± std over seeds


@pytest.mark.parametrize("name", ["paper", "tuned", "tuned_noH"])
def test_the_software_figure_sweeps_train_the_jsb_software_configs(name: str):
    """Each trial of `configs/sweeps/jsb_software_<name>.yaml` resolves to exactly the run
    config of `configs/jsb_software/<name>_<rule>.yaml` at its seed (names aside), so the
    figures that `hil sweep` makes are the ones those config files document."""
    from hil.trainer.session import TrainRequest, resolve_request

    spec, trials = load_spec(REPO / "configs" / "sweeps" / f"jsb_software_{name}.yaml")
    assert {t.params["rule"] for t in trials} == {"bptt", "ostl", "drtp", "osttp"}
    for t in trials:
        via_sweep = resolve_request(
            TrainRequest(
                config=Path(t.base), seed=t.seed, epochs=spec.epochs, overrides=tuple(t.overrides)
            )
        ).model_dump(mode="json")
        config = REPO / "configs" / "jsb_software" / f"{name}_{t.params['rule']}.yaml"
        direct = resolve_request(TrainRequest(config=config, seed=t.seed)).model_dump(mode="json")
        via_sweep.pop("name")
        direct.pop("name")
        assert via_sweep == direct, t.id
