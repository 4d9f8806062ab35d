"""Typed errors. Each carries the name of the Bedrock exception it maps to over HTTP."""

from __future__ import annotations


class PgkbError(Exception):
    """Base class. `code` is the Bedrock exception name, `status` its HTTP status, `sqlstate` the
    PostgreSQL error code the SQL functions' endpoint answers with (clients catch them by name)."""

    code = "InternalServerException"
    status = 500
    sqlstate = "38000"  # external_routine_exception: the model call behind the SQL function failed

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(PgkbError):
    code = "ValidationException"
    status = 400
    sqlstate = "22023"  # invalid_parameter_value


class MalformedJsonError(ValidationError):
    """A body that is not JSON at all."""

    sqlstate = "22P02"  # invalid_text_representation


class InputTooLongError(ValidationError):
    """An input longer than the model takes, where the request asked for no truncation."""

    sqlstate = "22001"  # string_data_right_truncation


class NotFoundError(PgkbError):
    code = "ResourceNotFoundException"
    status = 404


class ConflictError(PgkbError):
    code = "ConflictException"
    status = 409


class AccessDeniedError(PgkbError):
    code = "AccessDeniedException"
    status = 403
    sqlstate = "42501"  # insufficient_privilege


class ServiceQuotaError(PgkbError):
    code = "ServiceQuotaExceededException"
    status = 400
    sqlstate = "53400"  # configuration_limit_exceeded


class DependencyFailedError(PgkbError):
    """A dependency (model endpoint, S3, Secrets Manager) failed. `resourceName` (Bedrock's field)
    names the model or reranker, when there is one."""

    code = "DependencyFailedException"
    status = 424

    def __init__(self, message: str, *, resource_name: str | None = None) -> None:
        super().__init__(message)
        self.resourceName = resource_name


class BadGatewayError(PgkbError):
    """A dependency could not answer now (unreachable, timed out, 5xx): retry later."""

    code = "BadGatewayException"
    status = 502

    def __init__(self, message: str, *, resource_name: str | None = None) -> None:
        super().__init__(message)
        self.resourceName = resource_name


class DatabaseUnavailableError(PgkbError):
    """The database could not be reached within the configured retry time."""

    code = "ServiceUnavailableException"
    status = 503


class ModelNotAvailableError(ValidationError):
    """A model id is unknown, or its provider is not configured (e.g. Bedrock without AWS)."""

    sqlstate = "42704"  # undefined_object

def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored or tokenized, or None when it can.

    PostgreSQL's text type has no NUL, and a lone UTF-16 surrogate (which JSON's `\\ud800` escape
    can carry) is no character at all: it cannot be encoded as UTF-8, so neither the database nor
    a tokenizer can take it. Bedrock refuses both with a ValidationException.
    """
    if text.isascii():
        return "must not contain null characters" if "\x00" in text else None
    if "\x00" in text:
        return "must not contain null characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogate characters"
    return None


def printable(text: str) -> str:
    """`text` made safe to echo in any message: lone surrogates become `\\udxxx` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
