"""The fit report of ``hil characterize``: ``chip.html`` with embedded matplotlib figures.

One figure per phase: measured points with 95 % intervals, the fitted law, and the
residuals below it (SET curve, read noise, programming noise, drift exponent), the fault
map; then tables of the fitted preset fields with their 95 % intervals. Figures are PNGs
inlined as base64, so the file is self-contained. ``chip.json`` carries the same numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simulator import DeviceParams


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def _two_panel(plt: Any, title: str) -> tuple[Any, Any, Any]:
    fig, (ax, res) = plt.subplots(
        2, 1, figsize=(6.4, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.set_title(title)
    res.axhline(0, color="k", lw=0.6)
    res.set_ylabel("residual")
    return fig, ax, res


def figures(rep: dict) -> list[tuple[str, str]]:
    """``(caption, base64 PNG)`` of each figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    s = rep["set"]
    k = np.arange(len(s["measured_mean"]))
    mm, ms = np.array(s["measured_mean"]), np.array(s["measured_std"])
    fig, ax, res = _two_panel(plt, "SET curve from RESET (mean ± std across devices)")
    ci = 1.96 * ms / np.sqrt(s["n"])
    ax.errorbar(k, mm, yerr=ci, fmt="o", ms=3, label="measured mean (95 % CI)")
    ax.plot(k, ms, "s", ms=3, label="measured std")
    ax.plot(k, s["model_mean"], "-", label="fitted model mean")
    ax.plot(k, s["model_std"], "--", label="fitted model std")
    ax.set_ylabel("G (µS)")
    ax.legend(fontsize=7)
    res.plot(k, np.array(s["model_mean"]) - mm, "o-", ms=2, label="mean")
    res.plot(k, np.array(s["model_std"]) - ms, "s-", ms=2, label="std")
    res.set_xlabel("SET pulses k")
    out.append(("SET step curve and its fit (pulse-history model)", _png(fig)))
    plt.close(fig)

    inc_g = mm[:-1]
    fig2, ax2 = plt.subplots(figsize=(6.4, 3.2))
    ax2.plot(inc_g, np.diff(mm), "o", ms=3, label="measured mean step")
    ax2.plot(np.array(s["model_mean"])[:-1], np.diff(s["model_mean"]), "-", label="model")
    ax2.set(xlabel="mean G before the pulse (µS)", ylabel="mean ΔG (µS)", title="step vs G")
    ax2.legend(fontsize=7)
    out.append(("SET step against conductance", _png(fig2)))
    plt.close(fig2)

    for key, title, ylab in (
        ("read_noise", "read noise σ_rel against G (all ages)", "σ_rel"),
        ("prog_noise", "programming noise σ_prog against g = G/g_max", "σ_prog (µS)"),
    ):
        law = rep[key]
        fig, ax, res = _two_panel(plt, title)
        x, y, yc = np.array(law["x"]), np.array(law["y"]), np.array(law["y_ci95"])
        ax.errorbar(x, y, yerr=yc, fmt="o", ms=3, label="measured (95 % CI)")
        ax.plot(x, y + np.array(law["residuals"]), "x", label="fitted law")
        ax.set_ylabel(ylab)
        ax.legend(fontsize=7)
        res.plot(x, law["residuals"], "o", ms=3)
        res.set_xlabel("G (µS)" if key == "read_noise" else "g")
        out.append((title, _png(fig)))
        plt.close(fig)

    d = rep["drift"]
    fig, ax, res = _two_panel(plt, "drift exponent ν against level")
    lev = np.array(d["level_us"])
    ax.errorbar(lev, d["nu_mean"], yerr=d["nu_mean_ci95"], fmt="o", ms=3, label="ν mean (95 % CI)")
    ax.plot(lev, d["nu_std"], "s", ms=3, label="ν std")
    mu, sg = d["mu_nu"], d["sigma_nu"]
    ax.plot(lev, np.array(mu["y"]) + np.array(mu["residuals"]), "-", label="fitted μ_ν")
    ax.plot(lev, np.array(sg["y"]) + np.array(sg["residuals"]), "--", label="fitted σ_ν")
    ax.set_ylabel("ν")
    ax.legend(fontsize=7)
    res.plot(lev, mu["residuals"], "o-", ms=3)
    res.plot(lev, sg["residuals"], "s-", ms=3)
    res.set_xlabel("programmed level (µS)")
    out.append(("drift exponent and its laws", _png(fig)))
    plt.close(fig)

    fmap = np.asarray(rep["faults"]["map"]).max(-1)
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(fmap, cmap="magma", vmin=0, vmax=3, interpolation="nearest")
    ax.set(title="fault map (worst device per cell)", xlabel="column", ylabel="row")
    fig.colorbar(im, ax=ax, ticks=[0, 1, 2, 3], label="0 ok, 1 stuck RESET, 2 stuck g_max, 3 dead")
    out.append(("fault map", _png(fig)))
    plt.close(fig)
    return out


def _table(rows: Sequence[Sequence[str]], head: tuple[str, ...]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(x: Any) -> str:
    return f"{x:.5g}" if isinstance(x, float) else str(x)


def jsonable(rep: dict) -> dict:
    out = dict(rep)
    out["faults"] = dict(rep["faults"])
    fmap = np.asarray(rep["faults"]["map"])
    out["faults"]["map"] = {
        "shape": list(fmap.shape),
        "bad": [[int(i) for i in idx] + [int(fmap[tuple(idx)])] for idx in np.argwhere(fmap)],
    }
    return out


def write_report(path: Path, rep: dict, params: DeviceParams, source: str) -> Path:
    """Write ``path`` (HTML) and ``path.with_suffix('.json')``."""
    figs = "".join(
        f'<figure><img src="data:image/png;base64,{b64}"><figcaption>{html.escape(c)}'
        "</figcaption></figure>"
        for c, b64 in figures(rep)
    )
    ci = {**rep["set"]["ci95"]}
    fields = [(k, _fmt(v), _fmt(ci.get(k, ""))) for k, v in params.to_dict().items()]
    fr = rep["faults"]
    faults = [
        (k, f"{v:.3%}", f"[{fr['ci95'][k][0]:.3%}, {fr['ci95'][k][1]:.3%}]")
        for k, v in fr["fractions"].items()
    ]
    laws = [
        (f"{law}.{n}", _fmt(v), _fmt(rep[law]["ci95"][n]))
        for law in ("read_noise", "prog_noise")
        for n, v in rep[law]["params"].items()
    ] + [
        (f"{law}.{n}", _fmt(v), _fmt(rep["drift"][law]["ci95"][n]))
        for law in ("mu_nu", "sigma_nu")
        for n, v in rep["drift"][law]["params"].items()
    ]
    r = rep["reset"]
    verify = [
        (f"{lv:.3g}", f"{e:.4g}") for lv, e in zip(rep["level_us"], rep["verify"], strict=True)
    ]
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>pcm-hil characterisation: {html.escape(params.name)}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:auto}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:2px 6px;
font-size:12px}}figure{{display:inline-block;margin:6px}}</style></head><body>
<h1>Digital twin {html.escape(params.name)}</h1>
<p>Source <code>{html.escape(source)}</code> ({html.escape(json.dumps(rep["driver"]))}),
region {html.escape(json.dumps(rep["region"]))}, {rep["n_devices"]} devices. Phase times (s):
{html.escape(json.dumps({k: round(v, 2) for k, v in rep["timings_s"].items()}))}.</p>
<h2>RESET</h2><p>g_reset = {r["g_reset_us"]:.4g} ± {r["ci95"]:.2g} µS (95 %), device spread
{r["g_reset_std_us"]:.3g} µS.</p>
<h2>Faults</h2>{_table(faults, ("class", "fraction", "95 % CI"))}
<h2>Figures</h2>{figs}
<h2>Fitted laws</h2>{_table(laws, ("parameter", "value", "95 % half-width"))}
<h2>Program-and-verify error std per level (µS)</h2>
{_table(verify, ("level µS", "error std µS"))}
<h2>Preset fields</h2>{_table(fields, ("field", "value", "95 % half-width (SET fit)"))}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.with_suffix(".json").write_text(
        json.dumps(jsonable(rep) | {"preset": params.to_dict(), "source": source}, indent=1)
    )
    return path
