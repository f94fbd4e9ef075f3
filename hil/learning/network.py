"""A stack of SNU layers and a readout, with every matrix behind a :class:`MatrixOp`.

Forward over a time-major batch ``X`` (T, B, m) with 0/1 ``mask`` (T, B):

- hidden layer l: ``I = W_l.matmul(X_l)`` once for all T steps; then per step
  ``i_t = I_t (+ H_l.matmul(y_{t−1}))`` and :func:`~hil.learning.snu.snu_step`;
- readout: ``a = W_o.matmul(Y_top)`` once, then ``o_t = τ·o_{t−1} + a_t (+ c)``.

Feedback matrices ``B_l`` (88 → n_l, shape (n_out, n_l)) are fixed MatrixOps used by the
DRTP/OSTTP/OSTL-rnd learning signals; they are drawn He-uniform ``U(±sqrt(6/n_l))`` and never
updated. Parameter names: ``h{l}.W``, ``h{l}.H``, ``h{l}.b``, ``h{l}.d``, ``out.W``, ``out.c``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hil.errors import ConfigError
from hil.learning.matrix import DenseMatrix, HostVector, MatrixOp
from hil.learning.readout import ReadoutConfig, integrate
from hil.learning.snu import SNUConfig, SNUParams, SNUState, initial_state, snu_step

MatrixFactory = Callable[[str, np.ndarray, bool], MatrixOp]
"""``factory(name, w_init (m, n), trainable) -> MatrixOp``; the trainer maps names to chips."""


def dense_factory(dtype: np.dtype | type = np.float32) -> MatrixFactory:
    """A factory building host :class:`DenseMatrix` operands of ``dtype``."""

    def make(name: str, w: np.ndarray, trainable: bool) -> MatrixOp:
        return DenseMatrix(w, dtype=dtype, trainable=trainable)

    return make


@dataclass
class SNULayer:
    """One hidden layer: config, its MatrixOps and host vectors."""

    cfg: SNUConfig
    W: MatrixOp
    H: MatrixOp | None
    b: HostVector
    d: HostVector

    def params(self) -> SNUParams:
        return SNUParams(b=self.b.value(), d=self.d.value())


@dataclass
class Readout:
    """Leaky-integrator / dense readout (see :mod:`hil.learning.readout`)."""

    cfg: ReadoutConfig
    W: MatrixOp
    c: HostVector | None


class LayerRecord(NamedTuple):
    """What a hidden layer did over a batch: input x (T, B, m), s and y (T, B, n)."""

    x: np.ndarray
    s: np.ndarray
    y: np.ndarray


class Trajectory(NamedTuple):
    """Forward record: one :class:`LayerRecord` per hidden layer and readout output o (T, B, k)."""

    layers: list[LayerRecord]
    o: np.ndarray


def shifted(a: np.ndarray) -> np.ndarray:
    """``a_{t−1}`` along axis 0 with zeros at t = 0 (the initial state)."""
    out = np.zeros_like(a)
    out[1:] = a[:-1]
    return out


class Network:
    """Hidden SNU layers, a readout and fixed feedback matrices."""

    def __init__(
        self, hidden: Sequence[SNULayer], readout: Readout, feedback: Sequence[MatrixOp]
    ) -> None:
        if len(feedback) != len(hidden):
            raise ConfigError(f"need one feedback matrix per hidden layer, got {len(feedback)}")
        widths = [hidden[0].cfg.n_in] + [h.cfg.n_out for h in hidden]
        for li, layer in enumerate(hidden):
            if layer.cfg.n_in != widths[li]:
                raise ConfigError(f"layer {li} expects {layer.cfg.n_in} inputs, gets {widths[li]}")
        if readout.cfg.n_in != widths[-1]:
            raise ConfigError(f"readout expects {readout.cfg.n_in} inputs, gets {widths[-1]}")
        self.hidden = list(hidden)
        self.readout = readout
        self.feedback = list(feedback)

    @property
    def dtype(self) -> np.dtype:
        return self.hidden[0].b.value().dtype

    def parameters(self) -> dict[str, MatrixOp | HostVector]:
        """Trainable parameters by name (readout last)."""
        out: dict[str, MatrixOp | HostVector] = {}
        for li, layer in enumerate(self.hidden):
            out[f"h{li}.W"] = layer.W
            if layer.H is not None:
                out[f"h{li}.H"] = layer.H
            if layer.cfg.train_threshold:
                out[f"h{li}.b"] = layer.b
            if layer.cfg.train_decay:
                out[f"h{li}.d"] = layer.d
        out["out.W"] = self.readout.W
        if self.readout.c is not None:
            out["out.c"] = self.readout.c
        return out

    def forward_layer(self, li: int, x: np.ndarray) -> LayerRecord:
        """Hidden layer ``li`` over a whole batch: one ``W.matmul`` on (T, B, m)."""
        layer = self.hidden[li]
        cur = layer.W.matmul(x)
        T, B, n = cur.shape
        s_all = np.empty_like(cur)
        y_all = np.empty_like(cur)
        state = initial_state(B, n, cur.dtype)
        params = layer.params()
        for t in range(T):
            i_t = cur[t] if layer.H is None else cur[t] + layer.H.matmul(state.y)
            _, state = snu_step(i_t, state, params, layer.cfg.reset)
            s_all[t], y_all[t] = state
        return LayerRecord(x=x, s=s_all, y=y_all)

    def readout_pre(self, y_top: np.ndarray) -> np.ndarray:
        """``a = y W_o (+ c)`` for any leading shape (one matmul)."""
        a = self.readout.W.matmul(y_top)
        return a if self.readout.c is None else a + self.readout.c.value()

    def forward(self, x: np.ndarray) -> Trajectory:
        """Forward a time-major batch ``x`` (T, B, m)."""
        if x.ndim != 3 or x.shape[-1] != self.hidden[0].cfg.n_in:
            raise ConfigError(
                f"input must be time-major (T, B, {self.hidden[0].cfg.n_in}), got {x.shape}"
            )
        x = x.astype(self.dtype, copy=False)
        records = []
        for li in range(len(self.hidden)):
            records.append(self.forward_layer(li, x))
            x = records[-1].y
        return Trajectory(records, integrate(self.readout_pre(x), self.readout.cfg.tau))

    def initial_states(self, batch: int) -> list[SNUState]:
        return [initial_state(batch, h.cfg.n_out, self.dtype) for h in self.hidden]

    def step(
        self, x_t: np.ndarray, states: list[SNUState], o_prev: np.ndarray
    ) -> tuple[list[SNUState], np.ndarray]:
        """One time step of the whole network (per-step online mode): (B, m) input."""
        new_states = []
        h = x_t.astype(self.dtype, copy=False)
        for layer, state in zip(self.hidden, states, strict=True):
            i_t = layer.W.matmul(h)
            if layer.H is not None:
                i_t = i_t + layer.H.matmul(state.y)
            h, st = snu_step(i_t, state, layer.params(), layer.cfg.reset)
            new_states.append(st)
        o = self.readout.cfg.tau * o_prev + self.readout_pre(h)
        return new_states, o


def build_network(
    layers: Sequence[SNUConfig],
    readout: ReadoutConfig,
    rng: np.random.Generator,
    factory: MatrixFactory | None = None,
    dtype: np.dtype | type = np.float32,
    w_scale: float = 1.0,
    h_scale: float | None = None,
) -> Network:
    """Initialise a network.

    ``W`` (m, n): Glorot-uniform ``U(±w_scale·sqrt(6/(m + n)))``; ``H`` (n, n): the same with
    ``h_scale`` (default ``w_scale``) and a zero diagonal. A full-scale Glorot H (150 units)
    puts ``diag(h')·H`` near spectral radius 1 and makes BPTT's gradients explode; a small
    ``h_scale`` (e.g. 0.1, or 0 to start without recurrence) avoids that; ``b`` = ``threshold_init``; ``d`` = ``decay``; readout Glorot,
    bias 0; feedback ``B_l`` (n_out, n_l): He-uniform ``U(±sqrt(6/n_l))``, fixed.
    """
    factory = factory or dense_factory(dtype)

    def glorot(m: int, n: int, scale: float = w_scale) -> np.ndarray:
        lim = scale * np.sqrt(6.0 / (m + n))
        return rng.uniform(-lim, lim, size=(m, n))

    hidden, feedback = [], []
    for li, cfg in enumerate(layers):
        H = None
        if cfg.recurrent:
            h0 = glorot(cfg.n_out, cfg.n_out, w_scale if h_scale is None else h_scale)
            np.fill_diagonal(h0, 0.0)
            H = factory(f"h{li}.H", h0, True)
        hidden.append(
            SNULayer(
                cfg=cfg,
                W=factory(f"h{li}.W", glorot(cfg.n_in, cfg.n_out), True),
                H=H,
                b=HostVector(np.full(cfg.n_out, cfg.threshold_init), dtype),
                d=HostVector(np.full(cfg.n_out, cfg.decay), dtype),
            )
        )
        lim = np.sqrt(6.0 / cfg.n_out)
        feedback.append(
            factory(f"B{li}", rng.uniform(-lim, lim, size=(readout.n_out, cfg.n_out)), False)
        )
    out = Readout(
        cfg=readout,
        W=factory("out.W", glorot(readout.n_in, readout.n_out), True),
        c=HostVector(np.zeros(readout.n_out), dtype) if readout.bias else None,
    )
    return Network(hidden, out, feedback)
