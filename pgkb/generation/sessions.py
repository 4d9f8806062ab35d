"""Conversation sessions in the catalog (pgkb.rag_sessions / pgkb.rag_turns, migration 020).

A session is created by the first RetrieveAndGenerate call and belongs to that knowledge base. Each
call with it extends its life (PGKB_SESSION_TTL_SECONDS, default 24 h, sliding). An unknown, expired
or other knowledge base's session id is a ValidationException, as Bedrock answers an invalid
sessionId. Expired sessions are deleted when new sessions are created.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from pgkb import config
from pgkb.errors import ValidationError
from pgkb.generation.base import Turn

TTL_ENV = "PGKB_SESSION_TTL_SECONDS"
DEFAULT_TTL_S = 24 * 3600
HISTORY_TURNS = 10  # earlier turns sent to a model; older ones stay stored but unused


def ttl_seconds() -> int:
    try:
        return max(1, int(config.current().session_ttl_seconds or DEFAULT_TTL_S))
    except ValueError:
        return DEFAULT_TTL_S


def new_id() -> str:
    return str(uuid.uuid4())


def create(conn: Any, kb_id: str, session_id: str | None = None, user_id: str | None = None) -> str:
    """Store a new session now (the stream sends its id before the answer exists)."""
    session_id = session_id or new_id()
    _purge_now_and_then(conn)
    with conn.transaction():
        conn.execute(
            "INSERT INTO pgkb.rag_sessions (id, kb_id, expires_at, user_id)"
            " VALUES (%s, %s, now() + make_interval(secs => %s), %s)",
            (session_id, kb_id, ttl_seconds(), user_id),
        )
    return session_id


_PURGE_EVERY_S = 600.0
_last_purge = 0.0


def _purge_now_and_then(conn: Any) -> None:
    """Delete expired sessions at most every 10 minutes per process, not on every call."""
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_EVERY_S:
        return
    _last_purge = now
    with conn.transaction():
        conn.execute("DELETE FROM pgkb.rag_sessions WHERE expires_at < now()")


def history(conn: Any, session_id: str, kb_id: str, user_id: str | None = None) -> list[Turn]:
    """The latest turns, oldest first; raises ValidationError for an unusable session id. A session
    of another user (userContext) is answered like one that does not exist."""
    row = conn.execute(
        "SELECT kb_id, expires_at > now(), user_id IS NOT DISTINCT FROM %s FROM pgkb.rag_sessions WHERE id = %s",
        (user_id, session_id),
    ).fetchone()
    if row is None or not row[1] or not row[2]:
        raise ValidationError(f"Session with Id {session_id} is not valid or has expired. Please check and try again.")
    if row[0] != kb_id:
        raise ValidationError(
            f"Session with Id {session_id} belongs to knowledge base {row[0]}, not {kb_id}; start a new session"
        )
    rows = conn.execute(
        "SELECT question, answer, rewritten FROM ("
        " SELECT turn, question, answer, rewritten FROM pgkb.rag_turns WHERE session_id = %s"
        " ORDER BY turn DESC LIMIT %s) t ORDER BY turn",
        (session_id, HISTORY_TURNS),
    ).fetchall()
    return [Turn(question=q, answer=a, rewritten=r) for q, a, r in rows]


_NEW_TURN = (
    "WITH s AS (INSERT INTO pgkb.rag_sessions (id, kb_id, expires_at, user_id)"
    " VALUES (%(id)s, %(kb)s, now() + make_interval(secs => %(ttl)s), %(user)s) RETURNING id)"
    " INSERT INTO pgkb.rag_turns (session_id, turn, question, rewritten, answer)"
    " SELECT s.id, 1, %(q)s, %(r)s, %(a)s FROM s"
)
_NEXT_TURN = (
    "WITH s AS (UPDATE pgkb.rag_sessions SET updated_at = now(), expires_at = now() + make_interval(secs => %(ttl)s)"
    " WHERE id = %(id)s RETURNING id)"
    " INSERT INTO pgkb.rag_turns (session_id, turn, question, rewritten, answer)"
    " SELECT s.id, coalesce((SELECT max(turn) FROM pgkb.rag_turns WHERE session_id = %(id)s), 0) + 1,"
    " %(q)s, %(r)s, %(a)s FROM s"
)


def append(conn: Any, session_id: str, question: str, rewritten: str, answer: str, *,
           new_for_kb: str | None = None, user_id: str | None = None) -> None:
    """Record a turn and extend the session (or, with `new_for_kb`, store the session with its first
    turn) in one statement, pipelined with its transaction in one round trip. A turn lost to a crash
    costs a conversation one exchange, so the commit does not wait for the disk flush. A turn lost
    because its session was deleted meanwhile (its knowledge base went away) is not an error."""
    if new_for_kb is not None:
        _purge_now_and_then(conn)
    params = {"id": session_id, "kb": new_for_kb, "ttl": ttl_seconds(), "q": question, "r": rewritten, "a": answer,
              "user": user_id}
    for attempt in (1, 2):
        try:
            with conn.pipeline(), conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(_NEW_TURN if new_for_kb is not None else _NEXT_TURN, params)
            return
        except psycopg.errors.UniqueViolation:
            if attempt == 2 or new_for_kb is not None:
                raise
            # two calls on one session took the same turn number: the later one takes the next
