"""The driver conformance suite: behavioural requirements every driver must meet.

Run it on any driver, in-process or remote::

    from drivers.conformance import run_conformance
    report = run_conformance("sim://?preset=hermes")        # or a factory: lambda: MyDriver()
    print(report.format()); assert report.passed

or ``hil driver check URL``. Each requirement gets a fresh driver from the factory and
works inside ``region`` (default: the 8x8 corner of chip 0), which it RESETs and writes:
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
from dataclasses import dataclass, field

import numpy as np

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


@dataclass
class ConformanceReport:
    target: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def format(self) -> str:
        lines = [f"driver conformance: {self.target}"]
        for o in self.outcomes:
            mark = "PASS" if o.passed else "FAIL"
            lines.append(f"  {mark}  {o.name}  ({o.duration_s * 1e3:.0f} ms)")
            if not o.passed:
                lines.append(f"        {o.detail}")
        n_ok = sum(o.passed for o in self.outcomes)
        lines.append(f"{n_ok}/{len(self.outcomes)} requirements met")
        return "\n".join(lines)


def check_requirement(
    requirement: Requirement,
    factory: Callable[[], Driver],
    *,
    region: Region = DEFAULT_REGION,
    mvm_rel_tol: float = 0.25,
    seed: int = 0,
) -> Outcome:
    """Run one requirement on a fresh driver from ``factory``; never raises."""
    t0 = time.perf_counter()
    try:
        with factory() as driver:
            requirement.check(Context(driver, region, mvm_rel_tol, np.random.default_rng(seed)))
        return Outcome(requirement.name, True, "", time.perf_counter() - t0)
    except Exception as exc:  # a failing driver must not stop the suite
        detail = f"{type(exc).__name__}: {exc}"
        return Outcome(requirement.name, False, detail, time.perf_counter() - t0)


def run_conformance(
    target: str | Callable[[], Driver],
    *,
    region: Region = DEFAULT_REGION,
    mvm_rel_tol: float = 0.25,
    seed: int = 0,
) -> ConformanceReport:
    """Check every requirement against a driver URL or a zero-argument driver factory."""
    if isinstance(target, str):
        from drivers import open_driver

        url = target

        def factory() -> Driver:
            return open_driver(url)

        name = url
    else:
        factory, name = target, getattr(target, "__name__", repr(target))
    report = ConformanceReport(name)
    for req in REQUIREMENTS:
        report.outcomes.append(
            check_requirement(req, factory, region=region, mvm_rel_tol=mvm_rel_tol, seed=seed)
        )
    return report
