"""Typed errors. Each carries the name of the Bedrock exception it maps to over HTTP."""

from __future__ import annotations


class PgkbError(Exception):
    """Base class. `code` is the Bedrock exception name, `status` its HTTP status."""

    code = "InternalServerException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(PgkbError):
    code = "ValidationException"
    status = 400


class NotFoundError(PgkbError):
    code = "ResourceNotFoundException"
    status = 404


class ConflictError(PgkbError):
    code = "ConflictException"
    status = 409


class AccessDeniedError(PgkbError):
    code = "AccessDeniedException"
    status = 403


class ServiceQuotaError(PgkbError):
    code = "ServiceQuotaExceededException"
    status = 400


class DependencyFailedError(PgkbError):
    """A dependency (model endpoint, S3, Secrets Manager) failed."""

    code = "DependencyFailedException"
    status = 424


class BadGatewayError(PgkbError):
    code = "BadGatewayException"
    status = 502


class DatabaseUnavailableError(PgkbError):
    """The database could not be reached within the configured retry time."""

    code = "ServiceUnavailableException"
    status = 503


class ModelNotAvailableError(ValidationError):
    """A model id is unknown, or its provider is not configured (e.g. Bedrock without AWS)."""


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
