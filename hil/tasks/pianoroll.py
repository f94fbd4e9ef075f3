"""The in-memory form of a polyphonic-music data set, shared by every JSB source.

A piece is an 88-key piano roll: ``uint8`` array of shape ``(T, 88)``, one row per quarter
note, with ``roll[t, k] = 1`` when MIDI note ``k + 21`` sounds at step t (the 88-key
convention MIDI 21–108). The standard pickle and the music21-built chorales both produce
:class:`PianoRollSplits`; ``source`` says which one, because they are not the same benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_KEYS = 88
LOWEST_MIDI = 21  # A0, key index 0
SPLITS = ("train", "valid", "test")


def roll_from_steps(steps: Sequence[Iterable[int]]) -> np.ndarray:
    """Convert a sequence of time steps (each an iterable of MIDI note numbers) to a roll.

    Returns a ``(T, 88)`` uint8 array. Raises ``ValueError`` for a note outside MIDI 21–108.
    """
    roll = np.zeros((len(steps), N_KEYS), dtype=np.uint8)
    for t, notes in enumerate(steps):
        for note in notes:
            k = int(note) - LOWEST_MIDI
            if not 0 <= k < N_KEYS:
                raise ValueError(
                    f"MIDI note {int(note)} at step {t} is outside the 88-key range 21–108"
                )
            roll[t, k] = 1
    return roll


@dataclass(frozen=True)
class PianoRollSplits:
    """Train/valid/test lists of ``(T, 88)`` uint8 piano rolls plus provenance.

    Attributes:
        train, valid, test: lists of rolls, one per piece.
        source: where the data came from, e.g. ``"jsb-standard:/path/jsb_chorales.pickle"``
            or ``"music21-chorales:<cache path>"``. Runs record it.
        meta: free-form provenance (sha256, counts, versions).
    """

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[np.ndarray]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Sequences and time steps per split."""
        return {
            name: {
                "sequences": len(self.split(name)),
                "steps": int(sum(r.shape[0] for r in self.split(name))),
            }
            for name in SPLITS
        }
