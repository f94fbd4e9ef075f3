"""The serial link against the real emulator process on a pty: faults, loss, safety, firmware.

Everything here goes through a real pseudo-terminal and the real driver code path.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from structlog.testing import capture_logs

from drivers import DeviceTimeout, LimitExceeded, VersionMismatch
from drivers.board import open_board
from drivers.board.client import BoardClient
from drivers.board.errors import FirmwareMismatch, SafetyLimitError
from drivers.board.serial_link import SerialLink
from protocols import Region


def _status(port: str) -> dict:
    link = SerialLink(port, timeout_s=0.5, retries=2)
    try:
        return BoardClient(link).status()
    finally:
        link.close()


def _training_like_run(url: str) -> dict:
    """Program, pulse, MVM and read on both chips; returns everything observable."""
    rng = np.random.default_rng(5)
    r0, r1 = Region(0, 0, 6, 0, 6), Region(1, 2, 8, 3, 9)
    out: dict = {"y": [], "reports": []}
    with open_board(url) as d:
        out["reports"].append(
            d.program(r0, rng.uniform(-3, 3, (6, 6)), tolerance_us=0.5, max_iterations=8)
        )
        x = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
        for _ in range(4):
            counts = rng.integers(0, 4, (6, 6, 4))
            mask = rng.random((6, 6, 4)) < 0.1
            out["reports"].append(d.apply_pulses(r0, counts, mask))
            out["y"].append(d.mvm(r0, x))
        out["reports"].append(d.apply_pulses(r1, rng.integers(0, 3, (6, 6, 4))))
        sparse = np.where(rng.random((6, 6, 4)) < 0.05, 2, 0)  # travels as PULSE_SPARSE
        out["reports"].append(d.apply_pulses(r1, sparse, rng.random((6, 6, 4)) < 0.02))
        out["g0"] = d.read_conductances(r0)
        out["g1"] = d.read_conductances(r1)
        out["status"] = d.client.status()
        out["stats"] = d.link.stats
    return out


@pytest.mark.slow
def test_one_percent_byte_faults_give_the_clean_final_state(emulator) -> None:
    link = "max_payload_bytes=64"
    clean_url = f"board://?port={emulator(seed=7)}&{link}&timeout_s=2&retries=2"
    clean = _training_like_run(clean_url)
    noisy_port = emulator(seed=7, fault_rate=0.01)
    noisy = _training_like_run(f"board://?port={noisy_port}&{link}&timeout_s=0.1&retries=30")

    assert noisy["stats"].retransmissions > 0, "the faulty link should have needed retries"
    assert clean["stats"].retransmissions == 0
    # No pulse lost or doubled: the same commands executed once each, same final state.
    assert noisy["status"]["executed"] == clean["status"]["executed"]
    assert noisy["status"]["time_s"] == clean["status"]["time_s"]
    np.testing.assert_array_equal(noisy["g0"], clean["g0"])
    np.testing.assert_array_equal(noisy["g1"], clean["g1"])
    for a, b in zip(noisy["y"], clean["y"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert noisy["reports"] == clean["reports"]


def test_total_loss_raises_device_timeout_after_the_retries(emulator) -> None:
    port = emulator(fault_rate=1.0, faults="drop")
    link = SerialLink(port, timeout_s=0.2, retries=2)
    t0 = time.monotonic()
    try:
        with capture_logs() as logs, pytest.raises(DeviceTimeout, match=r"after 3 attempts") as exc:
            BoardClient(link).identify()
    finally:
        link.close()
    assert link.stats.frames_sent == 3 and link.stats.retransmissions == 2
    # each retry of a silent board is logged as it happens (#13)
    assert [r["msg"] for r in logs if r["event"] == "device_retry"] == [
        "device unreachable, retrying 2/3",
        "device unreachable, retrying 3/3",
    ]
    assert 0.5 < time.monotonic() - t0 < 5.0
    assert "set-up file" in str(exc.value)
    # Through the public entry point the same clear error surfaces.
    with pytest.raises(DeviceTimeout, match="identify"):
        open_board(f"board://?port={port}&timeout_s=0.1&retries=1")


def test_out_of_limit_requests_write_nothing(emulator, setup_file) -> None:
    port = emulator()
    path = setup_file(
        port, pulse={"limits": {"max_pulses_per_device": 20, "max_pulses_per_request": 100}}
    )
    with open_board(f"board://{path}") as d:
        region = Region(0, 0, 4, 0, 4)
        d.apply_pulses(region, np.ones((4, 4, 4), np.int32))  # within limits: sent
        executed = d.client.status()["executed"]
        before = d.link.stats.bytes_written
        gen_writes = list(d.instruments.pulse_generator.writes)

        with pytest.raises(LimitExceeded, match="21 pulses on one device"):
            d.apply_pulses(region, np.full((4, 4, 4), 21, np.int32))
        with pytest.raises(SafetyLimitError, match="max_pulses_per_request=100"):
            d.apply_pulses(region, np.full((4, 4, 4), 2, np.int32))  # 128 > 100
        with pytest.raises(SafetyLimitError, match="amplitude_v=3.5"):
            d.set_pulse_shape(3.5, 50.0)
        with pytest.raises(SafetyLimitError, match="width_ns=5000"):
            d.set_pulse_shape(1.0, 5000.0)

        assert d.link.stats.bytes_written == before, "a refused request reached the link"
        assert d.instruments.pulse_generator.writes == gen_writes
        assert d.client.status()["executed"] == executed + 1  # only this STATUS ran


def test_out_of_limit_pulse_shape_in_the_setup_opens_nothing(emulator, setup_file) -> None:
    port = emulator()
    path = setup_file(port, pulse={"amplitude_v": 2.5})
    with pytest.raises(SafetyLimitError, match=r"amplitude_v=2.5 is outside .*\[0.5, 2.0\]"):
        open_board(f"board://{path}")
    assert _status(port)["rx_frames"] == 1  # the board never heard from the driver


def test_unknown_firmware_is_refused(emulator, setup_file) -> None:
    port = emulator(firmware="9.9")
    with pytest.raises(
        FirmwareMismatch, match=r"firmware 9\.9.*accepts only 1\.2, 1\.3, 1\.4"
    ) as exc:
        open_board(f"board://{setup_file(port)}")
    assert isinstance(exc.value, VersionMismatch)
    status = _status(port)
    # Only IDENTIFY ran before this STATUS (which counts itself in rx_frames only).
    assert status["rx_frames"] == 2 and status["executed"] == 1


def test_a_restarted_board_keeps_its_conductances(emulator, tmp_path) -> None:
    """PCM is non-volatile: the emulator saves its chips on SIGTERM and reloads them."""
    state = tmp_path / "board"
    region = Region(1, 0, 3, 0, 3)
    counts = np.arange(36, dtype=np.int32).reshape(3, 3, 4) % 5
    port = emulator(preset="ideal", state_dir=state)
    with open_board(f"board://?port={port}") as d:
        d.reset(region)
        d.apply_pulses(region, counts)
        before = d.read_conductances(region)
    emulator.stop(port)
    assert (state / "chip1.npz").is_file()
    with open_board(f"board://?port={emulator(preset='ideal', state_dir=state)}") as d:
        after = d.read_conductances(region)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(after, 0.1 * counts, atol=2e-3)


def test_driver_recovers_from_a_board_reset_between_commands(emulator, tmp_path) -> None:
    """SIGHUP resets the emulated microcontroller (session, replies, selection lost; PCM
    kept). The next pulse is refused unexecuted, so the driver re-identifies and resends."""
    port = emulator(preset="ideal")
    proc = next(e for e in emulator.started if e.address == port).proc
    region = Region(1, 0, 2, 0, 2)
    counts = np.ones((2, 2, 4), np.int32)
    with open_board(f"board://?port={port}") as d:
        d.reset(region)
        d.apply_pulses(region, counts)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        d.apply_pulses(region, 2 * counts)
        np.testing.assert_allclose(d.read_conductances(region), 0.3, atol=2e-3)
        assert d.client.status()["executed"] >= 2
