"""Problems found in a database, each with its fix; the server checks shared by setup, register and doctor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgkb.store.ddl import create_vector_extension, render, version_tuple

MIN_SERVER = 130000
MIN_PGVECTOR = (0, 5, 0)


@dataclass
class Problem:
    """`severity` "error" blocks use; "warning" works but is slow or riskier than it needs to be."""

    severity: str
    check: str
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pgvector_versions(conn: psycopg.Connection) -> tuple[str | None, str | None]:
    """(installed version in this database, newest version the server offers)."""
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def check_server(conn: psycopg.Connection, *, need_installed: bool = True) -> list[Problem]:
    """PostgreSQL 13+ and pgvector 0.5+ (HNSW)."""
    problems: list[Problem] = []
    num = int(conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0])  # type: ignore[index]
    if num < MIN_SERVER:
        problems.append(Problem("error", "server", f"PostgreSQL {num // 10000} is too old: pgkb needs 13 or later.",
                                "Upgrade the server to PostgreSQL 13+ (Aurora PostgreSQL 13.12+, 14.9+, 15.4+, 16.1+)."))
    installed, available = pgvector_versions(conn)
    need = ".".join(map(str, MIN_PGVECTOR))
    if installed is None:
        if available is None:
            problems.append(Problem("error", "pgvector", "the pgvector extension is not available on this server.",
                                    f"Install pgvector {need} or later on the server (on RDS/Aurora pick a version that ships it)."))
        elif version_tuple(available) < MIN_PGVECTOR:
            problems.append(Problem("error", "pgvector", f"the server offers pgvector {available}; HNSW needs {need} or later.",
                                    f"Upgrade pgvector on the server to {need}+, then CREATE EXTENSION vector;"))
        elif need_installed:
            problems.append(Problem("error", "pgvector", "the pgvector extension is not installed in this database.",
                                    render(create_vector_extension()) + ";"))
    elif version_tuple(installed) < MIN_PGVECTOR:
        if available and version_tuple(available) >= MIN_PGVECTOR:
            fix = f"ALTER EXTENSION vector UPDATE;  -- to {available}"
        else:
            fix = f"Upgrade pgvector on the server to {need}+, then ALTER EXTENSION vector UPDATE;"
        problems.append(Problem("error", "pgvector", f"pgvector {installed} is installed; HNSW needs {need} or later.", fix))
    return problems
