"""Document-level access control as stored in a MANAGED knowledge base's vector table.

User ids are interned: `<table>_acl_principals` maps each user id (exact text) to an integer, and
every row carries two int4 arrays, written with the row and rewritten in place when only the ACL
changes:
- `acl_allow`: who may see the row. `{0}` (PUBLIC) for rows of data sources without ACLs, the
  principal ids of the allowed users for an ACL-enabled source, `{}` (nobody) for an ACL-enabled
  document without an ACL. NULL (a row written by something that knows nothing of ACLs) is never
  visible: fail closed.
- `acl_deny`: the principal ids of denied users; deny wins over allow.
Integers, not the user ids themselves: a row lists every user granted (S3 and Custom ACLs have no
groups), and an overlap test over a few hundred int4 elements costs a fraction of the same test over
text (no collation calls, no decompression of a toasted array). A GIN index on `acl_allow` lets a
selective ACL be searched through the index (`&&`), like a metadata filter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from pgkb.store import ddl
from pgkb.store.vector_table import FieldMapping, TableRef

ALLOW_COLUMN = "acl_allow"
DENY_COLUMN = "acl_deny"
PUBLIC = 0  # the principal every row of a source without ACLs is granted to; no user maps to it

#: A document's ACL before interning: None = public (source without ACLs), else (allowed, denied).
RowAcl = tuple[list[str], list[str]] | None


def principals(table: TableRef) -> TableRef:
    return TableRef(table.schema, (table.name + "_acl_principals")[:63])


def row_acl(allow: Sequence[str] | None, deny: Sequence[str] | None, *, acl_enabled: bool) -> RowAcl:
    """The ACL of a document's rows. `allow is None` on an ACL-enabled source means "no ACL":
    stored, never returned (an empty allow list)."""
    if not acl_enabled:
        return None
    return list(allow or []), list(deny or [])


def enable_acl(conn: psycopg.Connection, table: TableRef) -> None:
    """Add the ACL columns, their GIN index and the principals table to a table pgkb owns (idempotent)."""
    for stmt in ddl.acl_columns(table, ALLOW_COLUMN, DENY_COLUMN, principals(table)):
        conn.execute(stmt)


def drop_acl(conn: psycopg.Connection, table: TableRef) -> None:
    conn.execute(ddl.drop_table(principals(table)))


def principal_ids(conn: psycopg.Connection, table: TableRef, names: Iterable[str]) -> dict[str, int]:
    """Intern user ids (creating the missing ones): one statement for the lot."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    p = principals(table).ident
    conn.execute(
        sql.SQL("INSERT INTO {} (name) SELECT unnest(%s::text[]) ON CONFLICT (name) DO NOTHING").format(p), (wanted,)
    )
    rows = conn.execute(sql.SQL("SELECT name, id FROM {} WHERE name = ANY(%s)").format(p), (wanted,)).fetchall()
    return {str(n): int(i) for n, i in rows}


# Principal ids never change once made (rows are only dropped with their table, whose name holds the
# knowledge base's unique id), so found ones are remembered; an absent one is looked up every time.
_KNOWN: dict[tuple[str, str, str, str], int] = {}
_KNOWN_MAX = 100_000


def lookup_principal(conn: psycopg.Connection, table: TableRef, name: str) -> int | None:
    """A user's principal id; None for a user no ACL names (who then sees only public rows)."""
    key = (f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}", table.schema, table.name, name)
    known = _KNOWN.get(key)
    if known is not None:
        return known
    row = conn.execute(
        sql.SQL("SELECT id FROM {} WHERE name = %s").format(principals(table).ident), (name,)
    ).fetchone()
    if row is None:
        return None
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN[key] = int(row[0])
    return int(row[0])


def intern(conn: psycopg.Connection, table: TableRef, acls: Sequence[RowAcl]) -> list[tuple[list[int], list[int]]]:
    """Row ACLs with names → (acl_allow, acl_deny) int arrays."""
    ids = principal_ids(conn, table, (n for a in acls if a is not None for n in (*a[0], *a[1])))
    return [([PUBLIC], []) if a is None else ([ids[n] for n in a[0]], [ids[n] for n in a[1]]) for a in acls]


def update_row_acls(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    items: Sequence[tuple[Sequence[uuid.UUID], RowAcl]],
) -> None:
    """Rewrite the ACL arrays of rows in place, in one statement: (row ids, ACL) per document.
    One statement, so an old grant disappears from every row of the document at once."""
    arrays = intern(conn, table, [acl for _, acl in items])
    ids: list[uuid.UUID] = []
    allows: list[str] = []
    denies: list[str] = []
    for (row_ids, _), (allow, deny) in zip(items, arrays, strict=True):
        for i in row_ids:
            ids.append(i)
            allows.append("{" + ",".join(map(str, allow)) + "}")
            denies.append("{" + ",".join(map(str, deny)) + "}")
    if not ids:
        return
    conn.execute(
        sql.SQL(
            "UPDATE {t} SET {a} = v.a::int4[], {d} = v.d::int4[]"
            " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS v(id, a, d) WHERE {t}.{pk} = v.id"
        ).format(
            t=table.ident, a=sql.Identifier(ALLOW_COLUMN), d=sql.Identifier(DENY_COLUMN),
            pk=sql.Identifier(mapping.primary_key),
        ),
        (ids, allows, denies),
    )
