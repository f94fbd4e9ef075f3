"""From measurements to a digital twin: the fitted preset and the fit report data.

:func:`fit_twin` runs, in order: fault classification (:mod:`.faults`); RESET level; read
noise, so the SET fit can read like the chip does; the SET model (:mod:`.fit_set`), which
fixes g_max; programming noise, drift and the read-noise amplitude normalised to that
g_max (:mod:`.fit_noise`); the fill level of the first device from the high band. Every
preset field it cannot observe (periphery: DAC/ADC, latencies; t0, t_read) comes from
``base``.

:func:`statistics` is what the validation compares between a twin and its source: the SET
curve (mean, std per pulse), program-and-verify error std, nu mean and read noise per
level, and the fault fractions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hil.characterize import faults as F
from hil.characterize import fit_noise as N
from hil.characterize.fit_set import NAMES as SET_NAMES
from hil.characterize.fit_set import ReadModel, SetFit
from hil.characterize.measure import Measurements
from simulator import DeviceParams
from simulator.physics import PROG_G_MAX_REF_US


def _bands(m: Measurements, healthy: np.ndarray) -> list[np.ndarray]:
    """Cells of each level band whose four devices are healthy (a faulty first device
    would make another one look programmed)."""
    ok = healthy.reshape(-1, 4).all(1)
    return [np.flatnonzero((m.band == j) & ok) for j in range(m.levels_us.size - 1)]


def adc(m: Measurements, base: DeviceParams) -> dict[str, Any]:
    """ADC from MVM outputs: the step ``lsb`` (outputs are integer multiples of it), the full
    scale (the largest |output| when several columns saturate at it) and the bits
    ``log2(full/lsb + 1) + 1``. Without a visible step the outputs are taken as unquantised;
    without saturated columns the full scale of ``base`` is kept."""
    y = np.abs(np.concatenate([m.mvm_random.ravel(), m.mvm_ones]).astype(np.float64))
    u = np.unique(y[y > 0])
    if u.size < 3:
        return {"adc_bits": base.adc_bits, "adc_full_scale_us": base.adc_full_scale_us}
    lsb = float(np.min(np.diff(np.concatenate([[0.0], u]))))
    k = np.rint(y / lsb)
    quantised = lsb > 0 and np.all(np.abs(y / lsb - k) < 0.01)
    if not quantised:
        return {"adc_bits": None, "adc_full_scale_us": base.adc_full_scale_us, "lsb_us": None}
    lsb = float(np.median(y[k > 0] / k[k > 0]))
    top = float(np.max(np.abs(m.mvm_ones)))
    saturated = int(np.count_nonzero(np.isclose(np.abs(m.mvm_ones), top, rtol=1e-6))) >= 2
    if not saturated:
        return {"adc_bits": base.adc_bits, "adc_full_scale_us": base.adc_full_scale_us}
    bits = int(np.clip(round(np.log2(top / lsb + 1)) + 1, 2, 16))
    return {"adc_bits": bits, "adc_full_scale_us": top, "lsb_us": lsb}


def statistics(m: Measurements) -> dict[str, Any]:
    """Validation statistics of one measurement (see module doc)."""
    codes = F.classify(m.reset_mean, m.set_curve)
    healthy = codes == F.OK
    curve = m.set_curve[:, healthy].astype(np.float64)
    bands = _bands(m, healthy)
    cell_ok = healthy.reshape(-1, 4).all(1)
    err = m.verify_net - m.targets_us
    x = np.log((m.ages_s + 20.0) / 20.0)
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    nu, rel, pv = [], [], []
    for cells in bands:
        mm = m.drift_mean[:, cells]
        nu.append(float(np.mean(-(w @ np.log(np.maximum(mm, 1e-9))))))
        rel.append(float(np.sqrt(np.mean(m.drift_var[0, cells]) / np.mean(mm[0] ** 2))))
        sel = cells[cell_ok[cells]]
        pv.append(float(np.std(err[sel])))
    return {
        "set_mean": curve.mean(1).tolist(),
        "set_std": curve.std(1).tolist(),
        "prog_err_std": pv,
        "nu_mean": nu,
        "read_noise_rel": rel,
        "faults": F.fractions(codes),
        "n_devices": int(codes.size),
    }


def fit_twin(m: Measurements, base: DeviceParams, name: str) -> tuple[DeviceParams, dict]:
    """The fitted preset and a JSON-able fit report (points, laws, CIs, residuals)."""
    info = m.info
    codes = F.classify(m.reset_mean, m.set_curve)
    healthy = codes == F.OK
    fr = F.fractions(codes)
    g_reset, g_reset_std, g_reset_ci = N.reset_level(
        m.reset_mean[healthy], m.reset_var[healthy], m.reads
    )
    bands = _bands(m, healthy)
    mm = [m.drift_mean[:, c] for c in bands]
    vv = [m.drift_var[:, c] for c in bands]
    level = np.array([float(x[0].mean()) for x in mm])
    rn = N.read_noise(m.ages_s, mm, vv, base.t0_s, base.t_read_s)
    g_nom = float(info["g_max_us"])
    lnt0 = float(np.log((base.t0_s + base.t_read_s) / (2 * base.t_read_s)))
    rm = ReadModel(
        float(rn.values[0]),
        float(rn.values[1]),
        g_nom,
        base.read_q_floor,
        base.read_q_cap,
        lnt0,
        not m.any_negative_read,
    )
    sf = SetFit(m.set_curve[:, healthy], m.set_reads, (g_reset, g_reset_std), rm, base)
    set_params, theta, theta_ci = sf.fit(g_nom)
    g_max = set_params.g_max_us
    model_curve = sf.simulate(theta)
    pn = N.prog_noise(level, [x[0] for x in mm], [x[0] for x in vv], m.reads, g_max)
    nu_mean, nu_std, nu_ci, mu_nu, sg_nu = N.drift(level, m.ages_s, mm, vv, m.reads, base.t0_s)
    g_lev = level / g_max
    mu_fit = N.clipped_log_law(
        g_lev,
        mu_nu,
        nu_ci,
        np.array([base.nu_mu_slope, base.nu_mu_offset, base.nu_mu_min, base.nu_mu_max]),
    )
    sg_fit = N.clipped_log_law(
        g_lev,
        sg_nu,
        nu_ci,
        np.array([base.nu_sigma_slope, base.nu_sigma_offset, base.nu_sigma_min, base.nu_sigma_max]),
    )
    low = m.band < level.size
    first = int(np.bincount(m.prog_device[low], minlength=4).argmax())
    high = np.flatnonzero((m.band == level.size) & healthy.reshape(-1, 4).all(1))
    fill = float(np.mean(m.landed[high, first])) / g_max if high.size else base.fill_fraction
    fill = float(np.clip(fill, 0.05, 1.0))
    full = fill >= 0.985
    scale = PROG_G_MAX_REF_US / g_max
    amp = float(np.exp(rn.values[0]) * g_max ** (-rn.values[1]))
    periphery = adc(m, base)
    params = set_params.replace(
        name=name,
        adc_bits=periphery["adc_bits"],
        adc_full_scale_us=periphery["adc_full_scale_us"],
        g_reset_us=max(g_reset, 0.0),
        g_reset_std_us=g_reset_std,
        prog_noise_scale=1.0,
        prog_c0=float(pn.values[0] * scale),
        prog_c1=float(pn.values[1] * scale),
        prog_c2=float(pn.values[2] * scale),
        nu_mu_slope=float(mu_fit.values[0]),
        nu_mu_offset=float(mu_fit.values[1]),
        nu_mu_min=float(mu_fit.values[2]),
        nu_mu_max=float(mu_fit.values[3]),
        nu_sigma_slope=float(sg_fit.values[0]),
        nu_sigma_offset=float(sg_fit.values[1]),
        nu_sigma_min=float(sg_fit.values[2]),
        nu_sigma_max=float(sg_fit.values[3]),
        drift=bool(np.max(nu_mean) > 1e-4),
        read_noise=amp > 1e-9,
        read_q_amp=amp,
        read_q_exp=float(rn.values[1]),
        read_clamp_zero=not m.any_negative_read,
        p_stuck_reset=fr["stuck_reset"],
        p_stuck_gmax=fr["stuck_gmax"],
        p_dead=fr["dead"],
        fill_fraction=1.0 if full else fill,
        prog_clip_gmax=not full,
    )
    n_dev = codes.size
    report = {
        "name": name,
        "driver": {k: info[k] for k in ("driver", "preset", "firmware", "g_max_us")},
        "region": m.region.model_dump(),
        "n_devices": int(n_dev),
        "timings_s": m.timings_s,
        "reset": {"g_reset_us": g_reset, "g_reset_std_us": g_reset_std, "ci95": g_reset_ci},
        "faults": {
            "fractions": fr,
            "ci95": {k: F.ci95(v, n_dev) for k, v in fr.items()},
            "map": codes.reshape(*m.region.shape, 4),
        },
        "set": {
            "measured_mean": m.set_curve[:, healthy].mean(1).tolist(),
            "measured_std": m.set_curve[:, healthy].std(1).tolist(),
            "n": int(healthy.sum()),
            "model_mean": model_curve.mean(1).tolist(),
            "model_std": model_curve.std(1).tolist(),
            "params": dict(zip(SET_NAMES, theta.tolist(), strict=True)),
            "ci95": dict(zip(SET_NAMES, theta_ci.tolist(), strict=True)),
        },
        "read_noise": rn.as_dict() | {"ages_s": m.ages_s.tolist(), "amp": amp},
        "prog_noise": pn.as_dict(),
        "drift": {
            "level_us": level.tolist(),
            "nu_mean": nu_mean.tolist(),
            "nu_std": nu_std.tolist(),
            "nu_mean_ci95": nu_ci.tolist(),
            "mu_nu": mu_fit.as_dict(),
            "sigma_nu": sg_fit.as_dict(),
        },
        "fill_fraction": fill,
        "adc": periphery,
        "verify": statistics(m)["prog_err_std"],
        "level_us": level.tolist(),
    }
    return params, report


THRESHOLDS = {
    "set_mean": 0.03,
    "set_std": 0.10,
    "prog_err_std": 0.10,
    "nu_mean": 0.05,
    "read_noise_rel": 0.10,
    "faults": 0.20,
}
"""Largest relative twin-vs-source difference accepted by the validation (issue #16)."""


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(b / a - 1.0) if a != 0 else float("inf")


def compare(source: dict, twin: dict, set_pulses: int = 30, levels: slice = slice(None)) -> dict:
    """Largest relative difference of each validation statistic, twin against source, on
    fresh devices: SET mean and std per pulse ``k = 1..set_pulses``, and per level (the
    ``levels`` slice) program-and-verify error std, nu mean and read noise; fault fractions.
    """
    out: dict[str, float] = {}
    for key in ("set_mean", "set_std"):
        a, b = source[key][1 : set_pulses + 1], twin[key][1 : set_pulses + 1]
        out[key] = max(_rel(x, y) for x, y in zip(a, b, strict=True))
    for key in ("prog_err_std", "nu_mean", "read_noise_rel"):
        a, b = source[key][levels], twin[key][levels]
        out[key] = max(_rel(x, y) for x, y in zip(a, b, strict=True))
    out["faults"] = max(_rel(source["faults"][k], twin["faults"][k]) for k in source["faults"])
    return out
