"""Who a client is, for the device server: a CURVE key or a session token, never a routing id.

- With ``--auth-keys``, a client *is* the public key the ZAP handler authenticated (the
  ``User-Id`` metadata of its messages, the key's Z85 form), named ``key:NAME`` after its
  ``NAME.key`` file. Reusing another client's routing id gains nothing.
- Without it, ``hello`` hands out an unguessable session token (``secrets``, 192 bits);
  every later request carries it (field ``session``) and the server maps it to an
  identity ``NAME-N`` (the client's free-form name and a serial number). Only a digest
  (SHA-256) of each token is stored, in the state database, so sessions survive a
  restart with ``--state-dir``; a client resumes its session by sending its token in
  ``hello``. Identities are names, never credentials: error replies and ``status``
  show names only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path

import zmq.auth

from drivers import Unauthorised
from drivers.statedb import StateDB

MAX_SESSIONS = 100_000
"""Sessions kept; beyond it the oldest are forgotten (their clients must say hello anew)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "", name)[:32]


class Sessions:
    """Identities by CURVE key (``keys_dir`` given) or by session token."""

    def __init__(self, db: StateDB, keys_dir: Path | None = None) -> None:
        self.db = db
        self.keys_dir = keys_dir
        self._by_digest = dict(db.conn.execute("SELECT token_hash, identity FROM sessions"))
        self._serial = int(db.conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
        self._key_names: dict[str, str] = {}

    @property
    def curve(self) -> bool:
        return self.keys_dir is not None

    def key_identity(self, user_id: str | None) -> str:
        """``key:NAME`` of an authenticated Z85 public key (its ``NAME.key`` file)."""
        if not user_id:
            raise Unauthorised("this server requires CURVE; the message carries no key")
        if user_id not in self._key_names and self.keys_dir is not None:
            for f in sorted(self.keys_dir.glob("*.key")):  # keys may be added while serving
                try:
                    public, _ = zmq.auth.load_certificate(str(f))
                except (OSError, ValueError):
                    continue
                self._key_names[public.decode()] = f.stem
        return f"key:{self._key_names.get(user_id, user_id[:8])}"

    def hello(self, token: str | None, name: str, user_id: str | None) -> tuple[str, str]:
        """``(identity, token)`` for a hello: the key's identity under CURVE (token ""),
        the session of ``token`` when it is known, else a new session."""
        if self.curve:
            return self.key_identity(user_id), ""
        if token:
            identity = self._by_digest.get(_digest(token))
            if identity is None:
                raise Unauthorised(
                    "this session token is unknown to the server (it restarted without "
                    "--state-dir, or forgot the session); say hello without a token"
                )
            return identity, token
        token = secrets.token_urlsafe(24)
        self._serial += 1
        identity = f"{_clean(name) or 'client'}-{self._serial}"
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO sessions(token_hash, identity, created) VALUES (?, ?, ?)",
                (_digest(token), identity, time.time()),
            )
            if len(self._by_digest) >= MAX_SESSIONS:
                old = c.execute(
                    "SELECT token_hash FROM sessions ORDER BY created LIMIT ?",
                    (len(self._by_digest) - MAX_SESSIONS + 1,),
                ).fetchall()
                c.executemany("DELETE FROM sessions WHERE token_hash = ?", old)
                for (h,) in old:
                    self._by_digest.pop(h, None)
        self._by_digest[_digest(token)] = identity
        return identity, token

    def identify(self, token: str | None, user_id: str | None) -> str:
        """The identity of a request (not a hello)."""
        if self.curve:
            return self.key_identity(user_id)
        if not token:
            raise Unauthorised(
                "no session token: say hello first and send its session token in every request"
            )
        identity = self._by_digest.get(_digest(token))
        if identity is None:
            raise Unauthorised(
                "this session token is unknown to the server (it restarted without "
                "--state-dir, or forgot the session); say hello again"
            )
        return identity

    def __len__(self) -> int:
        return len(self._by_digest)


__all__ = ["MAX_SESSIONS", "Sessions"]
