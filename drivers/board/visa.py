"""Lab instruments over VISA (the only module of ``drivers`` that imports pyvisa).

Each instrument is a table of declared SCPI commands (pymeasure style): a quantity has a
query and optionally a write template, its unit in its name. :meth:`Instrument.set`
writes, then reads the value back and checks it, so a silently ignored write is caught.
Values are range-checked by the caller (:class:`~drivers.board.hardware.HardwareDriver`
holds the set-up's limits) *before* :meth:`Instrument.set` is called.

The ``@sim`` backend uses ``instruments_sim.yaml`` shipped beside this module (pyvisa-sim);
any other backend string is passed to ``pyvisa.ResourceManager`` (``""`` = the system VISA
library, ``"@py"`` = pyvisa-py).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pyvisa
import structlog
from pyvisa.resources import MessageBasedResource

from drivers.board.errors import InstrumentError

log = structlog.get_logger(__name__)

SIM_FILE = Path(str(resources.files("drivers.board") / "instruments_sim.yaml"))


@dataclass(frozen=True)
class Scpi:
    """One declared quantity: ``query`` reads it, ``write`` (a format string) sets it."""

    query: str
    write: str | None = None
    kind: type = float
    rel_tol: float = 1e-3
    """Relative tolerance of the read-back check after a write (instrument resolution)."""


PULSE_GENERATOR: dict[str, Scpi] = {
    "identity": Scpi("*IDN?", kind=str),
    "amplitude_v": Scpi("VOLT?", "VOLT {:.4f}"),
    "width_s": Scpi("PULS:WIDT?", "PULS:WIDT {:.4e}"),
    "output": Scpi("OUTP?", "OUTP {:d}", kind=int),
}
"""SCPI of the programming-pulse generator (amplitude in V, width in s, output on/off)."""

THERMOMETER: dict[str, Scpi] = {
    "identity": Scpi("*IDN?", kind=str),
    "temperature_c": Scpi("MEAS:TEMP?"),
}
"""SCPI of the board thermometer (°C)."""


def resource_manager(backend: str) -> pyvisa.ResourceManager:
    """A VISA resource manager for ``backend`` (``"@sim"`` uses the shipped YAML)."""
    spec = f"{SIM_FILE}@sim" if backend == "@sim" else backend
    try:
        return pyvisa.ResourceManager(spec)
    except (OSError, ValueError, pyvisa.Error) as exc:
        raise InstrumentError(
            f"cannot load VISA backend {backend!r}: {exc}. Use '@sim' for the simulated "
            "instruments, '@py' for pyvisa-py, or '' for the system VISA library."
        ) from exc


class Instrument:
    """A VISA instrument driven through its SCPI table. ``writes`` records every write."""

    def __init__(
        self,
        rm: pyvisa.ResourceManager,
        resource: str,
        table: dict[str, Scpi],
        timeout_ms: int = 2000,
    ) -> None:
        self.resource = resource
        self.table = table
        self.writes: list[str] = []
        try:
            inst = rm.open_resource(resource)
            if not isinstance(inst, MessageBasedResource):
                inst.close()
                raise InstrumentError(
                    f"VISA resource {resource!r} is a {type(inst).__name__}, not a "
                    "message-based (SCPI) instrument; check the address in the set-up file"
                )
            self._inst: MessageBasedResource = inst
            self._inst.timeout = timeout_ms
            self._inst.write_termination = "\n"
            self._inst.read_termination = "\n"
        except (pyvisa.Error, OSError, ValueError) as exc:
            raise InstrumentError(
                f"cannot open VISA resource {resource!r}: {exc}; check the address in the "
                "set-up file (visa.* resources) and that the instrument is on"
            ) from exc
        try:
            self.identity = str(self.get("identity"))
        except InstrumentError as exc:
            self.close()
            raise InstrumentError(
                f"VISA resource {resource!r} does not answer *IDN? ({exc}); check the address "
                "in the set-up file (visa.* resources) and that the instrument is on"
            ) from exc
        if not self.identity:
            self.close()
            raise InstrumentError(
                f"VISA resource {resource!r} gave an empty *IDN? answer; is it the right address?"
            )

    def _scpi(self, name: str) -> Scpi:
        try:
            return self.table[name]
        except KeyError:
            raise InstrumentError(
                f"{self.resource}: no SCPI command {name!r}; known: {sorted(self.table)}"
            ) from None

    def get(self, name: str) -> float | int | str:
        scpi = self._scpi(name)
        try:
            with warnings.catch_warnings():
                # pyvisa warns (instead of failing) on an unterminated answer: treat as error
                warnings.simplefilter("error", UserWarning)
                text = self._inst.query(scpi.query).strip()
        except (pyvisa.Error, OSError, UserWarning) as exc:
            raise InstrumentError(f"{self.resource}: query {scpi.query!r} failed: {exc}") from exc
        try:
            return text if scpi.kind is str else scpi.kind(float(text))
        except ValueError:
            raise InstrumentError(
                f"{self.resource}: {scpi.query!r} answered {text!r}, expected a number"
            ) from None

    def set(self, name: str, value: float | int) -> None:
        scpi = self._scpi(name)
        if scpi.write is None:
            raise InstrumentError(f"{self.resource}: {name!r} is read-only")
        command = scpi.write.format(scpi.kind(value))
        try:
            self._inst.write(command)
        except (pyvisa.Error, OSError) as exc:
            raise InstrumentError(f"{self.resource}: write {command!r} failed: {exc}") from exc
        self.writes.append(command)
        got = self.get(name)
        if not math.isclose(float(got), float(value), rel_tol=scpi.rel_tol, abs_tol=1e-12):
            raise InstrumentError(
                f"{self.resource}: wrote {name}={value} but it reads back {got}; the "
                "instrument refused the value (check its range and remote mode)"
            )
        log.debug("visa_set", resource=self.resource, quantity=name, value=value)

    def close(self) -> None:
        try:
            self._inst.close()
        except (pyvisa.Error, OSError):  # pragma: no cover - best effort
            pass


class LabInstruments:
    """The set-up's pulse generator and thermometer on one resource manager."""

    def __init__(
        self, backend: str, pulse_generator: str, thermometer: str, timeout_ms: int = 2000
    ) -> None:
        self._rm = resource_manager(backend)
        self._open: list[Instrument] = []
        try:
            self.pulse_generator = Instrument(
                self._rm, pulse_generator, PULSE_GENERATOR, timeout_ms
            )
            self._open.append(self.pulse_generator)
            self.thermometer = Instrument(self._rm, thermometer, THERMOMETER, timeout_ms)
            self._open.append(self.thermometer)
        except InstrumentError:
            self.close()
            raise

    def close(self) -> None:
        for inst in self._open:
            inst.close()
        self._open.clear()
        try:
            self._rm.close()
        except (pyvisa.Error, OSError):  # pragma: no cover - best effort
            pass
