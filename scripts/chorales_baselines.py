"""Baselines on the two JSB sources, side by side: the standard file and the music21 chorales.

For each source it fits the library's constant per-key predictor and the logistic
regression from the previous step (:mod:`hil.tasks.baselines`) on its train split
(validation for early stopping) and reports valid/test NLL (learning-rules.md §5), with
the data's provenance and a few statistics that explain differences between the sets.
Prints JSON and writes ``results/chorales_baselines.json``.

    python scripts/chorales_baselines.py [--jsb PATH] [--seed 2012] [--jobs 2]

The music21 set is built into (or reused from) the user cache, ``$HIL_CACHE_DIR`` or
``platformdirs.user_cache_dir("pcm-hil")``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from hil.tasks import chorales, datasource
from hil.tasks.baselines import baseline_nlls
from hil.tasks.jsb import load_jsb_pickle
from hil.tasks.pianoroll import PianoRollSplits

REPO = Path(__file__).resolve().parents[1]


def default_jsb_path() -> Path:
    folder = os.environ.get(datasource.ENV_DATA_DIR) or str(REPO.parent / "shared" / "data")
    return Path(folder) / datasource.JSB_FILENAME


def describe(splits: PianoRollSplits) -> dict[str, Any]:
    rolls = splits.train + splits.valid + splits.test
    per_step = np.concatenate([r.sum(axis=1) for r in rolls])
    keys = np.flatnonzero(np.concatenate(rolls).any(axis=0)) + 21
    return {
        "source": splits.source,
        "sha256": splits.meta.get("sha256"),
        "counts": splits.counts(),
        "notes_per_step_mean": round(float(per_step.mean()), 4),
        "empty_steps": int((per_step == 0).sum()),
        "midi_range": [int(keys.min()), int(keys.max())],
    }


def evaluate(splits: PianoRollSplits) -> dict[str, Any]:
    t0 = time.perf_counter()
    nlls = baseline_nlls(splits)
    rounded = {m: {k: round(v, 4) for k, v in d.items()} for m, d in nlls.items()}
    return {**describe(splits), **rounded, "fit_s": round(time.perf_counter() - t0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsb", type=Path, default=default_jsb_path(), help="standard pickle")
    parser.add_argument("--seed", type=int, default=chorales.DEFAULT_SEED, help="split seed")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=REPO / "results" / "chorales_baselines.json")
    args = parser.parse_args()

    standard = load_jsb_pickle(args.jsb)
    datasource.check_standard_split(standard, str(args.jsb))
    t0 = time.perf_counter()
    built = chorales.build_chorales(datasource.user_cache_dir(), seed=args.seed, jobs=args.jobs)
    build_s = time.perf_counter() - t0
    music21_set = evaluate(built)
    music21_set.update(
        music21_version=built.meta["music21_version"],
        seed=args.seed,
        corpus_files=built.meta["corpus_files"],
        skipped=len(built.meta["skipped"]),
        duplicates=len(built.meta["duplicates"]),
        build_or_load_s=round(build_s, 2),
    )
    result = {
        "benchmark": "chorales_baselines",
        "machine": f"{platform.machine()} {os.cpu_count()}-core, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "metric": "NLL per predicted frame, BCE summed over 88 keys (learning-rules.md §5)",
        "jsb_standard": evaluate(standard),
        "music21_chorales": music21_set,
    }
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
