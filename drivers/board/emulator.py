"""The board emulator process: a pty or a TCP port speaking the board's wire protocol.

``hil board-emulator --pty`` opens a pseudo-terminal (``os.openpty``), puts it in raw mode
and prints the slave path (e.g. ``/dev/pts/7``), which the host opens exactly like
``/dev/ttyUSB0``. ``--tcp PORT`` listens on 127.0.0.1 and prints ``socket://127.0.0.1:PORT``
for pyserial's socket transport (PORT 0 picks a free port). The first line on stdout is
always that address; logs go to stderr.

Behind the link sits :class:`~drivers.board.engine.BoardEngine` over two simulator chips.
With ``fault_rate > 0`` a :class:`FaultInjector` damages the link in both directions: each
byte is, with probability ``fault_rate``, corrupted (XOR with a random non-zero byte),
dropped, or delayed (the rest of the chunk is held back ``delay_s``), the kind drawn
uniformly from ``faults``.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from drivers.board.chips import save_chips
from drivers.board.engine import BoardEngine

log = structlog.get_logger(__name__)

FAULT_KINDS = ("corrupt", "drop", "delay")
SEND_TIMEOUT_S = 5.0
"""Longest the emulator waits for the host to take a reply's bytes."""


@dataclass
class FaultInjector:
    """Byte-level link faults, seeded. ``rate`` is the probability per byte of a fault."""

    rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    delay_s: float = 0.002
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate} must be in [0, 1]")
        bad = set(self.faults) - set(FAULT_KINDS)
        if bad or not self.faults:
            raise ValueError(
                f"fault kinds {self.faults} must be a non-empty subset of {FAULT_KINDS}"
            )

    def apply(self, data: bytes) -> list[tuple[float, bytes]]:
        """Return ``(delay_before_s, chunk)`` pieces to send in order."""
        if self.rate == 0.0 or not data:
            return [(0.0, data)]
        buf = np.frombuffer(data, np.uint8).copy()
        hit = np.flatnonzero(self.rng.random(buf.size) < self.rate)
        kinds = self.rng.integers(0, len(self.faults), hit.size)
        keep = np.ones(buf.size, bool)
        cuts: list[int] = []
        for i, k in zip(hit, kinds, strict=True):
            kind = self.faults[k]
            self.counts[kind] += 1
            if kind == "corrupt":
                buf[i] ^= np.uint8(self.rng.integers(1, 256))
            elif kind == "drop":
                keep[i] = False
            else:
                cuts.append(int(i))
        pieces: list[tuple[float, bytes]] = []
        start = 0
        for cut in [*cuts, buf.size]:
            seg = buf[start:cut][keep[start:cut]].tobytes()
            pieces.append((self.delay_s if start else 0.0, seg))
            start = cut
        return pieces


class _Signals:
    """SIGTERM/SIGINT stop the emulator; SIGHUP resets the board's microcontroller
    (:meth:`BoardEngine.reboot`) before the next received bytes are processed."""

    def __init__(self) -> None:
        self.flag = False
        self.reboot = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, self._reboot)

    def _stop(self, *_: object) -> None:
        self.flag = True

    def _reboot(self, *_: object) -> None:
        self.reboot = True


def _pump(
    engine: BoardEngine,
    faults: FaultInjector,
    data: bytes,
    send: Callable[[bytes], None],
    signals: _Signals,
) -> None:
    if signals.reboot:
        signals.reboot = False
        engine.reboot()
    received = b"".join(chunk for _, chunk in faults.apply(data))
    for reply in engine.receive(received):
        for delay, chunk in faults.apply(reply):
            if delay:
                time.sleep(delay)
            if chunk:
                send(chunk)


def serve_pty(engine: BoardEngine, faults: FaultInjector, announce: Callable[[str], None]) -> None:
    """Serve on a new pseudo-terminal until SIGTERM/SIGINT."""
    master, slave = os.openpty()
    tty.setraw(slave)
    # Keep the slave open ourselves, so the host may close and reopen it without EIO here.
    announce(os.ttyname(slave))
    stop = _Signals()

    def send(chunk: bytes) -> None:
        # bounded: a host that stops reading costs this reply, never a hung emulator
        view, deadline = memoryview(chunk), time.monotonic() + SEND_TIMEOUT_S
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [master], [], left)[1]:
                log.warning("board_emulator_send_timeout", dropped_bytes=len(view))
                return
            view = view[os.write(master, view) :]

    try:
        while not stop.flag:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:
                    continue
                _pump(engine, faults, data, send, stop)
    finally:
        os.close(master)
        os.close(slave)


def serve_tcp(
    engine: BoardEngine,
    faults: FaultInjector,
    port: int,
    announce: Callable[[str], None],
    host: str = "127.0.0.1",
) -> None:
    """Serve one TCP client at a time on ``host:port`` until SIGTERM/SIGINT."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(1)
    announce(f"socket://{host}:{server.getsockname()[1]}")
    stop = _Signals()
    try:
        while not stop.flag:
            ready, _, _ = select.select([server], [], [], 0.1)
            if not ready:
                continue
            conn, peer = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(SEND_TIMEOUT_S)  # sendall to a host that stops reading: bounded
            log.info("board_emulator_client", peer=f"{peer[0]}:{peer[1]}")
            with conn:
                while not stop.flag:
                    ready, _, _ = select.select([conn], [], [], 0.1)
                    if not ready:
                        continue
                    try:
                        data = conn.recv(1 << 16)
                    except OSError:
                        break
                    if not data:
                        break
                    try:
                        _pump(engine, faults, data, conn.sendall, stop)
                    except OSError:
                        break
    finally:
        server.close()


def announce_stdout(address: str) -> None:
    print(address, flush=True)


def run(
    engine: BoardEngine,
    *,
    tcp_port: int | None,
    fault_rate: float = 0.0,
    faults: tuple[str, ...] = FAULT_KINDS,
    seed: int = 0,
    announce: Callable[[str], None] = announce_stdout,
    state_dir: Path | None = None,
) -> None:
    """Run the emulator in this process (blocks until SIGTERM/SIGINT); with ``state_dir``
    the chips, the session and the reply memory are saved there on shutdown (build the
    engine from the same directory to restore them: a power-cycled PCM board keeps its
    conductances, and its firmware its session and the replies of its last seqs, so a
    host that reconnects resolves a command in flight by sending it again)."""
    injector = FaultInjector(fault_rate, faults, np.random.default_rng([seed, 0xFA17]))
    log.info(
        "board_emulator_start",
        transport="tcp" if tcp_port is not None else "pty",
        fault_rate=fault_rate,
        faults=",".join(faults),
        pid=os.getpid(),
    )

    def ready(address: str) -> None:
        announce(address)
        log.info("board_emulator_ready", address=address, driver_url=f"board://?port={address}")

    try:
        if tcp_port is None:
            serve_pty(engine, injector, ready)
        else:
            serve_tcp(engine, injector, tcp_port, ready)
    finally:
        if state_dir is not None:
            save_chips(engine.chips, state_dir)
            engine.save_memory(state_dir)
            log.info("board_emulator_saved", state_dir=str(state_dir))
    log.info(
        "board_emulator_stop",
        rx_frames=engine.rx_frames,
        bad_frames=engine.bad_frames,
        replays=engine.replays,
        executed=engine.executed,
        **injector.counts,
    )
    sys.stdout.flush()
