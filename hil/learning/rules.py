"""Learning rules as interchangeable pieces over one :class:`~hil.learning.network.Network`.

Every rule computes ``∇θ = Σ_t L_t·e_t`` (updates ``Δθ = −η·∇θ``, applied by an optimiser);
they differ in the learning signal ``L^l_t`` of hidden layer l and in the trace:

- ``bptt``: exact (:mod:`hil.learning.bptt`), no traces.
- ``ostl``: ``L^{K−1} = g_t W_oᵀ``, ``L^l = (L^{l+1}·h'^{l+1}) W^{l+1}ᵀ`` (weight transport,
  within one step); recursive OSTL traces.
- ``ostl_rnd``: ``L^l = g_t · B_l``; recursive OSTL traces.
- ``drtp`` (temporal DRTP): ``L^l = w_t · y*_t · B_l``; instantaneous traces.
- ``osttp`` (eq. 11): ``L^l = w_t · y*_t · B_l``; recursive OSTL traces.

``g_t = w_t·∂E_t/∂o_t`` is the readout's true error (``σ(o) − y*`` for BCE), ``w_t`` the frame
weight (mask / normaliser). The readout always learns from ``g_t`` with its exact trace
``ε^o_t = τ·ε^o_{t−1} + y_t``. Sign convention for B: ``L^l = +y*·B_l`` and ``Δθ = −η Σ L e``;
B is symmetric He-uniform so the opposite sign is the same distribution, the convention only
fixes which draw a seed gives. For deeper networks OSTL-rnd projects the output error
directly with the same ``B_l`` (n_out, n_l) as OSTTP (DFA-style), not layer by layer.

Two update modes: :func:`sequence_grads` (batched forward, then one reverse recursion over t
and one matrix product per matrix, :mod:`hil.learning.seqgrads`; exactly ``Σ_t L_t·e_t``
without forming per-step traces; the paper's per-sequence update) and
:class:`OnlineLearner` (forward, traces (:mod:`hil.learning.traces`, updated in place) and
gradient one step at a time, for per-step updates). ``sequence_grads(form="traces")`` runs
the trace kernels forward instead; tests check that both forms agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from hil.errors import ConfigError
from hil.learning.bptt import _outer_sum, network_bptt
from hil.learning.network import Network, Trajectory, shifted
from hil.learning.readout import Reduction, frame_weights, integrate, weighted_loss
from hil.learning.seqgrads import layer_sequence_grads
from hil.learning.snu import Partials, SNUState, partials
from hil.learning.traces import (
    TraceKind,
    Traces,
    complete_grads,
    complete_step,
    diag_grads,
    diag_step,
    init_traces,
)

RuleName = Literal["bptt", "ostl", "ostl_rnd", "drtp", "osttp"]
GradForm = Literal["reverse", "traces"]
RULES: tuple[str, ...] = ("bptt", "ostl", "ostl_rnd", "drtp", "osttp")
_SIGNAL = {"ostl": "transport", "ostl_rnd": "random", "drtp": "target", "osttp": "target"}


@dataclass(frozen=True)
class RuleConfig:
    """Which rule, which traces, and how frame losses are normalised.

    Attributes:
        name: ``bptt``, ``ostl``, ``ostl_rnd``, ``drtp`` or ``osttp``.
        traces: ``"diag"`` (exact without H, "without H" with H) or ``"complete"`` (exact
            rank-3; small layers only).
        reduction: ``"frame_mean"`` (loss averaged over the batch's frames) or
            ``"sequence_mean"`` (summed over frames, averaged over sequences).
    """

    name: RuleName = "osttp"
    traces: TraceKind = "diag"
    reduction: Reduction = "sequence_mean"

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ConfigError(f"unknown learning rule {self.name!r}; expected one of {RULES}")
        if self.traces not in ("diag", "complete"):
            raise ConfigError(f"traces must be 'diag' or 'complete', got {self.traces!r}")


class StepResult(NamedTuple):
    """Loss ``E`` (weighted sum) and gradients by parameter name."""

    loss: float
    grads: dict[str, np.ndarray]


def hidden_signals(
    net: Network,
    name: str,
    g: np.ndarray,
    target: np.ndarray,
    w: np.ndarray,
    hps: list[np.ndarray],
) -> list[np.ndarray]:
    """Learning signals ``L^l`` for every hidden layer, for any leading shape (…, ·).

    ``g`` (…, k) weighted readout error, ``target`` (…, k), ``w`` (…), ``hps[l]`` (…, n_l).
    Target projections go through the feedback MatrixOps (one ``matmul`` per layer).
    """
    K = len(net.hidden)
    kind = _SIGNAL[name]
    if kind == "target":
        yw = (target * w[..., None]).astype(g.dtype, copy=False)
        return [net.feedback[li].matmul(yw) for li in range(K)]
    if kind == "random":
        return [net.feedback[li].matmul(g) for li in range(K)]
    out: list[np.ndarray] = [np.empty(0)] * K
    L = g @ net.readout.W.read_weights().T
    for li in range(K - 1, -1, -1):
        out[li] = L
        if li > 0:
            L = (L * hps[li]) @ net.hidden[li].W.read_weights().T
    return out


def _trace_names(net: Network, li: int) -> tuple[str, ...]:
    params = net.parameters()
    return tuple(k for k in ("W", "H", "b", "d") if f"h{li}.{k}" in params)


def _add(acc: dict[str, np.ndarray], key: str, g: np.ndarray) -> None:
    acc[key] = acc[key] + g if key in acc else g


def _trace_form(
    names: tuple[str, ...],
    kind: TraceKind,
    recursive: bool,
    x: np.ndarray,
    y_prev: np.ndarray,
    hp: np.ndarray,
    hp_prev: np.ndarray,
    p: Partials,
    h_val: np.ndarray | None,
    L: np.ndarray,
) -> dict[str, np.ndarray]:
    """``Σ_t L_t·e_t`` by running the traces forward (the per-step form, kept as reference)."""
    T, B, n = hp.shape
    tr = init_traces(kind, B, x.shape[-1], n, names, hp.dtype)
    h_diag = 0.0 if h_val is None else np.diagonal(h_val).copy()
    acc: dict[str, np.ndarray] = {}
    # each partial is a (T, B, n) array or the scalar 0.0 (Q^b of a full reset)
    p_all: list[Any] = [np.broadcast_to(a, hp.shape) if np.ndim(a) else a for a in p]
    for t in range(T):
        pt = Partials._make(a[t] if np.ndim(a) else a for a in p_all)
        if kind == "complete":
            tr = complete_step(tr, x[t], y_prev[t], hp_prev[t], pt, h_val, recursive)
            gt = complete_grads(tr, L[t], hp[t])
        else:
            diag_step(tr, x[t], y_prev[t], hp_prev[t], pt, h_diag, recursive)
            gt = diag_grads(tr, L[t], hp[t])
        for k, v in gt.items():
            _add(acc, k, v)
    return acc


def sequence_grads(
    net: Network,
    rule: RuleConfig,
    x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    form: GradForm = "reverse",
) -> tuple[StepResult, Trajectory]:
    """Per-sequence gradients for a time-major batch: x (T, B, m), target (T, B, k), mask (T, B).

    ``form="reverse"`` (default) sums ``L_t·e_t`` by the reverse recursion of
    :mod:`hil.learning.seqgrads` (no per-step traces); ``form="traces"`` runs the traces
    forward step by step. Both give the same gradient up to float rounding.
    """
    if form not in ("reverse", "traces"):
        raise ConfigError(f"gradient form must be 'reverse' or 'traces', got {form!r}")
    traj = net.forward(x)
    w = frame_weights(mask, rule.reduction).astype(traj.o.dtype)
    target = target.astype(traj.o.dtype, copy=False)
    loss, g = weighted_loss(net.readout.cfg.loss, traj.o, target, w)
    if rule.name == "bptt":
        return StepResult(loss, network_bptt(net, traj, g)), traj
    params = net.parameters()
    ro = net.readout
    y_top = traj.layers[-1].y
    grads = {"out.W": _outer_sum(integrate(y_top, ro.cfg.tau), g)}
    if "out.c" in params:
        grads["out.c"] = (integrate(np.ones_like(g[..., :1]), ro.cfg.tau) * g).sum(axis=(0, 1))
    hps = [
        layer.cfg.pseudo(rec.s - layer.b.value())
        for layer, rec in zip(net.hidden, traj.layers, strict=True)
    ]
    signals = hidden_signals(net, rule.name, g, target, w, hps)
    recursive = rule.name != "drtp"
    for li, (layer, rec) in enumerate(zip(net.hidden, traj.layers, strict=True)):
        p = partials(
            shifted(rec.s), shifted(rec.y), layer.params(), layer.cfg.reset, layer.cfg.detach_reset
        )
        h_val = None if layer.H is None else layer.H.read_weights()
        args = (rec.x, shifted(rec.y), hps[li], shifted(hps[li]), p, h_val, signals[li])
        names = _trace_names(net, li)
        if form == "reverse":
            acc = layer_sequence_grads(names, rule.traces, recursive, *args)
        else:
            acc = _trace_form(names, rule.traces, recursive, *args)
        for k, v in acc.items():
            grads[f"h{li}.{k}"] = v
    return StepResult(loss, grads), traj


class OnlineState(NamedTuple):
    """Everything the per-step learner carries between steps (checkpoint it with the net)."""

    snu: list[SNUState]
    hp: list[np.ndarray]
    traces: list[Traces]
    o: np.ndarray
    eps_o: np.ndarray
    eps_c: np.ndarray


class OnlineLearner:
    """Per-step (fully online) learning: forward one step, advance traces, return ∇ of step t.

    The caller applies each step's gradient (per-step mode) or sums them (equal to
    :func:`sequence_grads` with weights held fixed). BPTT is not online and is refused.
    Diagonal traces are advanced in place: :meth:`step` consumes the state it is given
    (keep the returned one; copy the traces first to keep an old state).
    """

    def __init__(self, net: Network, rule: RuleConfig) -> None:
        if rule.name == "bptt":
            raise ConfigError("bptt is not an online rule; use sequence_grads for BPTT")
        self.net, self.rule = net, rule

    def init_state(self, batch: int) -> OnlineState:
        net, dt = self.net, self.net.dtype
        traces = [
            init_traces(self.rule.traces, batch, h.cfg.n_in, h.cfg.n_out, _trace_names(net, li), dt)
            for li, h in enumerate(net.hidden)
        ]
        k, m = net.readout.cfg.n_out, net.readout.cfg.n_in
        return OnlineState(
            snu=net.initial_states(batch),
            hp=[np.zeros((batch, h.cfg.n_out), dt) for h in net.hidden],
            traces=traces,
            o=np.zeros((batch, k), dt),
            eps_o=np.zeros((batch, m), dt),
            eps_c=np.zeros((batch, 1), dt),
        )

    def step(
        self, x_t: np.ndarray, target_t: np.ndarray, w_t: np.ndarray, state: OnlineState
    ) -> tuple[StepResult, OnlineState]:
        """One step: x_t (B, m), target_t (B, k), frame weight w_t (B,)."""
        net, rule = self.net, self.rule
        new_snu, o = net.step(x_t, state.snu, state.o)
        dt = o.dtype
        w_t = w_t.astype(dt)
        target_t = target_t.astype(dt, copy=False)
        loss, g = weighted_loss(net.readout.cfg.loss, o, target_t, w_t)
        hps = [
            layer.cfg.pseudo(st.s - layer.b.value())
            for layer, st in zip(net.hidden, new_snu, strict=True)
        ]
        signals = hidden_signals(net, rule.name, g, target_t, w_t, hps)
        tau = net.readout.cfg.tau
        eps_o = tau * state.eps_o + new_snu[-1].y
        eps_c = tau * state.eps_c + 1.0
        grads = {"out.W": eps_o.T @ g}
        if "out.c" in net.parameters():
            grads["out.c"] = (eps_c * g).sum(axis=0)
        x = x_t.astype(dt, copy=False)
        new_traces = []
        for li, layer in enumerate(net.hidden):
            prev = state.snu[li]
            p = partials(prev.s, prev.y, layer.params(), layer.cfg.reset, layer.cfg.detach_reset)
            recursive = rule.name != "drtp"
            if rule.traces == "complete":
                h_val = None if layer.H is None else layer.H.read_weights()
                tr = complete_step(state.traces[li], x, prev.y, state.hp[li], p, h_val, recursive)
                gt = complete_grads(tr, signals[li], hps[li])
            else:
                h_diag = 0.0 if layer.H is None else np.diagonal(layer.H.read_weights()).copy()
                tr = diag_step(state.traces[li], x, prev.y, state.hp[li], p, h_diag, recursive)
                gt = diag_grads(tr, signals[li], hps[li])
            new_traces.append(tr)
            for k, v in gt.items():
                grads[f"h{li}.{k}"] = v
            x = new_snu[li].y
        return StepResult(loss, grads), OnlineState(new_snu, hps, new_traces, o, eps_o, eps_c)
