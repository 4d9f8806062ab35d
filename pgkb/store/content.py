"""Document content kept in the catalog for GetDocumentContent (pgkb.document_content).

MANAGED knowledge bases keep each document's extracted text (EXTRACTED), and the original bytes of
documents that exist nowhere else (inline CUSTOM content); S3 and folder originals are read from
their source when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg


def store_extracted(conn: psycopg.Connection, ds_id: str, items: Sequence[tuple[str, str | None]]) -> None:
    items = [i for i in items if i[1] is not None]
    if not items:
        return
    conn.execute(
        "INSERT INTO pgkb.document_content (ds_id, uri, extracted)"
        " SELECT %s, u, x FROM unnest(%s::text[], %s::text[]) AS t(u, x)"
        " ON CONFLICT (ds_id, uri) DO UPDATE SET extracted = EXCLUDED.extracted, updated_at = now()",
        (ds_id, [i[0] for i in items], [i[1] for i in items]),
    )


def store_raw(conn: psycopg.Connection, ds_id: str, items: Sequence[tuple[str, bytes, str | None]]) -> None:
    if not items:
        return
    conn.execute(
        "INSERT INTO pgkb.document_content (ds_id, uri, raw, mime_type)"
        " SELECT %s, u, r, m FROM unnest(%s::text[], %s::bytea[], %s::text[]) AS t(u, r, m)"
        " ON CONFLICT (ds_id, uri) DO UPDATE SET raw = EXCLUDED.raw, mime_type = EXCLUDED.mime_type,"
        " updated_at = now()",
        (ds_id, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]),
    )


def get_content(conn: psycopg.Connection, ds_id: str, uri: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT raw, mime_type, extracted FROM pgkb.document_content WHERE ds_id = %s AND uri = %s", (ds_id, uri)
    ).fetchone()
    return {"raw": row[0], "mime_type": row[1], "extracted": row[2]} if row else None


def delete_content(conn: psycopg.Connection, ds_id: str, uris: Sequence[str]) -> None:
    if uris:
        conn.execute("DELETE FROM pgkb.document_content WHERE ds_id = %s AND uri = ANY(%s)", (ds_id, list(uris)))
