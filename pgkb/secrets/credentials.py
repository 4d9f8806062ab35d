"""Database credentials in the RDS-credentials JSON format, and the connection info built from them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from psycopg.conninfo import make_conninfo

from pgkb.errors import ValidationError

SECRET_NAME = re.compile(r"^[a-zA-Z0-9!/_+=.@-]{1,512}$")
SECRET_ARN = re.compile(
    r"^arn:aws(?:|-cn|-us-gov):secretsmanager:(?P<region>[a-z0-9-]{1,20}):(?P<account>[0-9]{12}|):secret:(?P<name>[a-zA-Z0-9!/_+=.@-]{1,512})$"
)
# TLS and connection options that may ride along in a secret and are passed to libpq unchanged.
PASS_THROUGH = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "target_session_attrs", "options")


@dataclass(frozen=True)
class DbCredentials:
    """username/password/host/port/dbname/engine as Secrets Manager's RDS secrets hold them."""

    username: str
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    engine: str = "postgres"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | bytes, ref: str) -> DbCredentials:
        """Parse a secret value. Errors never quote the value: it holds a password."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError):
            raise ValidationError(f"secret {ref} is not JSON in the RDS-credentials format") from None
        if not isinstance(data, dict):
            raise ValidationError(f"secret {ref} is not a JSON object in the RDS-credentials format")
        return cls.from_dict(data, ref)

    @classmethod
    def from_dict(cls, data: dict[str, Any], ref: str) -> DbCredentials:
        user = data.get("username")
        if not isinstance(user, str) or not user:
            raise ValidationError(f"secret {ref} has no 'username'")
        password = data.get("password")
        if password is not None and not isinstance(password, str):
            raise ValidationError(f"secret {ref}: 'password' must be a string")
        port = data.get("port")
        try:
            port_n = int(port) if port not in (None, "") else None
        except (TypeError, ValueError):
            raise ValidationError(f"secret {ref}: 'port' must be a number") from None
        engine = str(data.get("engine") or "postgres")
        if engine not in ("postgres", "postgresql", "aurora-postgresql"):
            raise ValidationError(f"secret {ref}: engine {engine!r} is not PostgreSQL")
        extra = {k: str(data[k]) for k in PASS_THROUGH if data.get(k) not in (None, "")}
        return cls(
            username=user,
            password=password or "",
            host=str(data["host"]) if data.get("host") else None,
            port=port_n,
            dbname=str(data["dbname"]) if data.get("dbname") else None,
            engine=engine,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "password": self.password, "engine": self.engine}
        if self.host:
            out["host"] = self.host
        if self.port:
            out["port"] = self.port
        if self.dbname:
            out["dbname"] = self.dbname
        out.update(self.extra)
        return out

    def conninfo(self, dbname: str | None = None, **overrides: str) -> str:
        """A libpq connection string (contains the password: never log it)."""
        params: dict[str, Any] = {"user": self.username, **self.extra, **overrides}
        if self.password:
            params["password"] = self.password
        if self.host:
            params["host"] = self.host
        if self.port:
            params["port"] = self.port
        if dbname or self.dbname:
            params["dbname"] = dbname or self.dbname
        return make_conninfo("", **params)

    def describe(self) -> str:
        """Where these credentials point, without the password."""
        where = f"{self.host or 'localhost'}:{self.port or 5432}/{self.dbname or ''}"
        return f"{self.username}@{where}"


def parse_secret_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(name, region, account) of an ARN, or (name, None, None) for a bare secret name."""
    m = SECRET_ARN.match(ref or "")
    if m:
        return m.group("name"), m.group("region"), m.group("account") or None
    if SECRET_NAME.match(ref or "") and not ref.startswith("arn:"):
        return ref, None, None
    raise ValidationError(
        f"{ref!r} is not a secret reference: use a Secrets Manager ARN "
        "(arn:aws:secretsmanager:<region>:<account>:secret:<name>) or a secret name"
    )


def secret_arn(name: str, region: str, account: str) -> str:
    return f"arn:aws:secretsmanager:{region}:{account}:secret:{name}"
