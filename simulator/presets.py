"""Device parameters and named, cited presets.

Every field of :class:`DeviceParams` has a unit and a source. Formulas that use these
numbers live in :mod:`simulator.physics` (one kernel per equation). Sources are listed in
``../shared/docs/pcm-physics.md`` section 7; "estimate" marks numbers that are ours.

Presets:

- ``hermes`` (default): IBM HERMES 14-nm core (Khaddam-Aljameh et al. 2022, Le Gallo et
  al. 2023). g_max = 10.35 µS per device (aihwkit ``HermesNoiseModel``); SET pulses after
  Nandakumar et al. 2018; programming noise, drift exponent and 1/f read noise from aihwkit
  ``PCMLikeNoiseModel`` (Joshi et al. 2020) scaled to this g_max; 8-bit PWM inputs and
  8-bit ADC.
- ``aihwkit-pcm``: the ``PCMLikeNoiseModel`` formulas exactly, g_max = 25 µS, g_min = 0,
  no faults, every device programmable to [0, g_max] (see :func:`aihwkit_pcm`);
  ``aihwkit-pcm-faults`` is the same with the stuck/dead fault rates of ``hermes``.
- ``ideal``: no noise, no drift, no quantisation, no faults; deterministic SET steps.
  ``Chip.mvm`` then equals ``x @ G_net`` to float precision and ``Chip.program`` writes
  targets exactly. It proves the trainer's device path equals the software path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simulator.errors import PresetError


@dataclass(frozen=True)
class DeviceParams:
    """Physics and periphery parameters of one PCM chip (all devices share them)."""

    name: str = "hermes"
    """Preset name, recorded in saved state."""

    g_max_us: float = 10.35
    """Nominal maximum conductance per device (µS). HERMES two-device mode, aihwkit
    ``HermesNoiseModel`` (pcm-physics §1). Also the g_max that normalises g = G/g_max in
    the programming-noise, drift-exponent and read-noise formulas (§3-5)."""

    g_max_spread: float = 0.05
    """Relative device-to-device std of g_max (1). Estimate; aihwkit ``PCMPresetDevice``
    uses 10 % of w_max (pcm-physics §2, §6)."""

    step_spread: float = 0.2
    """Relative device-to-device std of the SET step size (1). aihwkit ``PCMPresetDevice``
    (20 %, pcm-physics §2)."""

    g_reset_us: float = 0.1
    """Mean conductance after RESET (µS). Nandakumar 2018 re-implementation (§2)."""

    g_reset_std_us: float = 0.01
    """Std of the conductance after RESET (µS). Nandakumar 2018 re-implementation (§2)."""

    g_min_us: float = 0.1
    """Lower clip of the SET update ``G <- clip(G + dG, g_min, G_max)`` (µS). §2."""

    set_history_decay_pulses: float = 2.6
    """Pulse-history decay: ``P <- P exp(-1/2.6)`` before each SET (pulses). §2."""

    set_mu_g: float = -0.084
    """SET mean-step slope in G: ``mu = mu_g G + mu_0 + mu_p P`` (1). Nandakumar 2018 (§2)."""

    set_mu_0: float = 0.88
    """SET mean-step offset (µS). Nandakumar 2018 (§2)."""

    set_mu_p: float = 1.40
    """SET mean-step pulse-history coefficient (µS). Nandakumar 2018 (§2)."""

    set_sigma_g: float = 0.091
    """SET step-noise slope: ``sigma = sigma_g G + sigma_0 + sigma_p P`` (1). §2."""

    set_sigma_0: float = 0.26
    """SET step-noise offset (µS). Nandakumar 2018 (§2)."""

    set_sigma_p: float = 2.15
    """SET step-noise pulse-history coefficient (µS). Nandakumar 2018 (§2)."""

    set_scale_us: float = 1.0
    """Conductance scale s of the SET model: the §2 formulas are applied to G/s and the
    step is multiplied by s (1 = the published fit, for G_max about 10-12 µS). Estimate
    for other g_max; it only moves the saturation level (10.5 s µS)."""

    prog_noise_scale: float = 1.0
    """Multiplier of sigma_prog of §3 (1 = Joshi 2020 fit; 0 = exact programming)."""

    prog_c0: float = 0.26348
    """sigma_prog polynomial ``(c0 + c1 g + c2 g^2) g_max/25`` (µS at g_max = 25 µS), g =
    G_target/g_max: constant term. Joshi 2020 via aihwkit PCMLikeNoiseModel (§3)."""

    prog_c1: float = 1.9650
    """sigma_prog polynomial, linear term (µS at g_max = 25 µS). §3."""

    prog_c2: float = -1.1731
    """sigma_prog polynomial, quadratic term (µS at g_max = 25 µS). §3."""

    nu_mu_slope: float = -0.0155
    """Drift exponent mean ``mu_nu = clip(slope ln g + offset, min, max)`` (1). §4."""

    nu_mu_offset: float = 0.0244
    """mu_nu offset (1). PCMLikeNoiseModel (§4)."""

    nu_mu_min: float = 0.049
    """mu_nu lower clip (1). PCMLikeNoiseModel (§4)."""

    nu_mu_max: float = 0.1
    """mu_nu upper clip (1). PCMLikeNoiseModel (§4)."""

    nu_sigma_slope: float = -0.0125
    """Drift exponent spread ``sigma_nu = clip(slope ln g + offset, min, max)`` (1). §4."""

    nu_sigma_offset: float = -0.0059
    """sigma_nu offset (1). PCMLikeNoiseModel (§4)."""

    nu_sigma_min: float = 0.008
    """sigma_nu lower clip (1). PCMLikeNoiseModel (§4)."""

    nu_sigma_max: float = 0.045
    """sigma_nu upper clip (1). PCMLikeNoiseModel (§4)."""

    read_q_amp: float = 0.0088
    """1/f read noise ``Q_s = min(amp / max(g^exp, floor), cap)`` (1). §5."""

    read_q_exp: float = 0.65
    """Q_s exponent of g (1). PCMLikeNoiseModel (§5)."""

    read_q_floor: float = 1e-3
    """Q_s floor of g^exp (1). PCMLikeNoiseModel (§5)."""

    read_q_cap: float = 0.2
    """Q_s cap (1). PCMLikeNoiseModel (§5)."""

    drift: bool = True
    """Whether devices drift ``G(t) = G_prog ((t - t_prog + t0)/t0)^(-nu)`` (§4)."""

    t0_s: float = 20.0
    """Drift reference time t0 (s). aihwkit ``PCMLikeNoiseModel`` (§4)."""

    read_noise: bool = True
    """Whether reads carry 1/f read noise (§5)."""

    read_clamp_zero: bool = False
    """Whether per-device reads (``read_conductances``, verify reads) are clamped at 0, as
    aihwkit clamps its final conductance (§5). False keeps them Gaussian, so per-device reads
    and the MVM's output-domain noise agree exactly in distribution."""

    t_read_s: float = 250e-9
    """Read duration t_read of the 1/f read-noise law (s). aihwkit (§5)."""

    dac_bits: int | None = 8
    """Input PWM resolution including sign (bits); None = exact inputs. HERMES (§1):
    magnitudes round to ``2^(bits-1) - 1 = 127`` levels."""

    adc_bits: int | None = 8
    """Column ADC resolution including sign (bits); None = no ADC quantisation. HERMES (§1)."""

    adc_full_scale_us: float = 160.0
    """ADC saturation level (µS of column output; symmetric). Estimate: about 4 std of a
    full 256-row MVM of random weights on hermes. Overridable per chip."""

    mvm_latency_s: float = 130e-9
    """Virtual-clock time per MVM input vector (s). 1-phase HERMES, from Le Gallo 2023
    throughput (§1)."""

    pulse_time_s: float = 1e-6
    """Virtual-clock time per pulse round (SET or RESET, applied in parallel to the array)
    (s). Estimate."""

    p_stuck_reset: float = 0.002
    """Probability a device is stuck at RESET (1). aihwkit ``pcm_prob_at_reset`` (§6);
    value is an estimate."""

    p_stuck_gmax: float = 0.001
    """Probability a device is stuck at its g_max (1). aihwkit ``pcm_prob_at_gmax`` (§6);
    value is an estimate."""

    p_dead: float = 0.001
    """Probability a device is dead (open, G = 0) (1). Estimate (§6)."""

    prog_clip_gmax: bool = True
    """Whether a program-and-verify landing is clipped at the device's G_max (a real device
    saturates). aihwkit's ``PCMLikeNoiseModel`` clamps the programmed conductance at 0 only
    (False): a target at g_max then lands at ``g_max + sigma_prog xi`` (§3)."""

    fill_fraction: float = 0.9
    """Two-device programming: device A is filled to at most this fraction of g_max, then
    device B trims the remainder (Le Gallo 2023, §3) (1)."""

    program_tolerance_us: float = 0.5
    """Default verify tolerance of program-and-verify: a device is accepted when its
    verify read is within this distance of its target (µS). From the physics: one standard
    deviation of a verify read's distance from its target at mid range (g = 0.5),
    ``sqrt(sigma_prog² + sigma_read²)``, with sigma_prog from §3 and the 1/f read noise of §5
    at t = t0 after programming. hermes (g_max 10.35 µS): sqrt(0.39² + 0.30²) = 0.49 µS;
    aihwkit-pcm (25 µS): sqrt(0.95² + 0.72²) = 1.19 µS. A tighter tolerance is below the
    noise of the read that verifies it: it costs iterations (each landing is a fresh draw)
    and barely lowers the landed error (hermes, 150×88: rms 0.325 µS at 0.3, 0.328 at 0.5)."""

    def __post_init__(self) -> None:
        positive = ("g_max_us", "t0_s", "t_read_s", "set_history_decay_pulses", "set_scale_us")
        for name in positive:
            if not getattr(self, name) > 0:
                raise PresetError(f"DeviceParams.{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "g_max_spread",
            "step_spread",
            "g_reset_us",
            "g_reset_std_us",
            "g_min_us",
            "prog_noise_scale",
            "adc_full_scale_us",
            "mvm_latency_s",
            "pulse_time_s",
            "p_stuck_reset",
            "p_stuck_gmax",
            "p_dead",
            "program_tolerance_us",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise PresetError(f"DeviceParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.p_stuck_reset + self.p_stuck_gmax + self.p_dead > 1:
            raise PresetError("fault probabilities p_stuck_reset + p_stuck_gmax + p_dead exceed 1")
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 16):
                raise PresetError(
                    f"DeviceParams.{name} must be None or an int in [2, 16], got {bits!r}"
                )
        if not 0 < self.fill_fraction <= 1:
            raise PresetError(
                f"DeviceParams.fill_fraction must be in (0, 1], got {self.fill_fraction!r}"
            )
        for lo, hi in (("nu_mu_min", "nu_mu_max"), ("nu_sigma_min", "nu_sigma_max")):
            if not 0 <= getattr(self, lo) <= getattr(self, hi):
                raise PresetError(f"DeviceParams needs 0 <= {lo} <= {hi}")
        if not (self.read_q_amp >= 0 and self.read_q_floor > 0 and self.read_q_cap >= 0):
            raise PresetError(
                "DeviceParams needs read_q_amp >= 0, read_q_floor > 0, read_q_cap >= 0"
            )
        if self.g_reset_us >= self.g_max_us:
            raise PresetError("DeviceParams.g_reset_us must be below g_max_us")

    @property
    def g_net_max_us(self) -> float:
        """Largest |G_net| a cell reaches with nominal devices: ``g_max - g_reset`` (µS)."""
        return self.g_max_us - self.g_reset_us

    def replace(self, **changes: object) -> DeviceParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DeviceParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PresetError(f"unknown DeviceParams fields {unknown}; valid: {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]


def hermes() -> DeviceParams:
    """IBM HERMES 14-nm PCM core (Khaddam-Aljameh 2022; Le Gallo 2023); see module doc."""
    return DeviceParams()


def aihwkit_pcm(faults: bool = False) -> DeviceParams:
    """aihwkit ``PCMLikeNoiseModel`` (Joshi et al. 2020) exactly, g_max = 25 µS.

    aihwkit (``inference/noise/pcm.py`` with its default ``SinglePairConductanceConverter``,
    g_min = 0, g_max = 25 µS) maps a weight to device targets ``g_t`` in ``[0, g_max]`` and,
    with ``g = g_t/g_max``:

    - programming: ``G_prog = max(g_t + sigma_prog xi1, 0)``,
      ``sigma_prog = (0.26348 + 1.9650 g - 1.1731 g^2) g_max/25`` (no upper clip);
    - drift exponent from the target: ``nu = |mu_nu + sigma_nu xi2|``,
      ``mu_nu = clip(-0.0155 ln g' + 0.0244, 0.049, 0.1)``,
      ``sigma_nu = clip(-0.0125 ln g' - 0.0059, 0.008, 0.045)``, ``g' = max(g, 1e-7)``;
    - read at ``t_inf`` after programming, ``t = t_inf + t0`` (t0 = 20 s):
      ``G = max(G_d + |G_d| Q_s sqrt(ln((t + t_read)/(2 t_read))) xi3, 0)``,
      ``G_d = G_prog (t/t0)^(-nu)``,
      ``Q_s = min(0.0088 / max((G_prog/g_max)^0.65, 1e-3), 0.2)``, t_read = 250 ns.

    Here that is: RESET to exactly 0 (g_min = 0), device A filled up to g_max
    (``fill_fraction = 1``), landings clipped at 0 only (``prog_clip_gmax = False``), reads
    clamped at 0 (``read_clamp_zero``), no
    stuck or dead devices and no g_max spread, so every device reaches every aihwkit target
    and a one-shot ``program`` (loose tolerance) lands each device exactly as above.
    ``faults=True`` (preset ``aihwkit-pcm-faults``) adds the stuck/dead rates of ``hermes``.

    The SET-pulse model (training; not part of PCMLikeNoiseModel) is Nandakumar 2018
    scaled by s = 25/12, so pulses saturate near 22 µS instead of 10.5 µS (estimate), with
    the 20 % step-size spread of aihwkit's ``PCMPresetDevice``.
    """
    base = hermes()
    return DeviceParams(
        name="aihwkit-pcm-faults" if faults else "aihwkit-pcm",
        g_max_us=25.0,
        g_max_spread=0.0,
        g_reset_us=0.0,
        g_reset_std_us=0.0,
        g_min_us=0.0,
        set_scale_us=25.0 / 12.0,
        adc_full_scale_us=380.0,
        prog_clip_gmax=False,
        read_clamp_zero=True,
        fill_fraction=1.0,
        program_tolerance_us=1.2,  # one sigma of a verify read at mid range (field doc)
        p_stuck_reset=base.p_stuck_reset if faults else 0.0,
        p_stuck_gmax=base.p_stuck_gmax if faults else 0.0,
        p_dead=base.p_dead if faults else 0.0,
    )


def ideal() -> DeviceParams:
    """No noise, drift, quantisation or faults; SET pulses are fixed 0.1 µS steps."""
    return DeviceParams(
        name="ideal",
        g_max_spread=0.0,
        step_spread=0.0,
        g_reset_us=0.0,
        g_reset_std_us=0.0,
        g_min_us=0.0,
        set_mu_g=0.0,
        set_mu_0=0.1,
        set_mu_p=0.0,
        set_sigma_g=0.0,
        set_sigma_0=0.0,
        set_sigma_p=0.0,
        prog_noise_scale=0.0,
        drift=False,
        read_noise=False,
        dac_bits=None,
        adc_bits=None,
        p_stuck_reset=0.0,
        p_stuck_gmax=0.0,
        p_dead=0.0,
        fill_fraction=1.0,
        program_tolerance_us=0.0,
    )


PRESETS = {
    "hermes": hermes,
    "aihwkit-pcm": aihwkit_pcm,
    "aihwkit-pcm-faults": lambda: aihwkit_pcm(faults=True),
    "ideal": ideal,
}
"""Named preset constructors."""


def get_preset(name: str = "hermes") -> DeviceParams:
    """The :class:`DeviceParams` of a named preset, or of a preset file when ``name`` ends in
    ``.yaml``/``.yml`` (:mod:`simulator.preset_file`); raises :class:`PresetError` (one
    line naming the field) if unknown or invalid."""
    if name.lower().endswith((".yaml", ".yml")):
        from simulator.preset_file import load_preset_file

        return load_preset_file(name)
    try:
        return PRESETS[name]()
    except KeyError:
        raise PresetError(
            f"unknown device preset {name!r}; valid names: {', '.join(sorted(PRESETS))}, "
            "or a preset file PATH.yaml"
        ) from None
