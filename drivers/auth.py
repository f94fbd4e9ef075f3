"""CURVE keys for the device server, built on ``zmq.auth`` (no hand-rolled crypto).

- :func:`generate_keypair` writes ``NAME.key`` (public) and ``NAME.key_secret`` with
  ``zmq.auth.create_certificates``.
- :class:`KeyRing` is the server's credentials provider for
  ``ThreadAuthenticator.configure_curve_callback``: a client gets in only if its public key
  is one of the ``*.key`` files of the ``--auth-keys`` directory; every decision is logged
  with the client's Z85 public key.
"""

from __future__ import annotations

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
    """Allows exactly the public keys found in ``auth_keys_dir/*.key``."""

    def __init__(self, auth_keys_dir: Path) -> None:
        if not Path(auth_keys_dir).is_dir():
            raise InvalidRequest(f"--auth-keys {auth_keys_dir} is not a directory of *.key files")
        self.allowed = set(zmq.auth.load_certificates(str(auth_keys_dir)))
        if not self.allowed:
            raise InvalidRequest(
                f"no public keys (*.key) in {auth_keys_dir}; create some with "
                f"'hil keys generate {auth_keys_dir} --name NAME'"
            )

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth credentials-provider hook: True lets the client in."""
        ok = key in self.allowed
        z85 = _z85(key)
        if ok:
            log.info("client_authenticated", client_key=z85)
        else:
            log.warning("client_rejected", client_key=z85, reason="public key not in --auth-keys")
        return ok
