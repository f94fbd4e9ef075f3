"""The restricted JSB unpickler: accepts the standard file and its int variant, refuses the rest."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from hil.errors import DataError
from hil.tasks.jsb import load_jsb_pickle


def _write(path: Path, obj: object, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _tiny(note_type: type) -> dict:
    piece = [tuple(note_type(n) for n in (60, 64, 67)), (), (note_type(62),)]
    return {"train": [piece, piece], "valid": [piece], "test": [piece[:2]]}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("note_type", [int, np.int64, np.int32])
def test_plain_int_and_numpy_scalar_variants(
    tmp_path: Path, note_type: type, protocol: int
) -> None:
    splits = load_jsb_pickle(_write(tmp_path / "jsb.pickle", _tiny(note_type), protocol))
    roll = splits.train[0]
    assert roll.shape == (3, 88)
    assert roll[0].nonzero()[0].tolist() == [60 - 21, 64 - 21, 67 - 21]
    assert roll[1].sum() == 0
    assert roll[2].nonzero()[0].tolist() == [62 - 21]


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_refuses_foreign_globals(tmp_path: Path) -> None:
    data = _tiny(int)
    data["train"].append([(_Evil(),)])
    with pytest.raises(DataError, match=r"global .*system is not allowed"):
        load_jsb_pickle(_write(tmp_path / "evil.pickle", data))


def test_refuses_float_dtype_scalar(tmp_path: Path) -> None:
    data = _tiny(np.float64)
    with pytest.raises(DataError, match="only integer dtypes"):
        load_jsb_pickle(_write(tmp_path / "f.pickle", data))


def test_wrong_structure_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a dict with keys"):
        load_jsb_pickle(_write(tmp_path / "x.pickle", {"train": []}))
    with pytest.raises(DataError, match="cannot read JSB pickle"):
        load_jsb_pickle(tmp_path / "missing.pickle")
    bad = _tiny(int)
    bad["test"] = [[(200,), (60,)]]
    with pytest.raises(DataError, match="outside the 88-key range"):
        load_jsb_pickle(_write(tmp_path / "y.pickle", bad))
