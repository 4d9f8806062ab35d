"""Each error class carries its own codes: Bedrock's exception name, HTTP status and SQLSTATE.
Nothing picks a code by searching an error's message."""

from __future__ import annotations

from pgkb.errors import (
    AccessDeniedError,
    InputTooLongError,
    MalformedJsonError,
    ModelNotAvailableError,
    PgkbError,
    ServiceQuotaError,
    ValidationError,
)
from pgkb.sqlfuncs.errors import INTERNAL, SqlStateError, from_exception


def test_sqlstate_comes_from_the_class_not_the_message() -> None:
    cases = [
        (InputTooLongError("Too many input tokens"), "22001"),
        (ValidationError("this text is too long, says a message"), "22023"),
        (MalformedJsonError("not JSON"), "22P02"),
        (ValidationError("invalid JSON key, malformed"), "22023"),
        (ModelNotAvailableError("unknown model"), "42704"),
        (AccessDeniedError("no"), "42501"),
        (ServiceQuotaError("too many"), "53400"),
        (PgkbError("the provider failed"), "38000"),
    ]
    for exc, sqlstate in cases:
        got = from_exception(exc)
        assert (got.sqlstate, got.message) == (sqlstate, str(exc)), exc
    assert InputTooLongError("x").code == "ValidationException" and InputTooLongError("x").status == 400
    own = SqlStateError("42883", "no such function")
    assert from_exception(own) is own
    assert from_exception(KeyError("secret detail")).sqlstate == INTERNAL
    assert "secret detail" not in from_exception(KeyError("secret detail")).message
