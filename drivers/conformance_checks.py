"""The conformance requirements: behavioural checks of the driver contract.

Each check takes a :class:`Context` (a fresh driver, the region it may RESET and write,
tolerances, a seeded rng) and raises :class:`RequirementFailed` with a readable message
when the driver misbehaves. The runner lives in :mod:`drivers.conformance`; tolerances
are stated there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers import DriverError, InvalidRequest, LimitExceeded
from drivers.base import Driver, new_request_id
from protocols.models import CAP_TIME, CAP_TRANSPOSE, KNOWN_CAPABILITIES
from protocols.region import Region

DEFAULT_REGION = Region(0, 0, 8, 0, 8)


class RequirementFailed(AssertionError):
    """A conformance requirement is not met (the message says how)."""


@dataclass(frozen=True)
class Context:
    """What a check gets: the driver, the region it may write, tolerances, an rng."""

    driver: Driver
    region: Region
    mvm_rel_tol: float
    rng: np.random.Generator

    @property
    def ideal(self) -> bool:
        return self.driver.info().preset == "ideal"


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise RequirementFailed(msg)


def _raises(exc: type[BaseException], fn: Callable[[], Any], what: str) -> None:
    try:
        fn()
    except exc:
        return
    except DriverError as other:
        raise RequirementFailed(
            f"{what}: raised {type(other).__name__}, expected {exc.__name__}: {other}"
        ) from None
    raise RequirementFailed(f"{what}: accepted, expected {exc.__name__}")


def _net(g: np.ndarray) -> np.ndarray:
    return ((g[..., 0] + g[..., 1]) - (g[..., 2] + g[..., 3])) / 2


def _dev(ctx: Context) -> tuple[int, ...]:
    return (*ctx.region.shape, ctx.driver.info().devices_per_cell)


# ---------------------------------------------------------------- requirements


def info_is_consistent(ctx: Context) -> None:
    info = ctx.driver.info()
    _require(info == ctx.driver.info(), "info() changes between calls")
    _require(info.devices_per_cell == 4, f"devices_per_cell={info.devices_per_cell}, not 4")
    _require(0 <= info.g_min_us < info.g_max_us, "conductance range is not 0 <= g_min < g_max")
    _require(0 < info.set_step_mean_us < info.g_max_us, "set_step_mean_us not in (0, g_max)")
    _require(
        info.g_net_max_us is not None and 0 < info.g_net_max_us <= info.g_max_us,
        "g_net_max_us not in (0, g_max]",
    )
    _require(
        info.capabilities <= KNOWN_CAPABILITIES,
        f"unknown capabilities {sorted(info.capabilities - KNOWN_CAPABILITIES)}",
    )
    r = ctx.region
    _require(
        r.chip < info.chips and r.row1 <= info.rows and r.col1 <= info.cols,
        f"test region {r} is outside the device's {info.chips}x{info.rows}x{info.cols}",
    )


def reads_have_contract_shape_and_units(ctx: Context) -> None:
    info = ctx.driver.info()
    g = ctx.driver.read_conductances(ctx.region)
    _require(
        g.shape == _dev(ctx) and g.dtype == np.float32,
        f"read_conductances gave {g.shape} {g.dtype}, expected {_dev(ctx)} float32",
    )
    _require(bool(np.all(np.isfinite(g))), "read_conductances returned NaN/inf")
    span = info.g_max_us - info.g_min_us
    _require(
        float(g.mean()) >= info.g_min_us - 0.2 * span
        and float(g.mean()) <= info.g_max_us + 0.2 * span,
        f"mean conductance {g.mean():.3g} µS is far outside [g_min, g_max]",
    )
    x = ctx.rng.uniform(-1, 1, (3, r := ctx.region.rows))
    y = ctx.driver.mvm(ctx.region, x)
    _require(
        y.shape == (3, ctx.region.cols) and y.dtype == np.float32,
        f"mvm gave {y.shape} {y.dtype} for input (3, {r}), expected (3, {ctx.region.cols})",
    )
    if info.has(CAP_TRANSPOSE):
        yt = ctx.driver.mvm(ctx.region, x[:, : ctx.region.cols], transpose=True)
        _require(yt.shape == (3, r), f"transposed mvm gave {yt.shape}, expected (3, {r})")


def _program_random(ctx: Context, tol: float) -> tuple[np.ndarray, Any]:
    info = ctx.driver.info()
    g_net_max = float(info.g_net_max_us or info.g_max_us - info.g_min_us)
    target = ctx.rng.uniform(-0.6, 0.6, ctx.region.shape) * g_net_max
    rep = ctx.driver.program(
        ctx.region,
        target,
        tolerance_us=tol,
        max_iterations=min(50, info.limits.max_program_iterations),
    )
    return target, rep


def program_reaches_tolerance(ctx: Context) -> None:
    tol = 0.05 if ctx.ideal else 0.5
    target, rep = _program_random(ctx, tol)
    bound = 1e-4 if ctx.ideal else 2 * tol
    _require(
        rep.rms_error_us <= bound,
        f"program rms error {rep.rms_error_us:.3g} µS > {bound:g} µS (tolerance {tol})",
    )
    _require(rep.iterations >= 1, "program reports no iterations")
    g = ctx.driver.read_conductances(ctx.region)
    err = float(np.sqrt(np.mean((_net(g) - target) ** 2)))
    read_bound = 1e-3 if ctx.ideal else 3 * tol + 0.1 * float(np.abs(target).max())
    _require(
        err <= read_bound, f"read-back net conductance rms error {err:.3g} µS > {read_bound:.3g} µS"
    )


def mvm_of_programmed_region_is_correct(ctx: Context) -> None:
    target, _ = _program_random(ctx, 0.05 if ctx.ideal else 0.5)
    info = ctx.driver.info()
    x = ctx.rng.uniform(-1, 1, (16, ctx.region.rows))
    y = ctx.driver.mvm(ctx.region, x).astype(np.float64)
    ref = x @ target
    rel = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    bound = 1e-5 if ctx.ideal else ctx.mvm_rel_tol
    _require(rel <= bound, f"MVM relative error {rel:.3g} > {bound:g} (y vs x @ G_net)")
    if info.has(CAP_TRANSPOSE):
        xt = ctx.rng.uniform(-1, 1, (16, ctx.region.cols))
        yt = ctx.driver.mvm(ctx.region, xt, transpose=True).astype(np.float64)
        ref_t = xt @ target.T
        rel_t = float(np.linalg.norm(yt - ref_t) / np.linalg.norm(ref_t))
        _require(rel_t <= bound, f"transposed MVM relative error {rel_t:.3g} > {bound:g}")


def pulses_raise_and_reset_lowers_conductance(ctx: Context) -> None:
    d, info, k = ctx.driver, ctx.driver.info(), 5
    d.reset(ctx.region)
    g0 = d.read_conductances(ctx.region)
    _require(
        float(g0.mean()) <= info.g_min_us + 0.1 * (info.g_max_us - info.g_min_us),
        f"after RESET mean G = {g0.mean():.3g} µS, not near g_min {info.g_min_us}",
    )
    d.apply_pulses(ctx.region, np.full(_dev(ctx), k, dtype=np.int32))
    g1 = d.read_conductances(ctx.region)
    rise = float((g1 - g0).mean())
    _require(
        rise >= 0.3 * k * info.set_step_mean_us,
        f"{k} SET pulses raised mean G by {rise:.3g} µS < 0.3*{k}*ε "
        f"(ε = {info.set_step_mean_us:.3g} µS)",
    )
    _require(float(np.mean(g1 > g0)) >= 0.8, "fewer than 80 % of devices rose after SET pulses")
    d.reset(ctx.region)
    g2 = d.read_conductances(ctx.region)
    _require(
        float(g2.mean()) < float(g1.mean()) - 0.5 * rise,
        f"RESET did not lower G: {g1.mean():.3g} -> {g2.mean():.3g} µS",
    )


def reset_mask_resets_only_masked_devices(ctx: Context) -> None:
    d, info = ctx.driver, ctx.driver.info()
    d.reset(ctx.region)
    d.apply_pulses(ctx.region, np.full(_dev(ctx), 5, dtype=np.int32))
    before = d.read_conductances(ctx.region)
    mask = np.zeros(_dev(ctx), dtype=bool)
    mask[..., 0] = True  # RESET every A+ device, pulse nothing
    d.apply_pulses(ctx.region, np.zeros(_dev(ctx), dtype=np.int32), mask)
    after = d.read_conductances(ctx.region)
    low = info.g_min_us + 0.1 * (info.g_max_us - info.g_min_us)
    _require(float(after[..., 0].mean()) <= low, "masked devices were not RESET")
    kept = float(np.abs(after[..., 1:] - before[..., 1:]).mean())
    _require(
        kept <= 0.1 * float(before[..., 1:].mean()) + 1e-6,
        f"unmasked devices changed by {kept:.3g} µS on average",
    )


def bad_regions_are_rejected(ctx: Context) -> None:
    d, info = ctx.driver, ctx.driver.info()
    for bad in (
        Region(info.chips, 0, 1, 0, 1),
        Region(0, 0, info.rows + 1, 0, 1),
        Region(0, 0, 1, info.cols - 1, info.cols + 1),
    ):
        _raises(InvalidRequest, functools.partial(d.read_conductances, bad), f"region {bad}")
        _raises(InvalidRequest, functools.partial(d.reset, bad), f"reset of region {bad}")
    _raises(
        InvalidRequest,
        lambda: d.read_conductances((0, 0, 1, 0, 1, 7)),  # type: ignore[arg-type]
        "a 6-tuple region",
    )


def bad_shapes_dtypes_and_values_are_rejected(ctx: Context) -> None:
    d, r, shape = ctx.driver, ctx.region, _dev(ctx)
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("mvm input of the wrong width", lambda: d.mvm(r, np.zeros((1, r.rows + 1)))),
        ("1-D mvm input", lambda: d.mvm(r, np.zeros(r.rows))),
        ("integer mvm input", lambda: d.mvm(r, np.zeros((1, r.rows), dtype=np.int64))),
        ("mvm input beyond [-1, 1]", lambda: d.mvm(r, np.full((1, r.rows), 1.5))),
        ("NaN mvm input", lambda: d.mvm(r, np.full((1, r.rows), np.nan))),
        ("float pulse counts", lambda: d.apply_pulses(r, np.ones(shape, dtype=np.float32))),
        ("negative pulse counts", lambda: d.apply_pulses(r, -np.ones(shape, dtype=np.int32))),
        (
            "pulse counts of the wrong shape",
            lambda: d.apply_pulses(r, np.ones((*shape[:2], 3), dtype=np.int32)),
        ),
        (
            "a non-bool reset mask",
            lambda: d.apply_pulses(r, np.zeros(shape, np.int32), np.zeros(shape, np.int32)),
        ),
        (
            "program targets of the wrong shape",
            lambda: d.program(r, np.zeros(shape), tolerance_us=0.5, max_iterations=5),
        ),
        (
            "program targets beyond g_net_max",
            lambda: d.program(
                r, np.full(r.shape, 10 * d.info().g_max_us), tolerance_us=0.5, max_iterations=5
            ),
        ),
        (
            "a zero program tolerance",
            lambda: d.program(r, np.zeros(r.shape), tolerance_us=0.0, max_iterations=5),
        ),
    ]
    before = d.read_conductances(r)
    for what, call in cases:
        _raises(InvalidRequest, call, what)
    after = d.read_conductances(r)
    change = float((after - before).mean())  # read noise averages out; one pulse is ~ε
    _require(
        abs(change) <= 0.25 * d.info().set_step_mean_us,
        f"rejected requests changed the region (mean ΔG = {change:.3g} µS)",
    )


def limits_are_enforced(ctx: Context) -> None:
    d, r, lim = ctx.driver, ctx.region, ctx.driver.info().limits
    _raises(
        LimitExceeded,
        lambda: d.apply_pulses(
            r, np.full(_dev(ctx), lim.max_pulses_per_device + 1, dtype=np.int32)
        ),
        "pulse counts above max_pulses_per_device",
    )
    _raises(
        LimitExceeded,
        lambda: d.mvm(r, np.zeros((lim.max_batch + 1, r.rows))),
        "an mvm batch above max_batch",
    )
    _raises(
        LimitExceeded,
        lambda: d.program(
            r, np.zeros(r.shape), tolerance_us=0.5, max_iterations=lim.max_program_iterations + 1
        ),
        "max_iterations above max_program_iterations",
    )


def retried_pulse_request_is_not_applied_twice(ctx: Context) -> None:
    d, info, k = ctx.driver, ctx.driver.info(), 3
    d.reset(ctx.region)
    counts = np.full(_dev(ctx), k, dtype=np.int32)
    rid = new_request_id()
    first = d.apply_pulses(ctx.region, counts, request_id=rid)
    g1 = d.read_conductances(ctx.region)
    for _ in range(2):
        again = d.apply_pulses(ctx.region, counts, request_id=rid)
        _require(again == first, f"retry returned {again}, the original reply was {first}")
    g2 = d.read_conductances(ctx.region)
    change = float((g2 - g1).mean())
    _require(
        abs(change) < 0.3 * k * info.set_step_mean_us,
        f"retrying request {rid} changed mean G by {change:.3g} µS: pulses re-applied",
    )
    _raises(
        InvalidRequest,
        lambda: d.apply_pulses(ctx.region, counts + 1, request_id=rid),
        "a reused request id with different pulse counts",
    )
    fresh = d.apply_pulses(ctx.region, counts, request_id=new_request_id())
    _require(fresh.set_pulses > 0, "a fresh request id applied no pulses")


def retried_reset_and_program_are_idempotent(ctx: Context) -> None:
    d = ctx.driver
    rid = new_request_id()
    first = d.reset(ctx.region, request_id=rid)
    _require(d.reset(ctx.region, request_id=rid) == first, "retried reset gave another reply")
    target = np.zeros(ctx.region.shape)
    rid = new_request_id()
    rep = d.program(ctx.region, target, tolerance_us=0.5, max_iterations=5, request_id=rid)
    again = d.program(ctx.region, target, tolerance_us=0.5, max_iterations=5, request_id=rid)
    _require(again == rep, "retried program gave another reply")


def wear_ledger_counts_applied_requests_exactly(ctx: Context) -> None:
    d = ctx.driver
    before = d.wear(ctx.region)
    if before is None:  # the contract allows a device without a wear ledger
        return
    counts = ctx.rng.integers(0, 3, _dev(ctx)).astype(np.int32)
    mask = np.zeros(_dev(ctx), dtype=bool)
    mask[0, 0, 0] = True
    d.apply_pulses(ctx.region, counts, mask)  # (retries: the idempotency requirement)
    d.reset(ctx.region)
    after = d.wear(ctx.region)
    _require(after is not None, "wear() answered None after answering a ledger")
    assert after is not None
    set_d, reset_d = after[0] - before[0], after[1] - before[1]
    _require(
        np.array_equal(set_d, counts),
        f"wear ledger counted {int(set_d.sum())} SET pulses for {int(counts.sum())} applied",
    )
    _require(
        np.array_equal(reset_d, mask.astype(np.int64) + 1),
        f"wear ledger counted {int(reset_d.sum())} RESETs for {int(mask.sum()) + mask.size}",
    )


def time_control_moves_the_clock(ctx: Context) -> None:
    d = ctx.driver
    if not d.info().has(CAP_TIME):
        _raises(InvalidRequest, lambda: d.advance(1.0), "advance() without time_control")
        return
    t0 = d.time_s()
    t1 = d.advance(60.0)
    _require(t1 >= t0 + 60.0 - 1e-9, f"advance(60) moved time from {t0} to {t1}")
    _require(abs(d.time_s() - t1) < 1.0, "time_s() disagrees with advance()'s result")
    _raises(InvalidRequest, lambda: d.advance(-1.0), "a negative advance")


@dataclass(frozen=True)
class Requirement:
    name: str
    check: Callable[[Context], None]


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("info() is self-consistent and stable", info_is_consistent),
    Requirement(
        "reads and MVMs have the contract's shapes, dtype and units",
        reads_have_contract_shape_and_units,
    ),
    Requirement("program-and-verify reaches its tolerance", program_reaches_tolerance),
    Requirement(
        "MVM of a programmed region equals x @ G_net (within tolerance)",
        mvm_of_programmed_region_is_correct,
    ),
    Requirement(
        "SET pulses raise conductance and RESET lowers it",
        pulses_raise_and_reset_lowers_conductance,
    ),
    Requirement(
        "reset_mask RESETs exactly the masked devices", reset_mask_resets_only_masked_devices
    ),
    Requirement("bad regions are rejected", bad_regions_are_rejected),
    Requirement(
        "bad shapes, dtypes and values are rejected and change nothing",
        bad_shapes_dtypes_and_values_are_rejected,
    ),
    Requirement("per-request limits are enforced", limits_are_enforced),
    Requirement(
        "a retried pulse request id is not applied twice",
        retried_pulse_request_is_not_applied_twice,
    ),
    Requirement(
        "retried reset and program request ids are idempotent",
        retried_reset_and_program_are_idempotent,
    ),
    Requirement(
        "time control advances the device clock (where supported)", time_control_moves_the_clock
    ),
    Requirement(
        "the wear ledger counts applied pulses and RESETs exactly (where kept)",
        wear_ledger_counts_applied_requests_exactly,
    ),
)
