"""Bedrock's RetrievalFilter → a SQL predicate over a knowledge-base table, values always bound.

Where an attribute lives (decided per key):
- system keys (`x-amz-bedrock-kb-*`, `x-pgkb-*`) are read from the `metadata` json column;
- other keys from the `custom_metadata` jsonb column when the field mapping has one (equality,
  `in` and `listContains` compile to `@>` containment so its GIN index serves them);
- else from a per-attribute column of that name when the table has one (typed comparisons, so a
  b-tree on the column can serve them);
- else from the `metadata` json column (tables that keep everything there).

Typing follows Bedrock: a number never equals a string, range operators need numbers, `listContains`
only matches list attributes, `notEquals` also matches chunks without the key, `notIn` only chunks
that have it. Predicates use named placeholders `%(fN)s`; `compile_filter` returns them with a dict of
parameters, so the caller can place the predicate anywhere in a larger statement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from pgkb.errors import ValidationError, unstorable
from pgkb.store.vector_table import FieldMapping

LEAF_OPERATORS = (
    "equals", "notEquals", "greaterThan", "greaterThanOrEquals", "lessThan", "lessThanOrEquals",
    "in", "notIn", "startsWith", "listContains", "stringContains",
)
GROUP_OPERATORS = ("andAll", "orAll")
OPERATORS = LEAF_OPERATORS + GROUP_OPERATORS
MAX_KEY_LENGTH = 100
MAX_DEPTH = 64  # far beyond any real filter; stops runaway recursion and giant statements
MAX_LIST = 1000
SYSTEM_PREFIXES = ("x-amz-bedrock-kb-", "x-pgkb-")

_RANGE = {"greaterThan": ">", "greaterThanOrEquals": ">=", "lessThan": "<", "lessThanOrEquals": "<="}


# ----------------------------------------------------------------------------------------- validation


def _is_number(v: Any) -> bool:
    """A finite double: Bedrock's filter numbers are doubles, and values bind as float8."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond any double (10**400)
        return False


def _is_scalar(v: Any) -> bool:
    return isinstance(v, str | bool) or _is_number(v)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number" if _is_number(v) else "a number out of range"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    return type(v).__name__ if not isinstance(v, dict) else "object"


def _check_leaf(op: str, body: Any, path: str) -> None:
    if not isinstance(body, dict):
        raise ValidationError(f"{path}: expected an object with 'key' and 'value', got {_kind(body)}")
    extra = set(body) - {"key", "value"}
    if extra:
        raise ValidationError(f"{path}: unexpected member(s) {sorted(extra)}; only 'key' and 'value' are allowed")
    if "key" not in body or "value" not in body:
        raise ValidationError(f"{path}: 'key' and 'value' are both required")
    key = body["key"]
    if not isinstance(key, str) or not key:
        raise ValidationError(f"{path}.key: must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"{path}.key: {len(key)} characters; a filter key must have at most {MAX_KEY_LENGTH} characters"
        )
    _check_text(key, f"{path}.key")
    value = body["value"]
    vpath = f"{path}.value"
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(item, str):
            _check_text(item, vpath if not isinstance(value, list) else f"{vpath}[{i}]")
    if op in ("equals", "notEquals"):
        if not _is_scalar(value):
            raise ValidationError(f"{vpath}: {op} needs a string, number or boolean, got {_kind(value)}")
    elif op in _RANGE:
        if not _is_number(value):
            raise ValidationError(f"{vpath}: {op} needs a number, got {_kind(value)}")
    elif op in ("in", "notIn"):
        if not isinstance(value, list) or not value:
            raise ValidationError(f"{vpath}: {op} needs a non-empty list, got {_kind(value)}")
        if len(value) > MAX_LIST:
            raise ValidationError(f"{vpath}: {op} accepts at most {MAX_LIST} values, got {len(value)}")
        for i, item in enumerate(value):
            if not _is_scalar(item):
                raise ValidationError(f"{vpath}[{i}]: {op} list members must be strings, numbers or booleans, got {_kind(item)}")
    elif op in ("startsWith", "stringContains"):
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{vpath}: {op} needs a non-empty string, got {_kind(value)}")
    elif op == "listContains" and not _is_scalar(value):
        raise ValidationError(f"{vpath}: listContains needs a string, number or boolean, got {_kind(value)}")


def _check_text(text: str, path: str) -> None:
    why = unstorable(text)
    if why is not None:
        raise ValidationError(f"{path}: {why}")


def _validate(f: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValidationError(f"{path}: filters nest at most {MAX_DEPTH} levels deep")
    if not isinstance(f, dict):
        raise ValidationError(f"{path}: a filter must be an object with exactly one operator, got {_kind(f)}")
    if len(f) != 1:
        if not f:
            raise ValidationError(f"{path}: empty filter; expected exactly one operator of {', '.join(OPERATORS)}")
        raise ValidationError(
            f"{path}: {len(f)} operators in one filter object ({', '.join(sorted(map(str, f)))}); "
            "use exactly one, and combine several with andAll or orAll"
        )
    op, body = next(iter(f.items()))
    if op not in OPERATORS:
        raise ValidationError(f"{path}: unknown filter operator {op!r}; expected one of {', '.join(OPERATORS)}")
    if op in GROUP_OPERATORS:
        if not isinstance(body, list):
            raise ValidationError(f"{path}.{op}: expected a list of filters, got {_kind(body)}")
        if len(body) < 2:
            raise ValidationError(f"{path}.{op}: needs at least 2 filters, got {len(body)}")
        for i, member in enumerate(body):
            _validate(member, f"{path}.{op}[{i}]", depth + 1)
    else:
        _check_leaf(op, body, f"{path}.{op}")


def validate_filter(f: Any, path: str = "filter") -> None:
    """Raise ValidationError naming the first problem in a RetrievalFilter (a dict)."""
    _validate(f, path, 0)


# ------------------------------------------------------------------------------------------ compiling


def column_kind(pg_type: str) -> str:
    """'text' | 'number' | 'boolean' | 'text[]' | 'json' | 'other' for a formatted PostgreSQL type."""
    t = pg_type.lower()
    if t.endswith("[]"):
        return "text[]" if t.startswith(("text", "character varying", "varchar")) else "other"
    if t.startswith(("text", "character varying", "varchar", "character(", "char")):
        return "text"
    if t.startswith(("integer", "bigint", "smallint", "numeric", "double precision", "real", "decimal")):
        return "number"
    if t == "boolean":
        return "boolean"
    if t in ("json", "jsonb"):
        return "json"
    return "other"


@dataclass
class _Ctx:
    mapping: FieldMapping
    attribute_cols: dict[str, str]
    alias: str | None
    prefix: str
    params: dict[str, Any]
    names: Iterator[int]

    def p(self, value: Any) -> sql.Composable:
        name = f"{self.prefix}{next(self.names)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def col(self, name: str) -> sql.Composable:
        return sql.Identifier(self.alias, name) if self.alias else sql.Identifier(name)


def _source(ctx: _Ctx, key: str) -> tuple[str, sql.Composable]:
    """('container', jsonb object expr) or ('column:<kind>', column expr) holding attribute `key`."""
    meta = sql.SQL("({}::jsonb)").format(ctx.col(ctx.mapping.metadata))
    if key.startswith(SYSTEM_PREFIXES):
        return "container", meta
    if ctx.mapping.custom_metadata:
        return "container", ctx.col(ctx.mapping.custom_metadata)
    if key in ctx.attribute_cols:
        return "column:" + column_kind(ctx.attribute_cols[key]), ctx.col(key)
    return "container", meta


def _json_value(ctx: _Ctx, kind: str, src: sql.Composable, key: str) -> sql.Composable:
    """The attribute as a jsonb value (NULL when absent)."""
    if kind == "container":
        return sql.SQL("({} -> {})").format(src, ctx.p(key))
    if kind == "column:json":
        return sql.SQL("({}::jsonb)").format(src)
    if kind == "column:text":
        # write_rows stores list attributes as JSON text in a text column: read them back as lists.
        return sql.SQL(
            "(CASE WHEN left({c}, 1) = '[' AND pg_input_is_valid({c}, 'jsonb') THEN {c}::jsonb ELSE to_jsonb({c}) END)"
        ).format(c=src)
    return sql.SQL("to_jsonb({})").format(src)


def _not(pred: sql.Composable) -> sql.Composable:
    return sql.SQL("(NOT coalesce({}, false))").format(pred)


def _leaf(ctx: _Ctx, op: str, key: str, value: Any) -> sql.Composable:
    kind, src = _source(ctx, key)
    col_kind = kind.partition(":")[2]

    # Typed fast paths on per-attribute columns (an index on the column can serve them).
    if col_kind == "text" and op in ("equals", "notEquals", "in", "notIn", "startsWith"):
        if op == "startsWith":
            return sql.SQL("starts_with({}, {})").format(src, ctx.p(value))
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, str) for v in values):
            if op == "equals":
                return sql.SQL("({} = {})").format(src, ctx.p(value))
            if op == "notEquals":
                return sql.SQL("({} IS DISTINCT FROM {})").format(src, ctx.p(value))
            if op == "in":
                return sql.SQL("({} = ANY({}::text[]))").format(src, ctx.p(values))
            return sql.SQL("({c} IS NOT NULL AND {c} <> ALL({v}::text[]))").format(c=src, v=ctx.p(values))
    if col_kind == "number" and op in ("equals", "notEquals", "in", "notIn", *_RANGE):
        values = value if isinstance(value, list) else [value]
        if all(_is_number(v) for v in values):
            if op in _RANGE:
                return sql.SQL("({} " + _RANGE[op] + " {}::float8)").format(src, ctx.p(float(value)))
            if op == "equals":
                return sql.SQL("({} = {}::float8)").format(src, ctx.p(float(value)))
            if op == "notEquals":
                return sql.SQL("({} IS DISTINCT FROM {}::float8)").format(src, ctx.p(float(value)))
            arr = ctx.p([float(v) for v in values])
            if op == "in":
                return sql.SQL("({} = ANY({}::float8[]))").format(src, arr)
            return sql.SQL("({c} IS NOT NULL AND {c} <> ALL({v}::float8[]))").format(c=src, v=arr)
    if col_kind == "boolean" and op in ("equals", "notEquals") and isinstance(value, bool):
        cmp = "=" if op == "equals" else "IS DISTINCT FROM"
        return sql.SQL("({} " + cmp + " {})").format(src, ctx.p(value))
    if col_kind == "text[]" and op == "listContains" and isinstance(value, str):
        return sql.SQL("({} @> ARRAY[{}]::text[])").format(src, ctx.p(value))

    # Containment on a jsonb object: GIN-indexable for custom_metadata.
    if kind == "container" and op in ("equals", "notEquals", "in", "listContains"):
        if op == "listContains":
            return sql.SQL("({} @> {})").format(src, ctx.p(Jsonb({key: [value]})))
        if op == "in":
            return sql.SQL("({})").format(
                sql.SQL(" OR ").join(sql.SQL("{} @> {}").format(src, ctx.p(Jsonb({key: v}))) for v in value)
            )
        eq = sql.SQL("({} @> {})").format(src, ctx.p(Jsonb({key: value})))
        return eq if op == "equals" else _not(eq)
    if kind == "container" and op == "notIn":
        members = sql.SQL(" OR ").join(sql.SQL("{} @> {}").format(src, ctx.p(Jsonb({key: v}))) for v in value)
        return sql.SQL("(coalesce({} ? {}, false) AND {})").format(src, ctx.p(key), _not(members))

    # Generic: compare the attribute as a jsonb value, with Bedrock's typing.
    v = _json_value(ctx, kind, src, key)
    if op == "equals":
        return sql.SQL("({} = {})").format(v, ctx.p(Jsonb(value)))
    if op == "notEquals":
        return sql.SQL("({} IS DISTINCT FROM {})").format(v, ctx.p(Jsonb(value)))
    if op == "in":
        return sql.SQL("({} = ANY({}::jsonb[]))").format(v, ctx.p([Jsonb(x) for x in value]))
    if op == "notIn":
        return sql.SQL("({v} IS NOT NULL AND jsonb_typeof({v}) <> 'null' AND {n})").format(
            v=v, n=_not(sql.SQL("{} = ANY({}::jsonb[])").format(v, ctx.p([Jsonb(x) for x in value])))
        )
    if op in _RANGE:
        return sql.SQL("(CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::float8 " + _RANGE[op] + " {p}::float8 END)").format(
            v=v, p=ctx.p(float(value))
        )
    if op == "startsWith":
        return sql.SQL("(CASE WHEN jsonb_typeof({v}) = 'string' THEN starts_with({v} #>> '{{}}', {p}) END)").format(
            v=v, p=ctx.p(value)
        )
    if op == "listContains":
        return sql.SQL("(CASE WHEN jsonb_typeof({v}) = 'array' THEN {v} @> {p} END)").format(v=v, p=ctx.p(Jsonb([value])))
    if op == "stringContains":
        p = ctx.p(value)
        return sql.SQL(
            "(CASE jsonb_typeof({v}) WHEN 'string' THEN strpos({v} #>> '{{}}', {p}) > 0"
            " WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({v}) AS e(x)"
            " WHERE jsonb_typeof(e.x) = 'string' AND strpos(e.x #>> '{{}}', {p}) > 0) END)"
        ).format(v=v, p=p)
    raise ValidationError(f"unknown filter operator {op!r}")  # unreachable after validation


def _compile(ctx: _Ctx, f: dict[str, Any]) -> sql.Composable:
    op, body = next(iter(f.items()))
    if op in GROUP_OPERATORS:
        joiner = sql.SQL(" AND " if op == "andAll" else " OR ")
        # Members may be NULL (unknown): AND/OR treat that as not matching already, and every NOT
        # coalesces its operand. No coalesce here, so the planner still sees indexable `@>` clauses.
        return sql.SQL("({})").format(joiner.join(_compile(ctx, m) for m in body))
    return _leaf(ctx, op, body["key"], body["value"])


def compile_filter(
    f: dict[str, Any],
    mapping: FieldMapping,
    attribute_cols: dict[str, str] | None = None,
    *,
    alias: str | None = None,
    prefix: str = "f",
) -> tuple[sql.Composable, dict[str, Any]]:
    """Validate `f` and compile it to a boolean SQL expression and its named parameters.

    The expression is meant for WHERE: NULL there means "does not match".

    `alias` qualifies column references (e.g. the table alias of the caller's FROM clause);
    `prefix` names the placeholders (`%(f0)s`, ...) so that they do not collide with the caller's.
    """
    validate_filter(f)
    ctx = _Ctx(mapping, dict(attribute_cols or {}), alias, prefix, {}, itertools.count())
    return _compile(ctx, f), ctx.params


# ------------------------------------------------------------------------------------------ access control


def acl_predicate(principal: int | None, *, alias: str = "c", prefix: str = "acl") -> tuple[sql.Composable, dict[str, Any]]:
    """Row visibility on a MANAGED knowledge base's table (pgkb.store.acl), for WHERE.

    `principal`: the user's interned id (pgkb.store.acl.lookup_principal), None for no user or a user
    no ACL names. Visible: rows of sources without ACLs (PUBLIC), and rows whose allow list holds the
    user and whose deny list does not (deny wins). `&&` over `acl_allow` is served by its GIN index;
    the deny check runs on the rows that pass it."""
    from pgkb.store.acl import ALLOW_COLUMN, DENY_COLUMN, PUBLIC

    allow = sql.Identifier(alias, ALLOW_COLUMN)
    if principal is None:
        return sql.SQL("({} && {}::int4[])").format(allow, sql.Placeholder(f"{prefix}_allow")), {
            f"{prefix}_allow": [PUBLIC]
        }
    return (
        sql.SQL("({a} && {p}::int4[] AND NOT coalesce({d} @> {u}::int4[], false))").format(
            a=allow, p=sql.Placeholder(f"{prefix}_allow"), d=sql.Identifier(alias, DENY_COLUMN),
            u=sql.Placeholder(f"{prefix}_deny"),
        ),
        {f"{prefix}_allow": [PUBLIC, principal], f"{prefix}_deny": [principal]},
    )
