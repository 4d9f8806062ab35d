"""Bytes → str for text formats, with a fixed, documented order of attempts.

Rule: a byte-order mark wins (UTF-8/16/32); otherwise strict UTF-8; otherwise a charset declared by
the caller (e.g. `text/plain; charset=...`); otherwise charset-normalizer's best guess, except that
among the Latin-script single-byte code pages (which no detector tells apart reliably from a few
accented letters) Windows-1252, by far the most common of them, wins whenever it decodes the bytes.
Whatever the encoding, text with NUL bytes or mostly control characters is binary and refused.
"""

from __future__ import annotations

import codecs

from pgkb.parsing.errors import ParseError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LATIN_SINGLE_BYTE = frozenset(
    [
        "cp1250",
        "cp1252",
        "cp1254",
        "cp1257",
        "cp1258",
        "latin_1",
        "iso8859_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso8859_9",
        "iso8859_10",
        "iso8859_13",
        "iso8859_14",
        "iso8859_15",
        "iso8859_16",
        "mac_roman",
        "mac_latin2",
        "mac_iceland",
        "mac_turkish",
        "cp437",
        "cp850",
        "cp858",
    ]
)
# Control characters other than tab, newline, carriage return and form feed.
_CONTROL = frozenset(chr(c) for c in range(32) if c not in (9, 10, 12, 13)) | {"\x7f"}


def decode_text(data: bytes, declared_charset: str | None = None) -> str:
    text = _decode(data, declared_charset)
    _refuse_binary(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, declared_charset: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ParseError(f"undecodable text: invalid {encoding} after a byte-order mark") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if declared_charset:
        try:
            return data.decode(declared_charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - charset-normalizer is a declared dependency
        from_bytes = None  # type: ignore[assignment]
    if from_bytes is not None:
        best = from_bytes(data).best()
        if best is not None:
            if best.encoding.replace("-", "_").lower() in _LATIN_SINGLE_BYTE:
                try:
                    return data.decode("cp1252")
                except UnicodeDecodeError:
                    pass
            return str(best)
    raise ParseError("undecodable text: not UTF-8 and no other character set fits")


def _refuse_binary(text: str) -> None:
    if "\x00" in text:
        raise ParseError("undecodable text: contains NUL bytes (binary file?)")
    sample = text[:65536]
    if sample and sum(ch in _CONTROL for ch in sample) > len(sample) * 0.05:
        raise ParseError("undecodable text: mostly control characters (binary file?)")
