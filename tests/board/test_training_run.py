"""A training run through the real board driver, over the emulator's serial link.

The same tiny HIL run over a clean pty and over a pty that corrupts, drops and delays bytes
must give identical metrics: the link's retries never lose or double a pulse, so the
trainer cannot tell the difference. A training run sends frames of kilobytes (MVM batches,
whole-region pulse maps), so the fault rate here is 5e-5 per byte with 4 KiB payloads
(≈ 18 % of full frames need a retry); at the 1 % of the link tests a 4 KiB frame would never
get through.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hil.trainer.runs import RunDir, without_timing
from hil.trainer.session import TrainRequest, train

SMALL = (
    "network.hidden=[24]",
    "train.batch_size=4",
    "train.max_train_sequences=8",
    "train.max_eval_sequences=4",
    "optim.lr=0.02",
)


@pytest.mark.slow
def test_training_over_a_faulty_link_equals_a_clean_link(
    tmp_path: Path, emulator: Callable[..., str], jsb_path: Path
) -> None:
    data = f"data.path={jsb_path}"
    runs, retransmits = {}, {}
    for name, rate in (("clean", 0.0), ("faulty", 5e-5)):
        port = emulator(seed=5, fault_rate=rate)
        url = (
            f"board://?port={port}&retries=40&timeout_s=0.5&max_payload_bytes=4096"
            "&adaptive_payload=false"  # the same tiling on both lines: bit-identical runs
        )
        with capture_logs() as logs:
            s = train(
                TrainRequest(
                    device=url,
                    run_dir=tmp_path / name,
                    epochs=1,
                    overrides=(*SMALL, data),
                    progress=False,
                )
            )
        assert s["pulses"] > 0
        retransmits[name] = sum(e["event"] == "board_retransmit" for e in logs)
        runs[name] = without_timing(RunDir.open(tmp_path / name).metrics())
    assert retransmits["clean"] == 0 and retransmits["faulty"] > 0  # the faults bit
    assert runs["faulty"] == runs["clean"]


@pytest.mark.slow
def test_a_board_run_records_its_link_bytes_and_serial_time(
    tmp_path: Path, emulator: Callable[..., str], jsb_path: Path
) -> None:
    """metrics.jsonl and the report carry the bytes each epoch moved over the serial link
    and what they cost at the board's baud rate (8N1)."""
    data = f"data.path={jsb_path}"
    url = f"board://?port={emulator(seed=5)}&baudrate=115200"
    train(
        TrainRequest(
            device=url, run_dir=tmp_path / "r", epochs=2, overrides=(*SMALL, data), progress=False
        )
    )
    run = RunDir.open(tmp_path / "r")
    for m in run.metrics():
        assert m["link_bytes"] == m["link_bytes_sent"] + m["link_bytes_received"] > 1000
        assert m["link_s_est"] == pytest.approx(10.0 * m["link_bytes"] / 115200)
        assert m["train_s"] + m["eval_s"] <= m["epoch_s"]
    page = run.report_file.read_text()
    assert "link_s_est" in page and "eval_s" in page
