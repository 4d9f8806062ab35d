"""The few statement shapes the endpoint understands, parsed without a SQL engine.

`SELECT fn('lit', ...)`, `SELECT * FROM fn('lit', ...)`, `SET name TO value` and `SELECT 1`. Arguments
are string literals exactly as PostgreSQL's `format('%L')` / `quote_literal` writes them ('' doubling,
E'' with backslashes), or NULL; an optional `::type` cast after a literal is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgkb.sqlfuncs.errors import SqlStateError

_WS = re.compile(r"\s*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NULL = re.compile(r"NULL\b", re.IGNORECASE)
_CAST = re.compile(r"\s*::\s*[A-Za-z_][A-Za-z0-9_ ]*(\[\])?")
_SET = re.compile(r"^\s*(SET|RESET)\b(.*)$", re.IGNORECASE | re.DOTALL)
_SELECT_CONST = re.compile(r"^\s*SELECT\s+(-?\d+|'[^']*')\s*;?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Call:
    name: str
    args: list[str | None]
    set_returning: bool  # SELECT * FROM fn(...) vs SELECT fn(...)


@dataclass(frozen=True)
class SetCommand:
    name: str
    value: str | None


@dataclass(frozen=True)
class Constant:
    value: str


Statement = Call | SetCommand | Constant | None  # None: empty query



def _skip_ws(q: str, i: int) -> int:
    """Index of the first character at or after `i` that whitespace and comments do not cover."""
    m = _WS.match(q, i)
    return m.end() if m else i

def _syntax(msg: str) -> SqlStateError:
    return SqlStateError("42601", msg, hint="pgkb's endpoint accepts SELECT fn('literal', ...) calls only")


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _read_literal(s: str, i: int) -> tuple[str, int]:
    """Parse a literal starting at s[i] ('...' or E'...'); returns (value, index after it)."""
    escaped = s[i] in "eE"
    if escaped:
        i += 1
    if i >= len(s) or s[i] != "'":
        raise _syntax("expected a string literal")
    i += 1
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "'":
            if i + 1 < n and s[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if escaped and c == "\\" and i + 1 < n:
            e = s[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e == "x" and re.match(r"[0-9A-Fa-f]{1,2}", s[i + 2:i + 4]):
                m = re.match(r"[0-9A-Fa-f]{1,2}", s[i + 2:i + 4])
                assert m
                out.append(chr(int(m.group(0), 16)))
                i += 2 + len(m.group(0))
            elif e == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", s[i + 2:i + 6]):
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
            elif e.isdigit() and e in "01234567":
                m = re.match(r"[0-7]{1,3}", s[i + 1:i + 4])
                assert m
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
            else:
                out.append(e)
                i += 2
            continue
        # Plain chunk up to the next quote or backslash: keeps long bodies O(n).
        j = i + 1
        while j < n and s[j] != "'" and not (escaped and s[j] == "\\"):
            j += 1
        out.append(s[i:j])
        i = j
    raise _syntax("unterminated string literal")


def parse(query: str) -> Statement:
    q = query.strip()
    while q.endswith(";"):
        q = q[:-1].rstrip()
    if not q:
        return None
    m = _SET.match(q)
    if m:
        rest = m.group(2).strip()
        if m.group(1).upper() == "RESET":
            return SetCommand(rest.lower(), None)
        sm = re.match(r"^(?:SESSION\s+|LOCAL\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=|\bTO\b)\s*(.+)$", rest,
                      re.IGNORECASE | re.DOTALL)
        if not sm:
            raise _syntax("malformed SET command")
        value = sm.group(2).strip()
        if value[:1] in "'eE" and "'" in value[:2]:
            value, _ = _read_literal(value, 0)
        return SetCommand(sm.group(1).lower(), value)
    m = _SELECT_CONST.match(q)
    if m:
        v = m.group(1)
        return Constant(v[1:-1] if v.startswith("'") else v)
    m = re.match(r"^SELECT\s+(\*\s+FROM\s+)?", q, re.IGNORECASE)
    if not m:
        raise _syntax("syntax error: only SELECT calls are supported")
    set_returning = bool(m.group(1))
    i = m.end()
    im = _IDENT.match(q, i)
    if not im:
        raise _syntax("expected a function name")
    name = im.group(0).lower()
    i = _skip_ws(q, im.end())
    if i >= len(q) or q[i] != "(":
        raise _syntax("expected '(' after the function name")
    i += 1
    args: list[str | None] = []
    i = _skip_ws(q, i)
    if i < len(q) and q[i] == ")":
        i += 1
    else:
        while True:
            i = _skip_ws(q, i)
            nm = _NULL.match(q, i)
            if nm:
                args.append(None)
                i = nm.end()
            elif i < len(q) and (q[i] == "'" or (q[i] in "eE" and q[i + 1:i + 2] == "'")):
                value, i = _read_literal(q, i)
                args.append(value)
            else:
                raise _syntax("function arguments must be string literals or NULL")
            cm = _CAST.match(q, i)
            if cm:
                i = cm.end()
            i = _skip_ws(q, i)
            if i < len(q) and q[i] == ",":
                i += 1
                continue
            if i < len(q) and q[i] == ")":
                i += 1
                break
            raise _syntax("expected ',' or ')' in the argument list")
    # An optional alias: AS t(...) or a bare name.
    tail = q[i:].strip()
    if tail and not re.fullmatch(r"(AS\s+)?[A-Za-z_][A-Za-z0-9_]*(\s*\([^)]*\))?", tail, re.IGNORECASE):
        raise _syntax("unexpected text after the function call")
    return Call(name, args, set_returning)
