"""Registered databases: an RDS-cluster ARN per database, a secret for its credentials, pooled connections."""

from __future__ import annotations

import re
import threading
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgkb.config import Settings
from pgkb.db import Database
from pgkb.db.database import wait_for_database
from pgkb.errors import ConflictError, NotFoundError, ValidationError
from pgkb.secrets import SecretResolver

_CLUSTER_NAME = re.compile(r"^[a-zA-Z0-9-]{1,63}$")
_RDS_ARN = re.compile(r"^arn:aws(?:|-cn|-us-gov):rds:[a-zA-Z0-9-]*:[0-9]{12}:cluster:(?P<name>[a-zA-Z0-9-]{1,63})$")
_DBNAME = re.compile(r"^[a-zA-Z0-9_\-]{1,63}$")


def cluster_arn(name: str, region: str, account: str) -> str:
    return f"arn:aws:rds:{region}:{account}:cluster:{name}"


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "resourceArn": row["resource_arn"],
        "credentialsSecretArn": row["secret_arn"],
        "databaseName": row["database_name"],
        "createdAt": row["created_at"],
    }


def register_database(
    home: Database, settings: Settings, name: str, secret_ref: str, *, database_name: str | None = None
) -> dict[str, Any]:
    """Check the secret and the database it points at, then record the database under `name`."""
    if not _CLUSTER_NAME.match(name or ""):
        raise ValidationError(f"database name {name!r} must match [a-zA-Z0-9-]{{1,63}} (it becomes an RDS cluster ARN)")
    resolver = SecretResolver(settings.data_dir, settings.region, settings.account_id)
    secret = resolver.canonical(secret_ref)
    creds = resolver.resolve(secret, refresh=True)
    dbname = database_name or creds.dbname or "postgres"
    if not _DBNAME.match(dbname):
        raise ValidationError(f"databaseName {dbname!r} must match [a-zA-Z0-9_-]{{1,63}}")
    url = wait_for_database(
        creds.conninfo(dbname), settings.connect_timeout_s,
        refresh=lambda: resolver.resolve(secret, refresh=True).conninfo(dbname),
    )
    from pgkb.admin.checks import check_server

    with psycopg.connect(url) as conn:
        for problem in check_server(conn):
            if problem.severity == "error":
                raise ValidationError(f"database {creds.describe()}: {problem.message} Fix: {problem.fix}")
    arn = cluster_arn(name, settings.region, settings.account_id)
    with home.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO pgkb.databases (name, resource_arn, secret_arn, database_name) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET resource_arn = EXCLUDED.resource_arn, secret_arn = EXCLUDED.secret_arn,"
            " database_name = EXCLUDED.database_name, updated_at = now() RETURNING *",
            (name, arn, secret, dbname),
        )
        row = cur.fetchone()
    assert row is not None
    return _shape(row)


def list_databases(home: Database) -> list[dict[str, Any]]:
    with home.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return [_shape(r) for r in cur.execute("SELECT * FROM pgkb.databases ORDER BY name")]


def unregister_database(home: Database, name: str) -> None:
    """Forget a database; refused while knowledge bases keep their vectors there."""
    with home.connection() as conn:
        users = [r[0] for r in conn.execute(
            "SELECT k.name FROM pgkb.knowledge_bases k JOIN pgkb.databases d"
            " ON k.storage -> 'rdsConfiguration' ->> 'resourceArn' = d.resource_arn WHERE d.name = %s ORDER BY 1",
            (name,))]
        if users:
            raise ConflictError(f"database {name!r} holds knowledge bases {', '.join(users)}: delete them first")
        if conn.execute("DELETE FROM pgkb.databases WHERE name = %s", (name,)).rowcount == 0:
            raise NotFoundError(f"no registered database named {name!r}")


class RegisteredDatabases:
    """One pool per (cluster, secret, database), opened on first use and kept for the process."""

    def __init__(self, home: Database, settings: Settings) -> None:
        self.home = home
        self.settings = settings
        self.resolver = SecretResolver(settings.data_dir, settings.region, settings.account_id)
        self._pools: dict[tuple[str, str, str], Database] = {}
        self._lock = threading.Lock()

    def lookup(self, resource_arn: str) -> dict[str, Any] | None:
        if not _RDS_ARN.match(resource_arn or ""):
            return None
        with self.home.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM pgkb.databases WHERE resource_arn = %s", (resource_arn,)).fetchone()
        return _shape(row) if row else None

    def database_for(self, rds: dict[str, Any]) -> Database | None:
        """The pool for a registered cluster, or None when `resourceArn` is not registered."""
        arn = str(rds.get("resourceArn") or "")
        reg = self.lookup(arn)
        if reg is None:
            return None
        secret = self.resolver.canonical(str(rds.get("credentialsSecretArn") or reg["credentialsSecretArn"]))
        dbname = str(rds.get("databaseName") or reg["databaseName"])
        if not _DBNAME.match(dbname):
            raise ValidationError(f"rdsConfiguration.databaseName {dbname!r} must match [a-zA-Z0-9_-]{{1,63}}")
        key = (arn, secret, dbname)
        with self._lock:
            cached = self._pools.get(key)
            if cached is not None:
                return cached
            creds = self.resolver.resolve(secret)
            database = Database(
                creds.conninfo(dbname),
                max_size=self.settings.pool_max_size,
                timeout_s=self.settings.connect_timeout_s,
                refresh=lambda: self.resolver.resolve(secret, refresh=True).conninfo(dbname),
                name=f"pgkb-{reg['name']}",
            ).open()
            self._pools[key] = database
            return database

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()
