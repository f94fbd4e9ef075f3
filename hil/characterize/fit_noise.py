"""Fits of RESET level, read noise, programming noise and drift (``hil characterize``).

Notation: per device ``i`` and measurement point, ``m_i`` is the mean of R repeated reads
and ``v_i`` their sample variance; ``n`` devices per point.

- RESET: ``g_reset = mean(m)``, ``std^2 = var(m) - mean(v)/R`` (read noise removed).
- Read noise (1/f law of pcm-physics §5): per (level, age, third of the level's devices by
  their own level) ``sigma_rel^2 = mean(v)/mean(m^2)``;
  ``ln sigma_rel - 0.5 ln ln((age + t0 + t_read)/(2 t_read)) = ln A - e ln G`` by least
  squares, so ``Q_s(G) = A G^-e = amp (G/g_max)^-e`` with ``amp = A g_max^-e``.
- Programming noise (§3): per level ``sigma_prog^2 = var(m) - mean(v)/R`` right after a
  one-shot programming; ``sigma_prog(g) = c0 + c1 g + c2 g^2`` (µS) by weighted least
  squares, stored as ``prog_c* = c* 25/g_max`` (the preset's reference scaling).
- Drift (§4): per device ``ln m(age) = ln G_prog - nu x``, ``x = ln((age + t0)/t0)``, slope by
  least squares; per level the mean of ``nu`` and its spread with the estimation variance
  ``sum_a (w_a^2 v_a/(R m_a^2))`` removed; the folded normal ``|N(mu, sigma)|`` is inverted to
  ``(mu_nu, sigma_nu)``, then ``clip(slope ln g + offset, min, max)`` is fitted to each.

Confidence intervals are 95 %: ``1.96`` standard errors of a point, or of a parameter from
the least-squares covariance ``s^2 (J^T J)^-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

Z95 = 1.96


@dataclass
class LawFit:
    """A fitted law: parameter values, 95 % half-widths, and the points it was fitted to."""

    names: tuple[str, ...]
    values: np.ndarray
    ci95: np.ndarray
    x: np.ndarray
    y: np.ndarray
    y_ci95: np.ndarray
    residuals: np.ndarray

    def as_dict(self) -> dict:
        return {
            "params": {n: float(v) for n, v in zip(self.names, self.values, strict=True)},
            "ci95": {n: float(c) for n, c in zip(self.names, self.ci95, strict=True)},
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "y_ci95": self.y_ci95.tolist(),
            "residuals": self.residuals.tolist(),
        }


def _ls(fun, x0, x, y, w, bounds=(-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    res = optimize.least_squares(lambda p: (fun(p, x) - y) * w, x0, bounds=bounds)
    dof = max(y.size - len(x0), 1)
    s2 = float(np.sum(res.fun**2)) / dof
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
        ci = Z95 * np.sqrt(np.maximum(np.diag(cov), 0.0))
    except np.linalg.LinAlgError:
        ci = np.full(len(x0), np.nan)
    return res.x, ci


def reset_level(mean: np.ndarray, var: np.ndarray, reads: int) -> tuple[float, float, float]:
    """``(g_reset, g_reset_std, ci95 of g_reset)`` of healthy devices (µS)."""
    std2 = float(np.var(mean) - np.mean(var) / reads)
    g = float(np.mean(mean))
    return g, float(np.sqrt(max(std2, 0.0))), Z95 * float(np.std(mean)) / np.sqrt(mean.size)


def read_noise(ages: np.ndarray, m: list, v: list, t0: float, t_read: float) -> LawFit:
    """Fit ``Q_s(G) = A G^-e`` from per-(level, age) device means ``m`` and variances ``v``.

    ``m, v`` are lists over levels of arrays ``(n_ages, n_devices)``.
    """
    xs, ys, cis, ts = [], [], [], []
    for mm, vv in zip(m, v, strict=True):
        # 3 sub-bins by each device's own level: Q_s is convex in G, so pooling devices of
        # very different programmed levels (programming noise) would bias it
        edges = np.quantile(mm[0], [0, 1 / 3, 2 / 3, 1])
        sub = np.clip(np.searchsorted(edges, mm[0], side="right") - 1, 0, 2)
        for b in range(3):
            sel = sub == b
            if sel.sum() < 8:
                continue
            for a, age in enumerate(ages):
                rel = np.sqrt(np.mean(vv[a, sel]) / np.mean(mm[a, sel] ** 2))
                xs.append(float(mm[0, sel].mean()))
                ts.append(np.log((age + t0 + t_read) / (2 * t_read)))
                ys.append(rel)
                cis.append(Z95 * rel / np.sqrt(2 * sel.sum()))
    x, y, t = np.array(xs), np.array(ys), np.array(ts)

    def model(p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.exp(p[0]) * g ** (-p[1]) * np.sqrt(t)

    if not np.all(y > 1e-9):  # noise-free reads: no read noise to fit (A = 0)
        p = np.array([-np.inf, 0.0])
        return LawFit(("ln_A", "e"), p, np.zeros(2), x, y, np.array(cis), -y)
    p, ci = _ls(model, np.array([np.log(0.1), 0.6]), x, y, 1.0 / y)
    return LawFit(("ln_A", "e"), p, ci, x, y, np.array(cis), model(p, x) - y)


def prog_noise(level: np.ndarray, m0: list, v0: list, reads: int, g_max: float) -> LawFit:
    """Fit ``sigma_prog(g) = c0 + c1 g + c2 g^2`` (µS), ``g = level/g_max``."""
    g = np.asarray(level) / g_max
    sig, ci = [], []
    for mm, vv in zip(m0, v0, strict=True):
        s = np.sqrt(max(float(np.var(mm) - np.mean(vv) / reads), 1e-12))
        sig.append(s)
        ci.append(Z95 * s / np.sqrt(2 * mm.size))
    y = np.array(sig)

    def model(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * x + p[2] * x * x

    w = 1.0 / np.maximum(np.array(ci), 1e-6)
    p, pci = _ls(model, np.array([0.1, 1.0, -0.5]) * max(y.mean(), 1e-6), g, y, w)
    return LawFit(("c0", "c1", "c2"), p, pci, g, y, np.array(ci), model(p, g) - y)


def _unfold(mean: float, std: float) -> tuple[float, float]:
    """``(mu, sigma)`` of ``X ~ N(mu, sigma)`` whose ``|X|`` has this mean and std."""
    if std <= 0 or mean / std > 4:
        return mean, max(std, 0.0)

    def moments(p: np.ndarray) -> np.ndarray:
        mu, sg = p
        fm = sg * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * sg**2)) + mu * (
            1 - 2 * stats.norm.cdf(-mu / sg)
        )
        fv = mu**2 + sg**2 - fm**2
        return np.array([fm - mean, np.sqrt(max(fv, 0.0)) - std])

    res = optimize.least_squares(moments, [mean, std], bounds=([0.0, 1e-6], [1.0, 1.0]))
    return float(res.x[0]), float(res.x[1])


def drift(
    level: np.ndarray, ages: np.ndarray, m: list, v: list, reads: int, t0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per level: ``(nu_mean, nu_std, nu_mean_ci95, mu_nu, sigma_nu)`` (see module doc)."""
    x = np.log((np.asarray(ages) + t0) / t0)
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    out = []
    for mm, vv in zip(m, v, strict=True):
        ok = np.all(mm > 0, axis=0)
        lm = np.log(mm[:, ok])
        nu = -(w @ lm)
        est = np.sum((w[:, None] ** 2) * vv[:, ok] / (reads * mm[:, ok] ** 2), axis=0)
        mean = float(nu.mean())
        std = float(np.sqrt(max(float(nu.var() - est.mean()), 0.0)))
        mu, sg = _unfold(mean, std)
        out.append((mean, std, Z95 * float(nu.std()) / np.sqrt(nu.size), mu, sg))
    arr = np.array(out)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4]


def clipped_log_law(g: np.ndarray, y: np.ndarray, y_ci: np.ndarray, x0: np.ndarray) -> LawFit:
    """Fit ``y = clip(slope ln g + offset, lo, hi)`` (the nu laws of §4)."""
    lg = np.log(np.maximum(g, 1e-7))

    def model(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.clip(p[0] * x + p[1], min(p[2], p[3]), max(p[2], p[3]))

    start = np.array([x0[0], x0[1], min(y.min(), x0[2]), max(y.max(), x0[3])])
    lo = [-1.0, -1.0, 0.0, 0.0]
    hi = [1.0, 1.0, 1.0, 1.0]
    p, ci = _ls(model, np.clip(start, lo, hi), lg, y, 1.0 / np.maximum(y_ci, 1e-6), (lo, hi))
    p[2], p[3] = min(p[2], p[3]), max(p[2], p[3])
    return LawFit(("slope", "offset", "min", "max"), p, ci, g, y, y_ci, model(p, lg) - y)
