"""Where the JSB Chorales task gets its data: resolution order, user cache and download.

:func:`resolve_jsb` tries, in this order, and uses the first that is available:

1. ``config.path``: an explicit standard pickle, or a built chorales folder (must exist);
2. ``$HIL_DATA_DIR/jsb_chorales.pickle``;
3. the user cache (``$HIL_CACHE_DIR`` or ``platformdirs.user_cache_dir("pcm-hil")``): a
   previously fetched standard file, else a previously built music21 chorales set;
4. a download of the standard file (Boulanger-Lewandowski et al. 2012) into the cache,
   unless ``config.fetch`` is false or ``HIL_OFFLINE=1``; the URL is ``config.url``, else
   ``$HIL_JSB_URL``, else :data:`JSB_URL`;
5. building the music21 chorales into the cache (:mod:`hil.tasks.chorales`), when
   ``config.build`` and music21 is importable.

The result's ``source`` is ``"jsb-standard:<path>"`` or ``"music21-chorales:<path>"`` and
``meta["origin"]`` names the step. The two are **not** the same benchmark: only the
standard file's test split is comparable to published numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs
import structlog
from pydantic import BaseModel, ConfigDict, Field

from hil.errors import DataError
from hil.tasks import chorales
from hil.tasks.jsb import load_jsb_pickle
from hil.tasks.pianoroll import PianoRollSplits

log = structlog.get_logger(__name__)

JSB_FILENAME = "jsb_chorales.pickle"
JSB_URL = "http://www-etud.iro.umontreal.ca/~boulanni/JSB%20Chorales.pickle"
"""The file published with Boulanger-Lewandowski, Bengio & Vincent (ICML 2012)."""
STANDARD_SEQUENCES = {"train": 229, "valid": 76, "test": 77}
MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024
ENV_DATA_DIR, ENV_CACHE_DIR = "HIL_DATA_DIR", "HIL_CACHE_DIR"
ENV_JSB_URL, ENV_OFFLINE = "HIL_JSB_URL", "HIL_OFFLINE"
ORIGINS = ("explicit", "HIL_DATA_DIR", "cache", "download", "build")
WHERE_TO_PUT_IT = (
    f"put {JSB_FILENAME} in $HIL_DATA_DIR, run `hil data fetch jsb` when online, or "
    "`pip install -e '.[music]'` and `hil data build chorales` to build the chorales offline"
)

Opener = Callable[..., Any]
"""``urllib.request.urlopen``-like: ``opener(url, timeout=s)`` returns a readable response."""


class JsbDataConfig(BaseModel):
    """Where the JSB task may take its data from (the ``data`` part of a run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    """Explicit standard pickle or built chorales folder; when set, nothing else is tried."""
    fetch: bool = True
    """Allow step 4, the download of the standard file."""
    url: str | None = None
    """Download URL; ``None`` means ``$HIL_JSB_URL`` or :data:`JSB_URL`."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Socket timeout of the download, seconds."""
    build: bool = True
    """Allow step 5, building the music21 chorales."""
    build_limit: int | None = Field(default=None, ge=3)
    """Read only the first N corpus files when building (a quick subset); a cached full
    build with the same seed is used in preference to building a subset."""
    seed: int = chorales.DEFAULT_SEED
    """Seed of the music21 chorales' train/valid/test split."""
    build_jobs: int = Field(default=1, ge=1)
    """Worker processes for the build."""


def user_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$HIL_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("pcm-hil")``."""
    env = os.environ if env is None else env
    override = env.get(ENV_CACHE_DIR)
    return Path(override) if override else Path(platformdirs.user_cache_dir("pcm-hil"))


def fetched_jsb_path(cache_root: Path) -> Path:
    """Where :func:`fetch_jsb` stores the standard file inside a cache folder."""
    return Path(cache_root) / "jsb" / JSB_FILENAME


def check_standard_split(splits: PianoRollSplits, where: str) -> None:
    """Raise :class:`DataError` unless the split sizes are the standard 229/76/77."""
    sizes = {name: c["sequences"] for name, c in splits.counts().items()}
    if sizes != STANDARD_SEQUENCES:
        raise DataError(
            f"{where} has split sizes {sizes}, expected the standard JSB {STANDARD_SEQUENCES}"
        )


def fetch_jsb(
    cache_root: Path,
    *,
    url: str = JSB_URL,
    timeout_s: float = 10.0,
    opener: Opener | None = None,
    force: bool = False,
) -> Path:
    """Download the standard JSB file into ``cache_root``, check it, and return its path.

    The bytes must load with the restricted unpickler and hold the standard 229/76/77
    split; only then is the file moved into place (with a ``.json`` note of url and
    sha256). An existing valid file is kept unless ``force``. Raises :class:`DataError`
    with a one-line reason when the download or the check fails.
    """
    dest = fetched_jsb_path(cache_root)
    if dest.is_file() and not force:
        try:
            check_standard_split(load_jsb_pickle(dest), str(dest))
            return dest
        except DataError as exc:
            log.warning("jsb_cache_invalid", path=str(dest), reason=str(exc), action="download")
    open_url = opener or urllib.request.urlopen
    try:
        with open_url(url, timeout=timeout_s) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise DataError(f"could not download the JSB file from {url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"could not download the JSB file from {url}: {reason}") from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes; not a JSB file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        try:
            splits = load_jsb_pickle(tmp)
        except DataError as exc:
            raise DataError(f"the file downloaded from {url} is not the JSB pickle: {exc}") from exc
        check_standard_split(splits, f"the file downloaded from {url}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    note = {"url": url, "sha256": splits.meta["sha256"], "bytes": len(data)}
    note["fetched_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    dest.with_suffix(".json").write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
    log.info("jsb_fetched", url=url, path=str(dest), sha256=note["sha256"])
    return dest


def music21_available() -> bool:
    return importlib.util.find_spec("music21") is not None


def _load_explicit(path: Path) -> PianoRollSplits:
    if (path / chorales.MANIFEST_FILE).is_file():
        return chorales.load_chorales(path)
    if path.is_dir():
        raise DataError(f"data path {path} is a folder without a chorales manifest.json")
    if not path.is_file():
        raise DataError(f"data path {path} does not exist; fix the path or unset it")
    return load_jsb_pickle(path)


def cached_chorales_dir(cache_root: Path, seed: int, limit: int | None) -> Path | None:
    """A valid built set in the cache: the exact (seed, limit) one, else the full one."""
    for lim in dict.fromkeys((limit, None)):
        folder = chorales.chorales_dir(cache_root, seed, lim)
        if (folder / chorales.MANIFEST_FILE).is_file():
            return folder
    return None


def _from_cache(cache_root: Path, config: JsbDataConfig) -> PianoRollSplits | None:
    fetched = fetched_jsb_path(cache_root)
    if fetched.is_file():
        try:
            return load_jsb_pickle(fetched)
        except DataError as exc:
            log.warning("jsb_cache_invalid", path=str(fetched), reason=str(exc))
    folder = cached_chorales_dir(cache_root, config.seed, config.build_limit)
    if folder is not None:
        try:
            return chorales.load_chorales(folder)
        except DataError as exc:
            log.warning("chorales_cache_invalid", path=str(folder), reason=str(exc))
    return None


def fetch_url(config: JsbDataConfig, env: Mapping[str, str]) -> str:
    """The download URL: ``config.url``, else ``$HIL_JSB_URL``, else :data:`JSB_URL`."""
    return config.url or env.get(ENV_JSB_URL) or JSB_URL


def fetch_allowed(config: JsbDataConfig, env: Mapping[str, str]) -> bool:
    """Step 4 runs unless ``config.fetch`` is false or ``HIL_OFFLINE`` is 1/true/yes."""
    return config.fetch and env.get(ENV_OFFLINE, "").lower() not in {"1", "true", "yes"}


@dataclasses.dataclass
class _Resolver:
    config: JsbDataConfig
    env: Mapping[str, str]
    opener: Opener | None
    progress: bool
    tried: list[str] = dataclasses.field(default_factory=list)

    @property
    def cache_root(self) -> Path:
        return user_cache_dir(self.env)

    def data_dir(self) -> PianoRollSplits | None:
        folder = self.env.get(ENV_DATA_DIR)
        if folder and (Path(folder) / JSB_FILENAME).is_file():
            return load_jsb_pickle(Path(folder) / JSB_FILENAME)
        self.tried.append(
            f"${ENV_DATA_DIR} has no {JSB_FILENAME}" if folder else f"${ENV_DATA_DIR} unset"
        )
        return None

    def cache(self) -> PianoRollSplits | None:
        splits = _from_cache(self.cache_root, self.config)
        if splits is None:
            self.tried.append(f"nothing usable in the cache {self.cache_root}")
        return splits

    def download(self) -> PianoRollSplits | None:
        if not fetch_allowed(self.config, self.env):
            self.tried.append("download disabled")
            return None
        url = fetch_url(self.config, self.env)
        try:
            path = fetch_jsb(
                self.cache_root, url=url, timeout_s=self.config.timeout_s, opener=self.opener
            )
        except DataError as exc:
            log.warning("jsb_fetch_failed", url=url, reason=str(exc))
            self.tried.append(str(exc))
            return None
        splits = load_jsb_pickle(path)
        return dataclasses.replace(splits, meta={**splits.meta, "url": url})

    def build(self) -> PianoRollSplits | None:
        if not self.config.build or not music21_available():
            self.tried.append("build disabled" if not self.config.build else "music21 missing")
            return None
        log.info("chorales_building", cache=str(self.cache_root), limit=self.config.build_limit)
        return chorales.build_chorales(
            self.cache_root,
            seed=self.config.seed,
            limit=self.config.build_limit,
            jobs=self.config.build_jobs,
            progress=self.progress,
        )


def resolve_jsb(
    config: JsbDataConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
    opener: Opener | None = None,
    progress: bool = False,
) -> PianoRollSplits:
    """Return the JSB task's data from the first available source (module docstring).

    ``env`` defaults to ``os.environ``; ``opener`` replaces ``urllib.request.urlopen``;
    ``progress`` shows a progress bar while building. The result's ``meta["origin"]`` is
    one of :data:`ORIGINS`. Raises :class:`DataError` (one line, saying where to put the
    file) when no source is available, or when an explicit path is unusable.
    """
    config = config or JsbDataConfig()
    r = _Resolver(config, os.environ if env is None else env, opener, progress)
    steps: list[tuple[str, Callable[[], PianoRollSplits | None]]] = [
        ("HIL_DATA_DIR", r.data_dir),
        ("cache", r.cache),
        ("download", r.download),
        ("build", r.build),
    ]
    if config.path is not None:
        explicit = Path(config.path)
        steps = [("explicit", lambda: _load_explicit(explicit))]
    for origin, step in steps:
        splits = step()
        if splits is None:
            continue
        if splits.source.startswith("jsb-standard:"):
            try:
                check_standard_split(splits, splits.source)
            except DataError as exc:
                log.warning("jsb_nonstandard_split", reason=str(exc))
        splits = dataclasses.replace(splits, meta={**splits.meta, "origin": origin})
        log.info("data_source", source=splits.source, origin=origin, counts=splits.counts())
        return splits
    raise DataError("no JSB Chorales data (" + "; ".join(r.tried) + "): " + WHERE_TO_PUT_IT)


def describe_sources(
    config: JsbDataConfig | None = None, *, env: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Each resolution step with its location and status, without loading or downloading.

    Status is ``available``, ``missing``, ``invalid``, ``disabled`` or ``would try``; the step
    :func:`resolve_jsb` would use first is marked ``selected: "yes"``.
    """
    config = config or JsbDataConfig()
    env = os.environ if env is None else env
    cache_root = user_cache_dir(env)
    rows: list[dict[str, str]] = []

    def add(origin: str, location: str, status: str) -> None:
        rows.append({"origin": origin, "location": location, "status": status})

    if config.path is not None:
        add("explicit", str(config.path), "available" if Path(config.path).exists() else "missing")
    else:
        folder = env.get(ENV_DATA_DIR)
        pickle_path = Path(folder) / JSB_FILENAME if folder else None
        add(
            "HIL_DATA_DIR",
            str(pickle_path) if pickle_path else "$HIL_DATA_DIR unset",
            "available" if pickle_path and pickle_path.is_file() else "missing",
        )
        fetched = fetched_jsb_path(cache_root)
        built = cached_chorales_dir(cache_root, config.seed, config.build_limit)
        cached = fetched if fetched.is_file() else built
        status = "available" if cached else "missing"
        if cached is not None and cached == built:
            try:
                chorales.load_chorales(built)
            except DataError:
                status = "invalid"  # resolve_jsb skips it; a build rebuilds it
        add("cache", str(cached or cache_root), status)
        can_fetch = fetch_allowed(config, env)
        add("download", fetch_url(config, env), "would try" if can_fetch else "disabled")
        can_build = config.build and music21_available()
        target = chorales.chorales_dir(cache_root, config.seed, config.build_limit)
        add("build", str(target), "would try" if can_build else "disabled")
    chosen = False
    for row in rows:
        row["selected"] = "no"
        if not chosen and row["status"] in {"available", "would try"}:
            row["selected"], chosen = "yes", True
    return rows
