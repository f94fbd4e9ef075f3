"""The chip backend: a run's matrices on PCM chips behind the driver contract.

Everything a device adds to training lives here:

- **placement** (:mod:`hil.trainer.placement`): the matrices' shapes are known before any
  weight is drawn, so their regions are reserved first through the driver contract
  (``Driver.reserve``: the server allocates them among its clients and may queue the run;
  an in-process driver allocates locally), and a network that does not fit is refused
  before anything is written; where the latest health report (``device.health``: the one
  the device keeps, by default) marks bad rows, columns or cells, the run asks for the
  regions that avoid them; the run's ``placement.json`` records what was avoided and
  which bad cells the regions still hold; a resumed run asks for its recorded regions;
  the reservation is released when the run finishes;
- **mapping and program-and-verify**: :func:`hil.learning.build_network` draws the initial
  weights with the run's seed (the same draw as in software) and each becomes a
  :class:`~hil.trainer.device_matrix.DeviceMatrix` with its own weight↔µS map —
  ``w_max`` (config, or ``headroom × max|W_init|``) maps to ``g_net_fraction × g_net_max``
  — written with program-and-verify;
- **updates** become SET pulses (``DeviceMatrix.update``); after every batch the device
  clock advances by ``host_time_per_batch_s`` (virtual-clock devices) and every
  ``refresh_every`` batches saturated cells are refreshed;
- **drift compensation**: a fixed ±1 probe (``PROBE_ROWS`` rows per matrix, seeded by the
  run's seed) gives reference outputs after training; before scoring, a fresh probe read
  sets each matrix's output compensation (``global`` or ``per_column``);
- **request ids** (:class:`~hil.trainer.device_matrix.RequestIds`) of every
  state-changing request, so retries and resumes never apply pulses twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from drivers import DriverError, InvalidRequest, LeaseConflict, open_driver
from drivers.base import Driver
from hil.characterize.health import HealthReport
from hil.errors import ConfigError, HilError
from hil.learning import MatrixOp, Network, ReadoutConfig, SNUConfig, build_network
from hil.trainer.backend import DriftReference
from hil.trainer.cells import CellMapping, RefreshConfig
from hil.trainer.config import DeviceSection
from hil.trainer.device_matrix import DeviceMatrix, RequestIds, UpdateConfig
from hil.trainer.model import network_shapes
from hil.trainer.placement import PlacementError, place, wants
from protocols.messages import MatrixWant
from protocols.models import CAP_SNAPSHOT, CAP_TIME, DeviceInfo
from protocols.region import Region

log = structlog.get_logger(__name__)

PROBE_ROWS = 16
FINGERPRINT = "fingerprint"
FINGERPRINT_MIN_R = 0.9
"""Least correlation of a matrix's probe outputs at resume with those at the checkpoint."""


def open_device(url: str, restore: Path | None = None) -> Driver:
    """Open ``url``; for a snapshot-capable simulator, restore from ``restore`` if given."""
    if restore is not None:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}restore={restore}"
    try:
        return open_driver(url)
    except (DriverError, OSError) as exc:
        raise HilError(f"cannot open device {url!r}: {exc}") from exc


DEFAULT_TOLERANCE_US = 0.5
"""program-and-verify tolerance for a device that recommends none (hermes-like)"""


def program_tolerance(configured: float | None, info: DeviceInfo) -> float:
    """The run's verify tolerance (µS): configured, else the device's recommended one."""
    if configured:
        return configured
    return info.program_tolerance_us or DEFAULT_TOLERANCE_US


class ChipBackend:
    """A run's matrices on ``driver`` (see the module docstring).

    Args:
        driver: an open driver; the backend closes it in :meth:`close`.
        url: the driver's URL (recorded in the run).
        device: the run config's ``device`` section.
        run_id: prefix of every request id (the run directory's name).
        seed: the run's seed (drift-compensation probes; the reservation's noise stream).
        wait: wait in the server's queue when the regions are held (else refuse at once).
        on_wait: ``on_wait(position, why)`` while waiting.
        whole_chips: also hold every chip whole (whole-chip work: drift evaluation).
        fixed: exact regions to reserve (a resumed run's recorded placement).
    """

    on_device = True

    def __init__(
        self,
        driver: Driver,
        url: str,
        device: DeviceSection,
        run_id: str,
        seed: int,
        *,
        wait: bool = True,
        on_wait: Callable[[int, str], None] | None = None,
        whole_chips: bool = False,
        fixed: Mapping[str, Region] | None = None,
    ) -> None:
        self.driver, self.url, self.dev, self.seed = driver, url, device, seed
        self.run_id = run_id
        self.wait, self.on_wait, self.whole_chips = wait, on_wait, whole_chips
        self.fixed = dict(fixed or {})
        self.reservation_id: str | None = None
        self.ids = RequestIds(run_id)
        self.matrices: dict[str, DeviceMatrix] = {}
        self.placement: dict[str, Region] = {}
        self.programming: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, np.ndarray] = {}
        self.probes: dict[str, np.ndarray] = {}
        self.last_probe: dict[str, np.ndarray] = {}  # the fingerprint (see fingerprint())
        self.fixed_placement: dict[str, Region] | None = None  # a resumed run's record
        self._health: tuple[HealthReport | None, str] | None = None

    @classmethod
    def open(
        cls,
        device: DeviceSection,
        run_id: str,
        seed: int,
        restore: Path | None = None,
        session_file: Path | None = None,
        **kwargs: Any,
    ) -> ChipBackend:
        """Open ``device.url`` (restoring a chip snapshot when given; being the same
        server client again with the token in ``session_file`` when it exists)."""
        url = device.url
        if (
            session_file is not None
            and session_file.is_file()
            and url.split(":")[0]
            in (
                "tcp",
                "ipc",
                "inproc",
            )
        ):
            url = f"{url}{'&' if '?' in url else '?'}session_file={session_file}"
        return cls(open_device(url, restore), device.url, device, run_id, seed, **kwargs)

    # ------------------------------------------------------------ placement
    @property
    def health(self) -> tuple[HealthReport | None, str]:
        """The health report placement avoids (``device.health``) and where it came from."""
        if self._health is None:
            self._health = self._load_health()
        return self._health

    def _load_health(self) -> tuple[HealthReport | None, str]:
        src = self.dev.health
        if src == "none":
            return None, "none"
        if src == "device":
            try:
                raw = self.driver.health_report()
            except DriverError as exc:  # e.g. a server older than the `health` verb
                log.warning("health_report_unavailable", device=self.url, error=str(exc))
                return None, f"device (unavailable: {exc})"
            if raw is None:
                return None, "device (none kept)"
            try:
                report = HealthReport.model_validate(raw)
            except ValidationError as exc:  # an older or foreign report: do not block runs
                log.warning("health_report_unreadable", error=str(exc).splitlines()[0])
                return None, "device (unreadable report ignored)"
            return self._check_health(report), "device"
        path = Path(src)
        try:
            report = HealthReport.model_validate(json.loads(path.read_text()))
        except OSError as exc:
            raise ConfigError(f"device.health={src}: cannot read the report: {exc}") from None
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"device.health={src}: not a hil health report: {first}") from None
        return self._check_health(report), str(path)

    def _check_health(self, report: HealthReport) -> HealthReport:
        info = self.driver.info()
        if (report.driver, report.preset) != (info.driver, info.preset):
            log.warning(
                "health_report_of_another_device",
                report=f"{report.driver}/{report.preset}",
                device=f"{info.driver}/{info.preset}",
            )
        for h in report.chips:
            if h.chip >= info.chips or h.region.row1 > info.rows or h.region.col1 > info.cols:
                raise ConfigError(
                    f"the health report ({report.device}) scanned {h.region}, outside this "
                    f"device's {info.chips} chips of {info.rows}x{info.cols}"
                )
        return report

    def place(self, shapes: dict[str, tuple[int, int]]) -> dict[str, Region]:
        """Reserve regions for ``shapes`` (once); raises :class:`PlacementError` (does not
        fit) or :class:`HilError` (held, with ``wait=False``) before anything is written."""
        if self.placement:
            return self.placement
        info = self.driver.info()
        fixed = self.fixed_placement if self.fixed_placement is not None else self.fixed
        if fixed:
            got = {k: r.shape for k, r in fixed.items()}
            if got != dict(shapes):
                raise PlacementError(
                    f"the run's recorded placement {got} does not hold this network {shapes}"
                )
        else:
            # the device side avoids the defects of the report it keeps (device.health =
            # "device", the default); a report from a file it does not know: ask for the
            # regions that avoid its defects
            report, source = self.health
            defects = None if report is None else report.defects()
            if source != "device" and defects and any(defects.values()):
                fixed = place(shapes, info.chips, info.rows, info.cols, defects)
        asked = wants(
            shapes,
            chips=info.chips,
            rows=info.rows,
            cols=info.cols,
            chip=self.dev.chip,
            region=self.dev.region,
            fixed=fixed,
        )
        if self.whole_chips:
            asked = [
                *(w.model_copy(update={"chip": None}) for w in asked),
                *(
                    MatrixWant(
                        name=f"chip{c}", rows=info.rows, cols=info.cols, chip=c, whole_chip=True
                    )
                    for c in range(info.chips)
                ),
            ]
        try:
            res = self.driver.reserve(
                self.run_id, asked, seed=self.seed, wait=self.wait, on_wait=self.on_wait
            )
        except LeaseConflict as exc:
            raise HilError(f"{self.url}: {exc}") from None
        except InvalidRequest as exc:
            raise PlacementError(f"{self.url}: {exc}") from None
        except DriverError as exc:
            raise HilError(f"cannot reserve chip regions at {self.url}: {exc}") from exc
        self.reservation_id = res.reservation_id
        self.placement = {k: res.regions[k] for k in shapes}
        return self.placement

    def release(self) -> None:
        """Release the run's reservation (the run is finished)."""
        if self.reservation_id is not None:
            self.driver.release_reservation(self.run_id)
            self.reservation_id = None

    def reservation_record(self) -> dict[str, Any]:
        """``reservation.json``: the run's reservation on the device."""
        return {
            "url": self.url,
            "run_id": self.run_id,
            "reservation_id": self.reservation_id,
            "regions": {k: r.model_dump() for k, r in self.placement.items()},
        }

    def build_network(
        self,
        layers: Sequence[SNUConfig],
        readout: ReadoutConfig,
        rng: np.random.Generator,
        *,
        w_scale: float = 1.0,
        program: bool = True,
    ) -> Network:
        """Place, map and (if ``program``) program-and-verify every matrix of the network."""
        self.placement = self.place(network_shapes(layers, readout))
        health = self.health_record()
        log.info(
            "placed",
            regions={k: str(r) for k, r in self.placement.items()},
            health=health["source"],
            avoided={
                c: {k: len(v) for k, v in a.items()} for c, a in health.get("avoided", {}).items()
            },
            bad_cells_inside={k: len(v) for k, v in health.get("bad_cells_inside", {}).items()},
        )
        info, dev = self.driver.info(), self.dev
        assert info.g_net_max_us is not None  # DeviceInfo fills in its default
        g_net_max_us = info.g_net_max_us
        update_cfg = UpdateConfig(
            max_pulses_per_update=dev.max_pulses_per_update,
            refresh=RefreshConfig(hi=dev.refresh_hi, lo=dev.refresh_lo),
            program_tolerance_us=program_tolerance(dev.program_tolerance_us, info),
            program_max_iterations=dev.program_max_iterations,
        )

        def factory(name: str, w: np.ndarray, trainable: bool) -> MatrixOp:
            w_max = dev.w_max.get(name) or dev.headroom * float(np.max(np.abs(w)))
            mapping = CellMapping(w_max, dev.g_net_fraction * g_net_max_us)
            m = DeviceMatrix(
                name,
                self.driver,
                self.placement[name],
                mapping,
                trainable=trainable,
                ids=self.ids,
                update_cfg=update_cfg,
            )
            self.matrices[name] = m
            self.targets[name] = np.asarray(w, dtype=np.float64)
            if program:
                self.programming[name] = m.program(w)
                log.info(
                    "programmed",
                    matrix=name,
                    region=str(self.placement[name]),
                    **self.programming[name],
                )
            return m

        net = build_network(layers, readout, rng, factory, w_scale=w_scale)
        probe_rng = np.random.default_rng([self.seed, 2])
        self.probes = {
            name: probe_rng.choice([-1.0, 1.0], size=(PROBE_ROWS, m.shape[0])).astype(np.float32)
            for name, m in self.matrices.items()
        }
        if program:  # the first fingerprint: the freshly programmed weights
            self.last_probe = self._probe_now()
        return net

    def placement_record(self) -> dict[str, Any]:
        """``placement.json``: regions, the program-and-verify report per matrix, and the
        health report's defects that placement avoided (and the bad cells it could not)."""
        return {
            "placement": {k: str(r) for k, r in self.placement.items()},
            "regions": {k: r.model_dump() for k, r in self.placement.items()},
            "programming": self.programming,
            "health": self.health_record(),
        }

    def health_record(self) -> dict[str, Any]:
        """What the health report marked bad on the chips used, what placement avoided, and
        the bad cells inside the placed regions (per matrix)."""
        report, source = self.health
        out: dict[str, Any] = {"source": source}
        if report is None:
            return out
        defects = report.defects()
        chips = sorted({r.chip for r in self.placement.values()})
        avoided: dict[str, Any] = {}
        inside: dict[str, list[tuple[int, int]]] = {}
        for chip in chips:
            d = defects.get(chip)
            if d is None:
                continue
            regions = {k: r for k, r in self.placement.items() if r.chip == chip}
            held = {k: d.cells_in(r) for k, r in regions.items()}
            inside.update({k: v for k, v in held.items() if v})
            taken = {c for v in held.values() for c in v}
            avoided[str(chip)] = {
                "bad_rows": sorted(d.rows),
                "bad_cols": sorted(d.cols),
                "bad_cells": sorted(d.cells - taken),
            }
        out.update(
            created=report.created,
            device=report.device,
            scanned=[
                f"chip {h.chip} {h.region} at {h.scanned or report.created}" for h in report.chips
            ],
            avoided=avoided,
            bad_cells_inside=inside,
        )
        return out

    def read_conductances(self) -> dict[str, np.ndarray]:
        """Every matrix's device conductances (one read request per matrix)."""
        return {k: self.driver.read_conductances(m.region) for k, m in self.matrices.items()}

    def read_weights(self) -> dict[str, np.ndarray]:
        """Every matrix's weights read back from the chips (one read request per matrix)."""
        return {k: m.read_weights() for k, m in self.matrices.items()}

    # ------------------------------------------------------------ training
    def after_batch(self, batches_done: int) -> None:
        dev = self.dev
        if dev.host_time_per_batch_s > 0:
            self.let_time_pass(dev.host_time_per_batch_s, "advance")
        if dev.refresh_every and batches_done % dev.refresh_every == 0:
            for m in self.matrices.values():
                if m.trainable:
                    m.refresh()

    def let_time_pass(self, dt_s: float, tag: str) -> bool:
        """Advance the device clock by ``dt_s`` (devices with a clock); True if it moved."""
        if dt_s <= 0 or not self.driver.info().has(CAP_TIME):
            return False
        self.driver.advance(dt_s, request_id=self.ids.next(tag))
        return True

    # ------------------------------------------------------------ drift compensation
    def drift_reference(self) -> DriftReference | None:
        """Probe outputs of every matrix now: the compensation reference."""
        return {n: m.calibrate(self.probes[n]) for n, m in self.matrices.items()}

    @contextmanager
    def compensate(self, refs: DriftReference | None, mode: str) -> Iterator[None]:
        """Within the block, outputs are compensated against ``refs`` with ``mode``."""
        try:
            if refs:
                for n, m in self.matrices.items():
                    m.compensate(self.probes[n], refs[n], mode)
            yield
        finally:
            for m in self.matrices.values():
                m.compensation = 1.0

    # ------------------------------------------------------------ metrics
    def link_bytes(self) -> tuple[int, int, int | None] | None:
        """The driver's link counters (``Driver.link_bytes``): None for an in-process device."""
        link = self.driver.link_bytes()
        return None if link is None else (link.sent, link.received, link.baud)

    def epoch_metrics(self) -> dict[str, Any]:
        """This epoch's device counters (then reset); ends with one read per trainable
        matrix (saturated cells), the device clock and one probe MVM per matrix (the
        fingerprint of :meth:`fingerprint`)."""
        mats = self.matrices.values()
        out: dict[str, Any] = {
            "pulses": sum(m.stats.pulses for m in mats),
            "pulse_requests": sum(m.stats.requests for m in mats),
            "refreshes": sum(m.stats.refreshes for m in mats),
            "clipped_updates": sum(m.stats.clipped for m in mats),
            "mvm_requests": sum(m.stats.mvm_requests for m in mats),
            "mvm_rows": sum(m.stats.mvm_rows for m in mats),
            "mvm_rows_skipped": sum(m.stats.mvm_rows_skipped for m in mats),
            "saturated_cells": sum(m.saturated_cells() for m in mats if m.trainable),
        }
        if self.driver.info().has(CAP_TIME):
            out["device_time_s"] = self.driver.time_s()
        for m in mats:
            m.stats.reset()
        self.last_probe = self._probe_now()  # this epoch's fingerprint
        return out

    # ------------------------------------------------------------ checkpoints
    @property
    def device_params(self) -> frozenset[str]:
        return frozenset(self.matrices)

    def state(self) -> dict[str, np.ndarray]:
        """``{matrix}:{chi,counter,stats}`` of every device matrix."""
        return {f"{n}:{k}": v for n, m in self.matrices.items() for k, v in m.state().items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.last_probe = {
            n: arrays[f"{n}:{FINGERPRINT}"] for n in self.matrices if f"{n}:{FINGERPRINT}" in arrays
        }
        for name, m in self.matrices.items():
            m.load_state(
                {
                    k.split(":", 1)[1]: v
                    for k, v in arrays.items()
                    if k.startswith(f"{name}:") and not k.endswith(FINGERPRINT)
                }
            )

    def _probe_now(self) -> dict[str, np.ndarray]:
        """The fixed probe's raw outputs (µS) of every matrix now (one MVM each)."""
        return {
            n: np.asarray(self.driver.mvm(m.region, self.probes[n]), np.float64)
            for n, m in self.matrices.items()
        }

    def fingerprint(self) -> dict[str, np.ndarray]:
        """The latest probe read of every matrix (taken after programming and at every
        epoch end, so in the run's own flow: no request of its own, and the run's
        results do not depend on how often it checkpoints), kept with every checkpoint
        so a resume on a non-volatile chip can check the chip still holds the weights
        (:meth:`check_fingerprint`)."""
        return {f"{n}:{FINGERPRINT}": y for n, y in self.last_probe.items()}

    def check_fingerprint(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        """Probe every matrix again and compare with the checkpoint's fingerprint: the
        outputs must correlate (Pearson r ≥ :data:`FINGERPRINT_MIN_R`; drift scales them
        and noise blurs them, neither decorrelates them). Raises :class:`HilError` naming
        the matrix otherwise: the cells were reset or written by someone else."""
        out: dict[str, float] = {}
        for n, m in self.matrices.items():
            ref = arrays.get(f"{n}:{FINGERPRINT}")
            if ref is None:
                continue  # a checkpoint from before fingerprints
            now = np.asarray(self.driver.mvm(m.region, self.probes[n]), np.float64).ravel()
            ref = np.asarray(ref, np.float64).ravel()
            r = (
                float(np.corrcoef(ref, now)[0, 1])
                if ref.std() > 0 and now.std() > 0
                else (1.0 if np.array_equal(ref, now) else 0.0)
            )
            out[n] = r
            self.last_probe[n] = now.reshape(np.shape(arrays[f"{n}:{FINGERPRINT}"]))
            if not r >= FINGERPRINT_MIN_R:
                raise HilError(
                    f"the chip at {self.url} no longer holds this run's weights: matrix {n} "
                    f"at {m.region} reads back with correlation {r:.2f} to the read taken at "
                    f"the checkpoint (at least {FINGERPRINT_MIN_R} expected); its cells were "
                    f"reset or written by another run (did its reservation lapse?). Refusing "
                    f"to resume; start a new run"
                )
        return out

    @property
    def can_snapshot(self) -> bool:
        return self.driver.info().has(CAP_SNAPSHOT)

    def snapshot(self, dest: Path) -> str | None:
        """Save the chips' complete state to ``dest`` (``snapshot`` capability); its name."""
        if not self.can_snapshot:
            return None
        self.driver.snapshot(dest)  # type: ignore[attr-defined]
        return dest.name

    def identity(self) -> dict[str, Any] | None:
        return self.driver.info().model_dump(mode="json")

    @property
    def request_seq(self) -> int:
        return self.ids.seq

    def resume_requests(self, attempt: int, seq: int) -> None:
        self.ids.attempt, self.ids.seq = attempt, seq

    def time_s(self) -> float:
        return self.driver.time_s()

    def close(self) -> None:
        self.driver.close()
