"""pgkb's own state in the `pgkb` schema: knowledge bases, data sources, ingestion jobs, documents."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgkb.errors import ConflictError, NotFoundError

_ID_ALPHABET = string.ascii_uppercase + string.digits
ACTIVE_JOB_STATUSES = ("STARTING", "IN_PROGRESS", "STOPPING")


def new_id() -> str:
    """A Bedrock-style id: 10 characters of [0-9A-Z]."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def _one(conn: psycopg.Connection, query: str, params: Sequence[Any] | dict[str, Any]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _all(conn: psycopg.Connection, query: str, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _update(conn: psycopg.Connection, table: str, row_id: str, fields: dict[str, Any],
            where: str = "") -> dict[str, Any] | None:
    """UPDATE one catalog row by id; column names come from this module, values are parameters."""
    assert table in ("knowledge_bases", "data_sources", "ingestion_jobs")
    sets = ", ".join(f"{k} = %({k})s" for k in fields)
    params = {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
    return _one(conn, f"UPDATE pgkb.{table} SET {sets}, updated_at = now() WHERE id = %(_id)s{where} RETURNING *",
                {**params, "_id": row_id})


# ---------------------------------------------------------------- knowledge bases


def insert_knowledge_base(conn: psycopg.Connection, row: dict[str, Any]) -> dict[str, Any]:
    try:
        out = _one(
            conn,
            "INSERT INTO pgkb.knowledge_bases (id, name, description, role_arn, model_id, dimensions, kb_config,"
            " storage, status, client_token, tags, user_context_mode) VALUES (%(id)s, %(name)s, %(description)s,"
            " %(role_arn)s, %(model_id)s, %(dimensions)s, %(kb_config)s, %(storage)s, %(status)s, %(client_token)s,"
            " %(tags)s, %(user_context_mode)s) RETURNING *",
            {**row, "kb_config": Jsonb(row["kb_config"]), "storage": Jsonb(row["storage"]),
             "tags": Jsonb(row.get("tags") or {}), "user_context_mode": row.get("user_context_mode") or "API_INPUT_ONLY"},
        )
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a knowledge base named {row['name']!r} already exists") from exc
    assert out is not None
    return out


def update_tags(conn: psycopg.Connection, kb_id: str, add: dict[str, str], remove: list[str]) -> dict[str, str]:
    """Merge `add` into a knowledge base's tags and drop the keys in `remove`, in one statement;
    returns the tags after. NotFoundError when there is no such knowledge base."""
    row = _one(
        conn,
        "UPDATE pgkb.knowledge_bases SET tags = (tags || %s) - %s::text[] WHERE id = %s RETURNING tags",
        (Jsonb(add), list(remove), kb_id),
    )
    if row is None:
        raise NotFoundError(f"knowledge base {kb_id!r} does not exist")
    return dict(row["tags"])


def get_tags(conn: psycopg.Connection, kb_id: str) -> dict[str, str]:
    row = _one(conn, "SELECT tags FROM pgkb.knowledge_bases WHERE id = %s", (kb_id,))
    if row is None:
        raise NotFoundError(f"knowledge base {kb_id!r} does not exist")
    return dict(row["tags"])


def get_knowledge_base(conn: psycopg.Connection, kb_id_or_name: str) -> dict[str, Any]:
    row = _one(
        conn,
        "SELECT * FROM pgkb.knowledge_bases WHERE id = %s OR name = %s ORDER BY (id = %s) DESC LIMIT 1",
        (kb_id_or_name, kb_id_or_name, kb_id_or_name),
    )
    if row is None:
        raise NotFoundError(f"knowledge base {kb_id_or_name!r} does not exist")
    return row


def find_by_client_token(conn: psycopg.Connection, table: str, token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    assert table in ("knowledge_bases", "data_sources", "ingestion_jobs")
    return _one(conn, f"SELECT * FROM pgkb.{table} WHERE client_token = %s", (token,))


def list_knowledge_bases(conn: psycopg.Connection, offset: int, limit: int) -> list[dict[str, Any]]:
    return _all(
        conn, "SELECT * FROM pgkb.knowledge_bases ORDER BY created_at, id OFFSET %s LIMIT %s", (offset, limit)
    )


def update_knowledge_base(conn: psycopg.Connection, kb_id: str, **fields: Any) -> dict[str, Any]:
    try:
        row = _update(conn, "knowledge_bases", kb_id, fields)
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a knowledge base named {fields.get('name')!r} already exists") from exc
    if row is None:
        raise NotFoundError(f"knowledge base {kb_id!r} does not exist")
    return row


def delete_knowledge_base(conn: psycopg.Connection, kb_id: str) -> None:
    conn.execute("DELETE FROM pgkb.knowledge_bases WHERE id = %s", (kb_id,))


# ---------------------------------------------------------------- data sources


def insert_data_source(conn: psycopg.Connection, row: dict[str, Any]) -> dict[str, Any]:
    try:
        out = _one(
            conn,
            "INSERT INTO pgkb.data_sources (id, kb_id, name, description, source_type, ds_config, ingestion,"
            " data_deletion_policy, status, client_token, acl_enabled) VALUES (%(id)s, %(kb_id)s, %(name)s,"
            " %(description)s, %(source_type)s, %(ds_config)s, %(ingestion)s, %(data_deletion_policy)s, %(status)s,"
            " %(client_token)s, %(acl_enabled)s) RETURNING *",
            {**row, "ds_config": Jsonb(row["ds_config"]), "ingestion": Jsonb(row["ingestion"]),
             "acl_enabled": bool(row.get("acl_enabled"))},
        )
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"a data source named {row['name']!r} already exists in this knowledge base") from exc
    assert out is not None
    return out


def get_data_source(conn: psycopg.Connection, kb_id: str, ds_id_or_name: str) -> dict[str, Any]:
    row = _one(
        conn,
        "SELECT * FROM pgkb.data_sources WHERE kb_id = %s AND (id = %s OR name = %s)"
        " ORDER BY (id = %s) DESC LIMIT 1",
        (kb_id, ds_id_or_name, ds_id_or_name, ds_id_or_name),
    )
    if row is None:
        raise NotFoundError(f"data source {ds_id_or_name!r} does not exist in knowledge base {kb_id}")
    return row


def list_data_sources(conn: psycopg.Connection, kb_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
    return _all(
        conn,
        "SELECT * FROM pgkb.data_sources WHERE kb_id = %s ORDER BY created_at, id OFFSET %s LIMIT %s",
        (kb_id, offset, limit),
    )


def update_data_source(conn: psycopg.Connection, ds_id: str, **fields: Any) -> dict[str, Any]:
    row = _update(conn, "data_sources", ds_id, fields)
    if row is None:
        raise NotFoundError(f"data source {ds_id!r} does not exist")
    return row


def delete_data_source(conn: psycopg.Connection, ds_id: str) -> None:
    conn.execute("DELETE FROM pgkb.data_sources WHERE id = %s", (ds_id,))


# ---------------------------------------------------------------- ingestion jobs


def insert_job(conn: psycopg.Connection, row: dict[str, Any]) -> dict[str, Any]:
    try:
        out = _one(
            conn,
            "INSERT INTO pgkb.ingestion_jobs (id, kb_id, ds_id, description, status, client_token)"
            " VALUES (%(id)s, %(kb_id)s, %(ds_id)s, %(description)s, %(status)s, %(client_token)s) RETURNING *",
            row,
        )
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(
            f"an ingestion job is already running for data source {row['ds_id']}; wait for it or stop it"
        ) from exc
    assert out is not None
    return out


def get_job(conn: psycopg.Connection, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
    row = _one(
        conn, "SELECT * FROM pgkb.ingestion_jobs WHERE id = %s AND kb_id = %s AND ds_id = %s", (job_id, kb_id, ds_id)
    )
    if row is None:
        raise NotFoundError(f"ingestion job {job_id!r} does not exist")
    return row


def list_jobs(
    conn: psycopg.Connection,
    ds_id: str,
    offset: int,
    limit: int,
    *,
    statuses: Sequence[str] | None = None,
    sort_by: str = "STARTED_AT",
    descending: bool = True,
) -> list[dict[str, Any]]:
    order = "status" if sort_by == "STATUS" else "started_at"
    direction = "DESC" if descending else "ASC"
    return _all(
        conn,
        f"SELECT * FROM pgkb.ingestion_jobs WHERE ds_id = %s AND (%s::text[] IS NULL OR status = ANY(%s))"
        f" ORDER BY {order} {direction}, id OFFSET %s LIMIT %s",
        (ds_id, statuses, statuses, offset, limit),
    )


def active_jobs(conn: psycopg.Connection, ds_id: str) -> list[dict[str, Any]]:
    return _all(
        conn, "SELECT * FROM pgkb.ingestion_jobs WHERE ds_id = %s AND status = ANY(%s)", (ds_id, list(ACTIVE_JOB_STATUSES))
    )


def update_job(conn: psycopg.Connection, job_id: str, **fields: Any) -> dict[str, Any] | None:
    return _update(conn, "ingestion_jobs", job_id, fields)


def update_running_job(conn: psycopg.Connection, job_id: str, **fields: Any) -> dict[str, Any] | None:
    """Update a job only while it runs; None once it ended. An ended job (COMPLETE, FAILED, STOPPED)
    never changes status again: a runner that lost its claim cannot overwrite the FAILED it was given."""
    active = ", ".join(f"'{st}'" for st in ACTIVE_JOB_STATUSES)  # this module's constants
    return _update(conn, "ingestion_jobs", job_id, fields, f" AND status IN ({active})")


def job_by_id(conn: psycopg.Connection, job_id: str) -> dict[str, Any] | None:
    return _one(conn, "SELECT * FROM pgkb.ingestion_jobs WHERE id = %s", (job_id,))


def job_status(conn: psycopg.Connection, job_id: str) -> str | None:
    row = conn.execute("SELECT status FROM pgkb.ingestion_jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------- documents


def documents_of(conn: psycopg.Connection, ds_id: str) -> dict[str, dict[str, Any]]:
    rows = _all(conn, "SELECT * FROM pgkb.documents WHERE ds_id = %s", (ds_id,))
    return {r["uri"]: r for r in rows}


def get_documents(conn: psycopg.Connection, ds_id: str, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = _all(conn, "SELECT * FROM pgkb.documents WHERE ds_id = %s AND uri = ANY(%s)", (ds_id, list(uris)))
    return {r["uri"]: r for r in rows}


def list_documents(conn: psycopg.Connection, ds_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
    return _all(
        conn, "SELECT * FROM pgkb.documents WHERE ds_id = %s ORDER BY uri OFFSET %s LIMIT %s", (ds_id, offset, limit)
    )


def mark_documents_pending(
    conn: psycopg.Connection, kb_id: str, ds_id: str, items: Sequence[tuple[str, int]], status: str = "PENDING"
) -> None:
    """Before writing vectors: raise each document's chunk high-water mark to cover what is about to be written."""
    if not items:
        return
    conn.execute(
        "INSERT INTO pgkb.documents (ds_id, uri, kb_id, status, chunk_high_water)"
        " SELECT %s, u, %s, %s, n FROM unnest(%s::text[], %s::int[]) AS t(u, n)"
        " ON CONFLICT (ds_id, uri) DO UPDATE SET status = EXCLUDED.status,"
        " chunk_high_water = GREATEST(pgkb.documents.chunk_high_water, EXCLUDED.chunk_high_water),"
        " updated_at = now()",
        (ds_id, kb_id, status, [u for u, _ in items], [n for _, n in items]),
    )


def mark_documents_indexed(
    conn: psycopg.Connection, ds_id: str, items: Sequence[tuple[str, str | None, str | None, int]]
) -> None:
    """After vectors are committed: record (uri, content hash, metadata hash, chunk count)."""
    if not items:
        return
    conn.execute(
        "UPDATE pgkb.documents d SET status = 'INDEXED', status_reason = NULL, content_hash = t.h,"
        " metadata_hash = t.m, chunk_count = t.n, chunk_high_water = t.n, updated_at = now()"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[]) AS t(u, h, m, n)"
        " WHERE d.ds_id = %s AND d.uri = t.u",
        ([i[0] for i in items], [i[1] for i in items], [i[2] for i in items], [i[3] for i in items], ds_id),
    )


def mark_documents_failed(
    conn: psycopg.Connection, kb_id: str, ds_id: str, items: Sequence[tuple[str, str]], status: str = "FAILED"
) -> None:
    """Record failures (uri, reason) without touching what an earlier version indexed."""
    if not items:
        return
    conn.execute(
        "INSERT INTO pgkb.documents (ds_id, uri, kb_id, status, status_reason)"
        " SELECT %s, u, %s, %s, r FROM unnest(%s::text[], %s::text[]) AS t(u, r)"
        " ON CONFLICT (ds_id, uri) DO UPDATE SET status = EXCLUDED.status, status_reason = EXCLUDED.status_reason,"
        " updated_at = now()",
        (ds_id, kb_id, status, [u for u, _ in items], [r for _, r in items]),
    )


def set_document_acls(
    conn: psycopg.Connection,
    ds_id: str,
    items: Sequence[tuple[str, Sequence[str] | None, Sequence[str] | None, str | None, str | None]],
) -> None:
    """Record documents' ACLs as ingested: (uri, allow, deny, hash, status reason). allow None = no ACL."""
    if not items:
        return
    import json

    conn.execute(
        "UPDATE pgkb.documents d SET acl_allow = CASE WHEN t.a IS NULL THEN NULL"
        " ELSE ARRAY(SELECT jsonb_array_elements_text(t.a)) END,"
        " acl_deny = ARRAY(SELECT jsonb_array_elements_text(coalesce(t.d, '[]'))), acl_hash = t.h,"
        " status_reason = coalesce(t.r, d.status_reason), updated_at = now()"
        " FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[], %s::text[], %s::text[]) AS t(u, a, d, h, r)"
        " WHERE d.ds_id = %s AND d.uri = t.u",
        (
            [i[0] for i in items],
            [json.dumps(list(i[1])) if i[1] is not None else None for i in items],
            [json.dumps(list(i[2] or [])) for i in items],
            [i[3] for i in items],
            [i[4] for i in items],
            ds_id,
        ),
    )


def delete_documents(conn: psycopg.Connection, ds_id: str, uris: Sequence[str]) -> None:
    if uris:
        conn.execute("DELETE FROM pgkb.documents WHERE ds_id = %s AND uri = ANY(%s)", (ds_id, list(uris)))
        conn.execute("DELETE FROM pgkb.document_content WHERE ds_id = %s AND uri = ANY(%s)", (ds_id, list(uris)))


def to_json(value: Any) -> str:
    return json.dumps(value, default=str)
