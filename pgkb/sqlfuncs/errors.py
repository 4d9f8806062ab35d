"""Errors the endpoint sends as ErrorResponse. A pgkb error carries its own SQLSTATE (`pgkb.errors`)."""

from __future__ import annotations

from pgkb.errors import PgkbError

# SQLSTATEs the endpoint's own checks use (PostgreSQL's codes, so clients can catch them by name);
# pgkb's errors carry theirs.
UNDEFINED_FUNCTION = "42883"       # unknown endpoint function
JSON_MEMBER_NOT_FOUND = "2203A"    # json_key not in the model's response (sql_json_member_not_found)
INVALID_TEXT = "22P02"             # model_input is not valid JSON
INVALID_PARAMETER = "22023"        # model_input is JSON but not a valid request body
NULL_NOT_ALLOWED = "22004"         # a NULL argument
EXTERNAL = "38000"                 # external_routine_exception: the model provider failed
INTERNAL = "XX000"


class SqlStateError(Exception):
    """An error the endpoint sends as an ErrorResponse with this SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


def from_exception(exc: BaseException) -> SqlStateError:
    """The ErrorResponse for an exception: a pgkb error carries its own SQLSTATE."""
    if isinstance(exc, SqlStateError):
        return exc
    if isinstance(exc, PgkbError):
        return SqlStateError(exc.sqlstate, str(exc) or type(exc).__name__)
    return SqlStateError(INTERNAL, f"pgkb endpoint internal error: {type(exc).__name__}")
