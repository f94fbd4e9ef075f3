"""The exact device requests of hardware-in-the-loop training: no hidden reads.

A SimDriver subclass records every request that reaches its hooks (so replays from the
idempotency record would not count) as ``(verb, matrix)``. One OSTTP batch on a network
without recurrence must be: the forward MVMs of ``h0.W`` and ``out.W``, the learning
signal MVMs of ``B0``, one pulse request per trained matrix, and nothing else — in
particular no conductance read (the optimiser used to read every matrix per batch).
Reads happen only for refresh, the end-of-epoch saturation count and when a caller asks
for them by name (``read_weights``, ``read_conductances``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from drivers.sim import SimDriver
from hil.trainer.chip_backend import ChipBackend
from hil.trainer.config import load_config
from hil.trainer.session import build_trainer, load_task
from protocols.region import Region

REPO = Path(__file__).resolve().parents[2]


class CountingSimDriver(SimDriver):
    """The in-process simulator, recording each request that reaches the chips."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.names: dict[Region, str] = {}
        self.log: list[tuple[str, Region | None]] = []

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(verb, matrix name)`` of every request so far (names from ``names``)."""
        return [(verb, "" if r is None else self.names.get(r, str(r))) for verb, r in self.log]

    def _mvm(self, region, x, transpose):  # type: ignore[no-untyped-def]
        self.log.append(("mvm", region))
        return super()._mvm(region, x, transpose)

    def _read_conductances(self, region):  # type: ignore[no-untyped-def]
        self.log.append(("read", region))
        return super()._read_conductances(region)

    def _apply_pulses(self, region, counts, reset_mask, request_id):  # type: ignore[no-untyped-def]
        self.log.append(("pulses", region))
        return super()._apply_pulses(region, counts, reset_mask, request_id)

    def _program(self, region, target_us, tolerance_us, max_iterations, request_id):  # type: ignore[no-untyped-def]
        self.log.append(("program", region))
        return super()._program(region, target_us, tolerance_us, max_iterations, request_id)

    def _advance(self, dt_s, request_id):  # type: ignore[no-untyped-def]
        self.log.append(("advance", None))
        return super()._advance(dt_s, request_id)


def _trainer(jsb_path: Path, *sets: str):  # type: ignore[no-untyped-def]
    cfg = load_config(
        REPO / "configs" / "jsb_osttp_hil.yaml",
        [
            "network.hidden=[24]",
            "train.batch_size=4",
            "train.max_train_sequences=8",
            "train.max_eval_sequences=4",
            "optim.lr=0.5",  # large: every trained matrix gets pulses in the first batch
            f"data.path={jsb_path}",
            *sets,
        ],
    )
    task = load_task(cfg, progress=False)
    driver = CountingSimDriver("hermes", seed=0)
    backend = ChipBackend(driver, cfg.device.url, cfg.device, "count", cfg.train.seed)
    trainer = build_trainer(cfg, task, backend)
    driver.names = {r: name for name, r in backend.placement.items()}
    return trainer, task, driver


def test_one_batch_is_mvms_and_one_pulse_request_per_trained_matrix(jsb_path: Path) -> None:
    trainer, task, driver = _trainer(jsb_path, "device.refresh_every=0")
    # initial write: one program-and-verify per matrix, in build order, then one probe MVM
    # per matrix (the fingerprint a resume on a server checks), and no other request
    assert driver.requests == [
        ("program", "h0.W"),
        ("program", "B0"),
        ("program", "out.W"),
        ("mvm", "h0.W"),
        ("mvm", "B0"),
        ("mvm", "out.W"),
    ]
    driver.log.clear()

    idx = [0, 1, 2, 3]
    x, _, _ = task.train_batch(idx)
    per_matmul = math.ceil(x.shape[0] * x.shape[1] / driver.info().limits.max_batch)
    trainer.train_batch(idx)
    trainer.backend.after_batch(1)
    assert driver.requests == [
        *[("mvm", "h0.W")] * per_matmul,  # forward currents of all T·B input vectors
        *[("mvm", "out.W")] * per_matmul,  # readout
        *[("mvm", "B0")] * per_matmul,  # learning signals y*·B on chip 2
        ("pulses", "out.W"),  # the optimiser's update, in gradient order
        ("pulses", "h0.W"),
    ]


def test_refresh_reads_each_trained_matrix_and_nothing_else(jsb_path: Path) -> None:
    trainer, _, driver = _trainer(jsb_path, "device.refresh_every=1")
    driver.log.clear()
    trainer.backend.after_batch(1)  # fresh weights: nothing to refresh, one read each
    assert driver.requests == [("read", "h0.W"), ("read", "out.W")]


def test_epoch_end_reads_only_for_drift_probe_and_saturation(jsb_path: Path) -> None:
    trainer, _, driver = _trainer(jsb_path, "device.refresh_every=0")
    driver.log.clear()
    trainer.evaluator.epoch_scores()
    probes = [("mvm", n) for n in ("h0.W", "B0", "out.W")]
    # reference probe, then the compensation probe, then scoring (MVMs only)
    assert driver.requests[:6] == probes + probes
    assert {verb for verb, _ in driver.requests} == {"mvm"}
    assert {name for _, name in driver.requests[6:]} == {"h0.W", "out.W"}
    driver.log.clear()
    metrics = trainer.backend.epoch_metrics()
    # saturated cells, then the epoch's fingerprint (one probe MVM per matrix)
    assert driver.requests == [("read", "h0.W"), ("read", "out.W"), *probes]
    assert metrics["mvm_requests"] > 0


def test_reading_weights_is_explicit(jsb_path: Path) -> None:
    trainer, _, driver = _trainer(jsb_path, "device.refresh_every=0")
    driver.log.clear()
    m = trainer.backend.matrices["h0.W"]
    assert m.shape == (88, 24) and m.dtype == np.float64
    trainer.opt.step({"h0.W": np.zeros((88, 24))})
    assert driver.requests == []  # shape, dtype and an all-zero update touch nothing
    w = m.read_weights()
    assert driver.requests == [("read", "h0.W")] and w.shape == (88, 24)
