"""Drift evaluation of a finished run: the trained chip read again hours and days later.

PCM conductances drift, ``G(t) = G_prog·((t − t_prog + t0)/t0)^(−ν)`` with a per-device ν
(pcm-physics §4), so a network trained on chips degrades after training ends. For a run
on a snapshot-capable device (the in-process simulator), this restores the chips as they
were at the run's last checkpoint, then for each mode (``none``, ``global``,
``per_column``) takes the compensation reference with a fixed probe input right away,
lets each delay pass on the device clock, compensates and scores the valid and test
splits. Each mode starts from the same restored chips, so the modes are compared on
identical devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hil.errors import HilError
from hil.trainer import checkpoint as ckpt
from hil.trainer.chip_backend import ChipBackend
from hil.trainer.config import RunConfig
from hil.trainer.runs import RunDir
from hil.trainer.session import build_trainer, check_data, load_task, recorded_regions
from protocols.models import CAP_TIME

MODES = ("none", "global", "per_column")


def drift_evaluation(
    run_dir: Path, delays_s: Sequence[float], modes: Sequence[str] = MODES, *, wait: bool = True
) -> dict[str, Any]:
    """Scores per compensation mode and delay; also written to ``RUN/drift_eval.json``.

    Drift evaluation moves the device clock, so it holds every chip whole (a reservation
    through the driver contract) and the run's matrices at their recorded regions."""
    run = RunDir.open(run_dir)
    cfg = RunConfig.model_validate(run.read_json("config.json"))
    ck, _ = ckpt.load(run.checkpoint_dir)
    if not ck.chip_snapshot:
        raise HilError(
            f"{run_dir} has no chip snapshot: drift evaluation needs a run on a "
            f"snapshot-capable device (the in-process simulator, sim://)"
        )
    if any(d < 0 for d in delays_s):
        raise HilError(f"delays must be >= 0 s, got {list(delays_s)}")
    bad = set(modes) - set(MODES)
    if bad:
        raise HilError(f"unknown compensation mode(s) {sorted(bad)}; expected {MODES}")
    task = load_task(cfg, progress=False)
    check_data(run, task, new=False)
    out: dict[str, Any] = {
        "run": str(run.path),
        "epoch": ck.epoch,
        "metric": cfg.task_spec.metric,
        "delays_s": sorted(delays_s),
        "modes": {},
    }
    for mode in modes:
        backend = ChipBackend.open(
            cfg.device,
            f"{run.path.name}-drift-{mode}",
            cfg.train.seed,
            restore=run.checkpoint_dir / ck.chip_snapshot,
            wait=wait,
            whole_chips=True,
            fixed=recorded_regions(run),
        )
        try:
            if not backend.driver.info().has(CAP_TIME):
                raise HilError(f"{cfg.device.url} has no device clock to advance")
            trainer = build_trainer(cfg, task, backend, program=False)
            trainer.load_weights(ck)
            t_end = backend.time_s()
            refs = backend.drift_reference() if mode != "none" else None
            rows = []
            for delay in sorted(delays_s):
                backend.let_time_pass(t_end + delay - backend.time_s(), "drift")
                rows.append({"delay_s": delay, **trainer.evaluator.scores(refs, mode)})
            out["modes"][mode] = rows
            backend.release()
        finally:
            backend.close()
    run.write_json("drift_eval.json", out)
    return out
