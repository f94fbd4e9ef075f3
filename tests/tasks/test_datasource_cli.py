"""``hil data build|fetch|info`` in a subprocess, offline: no HIL_DATA_DIR, closed fetch port."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hil.tasks import chorales, datasource
from tests.conftest import NEEDS_MUSIC


def hil(args: list[str], cache: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/JSB%20Chorales.pickle"
    env = {k: v for k, v in os.environ.items() if k not in {"HIL_DATA_DIR", "HIL_OFFLINE"}}
    env.update({"HIL_CACHE_DIR": str(cache), "HIL_JSB_URL": closed, **extra})
    return subprocess.run(
        [sys.executable, "-m", "hil", "--log-level", "warning", "data", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_build_then_info_uses_the_built_set(tmp_path: Path) -> None:
    pytest.importorskip("music21", reason=NEEDS_MUSIC)
    built = hil(["build", "chorales", "--limit", "4", "--jobs", "2"], tmp_path)
    assert built.returncode == 0, built.stderr
    folder = chorales.chorales_dir(tmp_path, limit=4)
    assert f"source: music21-chorales:{folder / chorales.DATA_FILE}" in built.stdout
    assert "corpus files read: 4, kept: 4, skipped (not four-part): 0" in built.stdout
    # two worker processes give the same bytes as one
    serial = chorales.build_chorales(tmp_path / "serial", limit=4, jobs=1)
    assert (
        json.loads((folder / chorales.MANIFEST_FILE).read_text())["sha256"]
        == (serial.meta["sha256"])
    )
    info = hil(["info", "--data", "chorales", "--limit", "4", "--json"], tmp_path)
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    assert report["source"] == built.stdout.split("source: ")[1].split()[0]
    selected = [r["origin"] for r in report["steps"] if r["selected"] == "yes"]
    assert selected == ["cache"] and report["comparable_to_published"] is False
    # the standard split is still what a run uses by default; the built set is listed
    text = hil(["info"], tmp_path)
    assert text.returncode == 0, text.stderr
    assert "-> 2. shipped      available" in text.stdout
    assert f"(used with --data chorales): {folder}" in text.stdout
    assert "test NLL on it: comparable to published numbers" in text.stdout
    assert "missing" not in text.stdout
    # the whole corpus is not built; the one set that is is named, with how to select it
    text = hil(["info", "--data", "chorales"], tmp_path)
    assert text.returncode == 0, text.stderr
    assert (
        f"other built chorales sets in the cache: {folder} (--seed 2012 --limit 4 here; "
        f"--set data.seed=2012 --set data.build_limit=4 for a run)"
    ) in text.stdout
    assert "nothing local for this --seed/--limit yet" in text.stdout


def test_fetch_from_a_local_url_and_offline_error(tmp_path: Path) -> None:
    sizes = datasource.STANDARD_SEQUENCES
    source = tmp_path / "served.pickle"
    source.write_bytes(
        pickle.dumps({s: [[(60,), (62, 65)]] * n for s, n in sizes.items()}, protocol=2)
    )
    offline = hil(["fetch", "jsb"], tmp_path / "cache")
    assert offline.returncode == 1
    lines = offline.stderr.strip().splitlines()
    assert lines[-1].startswith("hil data: error: could not download the JSB file")
    assert "HIL_DATA_DIR" in lines[-1] and "Connection refused" in lines[-1]
    fetched = hil(["fetch", "jsb", "--url", source.as_uri()], tmp_path / "cache")
    assert fetched.returncode == 0, fetched.stderr
    assert "train 229 pieces / 458 steps" in fetched.stdout
    assert datasource.fetched_jsb_path(tmp_path / "cache").read_bytes() == source.read_bytes()
