"""Small shared builders for the learning tests."""

from __future__ import annotations

import numpy as np

from hil.learning import (
    TANH,
    Network,
    PseudoDerivative,
    ReadoutConfig,
    SNUConfig,
    build_network,
)


def tiny_net(
    rng: np.random.Generator,
    reset: str = "full",
    recurrent: bool = False,
    widths: tuple[int, ...] = (3, 4),
    n_out: int = 2,
    tau: float = 0.0,
    loss: str = "bce",
    pseudo: PseudoDerivative = TANH,
    dtype: type = np.float64,
    diag_h: bool = False,
) -> Network:
    """A small float64 network with trainable b and d and weights large enough to spike."""
    layers = [
        SNUConfig(
            widths[i],
            widths[i + 1],
            reset=reset,  # type: ignore[arg-type]
            recurrent=recurrent,
            decay=0.6,
            train_decay=True,
            threshold_init=0.1,
            pseudo=pseudo,
        )
        for i in range(len(widths) - 1)
    ]
    net = build_network(
        layers,
        ReadoutConfig(widths[-1], n_out, tau=tau, loss=loss),  # type: ignore[arg-type]
        rng,
        dtype=dtype,
        w_scale=2.0,
    )
    for layer in net.hidden:
        layer.b.update(rng.uniform(-0.1, 0.1, size=layer.b.shape))
        if layer.H is not None:
            n = layer.H.shape[0]
            if diag_h:
                layer.H.update(np.diag(rng.normal(0, 0.5, n)) - layer.H.value())
            else:
                layer.H.update(np.diag(rng.normal(0, 0.5, n)))
    return net


def tiny_batch(
    rng: np.random.Generator, T: int = 9, B: int = 3, m: int = 3, k: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random inputs, binary targets and a mask with one shorter sequence."""
    x = rng.normal(0.0, 1.0, size=(T, B, m))
    target = (rng.random((T, B, k)) > 0.5).astype(np.float64)
    mask = np.ones((T, B))
    mask[T - 3 :, B - 1] = 0.0
    return x, target, mask


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
