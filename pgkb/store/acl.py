"""Document-level access control as stored in a MANAGED knowledge base's vector table.

Every row carries two text arrays, written with the row and rewritten in place when only the ACL
changes:
- `acl_allow`: who may see the row. `{public}` for rows of data sources without ACLs, `u:<userId>`
  for each allowed user of an ACL-enabled source, `{}` (nobody) for an ACL-enabled document that has
  no ACL. NULL (a row written by something that knows nothing of ACLs) is never visible: fail closed.
- `acl_deny`: `u:<userId>` for each denied user; deny wins over allow.
User ids are prefixed so that no user id can ever equal the `public` marker. A GIN index on
`acl_allow` lets a selective ACL be searched through the index (`&&`), like a metadata filter.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg
from psycopg import sql

from pgkb.store.vector_table import FieldMapping, TableRef

ALLOW_COLUMN = "acl_allow"
DENY_COLUMN = "acl_deny"
PUBLIC = "public"
USER_PREFIX = "u:"


def user_token(user_id: str) -> str:
    return USER_PREFIX + user_id


def row_arrays(allow: Sequence[str] | None, deny: Sequence[str] | None, *, acl_enabled: bool) -> tuple[list[str], list[str]]:
    """The (acl_allow, acl_deny) arrays of a document's rows. `allow is None` on an ACL-enabled
    source means "no ACL": stored, never returned."""
    if not acl_enabled:
        return [PUBLIC], []
    return [user_token(u) for u in (allow or [])], [user_token(u) for u in (deny or [])]


def enable_acl(conn: psycopg.Connection, table: TableRef) -> None:
    """Add the ACL columns and their GIN index to a table pgkb owns (idempotent)."""
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text[], ADD COLUMN IF NOT EXISTS {} text[]").format(
            table.ident, sql.Identifier(ALLOW_COLUMN), sql.Identifier(DENY_COLUMN)
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
            sql.Identifier((table.name + "_acl_allow")[:63]), table.ident, sql.Identifier(ALLOW_COLUMN)
        )
    )


def update_row_acls(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    items: Sequence[tuple[Sequence[uuid.UUID], list[str], list[str]]],
) -> None:
    """Rewrite the ACL arrays of rows in place, in one statement: (row ids, allow, deny) per document.
    One statement, so an old grant disappears from every row of the document at once."""
    ids: list[uuid.UUID] = []
    allows: list[str] = []
    denies: list[str] = []
    import json

    for row_ids, allow, deny in items:
        for i in row_ids:
            ids.append(i)
            allows.append(json.dumps(allow))
            denies.append(json.dumps(deny))
    if not ids:
        return
    conn.execute(
        sql.SQL(
            "UPDATE {t} SET {a} = ARRAY(SELECT jsonb_array_elements_text(v.a)),"
            " {d} = ARRAY(SELECT jsonb_array_elements_text(v.d))"
            " FROM unnest(%s::uuid[], %s::jsonb[], %s::jsonb[]) AS v(id, a, d) WHERE {t}.{pk} = v.id"
        ).format(
            t=table.ident, a=sql.Identifier(ALLOW_COLUMN), d=sql.Identifier(DENY_COLUMN),
            pk=sql.Identifier(mapping.primary_key),
        ),
        (ids, allows, denies),
    )
