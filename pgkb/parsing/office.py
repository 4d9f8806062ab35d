"""PDF, Word and spreadsheet extraction with pypdf, python-docx and openpyxl."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import warnings
import zipfile
from collections.abc import Iterable, Sequence

from pgkb.parsing.errors import ParseError

# pypdf reports oddities of real-world PDFs through logging and warnings; they are not our user's
# problem and must not spam the CLI. Filtering by module keeps other libraries' warnings visible.
logging.getLogger("pypdf").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"pypdf(\..*)?$")

PAGE_SEPARATOR = "\n\n"
# Uncompressed size allowed for the parts of a .docx/.xlsx (a 50 MB sheet inflates about tenfold).
MAX_INFLATED_BYTES = 1024 * 1024 * 1024
# The csv module refuses fields over 128 KB by default; a cell of a 50 MB file may be larger.
csv.field_size_limit(64 * 1024 * 1024)


def pdf_text(data: bytes) -> tuple[str, list[tuple[int, int, int]]]:
    """Text of every page, pages separated by a blank line, with (page, start, end) offsets."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("encrypted PDF: a password is required")
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, AssertionError, ZeroDivisionError) as exc:
        raise ParseError(f"corrupt PDF: {_reason(exc)}") from exc
    parts: list[str] = []
    pages: list[tuple[int, int, int]] = []
    pos = 0
    for number, text in enumerate(texts, start=1):
        if parts:
            parts.append(PAGE_SEPARATOR)
            pos += len(PAGE_SEPARATOR)
        parts.append(text)
        pages.append((number, pos, pos + len(text)))
        pos += len(text)
    return "".join(parts), pages


def check_zip(data: bytes, kind: str) -> None:
    """Refuse a damaged archive or a zip bomb before an XML library inflates it into memory."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ParseError(f"corrupt {kind} file: {_reason(exc)}") from exc
    if inflated > MAX_INFLATED_BYTES:
        raise ParseError(
            f"{kind} file expands to {inflated / 2**20:.0f} MB, over the {MAX_INFLATED_BYTES // 2**20} MB limit"
        )


def docx_text(data: bytes) -> str:
    """Paragraphs and tables of the body in document order; table rows as `a | b | c`."""
    import docx
    from docx.table import Table

    check_zip(data, ".docx")
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks.append(_docx_table(item))
            else:
                blocks.append(item.text.strip())
    except Exception as exc:  # python-docx surfaces zip, XML and key errors for damaged files
        raise ParseError(f"corrupt .docx file: {_reason(exc)}") from exc
    return "\n\n".join(b for b in blocks if b)


def _docx_table(table: object) -> str:
    rows: list[str] = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # merged cells repeat the same underlying element: keep it once
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def csv_text(text: str, delimiter: str | None = None) -> str:
    """Each row as `header: value` lines (empty values left out), rows separated by a blank line."""
    if delimiter is None:
        delimiter = _guess_delimiter(text)
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise ParseError(f"corrupt CSV: {exc}") from exc
    return records_text(rows)


def _guess_delimiter(text: str) -> str:
    """The candidate that splits the header row into the most fields (ties: comma first).
    csv.Sniffer guesses wrong on rows of uneven length, common in exported sheets."""
    header = text.split("\n", 1)[0]
    best, fields = ",", 1
    for candidate in ",;\t|":
        n = len(next(csv.reader([header], delimiter=candidate), []))
        if n > fields:
            best, fields = candidate, n
    return best


def records_text(rows: Iterable[Sequence[object]]) -> str:
    header: list[str] | None = None
    records: list[str] = []
    for raw in rows:
        row = [_cell(v) for v in raw]
        if not any(row):
            continue
        if header is None:
            header = row
            continue
        lines = []
        for i, value in enumerate(row):
            if not value:
                continue
            name = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            lines.append(f"{name}: {value}")
        records.append("\n".join(lines))
    if header is not None and not records:
        return " | ".join(h for h in header if h)  # a header-only table still says something
    return "\n\n".join(records)


def xlsx_text(data: bytes) -> str:
    """Every sheet as records (first non-empty row is the header), under a `Sheet: name` line."""
    import openpyxl

    check_zip(data, ".xlsx")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zip, XML and key errors for damaged files
        raise ParseError(f"corrupt .xlsx file: {_reason(exc)}") from exc
    try:
        sheets = []
        for sheet in book.worksheets:
            body = records_text(sheet.iter_rows(values_only=True))
            if body:
                sheets.append(f"Sheet: {sheet.title}\n\n{body}")
    except Exception as exc:
        raise ParseError(f"corrupt .xlsx file: {_reason(exc)}") from exc
    finally:
        book.close()
    return "\n\n".join(sheets)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


def _reason(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
