"""Access keys that pgkb verifies SigV4 signatures against.

SigV4 needs the secret itself (the server recomputes the HMAC), so a hash is not enough: secrets are
stored Fernet-encrypted in `pgkb.access_keys`, with the encryption key in `<data dir>/access-keys.key`
(mode 0600) or in `PGKB_ACCESS_KEY_ENCRYPTION_KEY`. The plain secret is returned once, by
`create_key`, and is never logged.
"""

from __future__ import annotations

import os
import secrets
import string
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from pgkb import config
from pgkb.config import Settings
from pgkb.db import Database, open_database
from pgkb.errors import NotFoundError, ValidationError

KEY_FILE = "access-keys.key"
ENV_KEY = "PGKB_ACCESS_KEY_ENCRYPTION_KEY"
_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
DEFAULT_KEY_CACHE_TTL_S = 10.0


def _encryption_key(data_dir: Path, *, create: bool) -> bytes | None:
    env = config.current().access_key_encryption_key
    if env:
        return env.encode()
    path = Path(data_dir) / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def new_access_key_id() -> str:
    return "PGKB" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


class KeyStore:
    """Create, list, revoke keys; look secrets up for the verifier (cached for `ttl_s` seconds).

    A lookup's answer expires `ttl_s` after the lookup *started* (before its query ran), so a
    revocation committed at time T is seen by every request verified after T + `ttl_s`, in every
    process; a revocation through this store clears its own cache at once."""

    def __init__(self, db: Database, data_dir: Path, *, ttl_s: float = DEFAULT_KEY_CACHE_TTL_S) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def _fernet(self, *, create: bool) -> Fernet | None:
        key = _encryption_key(self.data_dir, create=create)
        return Fernet(key) if key else None

    def create(self, description: str | None = None) -> dict[str, Any]:
        if description is not None and len(description) > 200:
            raise ValidationError("description must be at most 200 characters")
        fernet = self._fernet(create=True)
        assert fernet is not None
        akid, secret = new_access_key_id(), new_secret()
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO pgkb.access_keys (access_key_id, secret_encrypted, description)"
                " VALUES (%s, %s, %s) RETURNING created_at",
                (akid, fernet.encrypt(secret.encode()), description),
            ).fetchone()
        return {"accessKeyId": akid, "secretAccessKey": secret, "createdAt": row[0] if row else None}

    def list(self, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT access_key_id, description, created_at, revoked_at FROM pgkb.access_keys"
                " WHERE %s OR revoked_at IS NULL ORDER BY created_at",
                (include_revoked,),
            ).fetchall()
        return [
            {
                "accessKeyId": r[0],
                "description": r[1],
                "createdAt": r[2],
                "revokedAt": r[3],
                "status": "REVOKED" if r[3] else "ACTIVE",
            }
            for r in rows
        ]

    def revoke(self, access_key_id: str) -> dict[str, Any]:
        with self.db.connection() as conn:
            row = conn.execute(
                "UPDATE pgkb.access_keys SET revoked_at = coalesce(revoked_at, now())"
                " WHERE access_key_id = %s RETURNING revoked_at",
                (access_key_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"access key {access_key_id} does not exist")
        with self._lock:
            self._cache.pop(access_key_id, None)
        return {"accessKeyId": access_key_id, "revokedAt": row[0], "status": "REVOKED"}

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of an active key, None for unknown/revoked keys or an unreadable secret."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(access_key_id)
            if hit is not None and hit[0] > now:
                return hit[1]
        secret: str | None = None
        if len(access_key_id) <= 128:
            with self.db.connection() as conn:
                row = conn.execute(
                    "SELECT secret_encrypted FROM pgkb.access_keys WHERE access_key_id = %s AND revoked_at IS NULL",
                    (access_key_id,),
                ).fetchone()
            fernet = self._fernet(create=False) if row else None
            if row and fernet is not None:
                try:
                    secret = fernet.decrypt(bytes(row[0])).decode()
                except InvalidToken:
                    secret = None  # encrypted with another data dir's key
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()  # unknown ids are cached too; bound the memory a scan can use
            self._cache[access_key_id] = (now + self.ttl_s, secret)
        return secret


# -- functions for the CLI -------------------------------------------------------------------


def _with_store(settings: Settings, fn):  # type: ignore[no-untyped-def]
    db = open_database(settings)
    try:
        return fn(KeyStore(db, settings.data_dir))
    finally:
        db.close()


def create_key(settings: Settings, description: str | None = None) -> dict[str, Any]:
    """A new key; the result holds `secretAccessKey`, shown this once."""
    return _with_store(settings, lambda s: s.create(description))


def list_keys(settings: Settings, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    return _with_store(settings, lambda s: s.list(include_revoked=include_revoked))


def revoke_key(settings: Settings, access_key_id: str) -> dict[str, Any]:
    return _with_store(settings, lambda s: s.revoke(access_key_id))


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
