"""Errors raised while reading a document or its metadata sidecar."""

from __future__ import annotations

from pgkb.errors import ValidationError


class ParseError(ValidationError):
    """A document could not be turned into text; the message is a one-line reason."""


class MetadataError(ValidationError):
    """A `<file>.metadata.json` sidecar is malformed; the message is a one-line reason."""
