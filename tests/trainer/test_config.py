from __future__ import annotations

from pathlib import Path

import pytest

from hil.errors import ConfigError
from hil.trainer.config import apply_overrides, load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_validate() -> None:
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_config(f)
        assert cfg.name


def test_paper_hardware_config_matches_the_paper() -> None:
    cfg = load_config(REPO / "configs" / "jsb_osttp_hil.yaml")
    assert cfg.network.hidden == [150]
    assert cfg.network.reset == "full" and cfg.network.decay == 0.6
    assert cfg.network.pseudo == "tanh" and cfg.network.pseudo_scale == 1.0
    assert (cfg.optim.kind, cfg.optim.lr, cfg.optim.decay_factor, cfg.optim.decay_every) == (
        "sgd",
        1e-3,
        0.6,
        5,
    )
    assert "preset=hermes" in cfg.device.url


def test_overrides_are_nested_and_typed() -> None:
    raw = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=5e-4", "network.hidden=[10, 20]"])
    assert raw == {"optim": {"lr": 5e-4}, "network": {"hidden": [10, 20]}}
    cfg = load_config(None, ["optim.lr=5e-4", "device.url=software"])
    assert cfg.optim.lr == 5e-4 and cfg.device.is_software


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=-1", "optim.lr"),
        ("network.reset=half", "network.reset"),
        ("train.epochs=0", "train.epochs"),
        ("nonsense.key=1", "nonsense"),
        ("device.refresh_lo=0.9", "refresh_lo"),
    ],
)
def test_bad_values_name_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_syntax_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_toml_config(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text('name = "t"\n[optim]\nlr = 0.002\n[device]\nurl = "software"\n')
    cfg = load_config(f)
    assert cfg.name == "t" and cfg.optim.lr == 0.002


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: jsb\nnetwork:\n  hidden: [150\nrule: {name: osttp}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value) == (
        f"config file {bad} is not valid YAML: line 5, column 5: expected ',' or ']', but got "
        f"':' (while parsing a flow sequence)"
    )
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: x\nnetwork:\n  hidden: [150]\n  bogus: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(extra)
    assert str(err.value).startswith(f"invalid run config {extra} line 4: network.bogus: ")


def test_a_bad_set_is_blamed_on_the_set_not_the_file(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[2] / "configs/jsb_osttp_hil.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(good, ["optim.lr=abc"])
    msg = str(err.value)
    assert msg.startswith("--set optim.lr=abc: optim.lr: Input should be a valid number")
    assert str(good) not in msg and "\n" not in msg
    with pytest.raises(ConfigError) as err:
        load_config(good, ["optim.lrr=1"])
    assert str(err.value).startswith("--set optim.lrr=1: optim.lrr: Extra inputs")
