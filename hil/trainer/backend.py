"""Where a run's matrices live: the :class:`Backend` interface and the software backend.

The trainer never asks *whether* there is a chip. It talks to one backend:

==========================  ==========================================================
member                      what it does (software / chip)
==========================  ==========================================================
``build_network(...)``      dense host matrices / placed, mapped, program-and-verified
                            :class:`~hil.trainer.device_matrix.DeviceMatrix` operands
``after_batch(n)``          nothing / host time on the device clock, refresh every N
``drift_reference()``       ``None`` / probe outputs of every matrix (compensation ref.)
``let_time_pass(dt, tag)``  nothing / ``advance`` on a device with a clock
``compensate(refs, mode)``  nothing / output compensation of every matrix (a context)
``epoch_metrics()``         ``{}`` / pulses, requests, refreshes, saturated cells, clock
``state()``/``load_state``  ``{}`` / every device matrix's χ, counter and counters
``snapshot(dest)``          ``None`` / the chips' complete state (``snapshot`` capability)
``identity()``              ``None`` / the device's ``info()``, checked on resume
==========================  ==========================================================

:class:`~hil.trainer.chip_backend.ChipBackend` is the chip implementation; placement,
program-and-verify, refresh and drift compensation live there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hil.learning import (
    MatrixFactory,
    Network,
    ReadoutConfig,
    SNUConfig,
    build_network,
    dense_factory,
)

DriftReference = dict[str, np.ndarray]
"""Probe outputs (µS) per device matrix at calibration time."""


class Backend(Protocol):
    """The trainer's view of where the weights live (see the module docstring)."""

    url: str
    on_device: bool
    """``False`` for software: no requests, no device metrics"""

    def build_network(
        self,
        layers: Sequence[SNUConfig],
        readout: ReadoutConfig,
        rng: np.random.Generator,
        *,
        w_scale: float,
        program: bool,
    ) -> Network: ...

    def after_batch(self, batches_done: int) -> None: ...

    def drift_reference(self) -> DriftReference | None: ...

    def let_time_pass(self, dt_s: float, tag: str) -> bool: ...

    def compensate(
        self, refs: DriftReference | None, mode: str
    ) -> AbstractContextManager[None]: ...

    def epoch_metrics(self) -> dict[str, Any]: ...

    def link_bytes(self) -> tuple[int, int, int | None] | None:
        """``(sent, received, baud)`` on the device link so far; None in-process."""
        ...

    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...

    def fingerprint(self) -> dict[str, np.ndarray]:
        """A read of the device weights to keep with a checkpoint (``{}``: nothing)."""
        ...

    def check_fingerprint(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Refuse (``HilError``) if the device no longer holds the weights whose
        :meth:`fingerprint` is in ``arrays``; returns the agreement per matrix."""
        ...

    @property
    def device_params(self) -> frozenset[str]: ...

    @property
    def can_snapshot(self) -> bool: ...

    def snapshot(self, dest: Path) -> str | None: ...

    def identity(self) -> dict[str, Any] | None: ...

    @property
    def request_seq(self) -> int: ...

    def resume_requests(self, attempt: int, seq: int) -> None: ...

    def close(self) -> None: ...


class SoftwareBackend:
    """Every matrix a host :class:`~hil.learning.DenseMatrix` (float32); nothing else."""

    url = "software"
    on_device = False

    def __init__(self, dtype: np.dtype | type = np.float32) -> None:
        self._factory: MatrixFactory = dense_factory(dtype)

    def build_network(
        self,
        layers: Sequence[SNUConfig],
        readout: ReadoutConfig,
        rng: np.random.Generator,
        *,
        w_scale: float = 1.0,
        program: bool = True,
    ) -> Network:
        return build_network(layers, readout, rng, self._factory, w_scale=w_scale)

    def after_batch(self, batches_done: int) -> None:
        return None

    def drift_reference(self) -> DriftReference | None:
        return None

    def let_time_pass(self, dt_s: float, tag: str) -> bool:
        return False

    @contextmanager
    def compensate(self, refs: DriftReference | None, mode: str) -> Iterator[None]:
        yield

    def epoch_metrics(self) -> dict[str, Any]:
        return {}

    def link_bytes(self) -> tuple[int, int, int | None] | None:
        return None

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def fingerprint(self) -> dict[str, np.ndarray]:
        return {}

    def check_fingerprint(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

    @property
    def device_params(self) -> frozenset[str]:
        return frozenset()

    @property
    def can_snapshot(self) -> bool:
        return False

    def snapshot(self, dest: Path) -> str | None:
        return None

    def identity(self) -> dict[str, Any] | None:
        return None

    @property
    def request_seq(self) -> int:
        return 0

    def resume_requests(self, attempt: int, seq: int) -> None:
        return None

    def close(self) -> None:
        return None
