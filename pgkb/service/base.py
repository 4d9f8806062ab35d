"""The service's shared state: settings, the catalog database, resolved knowledge bases."""

from __future__ import annotations

import threading
import time
from typing import Any

from pgkb.config import Settings, current
from pgkb.db import Database, open_database
from pgkb.errors import ValidationError
from pgkb.kb import KnowledgeBase
from pgkb.store import catalog
from pgkb.store.vector_table import FieldMapping, TableRef, attribute_columns

HOME_CLUSTER = "pgkb"
HOME_SECRET = "pgkb-home"
# How long a resolved knowledge base is trusted without a catalog read (other processes' updates
# and deletions are seen after at most this; this process's own are seen at once).
RESOLVE_TTL_S = 1.0


class ServiceBase:
    def __init__(self, settings: Settings | None = None, *, database: Database | None = None) -> None:
        self.settings = settings or current()
        self.db = database or open_database(self.settings)
        self._owns_db = database is None
        self._kbs: dict[str, KnowledgeBase] = {}
        self._recent: dict[str, tuple[float, KnowledgeBase]] = {}  # id or name as asked -> (when, kb)
        self._kb_lock = threading.Lock()
        self._registered: Any = None  # pgkb.admin.registry.RegisteredDatabases, made on first use
        with self.db.connection() as conn:
            self.database_name = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        self.stop_jobs()
        if self._registered is not None:
            self._registered.close()
        if self._owns_db:
            self.db.close()

    def wait_for_jobs(self, timeout: float | None = None) -> None:  # overridden by the jobs mixin
        pass

    def stop_jobs(self, timeout: float = 60.0) -> None:  # overridden by the jobs mixin
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the database pgkb runs on, as an RDS cluster

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def account(self) -> str:
        return self.settings.account_id

    @property
    def cluster_arn(self) -> str:
        return f"arn:aws:rds:{self.region}:{self.account}:cluster:{HOME_CLUSTER}"

    @property
    def secret_arn(self) -> str:
        return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{HOME_SECRET}"

    def db_info(self) -> dict[str, Any]:
        """What to put in `rdsConfiguration` to use the database pgkb runs on."""
        info: dict[str, Any] = {
            "resourceArn": self.cluster_arn,
            "credentialsSecretArn": self.secret_arn,
            "databaseName": self.database_name,
        }
        if not self.settings.database_url:
            info["url"] = self.db.url  # embedded: a Unix-socket URL with no password
        return info

    def database_for(self, rds: dict[str, Any]) -> Database:
        """The Database an `rdsConfiguration` points at: the home database, or one `pgkb db register` added."""
        arn = rds.get("resourceArn")
        if arn != self.cluster_arn:
            from pgkb.admin.registry import RegisteredDatabases

            with self._kb_lock:
                if self._registered is None:
                    self._registered = RegisteredDatabases(self.db, self.settings)
            registered = self._registered.database_for(rds)
            if registered is not None:
                return registered  # type: ignore[no-any-return]
            raise ValidationError(
                f"rdsConfiguration.resourceArn {arn!r} is not a database pgkb knows; "
                f"use {self.cluster_arn} (see `pgkb db info`) or register it with `pgkb db register`"
            )
        name = rds.get("databaseName")
        if name != self.database_name:
            raise ValidationError(
                f"rdsConfiguration.databaseName {name!r} does not match the cluster's database {self.database_name!r}"
            )
        return self.db

    # ------------------------------------------------------------ knowledge bases resolved for work

    def resolve(self, kb_id: str) -> KnowledgeBase:
        """The knowledge base, re-read from the catalog at most once a second (a Retrieve's hot path)."""
        now = time.monotonic()
        with self._kb_lock:
            recent = self._recent.get(kb_id)
            if recent is not None and now - recent[0] < RESOLVE_TTL_S:
                return recent[1]
        with self.db.connection() as conn:
            row = catalog.get_knowledge_base(conn, kb_id)
        with self._kb_lock:
            cached = self._kbs.get(row["id"])
            if cached is not None and cached.row["updated_at"] == row["updated_at"]:
                self._recent[kb_id] = (now, cached)
                return cached
        rds = row["storage"]["rdsConfiguration"]
        database = self.database_for(rds)
        table = TableRef.parse(rds["tableName"])
        mapping = FieldMapping.from_bedrock(rds.get("fieldMapping"))
        attrs: dict[str, str] = {}
        if not mapping.custom_metadata:
            with database.connection() as conn:
                attrs = attribute_columns(conn, table, mapping)
        kb = KnowledgeBase(row, table, mapping, database, attrs)
        with self._kb_lock:
            self._kbs[row["id"]] = kb
            self._recent[kb_id] = (now, kb)
        return kb

    def forget(self, kb_id: str) -> None:
        with self._kb_lock:
            self._kbs.pop(kb_id, None)
            for key in [k for k, (_, kb) in self._recent.items() if kb.id == kb_id]:
                del self._recent[key]
