"""Database errors that are the caller's doing, as Bedrock's typed exceptions.

A unique violation is a conflict with an existing resource (renaming a data source to a name in
use, a race between two creates); a data error or a failed check is input PostgreSQL cannot take.
Neither is a server fault. `map_database_errors` wraps every public method of the service class
once, so no operation has to remember; errors that are pgkb's own (a missing table, a syntax
error) pass through and stay 500s, as they should.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg.errors

from pgkb.errors import ConflictError, PgkbError, ValidationError, printable

T = TypeVar("T")


def _text(exc: psycopg.Error) -> str:
    lines = str(exc).splitlines()
    primary = exc.diag.message_primary or (lines[0] if lines else type(exc).__name__)
    detail = exc.diag.message_detail
    return printable(f"{primary} ({detail})" if detail else primary)


def translate(exc: BaseException) -> PgkbError | None:
    """The typed error `exc` stands for, or None when it is not the caller's doing."""
    if isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.ExclusionViolation):
        return ConflictError(f"the request conflicts with an existing resource: {_text(exc)}")
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return ConflictError(f"a resource this request refers to was changed or deleted meanwhile: {_text(exc)}")
    if isinstance(exc, psycopg.errors.DuplicateTable | psycopg.errors.DuplicateObject):
        return ConflictError(f"the storage is being created by another request; retry: {_text(exc)}")
    if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
        return ValidationError(f"invalid input: {_text(exc)}")
    return None


def _wrap(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (psycopg.IntegrityError, psycopg.DataError, psycopg.errors.DuplicateTable,
                psycopg.errors.DuplicateObject) as exc:
            typed = translate(exc)
            if typed is None:
                raise
            raise typed from exc

    return call


def map_database_errors(cls: type[T]) -> type[T]:
    """Wrap `cls`'s public instance methods (its operations) with `translate`."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr):
            setattr(cls, name, _wrap(attr))
    return cls
