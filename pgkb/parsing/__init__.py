"""Document bytes → text (`parse_bytes`) and sidecar metadata (`parse_sidecar`).

Supported: .txt .md .markdown .html .htm .pdf .docx .csv .tsv .xlsx, and .vtt transcripts. Bedrock also lists .doc and .xls;
those old binary formats have no maintained pure-Python reader and are reported as unsupported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from pgkb.parsing.decoding import decode_text
from pgkb.parsing.errors import MetadataError, ParseError
from pgkb.parsing.markup import html_to_text, markdown_to_text
from pgkb.parsing.office import csv_text, docx_text, pdf_text, xlsx_text
from pgkb.parsing.sidecar import (
    MAX_SIDECAR_BYTES,
    SIDECAR_SUFFIX,
    MetadataValue,
    Sidecar,
    is_sidecar,
    parse_sidecar,
    read_sidecar,
    render_value,
    sidecar_name,
    sidecar_target,
)
from pgkb.parsing.subtitles import vtt_text

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_SIDECAR_BYTES",
    "SIDECAR_SUFFIX",
    "SUPPORTED_EXTENSIONS",
    "MetadataError",
    "MetadataValue",
    "ParseError",
    "ParsedDocument",
    "Sidecar",
    "check_size",
    "is_sidecar",
    "is_supported",
    "mime_type_for",
    "parse_bytes",
    "parse_sidecar",
    "read_sidecar",
    "render_value",
    "sidecar_name",
    "sidecar_target",
]

MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ParsedDocument:
    """Extracted text; `pages` holds (page_number, start_char, end_char) into `text` for PDFs."""

    text: str
    pages: list[tuple[int, int, int]] | None = None
    mime_type: str = "text/plain"


def _txt(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return decode_text(data, charset), None


def _md(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return markdown_to_text(decode_text(data, charset)), None


def _html(data: bytes, charset: str | None) -> tuple[str, list | None]:
    if charset:
        return html_to_text(decode_text(data, charset)), None
    if b"\x00" in data[:65536] and not data.startswith(_WIDE_BOMS):
        raise ParseError("undecodable text: contains NUL bytes (binary file?)")
    # bytes go to BeautifulSoup as is so that a <meta charset> is honoured
    return html_to_text(data), None


_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def _csv(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return csv_text(decode_text(data, charset)), None


def _tsv(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return csv_text(decode_text(data, charset), delimiter="\t"), None


def _vtt(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return vtt_text(decode_text(data, charset)), None


def _pdf(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return pdf_text(data)


def _docx(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return docx_text(data), None


def _xlsx(data: bytes, charset: str | None) -> tuple[str, list | None]:
    return xlsx_text(data), None


_Extractor = Callable[[bytes, str | None], tuple[str, list | None]]
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

# extension → (canonical MIME type, extractor)
_FORMATS: dict[str, tuple[str, _Extractor]] = {
    ".txt": ("text/plain", _txt),
    ".text": ("text/plain", _txt),
    ".md": ("text/markdown", _md),
    ".markdown": ("text/markdown", _md),
    ".html": ("text/html", _html),
    ".htm": ("text/html", _html),
    ".csv": ("text/csv", _csv),
    ".tsv": ("text/tab-separated-values", _tsv),
    ".pdf": ("application/pdf", _pdf),
    ".docx": (_DOCX, _docx),
    ".xlsx": (_XLSX, _xlsx),
    ".vtt": ("text/vtt", _vtt),
}
_BY_MIME = {mime: ext for ext, (mime, _) in reversed(list(_FORMATS.items()))}
_BY_MIME.update({"text/x-markdown": ".md", "application/xhtml+xml": ".html", "application/csv": ".csv"})

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_FORMATS)


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def is_supported(name: str) -> bool:
    """True for a document pgkb can parse (sidecars are metadata, not documents)."""
    return not is_sidecar(name) and _extension(name) in _FORMATS


def mime_type_for(name: str) -> str | None:
    entry = _FORMATS.get(_extension(name))
    return entry[0] if entry else None


def check_size(size: int) -> None:
    """Raise ParseError for files over Bedrock's 50 MB limit; call it before reading the file."""
    if size > MAX_FILE_BYTES:
        raise ParseError(f"file is {size / (1024 * 1024):.1f} MB, over the 50 MB limit")


def parse_bytes(data: bytes, name: str, mime_type: str | None = None) -> ParsedDocument:
    """Extract text. The file name's extension picks the format; `mime_type` is the fallback for
    names without a known extension (inline documents), and its `charset=` parameter is honoured."""
    check_size(len(data))
    base, charset = _split_mime(mime_type)
    ext = _extension(name)
    if is_sidecar(name):
        raise ParseError("a .metadata.json sidecar is metadata, not a document")
    if ext not in _FORMATS:
        ext = _BY_MIME.get(base or "", "")
    if ext not in _FORMATS:
        shown = _extension(name) or base or "no extension"
        raise ParseError(f"unsupported file type ({shown}); supported: {', '.join(sorted(_FORMATS))}")
    canonical, extract = _FORMATS[ext]
    if not data:
        raise ParseError("empty document: the file has no bytes")
    text, pages = extract(data, charset)
    if not text.strip():
        raise ParseError("empty document: no text could be extracted")
    return ParsedDocument(text=text, pages=pages, mime_type=canonical)


def _split_mime(mime_type: str | None) -> tuple[str | None, str | None]:
    if not mime_type:
        return None, None
    base, *params = (p.strip() for p in mime_type.split(";"))
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return base.lower(), charset
