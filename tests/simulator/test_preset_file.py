"""Preset files: the DeviceParams schema from YAML, validated, one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import Chip, PresetError, get_preset
from simulator.preset_file import load_preset_file, write_preset_file


@pytest.mark.parametrize("name", ["hermes", "aihwkit-pcm", "ideal"])
def test_written_preset_reads_back_equal(tmp_path: Path, name: str) -> None:
    params = get_preset(name)
    path = write_preset_file(params, tmp_path / f"{name}.yaml", header="a test\nsecond line")
    assert path.read_text().startswith("# a test\n# second line\n")
    assert load_preset_file(path) == params
    assert get_preset(str(path)) == params


def test_base_and_overrides_and_default_name(tmp_path: Path) -> None:
    path = tmp_path / "chip-17.yml"
    path.write_text("base: aihwkit-pcm\ng_max_us: 20\np_dead: 0.01\ndac_bits: null\n")
    p = get_preset(str(path))
    assert p.name == "chip-17" and p.g_max_us == 20.0 and p.p_dead == 0.01
    assert p.dac_bits is None and p.fill_fraction == 1.0  # the rest from aihwkit-pcm
    assert Chip(0, p, seed=1).params == p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("g_max_us: -1\n", "field g_max_us: Input should be greater than 0, got -1"),
        ("g_max_us: ten\n", "field g_max_us: Input should be a valid number, got 'ten'"),
        ("p_dead: 1.5\n", "field p_dead: Input should be less than or equal to 1"),
        ("drift: 1\n", "field drift: Input should be a valid boolean"),
        ("adc_bits: 40\n", "field adc_bits: Input should be less than or equal to 16"),
        ("adc_bits: 7.5\n", "field adc_bits"),
        ("gmax_us: 10\n", "field gmax_us: Extra inputs are not permitted"),
        ("t0_s: .nan\n", "field t0_s: Input should be a finite number"),
        ("base: hermez\n", "field base: unknown built-in preset 'hermez'"),
        ("g_reset_us: 12\n", "g_reset_us must be below g_max_us"),
        ("p_dead: 0.6\np_stuck_reset: 0.6\n", "fault probabilities"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("g_max_us: [1\n", "not valid YAML at line"),
    ],
)
def test_bad_files_are_refused_in_one_line_naming_the_field(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PresetError) as info:
        get_preset(str(path))
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and str(path) in msg


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="cannot read it"):
        get_preset(str(tmp_path / "nope.yaml"))
