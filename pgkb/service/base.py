"""The service's shared state, passed to each collaborator of the KnowledgeBaseService facade.

`ServiceCore` owns the settings and the home database (and the databases `pgkb db register` added);
`KnowledgeBases` resolves knowledge bases for work, with a short cache; `Collaborator` is what every
operation group (control plane, jobs, documents, retrieval, generation, ...) is built from: the core and
the resolver, nothing else, so what a collaborator can reach is visible in its constructor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


class ServiceCore:
    """Settings and the home database; closes what it opened."""

    def __init__(self, settings: Settings | None = None, *, database: Database | None = None) -> None:
        self.settings = settings or current()
        self.db = database or open_database(self.settings)
        self._owns_db = database is None
        self._lock = threading.Lock()
        self._registered: Any = None  # pgkb.admin.registry.RegisteredDatabases, made on first use
        self._reader: Database | None = None  # the read replica's pool, opened on first use
        with self.db.connection() as conn:
            self.database_name = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]

    def reader(self, database: Database) -> Database:
        """Where queries on `database` read: the read replica (`read_database_url`) for the home
        database when one is configured, else `database` itself. Writes never come here."""
        url = self.settings.read_database_url
        if not url or database is not self.db:
            return database
        with self._lock:
            if self._reader is None:
                self._reader = Database(url, max_size=self.settings.pool_max_size,
                                        timeout_s=self.settings.connect_timeout_s, name="pgkb-read").open()
            return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._registered is not None:
            self._registered.close()
        if self._owns_db:
            self.db.close()

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

            with self._lock:
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


_call = threading.local()  # knowledge bases already resolved within the current call on this thread


class KnowledgeBases:
    """Knowledge bases resolved for work: table, mapping, model, database."""

    def __init__(self, core: ServiceCore) -> None:
        self.core = core
        self._kbs: dict[str, KnowledgeBase] = {}
        self._recent: dict[str, tuple[float, KnowledgeBase]] = {}  # id or name as asked -> (when, kb)
        self._lock = threading.Lock()

    @contextmanager
    def one_read_per_call(self) -> Iterator[None]:
        """Within this block on this thread, each knowledge base is read from the catalog once (a
        RetrieveAndGenerate validates, retrieves and cites against the same knowledge base)."""
        _call.kbs = {}
        try:
            yield
        finally:
            _call.kbs = None

    def resolve(self, kb_id: str) -> KnowledgeBase:
        """The knowledge base, re-read from the catalog at most once a second (a Retrieve's hot path)."""
        memo = getattr(_call, "kbs", None)
        if memo is not None and kb_id in memo:
            return memo[kb_id]  # type: ignore[no-any-return]
        kb = self._resolve(kb_id)
        if memo is not None:
            memo[kb_id] = memo[kb.id] = kb
        return kb

    def _resolve(self, kb_id: str) -> KnowledgeBase:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.get(kb_id)
            if recent is not None and now - recent[0] < RESOLVE_TTL_S:
                return recent[1]
        with self.core.db.connection() as conn:
            row = catalog.get_knowledge_base(conn, kb_id)
        with self._lock:
            cached = self._kbs.get(row["id"])
            if cached is not None and cached.row["updated_at"] == row["updated_at"]:
                self._recent[kb_id] = (now, cached)
                return cached
        rds = row["storage"]["rdsConfiguration"]
        database = self.core.database_for(rds)
        table = TableRef.parse(rds["tableName"])
        mapping = FieldMapping.from_bedrock(rds.get("fieldMapping"))
        attrs: dict[str, str] = {}
        if not mapping.custom_metadata:
            with database.connection() as conn:
                attrs = attribute_columns(conn, table, mapping)
        kb = KnowledgeBase(row, table, mapping, database, attrs)
        with self._lock:
            self._kbs[row["id"]] = kb
            self._recent[kb_id] = (now, kb)
        return kb

    def forget(self, kb_id: str) -> None:
        with self._lock:
            self._kbs.pop(kb_id, None)
            for key in [k for k, (_, kb) in self._recent.items() if kb.id == kb_id]:
                del self._recent[key]


class Collaborator:
    """One group of operations: reaches the home database and settings through `core` and knowledge bases
    through `kbs` (the names below are shorthands for those)."""

    def __init__(self, core: ServiceCore, kbs: KnowledgeBases) -> None:
        self.core = core
        self.kbs = kbs
        self.settings = core.settings
        self.db = core.db
        self.resolve = kbs.resolve
        self.forget = kbs.forget
        self.database_for = core.database_for

    @property
    def region(self) -> str:
        return self.core.region

    @property
    def account(self) -> str:
        return self.core.account

    @property
    def cluster_arn(self) -> str:
        return self.core.cluster_arn

    @property
    def secret_arn(self) -> str:
        return self.core.secret_arn

    @property
    def database_name(self) -> str:
        return self.core.database_name
