"""Driver for the real two-chip PCM board: wire protocol, serial link, VISA, emulator.

Public API:

- :func:`open_board` — ``board://SETUP.yaml[?port=…&retries=…]`` -> :class:`HardwareDriver`
  (what ``drivers.open_driver`` calls for ``board://`` URLs);
- :class:`HardwareDriver`, :class:`LabSetup`;
- the emulator: :func:`drivers.board.emulator.run` with :func:`make_engine`.

Layers: :mod:`.framing` (COBS + CRC-32) and :mod:`.protocol` (the command table) are pure;
:mod:`.serial_link` is the only module importing pyserial, :mod:`.visa` the only one
importing pyvisa. The wire format is specified in ``docs/board-protocol.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from drivers.board.errors import SetupError
from drivers.board.setup import LabSetup

if TYPE_CHECKING:
    from drivers.board.engine import BoardEngine
    from drivers.board.hardware import HardwareDriver


def _flag(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if text.lower() not in value:
        raise ValueError(text)
    return value[text.lower()]


LINK_KEYS: dict[str, Callable[[str], Any]] = {
    "port": str,
    "baudrate": int,
    "timeout_s": float,
    "retries": int,
    "max_payload_bytes": int,
    "adaptive_payload": _flag,
    "reconnect_s": float,
}


VISA_KEYS = {"visa_backend": "backend"}


def parse_board_url(url: str) -> LabSetup:
    """The lab set-up a ``board://`` URL names.

    ``board:///abs/lab.yaml`` or ``board://relative/lab.yaml`` reads that file; the query
    overrides link fields (``port``, ``baudrate``, ``timeout_s``, ``retries``,
    ``max_payload_bytes``, ``adaptive_payload``, ``reconnect_s``) and ``visa_backend``. ``board://?port=socket://127.0.0.1:5000``
    uses the defaults of every other field.
    """
    parts = urlsplit(url)
    if parts.scheme != "board":
        raise SetupError(f"{url!r} is not a board:// URL (board://PATH/TO/lab.yaml)")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    link: dict[str, Any] = {}
    visa: dict[str, Any] = {}
    for key, value in query.items():
        if key in LINK_KEYS:
            try:
                link[key] = LINK_KEYS[key](value)
            except ValueError:
                raise SetupError(f"board URL option {key}={value!r} is not a valid value") from None
        elif key in VISA_KEYS:
            visa[VISA_KEYS[key]] = value
        else:
            raise SetupError(
                f"unknown board URL option {key!r}; known: {', '.join([*LINK_KEYS, *VISA_KEYS])}"
            )
    overrides = {k: v for k, v in (("link", link), ("visa", visa)) if v}
    path = parts.netloc + parts.path
    if path:
        return LabSetup.load(path, **overrides)
    if "port" not in link:
        raise SetupError(
            f"{url!r} names neither a set-up file nor ?port=; see docs/board-protocol.md"
        )
    return LabSetup.from_dict({}, source=url, **overrides)


def open_board(url: str) -> HardwareDriver:
    """Open the board a ``board://`` URL describes (identifies it; see HardwareDriver.open)."""
    from drivers.board.hardware import HardwareDriver

    return HardwareDriver.open(parse_board_url(url))


def make_engine(
    preset: str = "hermes",
    seed: int = 0,
    *,
    firmware: tuple[int, int] | None = None,
    board_id: int | None = None,
    clock: str = "virtual",
    state_dir: str | Path | None = None,
) -> BoardEngine:
    """An emulated board (firmware engine over two simulator chips); with ``state_dir``
    the chips are restored from it (see :func:`drivers.board.chips.make_chips`), and so are
    the session and reply memory (:meth:`BoardEngine.save_memory`)."""
    from dataclasses import replace

    from drivers.board.chips import make_chips
    from drivers.board.engine import BoardEngine, BoardSpec
    from simulator import SimulatorError

    spec = BoardSpec()
    if firmware is not None:
        spec = replace(spec, firmware=firmware)
    if board_id is not None:
        spec = replace(spec, board_id=board_id)
    try:
        chips = make_chips(
            preset, seed, spec.chip_ids, clock, None if state_dir is None else Path(state_dir)
        )
    except SimulatorError as exc:
        raise SetupError(f"cannot build the emulated board: {exc}") from exc
    engine = BoardEngine(chips, spec)
    if state_dir is not None:
        engine.load_memory(Path(state_dir))
    return engine


__all__ = ["LabSetup", "make_engine", "open_board", "parse_board_url"]
