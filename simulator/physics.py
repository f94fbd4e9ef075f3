"""Device equations, one kernel each (pcm-physics.md sections 2-5). Pure numpy, no state.

Notation: G conductance (µS), P pulse history, g = G/g_max, t_s times (s).

SET pulse (Nandakumar 2018, §2), applied to ``G/s`` with step size factor ``f`` (device-
to-device spread) and scale ``s`` (``DeviceParams.set_scale_us``, 1 for the published fit)::

    P  <- P exp(-1/2.6)
    mu    = -0.084 G/s + 0.88 + 1.40 P
    sigma =  0.091 G/s + 0.26 + 2.15 P
    G  <- clip(G + s f (mu + sigma xi), g_min, G_max),   xi ~ N(0, 1)

RESET: ``G ~ N(0.1, 0.01)`` (clipped at 0), ``P = 1``.

Drift (§4): ``G(t) = G_prog ((t - t_prog + t0)/t0)^(-nu)``, with, at each programming event,
``nu = |mu_nu + sigma_nu xi|``, ``mu_nu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1)``,
``sigma_nu = clip(-0.0125 ln g - 0.0059, 0.008, 0.045)``, ``g = max(G/g_max, 1e-7)``.

Programming noise (§3): ``sigma_prog = max(0.26348 + 1.9650 g - 1.1731 g^2, 0) g_max/25``.

Read noise (§5, 1/f): ``Q_s = min(0.0088 / max(g_prog^0.65, 1e-3), 0.2)``,
``sigma_rel = Q_s sqrt(ln((t + t_read)/(2 t_read)))`` with ``t = (t_now - t_prog) + t0``,
and ``G_read = G(t) (1 + sigma_rel xi)``.
"""

from __future__ import annotations

import numpy as np

from simulator.presets import DeviceParams

NU_MU = (-0.0155, 0.0244, 0.049, 0.1)
"""(slope, offset, lower clip, upper clip) of mu_nu (PCMLikeNoiseModel, §4)."""
NU_SIGMA = (-0.0125, -0.0059, 0.008, 0.045)
"""(slope, offset, lower clip, upper clip) of sigma_nu (PCMLikeNoiseModel, §4)."""
PROG_POLY = (0.26348, 1.9650, -1.1731)
"""sigma_prog polynomial in g at g_max = 25 µS (Joshi 2020 via PCMLikeNoiseModel, §3)."""
PROG_G_MAX_REF_US = 25.0
READ_Q = (0.0088, 0.65, 1e-3, 0.2)
"""(amplitude, exponent, floor of g^exp, cap) of Q_s (PCMLikeNoiseModel, §5)."""


def set_step(
    g_us: np.ndarray, p: np.ndarray, g_max_us: np.ndarray, step_factor: np.ndarray,
    xi: np.ndarray, params: DeviceParams,
) -> tuple[np.ndarray, np.ndarray]:
    """One SET pulse on each device (1-D arrays of equal length); returns ``(G, P)``."""
    s = params.set_scale_us
    p_new = p * np.float32(np.exp(-1.0 / params.set_history_decay_pulses))
    gs = g_us * np.float32(1.0 / s)
    mu = gs * np.float32(params.set_mu_g) + np.float32(params.set_mu_0)
    mu += p_new * np.float32(params.set_mu_p)
    sigma = gs * np.float32(params.set_sigma_g) + np.float32(params.set_sigma_0)
    sigma += p_new * np.float32(params.set_sigma_p)
    sigma *= xi
    mu += sigma
    mu *= step_factor
    mu *= np.float32(s)
    mu += g_us
    np.clip(mu, np.float32(params.g_min_us), g_max_us, out=mu)
    return mu, p_new


def reset_conductance(n: int, rng: np.random.Generator, params: DeviceParams) -> np.ndarray:
    """Conductances right after RESET: ``G ~ N(g_reset, g_reset_std)`` clipped at 0 (µS)."""
    g = params.g_reset_us + params.g_reset_std_us * rng.standard_normal(n, dtype=np.float32)
    return np.maximum(g, 0.0, dtype=np.float32)


def nu_moments(g_us: np.ndarray, g_max_us: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mu_nu, sigma_nu)`` of the drift exponent for conductance ``g_us`` (§4)."""
    lng = np.log(np.maximum(np.asarray(g_us, dtype=np.float32) / np.float32(g_max_us),
                            np.float32(1e-7)))
    mu = np.clip(NU_MU[0] * lng + NU_MU[1], NU_MU[2], NU_MU[3])
    sigma = np.clip(NU_SIGMA[0] * lng + NU_SIGMA[1], NU_SIGMA[2], NU_SIGMA[3])
    return mu.astype(np.float32), sigma.astype(np.float32)


def sample_nu(g_us: np.ndarray, rng: np.random.Generator, params: DeviceParams) -> np.ndarray:
    """Drift exponents ``nu = |mu_nu + sigma_nu xi|`` for a programming event at ``g_us``."""
    n = np.asarray(g_us).shape[0]
    if not params.drift:
        return np.zeros(n, dtype=np.float32)
    mu, sigma = nu_moments(g_us, params.g_max_us)
    xi = rng.standard_normal(n, dtype=np.float32)
    return np.abs(mu + sigma * xi)


def drift_factor(age_s: np.ndarray, nu: np.ndarray, t0_s: float) -> np.ndarray:
    """``((age + t0)/t0)^(-nu)`` with ``age = t - t_prog >= 0`` (float32)."""
    age = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
    return np.exp(-nu * np.log1p(age / t0_s).astype(np.float32))


def prog_sigma(g_target_us: np.ndarray, params: DeviceParams) -> np.ndarray:
    """Programming-error std ``sigma_prog`` (µS) for targets ``g_target_us`` (§3)."""
    g = np.asarray(g_target_us, dtype=np.float32) / np.float32(params.g_max_us)
    a, b, c = PROG_POLY
    poly = np.maximum(a + b * g + c * g * g, 0.0)
    scale = params.prog_noise_scale * params.g_max_us / PROG_G_MAX_REF_US
    return (poly * np.float32(scale)).astype(np.float32)


def read_sigma_rel(g_prog_us: np.ndarray, age_s: np.ndarray, params: DeviceParams) -> np.ndarray:
    """Relative 1/f read-noise std ``sigma_rel`` (1) of §5; zeros without read noise."""
    g_prog = np.asarray(g_prog_us, dtype=np.float32)
    if not params.read_noise:
        return np.zeros(g_prog.shape, dtype=np.float32)
    amp, expo, floor, cap = READ_Q
    g = np.maximum(g_prog / np.float32(params.g_max_us), 0.0)
    q_s = np.minimum(amp / np.maximum(g ** np.float32(expo), np.float32(floor)), np.float32(cap))
    t = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0) + params.t0_s
    lnt = np.log((t + params.t_read_s) / (2.0 * params.t_read_s)).astype(np.float32)
    return (q_s * np.sqrt(lnt)).astype(np.float32)
