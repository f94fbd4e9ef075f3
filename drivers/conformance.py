"""The driver conformance suite: behavioural requirements every driver must meet.

Run it on any driver, in-process or remote::

    from drivers.conformance import run_conformance
    report = run_conformance("sim://?preset=hermes")        # or a factory: lambda: MyDriver()
    print(report.format()); assert report.passed

or ``hil driver check URL``. With a factory, each requirement gets a fresh driver from it.
With a URL the suite connects **once** (for a remote driver that is its connection probe:
a failure is one line within seconds) and runs every requirement on that one driver; a
failure that means the device is gone (timeout, unreachable, refused credentials) ends the
suite instead of failing every later requirement the same way, and ``budget_s`` bounds the
suite's total time (requirements not started within it are listed as not run). Each
requirement works inside ``region`` (default: the 8x8 corner of chip 0), which it RESETs and writes:
do not point it at cells holding weights you need. Checks are behavioural (what a user
sees through the contract), never about the implementation.

Tolerances: on an ``ideal`` device (preset "ideal") MVM and programming must be exact to
float32 precision. On a noisy device the MVM of a programmed region must satisfy
``||y - x @ T||_F <= mvm_rel_tol * ||x @ T||_F`` (default 0.25, i.e. programming noise,
read noise and 8-bit quantisation together within 25 %), and program-and-verify must end
with ``rms_error_us <= 2 * tolerance_us``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from drivers import DeviceTimeout, Unauthorised, VersionMismatch
from drivers.base import Driver
from drivers.conformance_checks import (
    DEFAULT_REGION,
    REQUIREMENTS,
    Context,
    Requirement,
    RequirementFailed,
)
from protocols.region import Region

__all__ = [
    "DEFAULT_REGION",
    "REQUIREMENTS",
    "ConformanceReport",
    "Context",
    "Outcome",
    "Requirement",
    "RequirementFailed",
    "check_requirement",
    "run_conformance",
]


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str
    duration_s: float


CONNECT = "connect"
"""Name of the outcome of a failed connection (the suite then runs nothing)."""

_FATAL = (DeviceTimeout, Unauthorised, VersionMismatch)
"""Failures that mean the device is gone or refuses us: later requirements cannot pass."""


@dataclass
class ConformanceReport:
    target: str
    outcomes: list[Outcome] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    not_run_reason: str = ""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes) and not self.not_run

    def format(self) -> str:
        """One line per requirement; a failure's cause is printed once, even if repeated."""
        lines = [f"driver conformance: {self.target}"]
        seen: dict[str, str] = {}
        for o in self.outcomes:
            mark = "PASS" if o.passed else "FAIL"
            lines.append(f"  {mark}  {o.name}  ({o.duration_s * 1e3:.0f} ms)")
            if not o.passed:
                first = seen.setdefault(o.detail, o.name)
                lines.append(
                    f"        {o.detail}" if first == o.name else f"        same cause as {first!r}"
                )
        if self.not_run:
            lines.append(f"  not run ({self.not_run_reason}): {len(self.not_run)} requirement(s)")
        checked = [o for o in self.outcomes if o.name != CONNECT]
        n_ok = sum(o.passed for o in checked)
        lines.append(f"{n_ok}/{len(checked) + len(self.not_run)} requirements met")
        return "\n".join(lines)


def check_requirement(
    requirement: Requirement,
    factory: Callable[[], AbstractContextManager[Driver]],
    *,
    region: Region = DEFAULT_REGION,
    mvm_rel_tol: float = 0.25,
    seed: int = 0,
) -> Outcome:
    """Run one requirement on the driver ``factory`` gives (``with factory() as driver``);
    never raises."""
    return _check(requirement, factory, region, mvm_rel_tol, seed)[0]


def run_conformance(
    target: str | Callable[[], Driver],
    *,
    region: Region = DEFAULT_REGION,
    mvm_rel_tol: float = 0.25,
    seed: int = 0,
    budget_s: float | None = None,
) -> ConformanceReport:
    """Check every requirement against a driver URL (one connection for the whole suite)
    or a zero-argument driver factory (a fresh driver per requirement)."""
    t_start = time.monotonic()
    if not isinstance(target, str):
        name = getattr(target, "__name__", repr(target))
        return _run(ConformanceReport(name), target, region, mvm_rel_tol, seed, t_start, budget_s)
    from drivers import open_driver

    report = ConformanceReport(target)
    t0 = time.perf_counter()
    try:
        driver = open_driver(target)
    except Exception as exc:  # the one line that explains why nothing can be checked
        detail = f"{type(exc).__name__}: {exc}"
        report.outcomes.append(Outcome(CONNECT, False, detail, time.perf_counter() - t0))
        report.not_run = [r.name for r in REQUIREMENTS]
        report.not_run_reason = "no connection"
        return report
    try:
        shared = nullcontext(driver)
        return _run(report, lambda: shared, region, mvm_rel_tol, seed, t_start, budget_s)
    finally:
        driver.close()


def _run(
    report: ConformanceReport,
    factory: Callable[[], AbstractContextManager[Driver]],
    region: Region,
    mvm_rel_tol: float,
    seed: int,
    t_start: float,
    budget_s: float | None,
) -> ConformanceReport:
    for i, req in enumerate(REQUIREMENTS):
        if budget_s is not None and time.monotonic() - t_start > budget_s:
            report.not_run = [r.name for r in REQUIREMENTS[i:]]
            report.not_run_reason = f"time budget of {budget_s:g} s spent"
            break
        outcome, exc = _check(req, factory, region, mvm_rel_tol, seed)
        report.outcomes.append(outcome)
        if isinstance(exc, _FATAL):
            report.not_run = [r.name for r in REQUIREMENTS[i + 1 :]]
            report.not_run_reason = f"the device stopped answering: {type(exc).__name__}"
            break
    return report


def _check(
    requirement: Requirement,
    factory: Callable[[], AbstractContextManager[Driver]],
    region: Region,
    mvm_rel_tol: float,
    seed: int,
) -> tuple[Outcome, Exception | None]:
    t0 = time.perf_counter()
    try:
        with factory() as driver:
            requirement.check(Context(driver, region, mvm_rel_tol, np.random.default_rng(seed)))
        return Outcome(requirement.name, True, "", time.perf_counter() - t0), None
    except Exception as exc:  # a failing driver must not stop the suite
        detail = f"{type(exc).__name__}: {exc}"
        return Outcome(requirement.name, False, detail, time.perf_counter() - t0), exc
