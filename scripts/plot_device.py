"""Device-level plots of the PCM simulator (PNG files in an output directory).

- ``set_pulses.png``: G against SET pulse number from RESET, mean +- std over the 262,144
  devices of a chip (pcm-physics §2), with the noise-free mean path of the same formulas.
- ``drift.png``: mean +- std of G after programming to five levels, from 1 s to 1 year
  (§4), log time axis.
- ``histogram.png``: conductance histograms of a full array: after programming a random
  weight matrix (all four devices), and after 10 random SET pulses per device from RESET.

Usage: ``python scripts/plot_device.py --out results/plots [--preset hermes] [--seed 0]``
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hil.logging import configure_logging  # noqa: E402
from simulator import Chip, Region, get_preset  # noqa: E402

FULL = Region.full(0)


def plot_set_pulses(preset: str, seed: int, out: Path, n_pulses: int = 30) -> Path:
    chip = Chip(0, preset, seed=seed)
    p = chip.params
    means, stds = [], []
    ones = np.ones((256, 256, 4), dtype=np.int16)
    healthy = chip.fault_map(FULL) == 0
    for _ in range(n_pulses):
        chip.apply_pulses(FULL, ones)
        g = chip.true_conductances(FULL)[healthy]
        means.append(g.mean())
        stds.append(g.std())
    g_det, hist, path = p.g_reset_us, 1.0, []
    for _ in range(n_pulses):  # noise-free mean path (dG = mu), nominal device
        hist *= math.exp(-1 / p.set_history_decay_pulses)
        s = p.set_scale_us
        g_det = min(
            max(g_det + s * (p.set_mu_g * g_det / s + p.set_mu_0 + p.set_mu_p * hist), p.g_min_us),
            p.g_max_us,
        )
        path.append(g_det)
    k = np.arange(1, n_pulses + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    m, s = np.array(means), np.array(stds)
    ax.plot(k, m, "o-", ms=3, label=f"mean over {healthy.sum():,} devices")
    ax.fill_between(k, m - s, m + s, alpha=0.3, label="± std")
    ax.plot(k, path, "k--", lw=1, label="noise-free mean path")
    ax.axhline(p.g_max_us, color="grey", lw=0.8, ls=":", label="nominal g_max")
    ax.set(
        xlabel="SET pulses from RESET",
        ylabel="G (µS)",
        title=f"SET response ({p.name}, Nandakumar 2018 model)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path_png = out / "set_pulses.png"
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_png


def plot_drift(preset: str, seed: int, out: Path) -> Path:
    p = get_preset(preset)
    a_levels = np.linspace(0.1, 0.85, 5) * p.g_max_us  # device A+ targets (below fill cap)
    times = np.logspace(0, math.log10(365 * 86400), 25)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, a_t in enumerate(a_levels):
        chip = Chip(0, p, seed=seed + i)
        net = (a_t - p.g_reset_us) / 2  # A+ is filled to 2 G_net + g_reset (programming)
        chip.program(FULL, np.full((256, 256), net, np.float32), tolerance_us=1e3)
        t_prog = chip.time_s
        healthy = chip.fault_map(FULL)[..., 0] == 0
        m, s = [], []
        for t in times:
            chip.advance_to(t_prog + t)
            g = chip.true_conductances(FULL)[..., 0][healthy]
            m.append(g.mean())
            s.append(g.std())
        m_arr, s_arr = np.array(m), np.array(s)
        (line,) = ax.semilogx(times, m_arr, label=f"A+ target {a_t:.1f} µS")
        ax.fill_between(times, m_arr - s_arr, m_arr + s_arr, color=line.get_color(), alpha=0.2)
    for t, label in ((3600, "1 h"), (86400, "1 day"), (365 * 86400, "1 year")):
        ax.axvline(t, color="grey", lw=0.6, ls=":")
        ax.text(t, ax.get_ylim()[1] * 0.97, label, fontsize=7, ha="right")
    ax.set(
        xlabel="time after programming (s)",
        ylabel="G (µS)",
        title=f"drift G(t) = G_prog ((t+t0)/t0)^-ν ({p.name})",
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path_png = out / "drift.png"
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_png


def plot_histogram(preset: str, seed: int, out: Path) -> Path:
    rng = np.random.default_rng(seed)
    chip = Chip(0, preset, seed=seed)
    p = chip.params
    w = np.clip(rng.standard_normal((256, 256)) / 3, -1, 1)
    chip.program(FULL, (w * 0.8 * p.g_net_max_us).astype(np.float32))
    chip.advance(60.0)
    programmed = chip.true_conductances(FULL)
    pulsed_chip = Chip(1, preset, seed=seed)
    pulsed_chip.apply_pulses(Region.full(1), rng.integers(0, 11, (256, 256, 4)))
    pulsed = pulsed_chip.true_conductances(Region.full(1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, p.g_max_us * 1.2, 120)
    names = ("A+", "B+", "A-", "B-")
    for d in range(4):
        ax1.hist(programmed[..., d].ravel(), bins=bins, histtype="step", label=names[d])
    ax1.set(
        yscale="log",
        xlabel="G (µS)",
        ylabel="devices",
        title="after programming random weights (t = 60 s)",
    )
    ax1.legend()
    ax2.hist(pulsed.ravel(), bins=bins, color="tab:purple")
    ax2.set(
        yscale="log",
        xlabel="G (µS)",
        ylabel="devices",
        title="after 0-10 random SET pulses from RESET",
    )
    fig.suptitle(f"conductance histograms of a 256x256x4 array ({p.name})")
    fig.tight_layout()
    path_png = out / "histogram.png"
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/plots"))
    parser.add_argument("--preset", default="hermes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_logging("warning")  # keep stdout clean for the JSON / file list
    args.out.mkdir(parents=True, exist_ok=True)
    for fn in (plot_set_pulses, plot_drift, plot_histogram):
        print(fn(args.preset, args.seed, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
