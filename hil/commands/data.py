"""``hil data``: build, fetch and inspect the JSB Chorales data (thin; calls hil.tasks).

- ``hil data build chorales [--limit N] [--seed S] [--jobs J] [--force]``
- ``hil data fetch jsb [--url URL] [--timeout-s S] [--force]``
- ``hil data info [--data standard|chorales] [--limit N] [--seed S] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from hil.errors import DataError
from hil.tasks import chorales, datasource
from hil.tasks.jsb import load_jsb_pickle
from hil.tasks.pianoroll import PianoRollSplits


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="build, fetch and inspect the JSB Chorales data")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build a data set into the user cache")
    build.add_argument("dataset", choices=["chorales"], help="chorales: music21's Bach chorales")
    _add_set_options(build)
    build.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default: min(2, CPUs))",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    build.set_defaults(func=run_build)

    fetch = sub.add_parser("fetch", help="download a data set into the user cache")
    fetch.add_argument("dataset", choices=["jsb"], help="jsb: the standard JSB Chorales file")
    fetch.add_argument(
        "--url", default=None, help="download URL (default: $HIL_JSB_URL or the ICML 2012 page)"
    )
    fetch.add_argument("--timeout-s", type=float, default=10.0, help="socket timeout, s")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(func=run_fetch)

    info = sub.add_parser("info", help="show which JSB source would be used, and counts")
    info.add_argument(
        "--data",
        choices=["standard", "chorales"],
        default="standard",
        help="which data set to look up (default: standard)",
    )
    _add_set_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=run_info)


def _add_set_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, default=None, help="read only the first N corpus files (a subset)"
    )
    parser.add_argument(
        "--seed", type=int, default=chorales.DEFAULT_SEED, help="seed of the train/valid/test split"
    )


def _counts_line(splits: PianoRollSplits) -> str:
    return ", ".join(
        f"{name} {c['sequences']} pieces / {c['steps']} steps"
        for name, c in splits.counts().items()
    )


def run_build(args: argparse.Namespace) -> int:
    splits = chorales.build_chorales(
        datasource.user_cache_dir(),
        seed=args.seed,
        limit=args.limit,
        jobs=args.jobs,
        progress=sys.stderr.isatty(),
        force=args.force,
    )
    meta = splits.meta
    print(f"source: {splits.source}")
    print(f"counts: {_counts_line(splits)}")
    print(
        f"corpus files read: {meta['corpus_files']}, kept: {meta['kept']}, "
        f"skipped (not four-part): {len(meta['skipped'])}, duplicates dropped: "
        f"{len(meta['duplicates'])}; details in {meta['manifest']}"
    )
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get(datasource.ENV_JSB_URL) or datasource.JSB_URL
    try:
        path = datasource.fetch_jsb(
            datasource.user_cache_dir(), url=url, timeout_s=args.timeout_s, force=args.force
        )
    except DataError as exc:
        raise DataError(
            f"{exc}; offline? copy the file to $HIL_DATA_DIR/{datasource.JSB_FILENAME}, or build "
            "the music21 chorales with `hil data build chorales`"
        ) from exc
    splits = load_jsb_pickle(path)
    print(f"source: {splits.source}")
    print(f"counts: {_counts_line(splits)}")
    print(f"sha256: {splits.meta['sha256']}")
    return 0


def _selector(folder: str) -> str:
    """The options that select a built chorales folder (``seed2012-first40``)."""
    m = re.fullmatch(r"seed(\d+)-(?:first(\d+)|all)", Path(folder).name)
    if m is None:
        return f"--data {folder}"
    here = f"--seed {m.group(1)}" + (f" --limit {m.group(2)}" if m.group(2) else "")
    run = f"--set data.seed={m.group(1)}" + (
        f" --set data.build_limit={m.group(2)}" if m.group(2) else ""
    )
    return f"{here} here; {run} for a run"


def run_info(args: argparse.Namespace) -> int:
    config = datasource.JsbDataConfig(dataset=args.data, build_limit=args.limit, seed=args.seed)
    rows = datasource.describe_sources(config)
    cache_root = datasource.user_cache_dir()
    built = sorted(
        str(p.parent) for p in cache_root.glob(f"music21-chorales/*/{chorales.MANIFEST_FILE}")
    )
    report: dict[str, Any] = {
        "dataset": args.data,
        "cache_dir": str(cache_root),
        "steps": rows,
        "built_sets": built,
    }
    chosen = next((r for r in rows if r["selected"] == "yes"), None)
    splits = None
    if chosen is not None and chosen["status"] == "available":
        try:
            splits = datasource.resolve_jsb(
                config.model_copy(update={"fetch": False, "build": False})
            )
            report["source"] = splits.source
            report["counts"] = splits.counts()
            ok, why = datasource.comparability(splits)
            report["comparable_to_published"], report["comparability"] = ok, why
        except DataError as exc:
            report["problem"] = str(exc)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"data set: {args.data}; sources in the order they are tried (-> the one used):")
    for i, row in enumerate(rows, 1):
        mark = "->" if row["selected"] == "yes" else "  "
        print(
            f"{mark} {i}. {row['origin']:<12} {row['status']:<10} {row['what']}: {row['location']}"
        )
    if built and args.data == "standard":
        print(f"built chorales sets in the cache (used with --data chorales): {', '.join(built)}")
    elif built:
        others = [b for b in built if b != rows[0]["location"]]
        if others:
            print(
                "other built chorales sets in the cache: "
                + ", ".join(f"{b} ({_selector(b)})" for b in others)
            )
    if splits is not None:
        print(f"uses: {datasource.describe(splits)}")
        print(f"counts: {_counts_line(splits)}")
        verdict = "comparable" if report["comparable_to_published"] else "NOT comparable"
        print(f"test NLL on it: {verdict} to published numbers ({report['comparability']})")
    elif "problem" in report:
        print(f"the selected source is unusable: {report['problem']}")
    elif chosen is None:
        fix = datasource.WHERE_TO_BUILD if args.data == "chorales" else datasource.WHERE_TO_PUT_IT
        print(f"no source available: {fix}")
    elif chosen["status"] == "would try":
        which = " for this --seed/--limit" if args.data == "chorales" and built else ""
        print(f"nothing local{which} yet; a run would first try: {chosen['what']}")
    return 0
