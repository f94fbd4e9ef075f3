"""CURVE keys for the device server, built on ``zmq.auth`` (no hand-rolled crypto).

- :func:`generate_keypair` writes ``NAME.key`` (public) and ``NAME.key_secret`` with
  ``zmq.auth.create_certificates``.
- :class:`KeyRing` is the server's credentials provider for
  ``ThreadAuthenticator.configure_curve_callback``: a client gets in only if its public key
  is one of the ``*.key`` files of the ``--auth-keys`` directory (never the server's own);
  every decision is logged with the client's Z85 public key; the folder is re-read on
  SIGHUP and when it changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog
import zmq.auth
import zmq.utils.z85

from drivers import InvalidRequest

log = structlog.get_logger(__name__)


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``directory/NAME.key`` and ``directory/NAME.key_secret``; refuse to overwrite."""
    d = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise InvalidRequest(f"key name {name!r} must be a plain file stem like 'alice'")
    d.mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (d / f"{name}{suffix}").exists():
            raise InvalidRequest(f"{d / (name + suffix)} exists; pick another --name or delete it")
    public, secret = zmq.auth.create_certificates(str(d), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def _z85(key: bytes) -> str:
    """The Z85 text of a CURVE public key (the form of the key files and the docs):
    zmq.auth hands the callback the 40-character Z85 form; a raw key is 32 bytes."""
    if len(key) == 40:
        return key.decode("ascii", errors="replace")
    if len(key) == 32:
        return zmq.utils.z85.encode(key).decode()
    return key.hex()


class KeyRing:
    """Allows exactly the public keys found in ``auth_keys_dir/*.key``, less ``exclude``
    (the server's own public key: a ``server.key`` in the folder is no client).

    :meth:`reload` re-reads the folder (the server calls it on SIGHUP and when the
    folder's modification time changes), so keys added or removed while serving take
    effect for the next handshake; connected clients stay connected.
    """

    def __init__(self, auth_keys_dir: Path, exclude: Iterable[bytes] = ()) -> None:
        self.dir = Path(auth_keys_dir)
        if not self.dir.is_dir():
            raise InvalidRequest(f"--auth-keys {auth_keys_dir} is not a directory of *.key files")
        self.exclude = frozenset(exclude)
        self.allowed: frozenset[bytes] = self._load()
        if not self.allowed:
            raise InvalidRequest(
                f"no client public keys (*.key other than the server's own) in "
                f"{auth_keys_dir}; create some with 'hil keys generate {auth_keys_dir} "
                f"--name NAME'"
            )
        self._stamp = self.stamp()

    def stamp(self) -> int:
        """The folder's modification time (ns); it changes when a key file is added,
        removed or renamed."""
        try:
            return self.dir.stat().st_mtime_ns
        except OSError:
            return -1

    def _load(self) -> frozenset[bytes]:
        keys = set()
        for f in sorted(self.dir.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(f))
            except (OSError, ValueError) as exc:  # a half-written or foreign file
                log.warning("auth_key_unreadable", file=str(f), error=str(exc))
                continue
            if public in self.exclude:
                continue
            keys.add(public)
        return frozenset(keys)

    def reload(self) -> tuple[int, int]:
        """Re-read the folder; returns ``(added, removed)`` key counts."""
        self._stamp = self.stamp()
        fresh = self._load()
        added, removed = len(fresh - self.allowed), len(self.allowed - fresh)
        self.allowed = fresh  # one reference swap: the authenticator thread sees old or new
        log.info("auth_keys_reloaded", keys=len(fresh), added=added, removed=removed)
        return added, removed

    def changed(self) -> bool:
        """True when the folder changed since the last load."""
        return self.stamp() != self._stamp

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth credentials-provider hook: True lets the client in."""
        ok = key in self.allowed
        z85 = _z85(key)
        if ok:
            log.info("client_authenticated", client_key=z85)
        else:
            log.warning("client_rejected", client_key=z85, reason="public key not in --auth-keys")
        return ok
