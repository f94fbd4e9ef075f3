"""Where the JSB Chorales task gets its data: resolution order, user cache and download.

``data.dataset`` picks the data set; :func:`resolve_jsb` uses the first available source.

``standard`` (the default; Boulanger-Lewandowski et al. 2012, 229/76/77 pieces):

1. ``config.path``: an explicit standard pickle, a ``.npz`` in the shipped copy's format,
   or a built chorales folder (must exist);
2. ``$HIL_DATA_DIR/jsb_chorales.pickle``;
3. the copy shipped inside the package (:mod:`hil.tasks.standard`), unless
   ``config.shipped`` is false;
4. the user cache (``$HIL_CACHE_DIR`` or ``platformdirs.user_cache_dir("pcm-hil")``): a
   previously fetched standard file;
5. a download of the standard file into the cache, unless ``config.fetch`` is false or
   ``HIL_OFFLINE=1``; the URL is ``config.url``, else ``$HIL_JSB_URL``, else :data:`JSB_URL`.

``chorales`` (an explicit choice, ``--data chorales``): the Bach chorales built from
music21's corpus (:mod:`hil.tasks.chorales`): 1. ``config.path``; 4. a built set in the
cache; 6. building it into the cache, when ``config.build`` and music21 is importable.

The result's ``source`` is ``"jsb-standard:<path>"`` or ``"music21-chorales:<path>"`` and
``meta["origin"]`` names the step. The two are **not** the same benchmark: only the
standard split's test NLL is comparable to published numbers (:func:`comparability`).
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
from typing import Any, Literal

import platformdirs
import structlog
from pydantic import BaseModel, ConfigDict, Field

from hil.errors import DataError
from hil.tasks import chorales, standard
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
ORIGINS = ("explicit", "HIL_DATA_DIR", "shipped", "cache", "download", "build")
WHERE_TO_PUT_IT = (
    f"put {JSB_FILENAME} in $HIL_DATA_DIR, reinstall the package (it ships the standard "
    "split), or run `hil data fetch jsb` when online"
)
WHERE_TO_BUILD = (
    "`pip install -e '.[music]'` and `hil data build chorales` build the music21 chorales offline"
)

Opener = Callable[..., Any]
"""``urllib.request.urlopen``-like: ``opener(url, timeout=s)`` returns a readable response."""


class JsbDataConfig(BaseModel):
    """Where the JSB task may take its data from (the ``data`` part of a run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Literal["standard", "chorales"] = "standard"
    """``standard``: the Boulanger-Lewandowski split (comparable to published numbers);
    ``chorales``: the Bach chorales built from music21's corpus (a different benchmark)."""
    path: Path | None = None
    """Explicit standard pickle or built chorales folder; when set, nothing else is tried."""
    shipped: bool = True
    """Allow the copy of the standard split shipped in the package (step 3)."""
    fetch: bool = True
    """Allow step 5, the download of the standard file."""
    url: str | None = None
    """Download URL; ``None`` means ``$HIL_JSB_URL`` or :data:`JSB_URL`."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Socket timeout of the download, seconds."""
    build: bool = True
    """Allow building the music21 chorales (``dataset: chorales`` only)."""
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
    if path.suffix == ".npz":  # the shipped copy's format, with its manifest beside it
        return standard.load_shipped(path)
    return load_jsb_pickle(path)


def cached_chorales_dir(cache_root: Path, seed: int, limit: int | None) -> Path | None:
    """A valid built set in the cache: the exact (seed, limit) one, else the full one."""
    for lim in dict.fromkeys((limit, None)):
        folder = chorales.chorales_dir(cache_root, seed, lim)
        if (folder / chorales.MANIFEST_FILE).is_file():
            return folder
    return None


def _fetched_from_cache(cache_root: Path) -> PianoRollSplits | None:
    fetched = fetched_jsb_path(cache_root)
    if fetched.is_file():
        try:
            return load_jsb_pickle(fetched)
        except DataError as exc:
            log.warning("jsb_cache_invalid", path=str(fetched), reason=str(exc))
    return None


def _built_from_cache(cache_root: Path, config: JsbDataConfig) -> PianoRollSplits | None:
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

    def shipped(self) -> PianoRollSplits | None:
        if not self.config.shipped:
            self.tried.append("shipped copy disabled")
            return None
        try:
            return standard.load_shipped()
        except DataError as exc:
            log.warning("jsb_shipped_unusable", reason=str(exc))
            self.tried.append(str(exc))
            return None

    def cache(self) -> PianoRollSplits | None:
        splits = _fetched_from_cache(self.cache_root)
        if splits is None:
            self.tried.append(f"no downloaded standard file in the cache {self.cache_root}")
        return splits

    def built(self) -> PianoRollSplits | None:
        splits = _built_from_cache(self.cache_root, self.config)
        if splits is None:
            self.tried.append(f"no built chorales set in the cache {self.cache_root}")
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
        ("shipped", r.shipped),
        ("cache", r.cache),
        ("download", r.download),
    ]
    if config.dataset == "chorales":
        steps = [("cache", r.built), ("build", r.build)]
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
    fix = WHERE_TO_BUILD if config.dataset == "chorales" else WHERE_TO_PUT_IT
    raise DataError(f"no {config.dataset} JSB Chorales data (" + "; ".join(r.tried) + "): " + fix)


def describe_sources(
    config: JsbDataConfig | None = None, *, env: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Each resolution step with its location and status, without loading or downloading.

    Status is ``available``, ``absent``, ``invalid``, ``disabled`` or ``would try``; the step
    :func:`resolve_jsb` would use first is marked ``selected: "yes"``. ``what`` says in
    words what the step looks for.
    """
    config = config or JsbDataConfig()
    env = os.environ if env is None else env
    cache_root = user_cache_dir(env)
    rows: list[dict[str, str]] = []

    def add(origin: str, what: str, location: str, status: str) -> None:
        rows.append({"origin": origin, "what": what, "location": location, "status": status})

    if config.path is not None:
        there = "available" if Path(config.path).exists() else "absent"
        add("explicit", "the data.path of the config", str(config.path), there)
    elif config.dataset == "standard":
        folder = env.get(ENV_DATA_DIR)
        pickle_path = Path(folder) / JSB_FILENAME if folder else None
        add(
            "HIL_DATA_DIR",
            f"{JSB_FILENAME} in $HIL_DATA_DIR",
            str(pickle_path) if pickle_path else "$HIL_DATA_DIR unset",
            "available" if pickle_path and pickle_path.is_file() else "absent",
        )
        status = "disabled"
        if config.shipped:
            status = "available" if standard.SHIPPED_NPZ.is_file() else "absent"
        add(
            "shipped",
            "the standard split shipped in the package",
            str(standard.SHIPPED_NPZ),
            status,
        )
        fetched = fetched_jsb_path(cache_root)
        there = "available" if fetched.is_file() else "absent"
        add("cache", "a standard file fetched by `hil data fetch jsb`", str(fetched), there)
        can_fetch = fetch_allowed(config, env)
        add(
            "download",
            "a download of the standard file",
            fetch_url(config, env),
            "would try" if can_fetch else "disabled",
        )
    else:
        built = cached_chorales_dir(cache_root, config.seed, config.build_limit)
        target = chorales.chorales_dir(cache_root, config.seed, config.build_limit)
        status = "available" if built else "absent"
        if built is not None:
            try:
                chorales.load_chorales(built)
            except DataError:
                status = "invalid"  # resolve_jsb skips it; a build rebuilds it
        add(
            "cache",
            "a chorales set built by `hil data build chorales`",
            str(built or target),
            status,
        )
        can_build = config.build and music21_available()
        add(
            "build",
            "building the chorales from music21's corpus",
            str(target),
            "would try" if can_build else ("disabled" if not config.build else "needs music21"),
        )
    chosen = False
    for row in rows:
        row["selected"] = "no"
        if not chosen and row["status"] in {"available", "would try"}:
            row["selected"], chosen = "yes", True
    return rows


def is_standard(splits: PianoRollSplits) -> bool:
    """The standard JSB split: a ``jsb-standard`` source with 229/76/77 pieces."""
    sizes = {name: c["sequences"] for name, c in splits.counts().items()}
    return splits.source.startswith("jsb-standard:") and sizes == STANDARD_SEQUENCES


def comparability(splits: PianoRollSplits, eval_limit: int | None = None) -> tuple[bool, str]:
    """Whether a test NLL on ``splits`` is comparable to published JSB numbers, and why.

    Comparable: the standard split, scored on its whole test split (``eval_limit`` None or
    at least the 77 test pieces).
    """
    if splits.source.startswith("music21-chorales:"):
        return False, "the music21 chorales are a different set and split than the standard one"
    if not is_standard(splits):
        sizes = {name: c["sequences"] for name, c in splits.counts().items()}
        return False, f"split sizes {sizes} are not the standard {STANDARD_SEQUENCES}"
    if eval_limit is not None and eval_limit < STANDARD_SEQUENCES["test"]:
        return (
            False,
            f"the test split is cut to {eval_limit} of {STANDARD_SEQUENCES['test']} pieces",
        )
    return True, "the standard split, whole test set"


def describe(splits: PianoRollSplits) -> str:
    """One line for the operator: which data set, from where, with counts."""
    counts = "/".join(str(c["sequences"]) for c in splits.counts().values())
    origin = splits.meta.get("origin")
    where = splits.source.split(":", 1)[1]
    if splits.source.startswith("jsb-standard:"):
        kind = "JSB Chorales, standard split (Boulanger-Lewandowski et al. 2012)"
        if origin == "shipped":
            where = f"the copy shipped in the package ({where})"
    else:
        kind = "Bach chorales built from music21's corpus (not the standard JSB split)"
    via = f" via {origin}" if origin and origin != "shipped" else ""
    return f"{kind}, {counts} train/valid/test pieces, from {where}{via}"
