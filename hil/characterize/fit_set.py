"""Fit of the SET step model to the measured SET curve, by simulated moments.

The preset's SET model (pcm-physics §2, :func:`simulator.physics.set_step`, scale s = 1)::

    P  <- P exp(-1/tau)
    G  <- clip(G + f (mu_g G + mu_0 + mu_p P + (sigma_g G + sigma_0 + sigma_p P) xi), g_min, G_max)

with per-device ``f = max(1 + step_spread z1, 0.05)`` and
``G_max = clip(g_max (1 + g_max_spread z2), g_max/2, 3 g_max/2)``, from RESET
``G ~ N(g_reset, g_reset_std)``, ``P = 1``. The measured curve ``C[k, i]`` is the mean of R
noisy reads of device ``i`` after ``k`` pulses, so the simulation reads the same way, with
the fitted read noise ``G (1 + Q_s(G) sqrt(ln((t0 + t_read)/(2 t_read))) xi)``.

The 10 parameters ``theta = (mu_g, mu_0, mu_p, sigma_g, sigma_0, sigma_p, tau, step_spread,
g_max, g_max_spread)`` minimise, by ``scipy.optimize.least_squares`` over fixed random
numbers (common random numbers, so the objective is deterministic), the standardised
differences of these moments between simulation (``N`` devices) and measurement:
``mean_k`` and ``std_k`` (k = 0..K), the correlation across devices of ``C10 - C0`` with
``C20 - C10`` (consistent fast or slow devices: step-size spread) and the mean and std of
each device's largest read over the last 20 pulses (its G_max: g_max and its spread), and
the std across devices of single-pulse increments at several pulses (the step noise at
that G and P, which the curve alone leaves traded off between sigma_0 and sigma_g G).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from simulator import DeviceParams, physics

NAMES = (
    "set_mu_g",
    "set_mu_0",
    "set_mu_p",
    "set_sigma_g",
    "set_sigma_0",
    "set_sigma_p",
    "set_history_decay_pulses",
    "step_spread",
    "g_max_us",
    "g_max_spread",
)
HERMES_SAT_MEAN_US = 8.57
"""Mean read of hermes devices after 60 SET pulses (scales the starting point)."""


@dataclass
class ReadModel:
    """Read noise right after a write: ``Q_s(G) = min(amp/max((G/g_max)^e, floor), cap)``."""

    ln_a: float
    e: float
    g_norm: float
    floor: float
    cap: float
    lnt: float
    clamp: bool

    def sigma_rel(self, g: np.ndarray) -> np.ndarray:
        amp = np.exp(self.ln_a) * self.g_norm ** (-self.e)
        x = np.maximum(np.maximum(g, 0.0) / self.g_norm, 1e-12) ** self.e
        return np.minimum(amp / np.maximum(x, self.floor), self.cap) * np.sqrt(self.lnt)


INCREMENT_PULSES = (3, 6, 10, 15, 20, 30, 40, 50)
"""Pulses ``k`` whose per-device increment ``C[k] - C[k-1]`` std is a fitted moment: the
step noise at the G and P of that pulse (separates sigma_0 from sigma_g G)."""


def moments(c: np.ndarray) -> np.ndarray:
    """The fitted moments of a curve ``(K+1, n)`` (see module doc)."""
    k = c.shape[0] - 1
    a, b = c[min(10, k)] - c[0], c[min(20, k)] - c[min(10, k)]
    corr = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0
    top = c[max(k - 20, 0) :].max(0)
    inc = [float(np.std(c[j] - c[j - 1])) for j in INCREMENT_PULSES if j <= k]
    return np.concatenate([c.mean(1), c.std(1), [corr, top.mean(), top.std()], inc])


class SetFit:
    """Simulated-moments fit of the SET model to a measured curve (see module doc)."""

    def __init__(
        self,
        curve: np.ndarray,
        reads: int,
        reset: tuple[float, float],
        read_model: ReadModel,
        base: DeviceParams,
        n_sim: int = 6000,
        seed: int = 0,
    ) -> None:
        self.curve = np.asarray(curve, np.float64)
        self.k = self.curve.shape[0] - 1
        self.reads, self.reset, self.rm, self.base = reads, reset, read_model, base
        rng = np.random.default_rng(seed)
        self.z = rng.standard_normal((3, n_sim)).astype(np.float32)
        self.xi = rng.standard_normal((self.k, n_sim)).astype(np.float32)
        self.xr = rng.standard_normal((self.k + 1, reads, n_sim)).astype(np.float32)
        self.target = moments(self.curve)
        n, ns = self.curve.shape[1], n_sim
        kk = self.k + 1
        sd = self.curve.std(1)
        scale = float(self.curve.mean(1).max())
        se_mean = sd * np.sqrt(1 / n + 1 / ns) + 0.002 * scale
        se_std = sd * np.sqrt(1 / (2 * n) + 1 / (2 * ns)) + 0.002 * scale
        extra = np.array([np.sqrt(1 / n + 1 / ns) + 0.01, se_mean[-1], se_std[-1]]) / 3.0
        inc = self.target[2 * kk + 3 :]
        se_inc = inc * np.sqrt(1 / (2 * n) + 1 / (2 * ns)) + 0.002 * scale
        self.se = np.concatenate([se_mean, se_std, extra, se_inc / 2.0])
        assert self.se.size == self.target.size

    def params(self, theta: np.ndarray) -> DeviceParams:
        values = dict(zip(NAMES, (float(t) for t in theta), strict=True))
        g_reset = max(self.reset[0], 0.0)
        return self.base.replace(
            set_scale_us=1.0, g_min_us=min(g_reset, values["g_max_us"] / 2), **values
        )

    def simulate(self, theta: np.ndarray) -> np.ndarray:
        p = self.params(theta)
        z = self.z
        g_max = np.clip(p.g_max_us * (1 + p.g_max_spread * z[0]), p.g_max_us / 2, 1.5 * p.g_max_us)
        g_max = g_max.astype(np.float32)
        step = np.maximum(1 + p.step_spread * z[1], 0.05).astype(np.float32)
        g = np.maximum(self.reset[0] + self.reset[1] * z[2], 0.0).astype(np.float32)
        ph = np.ones_like(g)
        out = np.empty((self.k + 1, g.size))
        out[0] = self._read(g, 0)
        for k in range(1, self.k + 1):
            g, ph = physics.set_step(g, ph, g_max, step, self.xi[k - 1].copy(), p)
            out[k] = self._read(g, k)
        return out

    def _read(self, g: np.ndarray, k: int) -> np.ndarray:
        r = g[None, :] * (1 + self.rm.sigma_rel(g)[None, :] * self.xr[k])
        if self.rm.clamp:
            r = np.maximum(r, 0.0)
        return r.mean(0)

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        return (moments(self.simulate(theta)) - self.target) / self.se

    def start(self, g_max_nominal: float) -> np.ndarray:
        s = max(float(self.curve[-1].mean()) / HERMES_SAT_MEAN_US, 0.05)
        h = self.base
        return np.array(
            [
                -0.084,
                0.88 * s,
                1.40 * s,
                0.091,
                0.26 * s,
                2.15 * s,
                2.6,
                0.15,
                max(g_max_nominal, float(np.quantile(self.curve[-1], 0.99))),
                max(h.g_max_spread, 0.03),
            ]
        )

    def fit(self, g_max_nominal: float) -> tuple[DeviceParams, np.ndarray, np.ndarray]:
        """``(params, theta, ci95)`` of the least-squares fit."""
        x0 = self.start(g_max_nominal)
        gm = x0[8]
        lo = [-1.0, -5 * gm, -5 * gm, -1.0, 0.0, -5 * gm, 0.2, 0.0, 0.2 * gm, 0.0]
        hi = [0.5, 5 * gm, 10 * gm, 1.0, 5 * gm, 10 * gm, 50.0, 1.0, 3 * gm, 0.4]
        res = optimize.least_squares(
            self.residuals,
            np.clip(x0, lo, hi),
            bounds=(lo, hi),
            x_scale="jac",
            diff_step=3e-3,
            max_nfev=400,
        )
        dof = max(res.fun.size - res.x.size, 1)
        s2 = float(np.sum(res.fun**2)) / dof
        cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
        ci = 1.96 * np.sqrt(np.maximum(np.diag(cov), 0.0))
        return self.params(res.x), res.x, ci
