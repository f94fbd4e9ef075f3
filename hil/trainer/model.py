"""The network a run config describes: layer configs and matrix shapes.

The backend (:mod:`hil.trainer.backend`, :mod:`hil.trainer.chip_backend`) builds the
matrices; the shapes are known from the config before any weight is drawn, so a chip
backend places them first.
"""

from __future__ import annotations

from collections.abc import Sequence

from hil.learning import PseudoDerivative, ReadoutConfig, SNUConfig
from hil.trainer.config import RunConfig


def layer_configs(cfg: RunConfig) -> tuple[list[SNUConfig], ReadoutConfig]:
    """The hidden layers and the readout of ``cfg``'s network (widths and loss from the task)."""
    net = cfg.network
    pseudo = PseudoDerivative(net.pseudo, net.pseudo_scale)
    spec = cfg.task_spec
    n_in, n_out = spec.n_in, spec.n_out
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
            detach_reset=net.detach_reset,
        )
        for i in range(len(net.hidden))
    ]
    readout = ReadoutConfig(
        n_in=widths[-1], n_out=n_out, tau=net.readout_tau, bias=True, loss=spec.loss
    )
    return layers, readout


def network_shapes(
    layers: Sequence[SNUConfig], readout: ReadoutConfig
) -> dict[str, tuple[int, int]]:
    """Name -> (m, n) of every matrix of a network (as :func:`hil.learning.build_network`
    names them): ``h{l}.W``, ``h{l}.H`` (recurrent layers), ``B{l}``, ``out.W``."""
    shapes: dict[str, tuple[int, int]] = {}
    for li, layer in enumerate(layers):
        shapes[f"h{li}.W"] = (layer.n_in, layer.n_out)
        if layer.recurrent:
            shapes[f"h{li}.H"] = (layer.n_out, layer.n_out)
        shapes[f"B{li}"] = (readout.n_out, layer.n_out)
    shapes["out.W"] = (readout.n_in, readout.n_out)
    return shapes


def matrix_shapes(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """Name -> (m, n) of every matrix the network of ``cfg`` will hold."""
    return network_shapes(*layer_configs(cfg))
