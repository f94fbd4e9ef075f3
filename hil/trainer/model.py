"""Build the network of a run, in software or on a device.

Software (``device.url = software``): every matrix is a host :class:`DenseMatrix`.

Device: the matrices' shapes are known from the config before any weight is drawn, so they
are placed first (:mod:`hil.trainer.placement`); then :func:`hil.learning.build_network`
draws the initial weights with the run's seed (the same draw as the software run) and the
factory turns each into a :class:`DeviceMatrix`, written with program-and-verify. Each
matrix gets its own weight↔µS map: ``w_max`` (config, or ``headroom × max|W_init|``) maps to
``g_net_fraction × g_net_max`` of the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import structlog

from drivers.base import Driver
from hil.learning import (
    MatrixOp,
    Network,
    PseudoDerivative,
    ReadoutConfig,
    SNUConfig,
    build_network,
    dense_factory,
)
from hil.trainer.config import RunConfig
from hil.trainer.device_matrix import DeviceMatrix, RequestIds, UpdateConfig
from hil.trainer.placement import place
from protocols.region import Region
from simulator.mapping import CellMapping, RefreshConfig

log = structlog.get_logger(__name__)

TASK_WIDTHS = {"jsb": (88, 88), "shd": (700, 20)}


def layer_configs(cfg: RunConfig) -> tuple[list[SNUConfig], ReadoutConfig]:
    net = cfg.network
    pseudo = PseudoDerivative(net.pseudo, net.pseudo_scale)
    n_in, n_out = TASK_WIDTHS[cfg.task]
    widths = [n_in, *net.hidden]
    layers = [
        SNUConfig(
            n_in=widths[i],
            n_out=widths[i + 1],
            reset=net.reset,
            recurrent=net.recurrent,
            decay=net.decay,
            train_decay=net.train_decay,
            train_threshold=net.train_threshold,
            threshold_init=net.threshold_init,
            pseudo=pseudo,
        )
        for i in range(len(net.hidden))
    ]
    loss: Literal["bce", "ce_over_time"] = "bce" if cfg.task == "jsb" else "ce_over_time"
    readout = ReadoutConfig(n_in=widths[-1], n_out=n_out, tau=net.readout_tau, bias=True, loss=loss)
    return layers, readout


def matrix_shapes(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """Name -> (m, n) of every matrix the network will hold."""
    layers, readout = layer_configs(cfg)
    shapes: dict[str, tuple[int, int]] = {}
    for li, layer in enumerate(layers):
        shapes[f"h{li}.W"] = (layer.n_in, layer.n_out)
        if layer.recurrent:
            shapes[f"h{li}.H"] = (layer.n_out, layer.n_out)
        shapes[f"B{li}"] = (readout.n_out, layer.n_out)
    shapes["out.W"] = (readout.n_in, readout.n_out)
    return shapes


@dataclass
class Model:
    """The network plus, on a device, its matrices, placement and programming report."""

    net: Network
    matrices: dict[str, DeviceMatrix] = field(default_factory=dict)
    placement: dict[str, Region] = field(default_factory=dict)
    programming: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def on_device(self) -> bool:
        return bool(self.matrices)


def build_model(
    cfg: RunConfig, driver: Driver | None, ids: RequestIds | None, *, program: bool = True
) -> Model:
    """The run's network; on ``driver`` when given (placing and, if ``program``, writing it)."""
    layers, readout = layer_configs(cfg)
    rng = np.random.default_rng([cfg.train.seed, 0])
    if driver is None:
        return Model(build_network(layers, readout, rng, dense_factory(np.float32)))
    assert ids is not None
    info = driver.info()
    assert info.g_net_max_us is not None  # DeviceInfo fills in its default
    g_net_max_us = info.g_net_max_us
    placement = place(matrix_shapes(cfg), info.chips, info.rows, info.cols)
    dev = cfg.device
    update_cfg = UpdateConfig(
        max_pulses_per_update=dev.max_pulses_per_update,
        refresh=RefreshConfig(hi=dev.refresh_hi, lo=dev.refresh_lo),
        program_tolerance_us=dev.program_tolerance_us,
        program_max_iterations=dev.program_max_iterations,
    )
    model = Model(net=None, placement=placement)  # type: ignore[arg-type]

    def factory(name: str, w: np.ndarray, trainable: bool) -> MatrixOp:
        w_max = dev.w_max.get(name) or dev.headroom * float(np.max(np.abs(w)))
        mapping = CellMapping(w_max, dev.g_net_fraction * g_net_max_us)
        m = DeviceMatrix(
            name,
            driver,
            placement[name],
            mapping,
            trainable=trainable,
            ids=ids,
            update_cfg=update_cfg,
        )
        model.matrices[name] = m
        model.targets[name] = np.asarray(w, dtype=np.float64)
        if program:
            model.programming[name] = m.program(w)
            log.info(
                "programmed", matrix=name, region=str(placement[name]), **model.programming[name]
            )
        return m

    model.net = build_network(layers, readout, rng, factory)
    return model
