"""The endpoint's users: SCRAM verifiers in `<data dir>/sqlfuncs/users.json` (mode 0600).

The password itself is handed to `install()` once, which stores it in the database's user mapping;
pgkb keeps only the verifier.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from pgkb.errors import ValidationError
from pgkb.sqlfuncs.scram import Verifier

_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


def users_file(data_dir: Path | str) -> Path:
    return Path(data_dir) / "sqlfuncs" / "users.json"


def generate_password() -> str:
    return secrets.token_urlsafe(32)


def load_users(data_dir: Path | str) -> dict[str, Verifier]:
    path = users_file(data_dir)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {user: Verifier.from_text(text) for user, text in raw.items()}


def _write(path: Path, users: dict[str, Verifier]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({u: v.to_text() for u, v in sorted(users.items())}, f, indent=1)
    os.replace(tmp, path)


def set_user(data_dir: Path | str, user: str, password: str | None = None) -> str:
    """Create or replace an endpoint user; returns its password (generated when not given)."""
    if not _USER.match(user or ""):
        raise ValidationError(f"Invalid endpoint user name {user!r}: letters, digits, _ . - (max 63)")
    password = password or generate_password()
    users = load_users(data_dir)
    users[user] = Verifier.from_password(password)
    _write(users_file(data_dir), users)
    return password


def remove_user(data_dir: Path | str, user: str) -> bool:
    users = load_users(data_dir)
    if users.pop(user, None) is None:
        return False
    _write(users_file(data_dir), users)
    return True
