"""JSB data resolution: explicit > HIL_DATA_DIR > shipped copy > cache > download for the
standard split; explicit > cache > music21 build for ``dataset: chorales``.

Every source is a real file. Downloads go to a ``file://`` URL or to an ``http.server`` the
test starts on 127.0.0.1; "networking off" is a closed local port. Nothing leaves the host.
"""

from __future__ import annotations

import http.server
import json
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.errors import DataError
from hil.tasks import chorales, datasource, standard
from hil.tasks.datasource import JsbDataConfig, resolve_jsb
from tests.conftest import NEEDS_MUSIC

STANDARD = datasource.STANDARD_SEQUENCES
NO_SHIPPED = JsbDataConfig(shipped=False)
CHORALES = JsbDataConfig(dataset="chorales")


def write_jsb(path: Path, first_note: int, sizes: dict[str, int] = STANDARD) -> Path:
    """A protocol-2 pickle in the standard layout; ``first_note`` tells files apart."""
    piece = [(first_note, first_note + 4), (), (first_note + 7,)]
    data = {split: [list(piece) for _ in range(n)] for split, n in sizes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def first_note(splits: object) -> int:
    return int(splits.train[0][0].nonzero()[0][0]) + 21  # type: ignore[attr-defined]


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        self.requests.append(self.path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})

    def make(*args: object, **kwargs: object) -> _Handler:
        return handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def closed_url() -> str:
    """A URL on a local port nothing listens on: a download fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/JSB%20Chorales.pickle"


@pytest.fixture
def sources(tmp_path: Path, server: tuple[str, list[str]]) -> dict[str, object]:
    """One distinct file per source: explicit (note 40), HIL_DATA_DIR (50), cache (60), web (70)."""
    base, requests = server
    write_jsb(tmp_path / "www" / "JSB Chorales.pickle", 70)
    return {
        "explicit": write_jsb(tmp_path / "mine" / "jsb.pickle", 40),
        "data_dir": write_jsb(tmp_path / "data" / datasource.JSB_FILENAME, 50).parent,
        "cache": tmp_path / "cache",
        "url": f"{base}/JSB%20Chorales.pickle",
        "requests": requests,
    }


def env_for(src: dict[str, object], *, data_dir: bool = True) -> dict[str, str]:
    env = {"HIL_CACHE_DIR": str(src["cache"]), "HIL_JSB_URL": str(src["url"])}
    if data_dir:
        env["HIL_DATA_DIR"] = str(src["data_dir"])
    return env


def test_explicit_path_beats_everything(sources: dict[str, object]) -> None:
    write_jsb(datasource.fetched_jsb_path(sources["cache"]), 60)  # type: ignore[arg-type]
    splits = resolve_jsb(JsbDataConfig(path=sources["explicit"]), env=env_for(sources))
    assert first_note(splits) == 40
    assert splits.source == f"jsb-standard:{sources['explicit']}"
    assert splits.meta["origin"] == "explicit"


def test_data_dir_beats_cache(sources: dict[str, object]) -> None:
    write_jsb(datasource.fetched_jsb_path(sources["cache"]), 60)  # type: ignore[arg-type]
    splits = resolve_jsb(env=env_for(sources))
    assert (first_note(splits), splits.meta["origin"]) == (50, "HIL_DATA_DIR")


def test_data_dir_beats_the_shipped_copy(sources: dict[str, object]) -> None:
    splits = resolve_jsb(env=env_for(sources))
    assert (first_note(splits), splits.meta["origin"]) == (50, "HIL_DATA_DIR")


def test_shipped_copy_beats_cache_and_download(sources: dict[str, object]) -> None:
    write_jsb(datasource.fetched_jsb_path(sources["cache"]), 61)  # type: ignore[arg-type]
    splits = resolve_jsb(env={**env_for(sources, data_dir=False), "HIL_OFFLINE": "1"})
    assert splits.meta["origin"] == "shipped"
    assert splits.source == f"jsb-standard:{standard.SHIPPED_NPZ}"
    assert datasource.is_standard(splits) and sources["requests"] == []
    assert "copy shipped in the package" in datasource.describe(splits)


def test_cache_beats_download(sources: dict[str, object]) -> None:
    write_jsb(datasource.fetched_jsb_path(sources["cache"]), 60)  # type: ignore[arg-type]
    splits = resolve_jsb(NO_SHIPPED, env=env_for(sources, data_dir=False))
    assert (first_note(splits), splits.meta["origin"]) == (60, "cache")
    assert sources["requests"] == []


def test_download_lands_in_the_cache(sources: dict[str, object]) -> None:
    splits = resolve_jsb(NO_SHIPPED, env=env_for(sources, data_dir=False))
    assert (first_note(splits), splits.meta["origin"]) == (70, "download")
    assert sources["requests"] == ["/JSB%20Chorales.pickle"]
    cached = datasource.fetched_jsb_path(sources["cache"])  # type: ignore[arg-type]
    assert splits.source == f"jsb-standard:{cached}"
    again = resolve_jsb(NO_SHIPPED, env=env_for(sources, data_dir=False))
    assert again.meta["origin"] == "cache" and len(sources["requests"]) == 1  # type: ignore[arg-type]


def test_the_standard_split_never_falls_back_to_the_chorales(tmp_path: Path) -> None:
    chorales_like = chorales.chorales_dir(tmp_path)
    chorales_like.mkdir(parents=True)
    (chorales_like / chorales.MANIFEST_FILE).write_text("{}")
    env = {"HIL_CACHE_DIR": str(tmp_path), "HIL_OFFLINE": "1"}
    with pytest.raises(DataError, match="no standard JSB Chorales data") as err:
        resolve_jsb(NO_SHIPPED, env=env)
    assert "shipped copy disabled" in str(err.value)


def test_offline_builds_the_music21_chorales(tmp_path: Path, closed_url: str) -> None:
    pytest.importorskip("music21", reason=NEEDS_MUSIC)
    env = {"HIL_CACHE_DIR": str(tmp_path), "HIL_JSB_URL": closed_url}
    splits = resolve_jsb(JsbDataConfig(dataset="chorales", build_limit=4), env=env)
    assert splits.meta["origin"] == "build"
    folder = chorales.chorales_dir(tmp_path, limit=4)
    assert splits.source == f"music21-chorales:{folder / chorales.DATA_FILE}"
    assert sum(c["sequences"] for c in splits.counts().values()) == 4
    # second time: the built set is found in the cache, nothing is parsed again
    mtime = (folder / chorales.MANIFEST_FILE).stat().st_mtime_ns
    again = resolve_jsb(JsbDataConfig(dataset="chorales", build_limit=4), env=env)
    assert datasource.comparability(again)[0] is False
    assert again.meta["origin"] == "cache"
    assert (folder / chorales.MANIFEST_FILE).stat().st_mtime_ns == mtime


def test_cached_full_build_serves_a_subset_request(tmp_path: Path) -> None:
    pytest.importorskip("music21", reason=NEEDS_MUSIC)
    chorales.build_chorales(tmp_path, limit=3)
    full = chorales.chorales_dir(tmp_path)  # stands in for the full build, same layout
    chorales.chorales_dir(tmp_path, limit=3).rename(full)
    env = {"HIL_CACHE_DIR": str(tmp_path), "HIL_OFFLINE": "1"}
    splits = resolve_jsb(JsbDataConfig(dataset="chorales", build_limit=40, build=False), env=env)
    assert splits.meta["origin"] == "cache" and str(full) in splits.source


def test_nothing_available_is_one_clear_line(tmp_path: Path, closed_url: str) -> None:
    env = {"HIL_CACHE_DIR": str(tmp_path), "HIL_JSB_URL": closed_url}
    with pytest.raises(DataError) as err:
        resolve_jsb(NO_SHIPPED, env=env)
    msg = str(err.value)
    assert "\n" not in msg
    assert "HIL_DATA_DIR" in msg and "hil data fetch jsb" in msg and closed_url in msg


def test_offline_switch_skips_the_download(sources: dict[str, object], tmp_path: Path) -> None:
    env = {**env_for(sources, data_dir=False), "HIL_OFFLINE": "1"}
    with pytest.raises(DataError, match="download disabled"):
        resolve_jsb(NO_SHIPPED, env=env)
    assert sources["requests"] == []


def test_bad_explicit_path_is_an_error_not_a_fallback(sources: dict[str, object]) -> None:
    missing = Path(str(sources["explicit"])).with_name("nope.pickle")
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        resolve_jsb(JsbDataConfig(path=missing), env=env_for(sources))


def test_fetch_checks_the_standard_split(tmp_path: Path) -> None:
    wrong = write_jsb(tmp_path / "wrong.pickle", 60, {"train": 3, "valid": 1, "test": 1})
    with pytest.raises(DataError, match="split sizes"):
        datasource.fetch_jsb(tmp_path / "cache", url=wrong.as_uri())
    assert not (tmp_path / "cache" / "jsb").exists() or not any(
        (tmp_path / "cache" / "jsb").iterdir()
    )


def test_fetch_refuses_a_hostile_pickle(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"train": [Evil()], "valid": [], "test": []}, protocol=2))
    with pytest.raises(DataError, match="not the JSB pickle.*not allowed"):
        datasource.fetch_jsb(tmp_path / "cache", url=evil.as_uri())
    assert not datasource.fetched_jsb_path(tmp_path / "cache").exists()


def test_fetch_reports_http_errors_and_closed_ports(
    tmp_path: Path, server: tuple[str, list[str]], closed_url: str
) -> None:
    base, _ = server
    with pytest.raises(DataError, match=f"{base}/missing.pickle: HTTP 404"):
        datasource.fetch_jsb(tmp_path, url=f"{base}/missing.pickle", timeout_s=2)
    with pytest.raises(DataError, match="Connection refused"):
        datasource.fetch_jsb(tmp_path, url=closed_url, timeout_s=2)


def test_fetch_of_a_full_standard_file(tmp_path: Path, jsb_splits: object) -> None:
    from tests.tasks.test_shipped_jsb import notes_of

    served = tmp_path / "served.pickle"
    served.write_bytes(pickle.dumps(notes_of(jsb_splits), protocol=2))  # type: ignore[arg-type]
    path = datasource.fetch_jsb(tmp_path / "cache", url=served.as_uri())
    note = json.loads(path.with_suffix(".json").read_text())
    assert note["sha256"] == standard.sha256_file(served) and note["url"] == served.as_uri()
    assert path.read_bytes() == served.read_bytes()


def test_describe_sources_marks_the_first_usable_step(sources: dict[str, object]) -> None:
    rows = datasource.describe_sources(env=env_for(sources))
    assert [r["origin"] for r in rows] == ["HIL_DATA_DIR", "shipped", "cache", "download"]
    assert [r["selected"] for r in rows] == ["yes", "no", "no", "no"]
    rows = datasource.describe_sources(env=env_for(sources, data_dir=False))
    assert [r["selected"] for r in rows] == ["no", "yes", "no", "no"]
    rows = datasource.describe_sources(
        JsbDataConfig(fetch=False, shipped=False), env=env_for(sources, data_dir=False)
    )
    assert [r["status"] for r in rows] == ["absent", "disabled", "absent", "disabled"]
    assert all(r["selected"] == "no" for r in rows)
    rows = datasource.describe_sources(CHORALES, env=env_for(sources))
    assert [r["origin"] for r in rows] == ["cache", "build"]


def test_user_cache_dir_override(tmp_path: Path) -> None:
    assert datasource.user_cache_dir({"HIL_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert datasource.user_cache_dir({}).name == "pcm-hil"


def test_broken_file_in_data_dir_is_an_error(sources: dict[str, object]) -> None:
    broken = Path(str(sources["data_dir"])) / datasource.JSB_FILENAME
    broken.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=f"{broken} is not a valid JSB Chorales pickle"):
        resolve_jsb(env=env_for(sources))


def test_broken_cached_download_is_skipped(sources: dict[str, object]) -> None:
    cached = datasource.fetched_jsb_path(sources["cache"])  # type: ignore[arg-type]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    splits = resolve_jsb(NO_SHIPPED, env=env_for(sources, data_dir=False))
    assert (first_note(splits), splits.meta["origin"]) == (70, "download")
    fetched = datasource.fetch_jsb(sources["cache"], url=str(sources["url"]))  # type: ignore[arg-type]
    assert fetched == cached and first_note(datasource.load_jsb_pickle(cached)) == 70


def test_describe_sources_flags_a_corrupt_built_set(tmp_path: Path) -> None:
    folder = chorales.chorales_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / chorales.MANIFEST_FILE).write_text("{}")
    rows = datasource.describe_sources(
        CHORALES, env={"HIL_CACHE_DIR": str(tmp_path), "HIL_OFFLINE": "1"}
    )
    assert (rows[0]["origin"], rows[0]["status"], rows[0]["selected"]) == ("cache", "invalid", "no")


def test_explicit_path_may_be_a_built_chorales_folder(tmp_path: Path) -> None:
    pytest.importorskip("music21", reason=NEEDS_MUSIC)
    chorales.build_chorales(tmp_path, limit=3)
    folder = chorales.chorales_dir(tmp_path, limit=3)
    splits = resolve_jsb(JsbDataConfig(path=folder), env={"HIL_OFFLINE": "1"})
    assert splits.source == f"music21-chorales:{folder / chorales.DATA_FILE}"
    assert splits.meta["origin"] == "explicit"
    with pytest.raises(DataError, match="folder without a chorales manifest"):
        resolve_jsb(JsbDataConfig(path=tmp_path), env={})
