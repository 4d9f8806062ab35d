"""Errors the endpoint sends as ErrorResponse, and the SQLSTATE of each pgkb error."""

from __future__ import annotations

from pgkb.errors import (
    AccessDeniedError,
    DependencyFailedError,
    ModelNotAvailableError,
    PgkbError,
    ServiceQuotaError,
    ValidationError,
)

# SQLSTATEs used by the endpoint (PostgreSQL's own codes, so clients can catch them by name).
UNDEFINED_OBJECT = "42704"         # unknown model
UNDEFINED_FUNCTION = "42883"       # unknown endpoint function
JSON_MEMBER_NOT_FOUND = "2203A"    # json_key not in the model's response (sql_json_member_not_found)
INVALID_TEXT = "22P02"             # model_input is not valid JSON
INVALID_PARAMETER = "22023"        # model_input is JSON but not a valid request body
NULL_NOT_ALLOWED = "22004"         # a NULL argument
TOO_LONG = "22001"                 # input longer than the model accepts (string_data_right_truncation)
INSUFFICIENT_PRIVILEGE = "42501"
TOO_MANY = "53400"                 # configuration_limit_exceeded (quota)
EXTERNAL = "38000"                 # external_routine_exception: the model provider failed
INTERNAL = "XX000"


class WireError(Exception):
    def __init__(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


_TOO_LONG_WORDS = ("too long", "too many input tokens", "exceeds the maximum", "max input tokens")


def from_exception(exc: BaseException) -> WireError:
    """Map a pgkb (or unexpected) error to a WireError with a meaningful SQLSTATE."""
    if isinstance(exc, WireError):
        return exc
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, ModelNotAvailableError):
        return WireError(UNDEFINED_OBJECT, msg)
    if isinstance(exc, ValidationError):
        low = msg.lower()
        if any(w in low for w in _TOO_LONG_WORDS):
            return WireError(TOO_LONG, msg)
        if "json" in low and ("malformed" in low or "invalid" in low or "not valid" in low or "parse" in low):
            return WireError(INVALID_TEXT, msg)
        return WireError(INVALID_PARAMETER, msg)
    if isinstance(exc, AccessDeniedError):
        return WireError(INSUFFICIENT_PRIVILEGE, msg)
    if isinstance(exc, ServiceQuotaError):
        return WireError(TOO_MANY, msg)
    if isinstance(exc, DependencyFailedError | PgkbError):
        return WireError(EXTERNAL, msg)
    return WireError(INTERNAL, f"pgkb endpoint internal error: {type(exc).__name__}")
