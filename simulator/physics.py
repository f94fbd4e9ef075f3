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

The coefficients (shown with their PCMLikeNoiseModel defaults) are ``DeviceParams`` fields
(``set_*``, ``prog_c*``, ``nu_mu_*``, ``nu_sigma_*``, ``read_q_*``), so a fitted chip (``hil
characterize``) can change them.
"""

from __future__ import annotations

import numpy as np

from simulator.presets import DeviceParams

PROG_G_MAX_REF_US = 25.0
"""g_max at which the sigma_prog polynomial is expressed (µS; aihwkit's reference)."""


def _nu_coeffs(params: DeviceParams) -> tuple[tuple[float, ...], tuple[float, ...]]:
    p = params
    return (
        (p.nu_mu_slope, p.nu_mu_offset, p.nu_mu_min, p.nu_mu_max),
        (p.nu_sigma_slope, p.nu_sigma_offset, p.nu_sigma_min, p.nu_sigma_max),
    )


def first_set_step_us(p: DeviceParams) -> float:
    """Noise-free mean step of the first SET pulse after RESET (µS), pcm-physics §2.

    ``P = exp(-1/2.6)`` after the pre-pulse decay, ``G = g_reset``; with scale ``s``:
    ``ε = s·(μ_g·G/s + μ_0 + μ_p·P)``.
    """
    p_hist = float(np.exp(-1.0 / p.set_history_decay_pulses))
    s = p.set_scale_us
    return s * (p.set_mu_g * p.g_reset_us / s + p.set_mu_0 + p.set_mu_p * p_hist)


def set_step(
    g_us: np.ndarray,
    p: np.ndarray,
    g_max_us: np.ndarray,
    step_factor: np.ndarray,
    xi: np.ndarray,
    params: DeviceParams,
) -> tuple[np.ndarray, np.ndarray]:
    """One SET pulse on each device (1-D float32 arrays of equal length); returns ``(G, P)``.

    ``xi`` is consumed as scratch space.
    """
    s = params.set_scale_us
    p_new = p * np.float32(np.exp(-1.0 / params.set_history_decay_pulses))
    gs = g_us * np.float32(1.0 / s)
    sigma = gs * np.float32(params.set_sigma_g)
    sigma += np.float32(params.set_sigma_0)
    sigma += p_new * np.float32(params.set_sigma_p)
    xi *= sigma
    gs *= np.float32(params.set_mu_g)
    gs += np.float32(params.set_mu_0)
    gs += p_new * np.float32(params.set_mu_p)
    gs += xi  # mu + sigma xi
    gs *= step_factor
    gs *= np.float32(s)
    gs += g_us
    np.maximum(gs, np.float32(params.g_min_us), out=gs)
    np.minimum(gs, g_max_us, out=gs)
    return gs, p_new


def reset_conductance(n: int, rng: np.random.Generator, params: DeviceParams) -> np.ndarray:
    """Conductances right after RESET: ``G ~ N(g_reset, g_reset_std)`` clipped at 0 (µS)."""
    g = params.g_reset_us + params.g_reset_std_us * rng.standard_normal(n, dtype=np.float32)
    return np.maximum(g, 0.0, dtype=np.float32)


def nu_moments(g_us: np.ndarray, params: DeviceParams) -> tuple[np.ndarray, np.ndarray]:
    """``(mu_nu, sigma_nu)`` of the drift exponent for conductance ``g_us`` (§4)."""
    nu_mu, nu_sigma = _nu_coeffs(params)
    lng = np.asarray(g_us, dtype=np.float32) * np.float32(1.0 / params.g_max_us)
    np.maximum(lng, np.float32(1e-7), out=lng)
    np.log(lng, out=lng)
    mu = lng * np.float32(nu_mu[0])
    mu += np.float32(nu_mu[1])
    np.maximum(mu, np.float32(nu_mu[2]), out=mu)
    np.minimum(mu, np.float32(nu_mu[3]), out=mu)
    sigma = lng
    sigma *= np.float32(nu_sigma[0])
    sigma += np.float32(nu_sigma[1])
    np.maximum(sigma, np.float32(nu_sigma[2]), out=sigma)
    np.minimum(sigma, np.float32(nu_sigma[3]), out=sigma)
    return mu, sigma


def sample_nu(g_us: np.ndarray, rng: np.random.Generator, params: DeviceParams) -> np.ndarray:
    """Drift exponents ``nu = |mu_nu + sigma_nu xi|`` for a programming event at ``g_us``."""
    n = np.asarray(g_us).shape[0]
    if not params.drift:
        return np.zeros(n, dtype=np.float32)
    mu, sigma = nu_moments(g_us, params)
    sigma *= fast_normal(rng, (n,))
    mu += sigma
    return np.abs(mu, out=mu)


def drift_factor(age_s: np.ndarray, nu: np.ndarray, t0_s: float) -> np.ndarray:
    """``((age + t0)/t0)^(-nu) = exp(-nu ln(1 + age/t0))``, ``age = t - t_prog`` (float32).

    Negative ages (never produced by a monotonic clock) count as 0.
    """
    x = np.array(age_s, dtype=np.float32)  # own copy: worked on in place
    x *= np.float32(1.0 / t0_s)
    np.maximum(x, np.float32(0.0), out=x)
    np.log1p(x, out=x)
    x *= np.asarray(nu, dtype=np.float32)
    np.negative(x, out=x)
    return np.exp(x, out=x)


def prog_sigma(g_target_us: np.ndarray, params: DeviceParams) -> np.ndarray:
    """Programming-error std ``sigma_prog`` (µS) for targets ``g_target_us`` (§3)."""
    g = np.asarray(g_target_us, dtype=np.float32) / np.float32(params.g_max_us)
    a, b, c = params.prog_c0, params.prog_c1, params.prog_c2
    poly = np.maximum(a + b * g + c * g * g, 0.0)
    scale = params.prog_noise_scale * params.g_max_us / PROG_G_MAX_REF_US
    return (poly * np.float32(scale)).astype(np.float32)


def read_sigma_rel(g_prog_us: np.ndarray, age_s: np.ndarray, params: DeviceParams) -> np.ndarray:
    """Relative 1/f read-noise std ``sigma_rel`` (1) of §5; zeros without read noise.

    ``q_s(g) sqrt(ln((max(age, 0) + t0 + t_read)/(2 t_read)))`` with ``q_s(g) =
    min(amp / max((g/g_max)^exp, floor), cap)`` (float32; the log in float64). Computed in
    place on two temporaries (it runs on every MVM-cache rebuild).
    """
    g_prog = np.asarray(g_prog_us, dtype=np.float32)
    if not params.read_noise:
        return np.zeros(g_prog.shape, dtype=np.float32)
    amp, expo = params.read_q_amp, params.read_q_exp
    floor, cap = params.read_q_floor, params.read_q_cap
    q_s = np.divide(g_prog, np.float32(params.g_max_us))
    np.maximum(q_s, np.float32(0.0), out=q_s)
    np.power(q_s, np.float32(expo), out=q_s)
    np.maximum(q_s, np.float32(floor), out=q_s)
    np.divide(np.float32(amp), q_s, out=q_s)
    np.minimum(q_s, np.float32(cap), out=q_s)
    t = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
    t += params.t0_s
    t += params.t_read_s
    t /= 2.0 * params.t_read_s
    np.log(t, out=t)
    lnt = t.astype(np.float32)
    np.sqrt(lnt, out=lnt)
    q_s *= lnt
    return q_s


def fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 samples by the Box-Muller transform of float32 uniforms.

    ``z1 = sqrt(-2 ln(1 - u1)) cos(2 pi u2)``, ``z2 = sqrt(-2 ln(1 - u1)) sin(2 pi u2)``:
    exact in distribution up to the 2^-24 resolution of the uniforms (|z| <= 5.8, tail
    mass beyond that 7e-9). About 1.5x faster than numpy's ziggurat for float32 here.
    """
    n = int(np.prod(shape))
    h = (n + 1) // 2
    return _box_muller(rng.random(2 * h, dtype=np.float32), n).reshape(shape)


def fast_normal_raw(
    rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None
) -> np.ndarray:
    """:func:`fast_normal` with the uniforms made from the bit generator's raw 64-bit words.

    ``u = (w >> 8)·2^-24`` for each 32-bit half ``w`` of ``random_raw`` (low half first):
    numpy's own float32 uniform formula, so when no 32-bit half is buffered in the
    generator the samples are bit-identical to :func:`fast_normal`'s, at about half the cost
    of ``rng.random(dtype=float32)``. Used for MVM read noise, the hot path.

    ``out``: an optional float32 C-contiguous scratch array of at least ``2·ceil(n/2)``
    elements; the samples are written into its first ``n`` and returned as a view of it
    shaped ``shape`` (the same numbers as without ``out``; no fresh pages but the raw words).
    """
    n = int(np.prod(shape))
    h = (n + 1) // 2
    w = rng.bit_generator.random_raw(h).view(np.uint32)
    w >>= 8
    if out is None:
        u = w.astype(np.float32)
    else:  # the uniforms go straight into the scratch, which then holds the normals
        u = out.reshape(-1)[: 2 * h]
        np.copyto(u, w, casting="unsafe")  # exact: w < 2^24
    u *= np.float32(2.0**-24)
    return _box_muller(u, n, out=u).reshape(shape)


def _box_muller(u: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` normals from ``2h`` uniforms in [0, 1) (float32; ``u`` is used as scratch):
    ``z = sqrt(-2 ln(1 - u[:h])) · (cos, sin)(2 pi u[h:])``, cosines first, written into
    ``out`` (``2h`` float32; may be ``u`` itself) or a new array."""
    h = u.shape[0] // 2
    r = np.negative(u[:h])  # own array: u[:h] is free from here on
    np.log1p(r, out=r)
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    theta = u[h:]
    theta *= np.float32(2.0 * np.pi)
    out = np.empty(2 * h, dtype=np.float32) if out is None else out[: 2 * h]
    np.cos(theta, out=out[:h])
    np.sin(theta, out=out[h:])
    out[:h] *= r
    out[h:] *= r
    return out[:n]
