"""Parsing real files of every supported type (generated here with the libraries that write them)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import struct
import warnings
import zipfile

import docx
import openpyxl
import pytest
from fpdf import FPDF

from pgkb.errors import ValidationError
from pgkb.parsing import (
    MAX_FILE_BYTES,
    SUPPORTED_EXTENSIONS,
    ParsedDocument,
    ParseError,
    check_size,
    is_supported,
    mime_type_for,
    parse_bytes,
)

# ---------------------------------------------------------------- generators


def make_pdf(pages: list[str], *, user_password: str | None = None) -> bytes:
    pdf = FPDF()
    if user_password:
        pdf.set_encryption(owner_password="owner", user_password=user_password)
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Credential rotation", level=1)
    document.add_paragraph("Rotate the keys every ninety days.")
    table = document.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("Key", "Owner"), ("alpha", "ops team"), ("beta", "security")]):
        table.cell(r, 0).text = a
        table.cell(r, 1).text = b
    document.add_paragraph("Revoke the old key afterwards.")
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def make_xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Servers"
    sheet.append(["host", "cores", "since"])
    sheet.append(["db-1", 16, dt.datetime(2024, 5, 1)])
    sheet.append(["web-1", 4.0, None])
    other = book.create_sheet("Notes")
    other.append(["note"])
    other.append(["patch on tuesdays"])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


# ---------------------------------------------------------------- plain text


def test_txt_utf8_and_line_endings() -> None:
    doc = parse_bytes("Grüße aus Köln.\r\nZweite Zeile.\rDritte.".encode(), "notes.txt")
    assert doc == ParsedDocument("Grüße aus Köln.\nZweite Zeile.\nDritte.", None, "text/plain")


_CP1252 = "The café’s “naïve” menu costs 5 € – a bargain, really. " * 4


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xef\xbb\xbfwith a BOM", "with a BOM"),
        ("utf-16 text ✓".encode("utf-16"), "utf-16 text ✓"),
        # Windows-1252 is not UTF-8, so charset detection decides
        (_CP1252.encode("cp1252"), _CP1252),
        ("Привет, как дела? Это тест кодировки. ".encode("cp1251") * 3, "Привет, как дела? Это тест кодировки. " * 3),
        ("これは日本語のテキストです。".encode("shift_jis") * 3, "これは日本語のテキストです。" * 3),
    ],
    ids=["utf-8-sig", "utf-16", "cp1252", "cp1251", "shift_jis"],
)
def test_txt_encodings(data: bytes, expected: str) -> None:
    assert parse_bytes(data, "a.txt").text == expected


def test_declared_charset_is_used_for_non_utf8() -> None:
    data = "Ærøskøbing".encode("latin-1")
    assert parse_bytes(data, "doc", "text/plain; charset=ISO-8859-1").text == "Ærøskøbing"


def test_binary_text_is_undecodable() -> None:
    with pytest.raises(ParseError, match="undecodable text"):
        parse_bytes(b"\x00\x01\x02ELF\x00\x00binary" * 20, "program.txt")


@pytest.mark.parametrize("data", [b"", b"  \n\t \n"])
def test_empty_documents(data: bytes) -> None:
    with pytest.raises(ParseError, match="empty document"):
        parse_bytes(data, "empty.txt")


# ---------------------------------------------------------------- markup


def test_markdown_keeps_headings_drops_markup() -> None:
    source = (
        "# Rotating credentials\n\n"
        "Use the **admin** console, see [the guide](https://example.com/guide).\n"
        "This line is wrapped.\n\n"
        "![diagram of keys](img/keys.png)\n\n"
        "- first step\n- second step\n\n"
        "| key | age |\n|-----|-----|\n| alpha | 30 |\n\n"
        "```bash\naws iam create-access-key\n```\n\n"
        "<div>raw <em>html</em> block</div>\n"
    )
    doc = parse_bytes(source.encode(), "guide.md")
    assert doc.mime_type == "text/markdown"
    assert doc.text.startswith("Rotating credentials\n\n")
    assert "Use the admin console, see the guide. This line is wrapped." in doc.text
    assert "https://example.com" not in doc.text and "**" not in doc.text
    assert "diagram of keys" in doc.text and "img/keys.png" not in doc.text
    assert "- first step\n- second step" in doc.text
    assert "key | age\nalpha | 30" in doc.text
    assert "aws iam create-access-key" in doc.text
    assert "raw html block" in doc.text and "<div>" not in doc.text


def test_html_drops_script_style_nav_and_keeps_structure() -> None:
    page = b"""<!doctype html><html><head><title>Key rotation</title>
    <style>body{color:red}</style><script>var secret = 1;</script></head>
    <body><nav><a href="/">Home</a> | <a href="/x">Menu</a></nav>
    <h1>Rotate keys</h1><p>Rotate <b>every</b> ninety days.<br>Then revoke.</p>
    <table><tr><th>key</th><th>owner</th></tr><tr><td>alpha</td><td>ops</td></tr></table>
    <ul><li>one</li><li>two</li></ul><!-- a comment --><noscript>enable js</noscript></body></html>"""
    doc = parse_bytes(page, "page.html")
    assert doc.mime_type == "text/html"
    text = doc.text
    for noise in ("secret", "color:red", "Home", "Menu", "a comment", "enable js"):
        assert noise not in text
    assert text.split("\n\n")[0] == "Key rotation"
    assert "Rotate keys\n\nRotate every ninety days.\nThen revoke." in text
    assert "key | owner\nalpha | ops" in text
    assert "one\ntwo" in text


def test_html_meta_charset_is_honoured() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Señor Müller</p></body></html>'
    assert parse_bytes(page.encode("latin-1"), "a.htm").text == "Señor Müller"


# ---------------------------------------------------------------- PDF


def test_pdf_pages_and_offsets() -> None:
    pages = [f"Page {n} talks about topic {n}. " * 12 for n in (1, 2, 3)]
    doc = parse_bytes(make_pdf(pages), "report.pdf")
    assert doc.mime_type == "application/pdf"
    assert [p[0] for p in doc.pages] == [1, 2, 3]
    for (number, start, end), source in zip(doc.pages, pages, strict=True):
        page_text = doc.text[start:end]
        assert page_text.startswith(f"Page {number} talks about topic {number}.")
        assert " ".join(page_text.split()) == source.strip()
    assert doc.pages[0][1] == 0 and doc.pages[-1][2] == len(doc.text)


def test_pdf_blank_pages_keep_numbering() -> None:
    doc = parse_bytes(make_pdf(["first page text", "", "third page text"]), "gaps.pdf")
    assert [p[0] for p in doc.pages] == [1, 2, 3]
    assert doc.pages[1][1] == doc.pages[1][2]  # empty page, empty range
    assert doc.text[doc.pages[2][1] : doc.pages[2][2]] == "third page text"


def test_pdf_without_text_is_empty() -> None:
    with pytest.raises(ParseError, match="empty document"):
        parse_bytes(make_pdf(["", ""]), "scan.pdf")


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_pdf_is_corrupt_and_silent(cut: float, capfd: pytest.CaptureFixture[str]) -> None:
    data = make_pdf(["some text " * 50] * 3)
    with pytest.raises(ParseError, match="corrupt PDF"):
        parse_bytes(data[: int(len(data) * cut)], "broken.pdf")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_not_a_pdf() -> None:
    with pytest.raises(ParseError, match="corrupt PDF"):
        parse_bytes(b"this is not a pdf at all", "fake.pdf")


def test_encrypted_pdf() -> None:
    with pytest.raises(ParseError, match="encrypted PDF"):
        parse_bytes(make_pdf(["secret"], user_password="pw"), "locked.pdf")


def test_odd_pdf_logs_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # Damage the cross-reference table: pypdf recovers (and would normally warn about it).
    data = make_pdf(["recoverable text here"])
    xref = data.rindex(b"startxref")
    damaged = data[:xref] + b"startxref\n999999\n%%EOF\n"
    doc = parse_bytes(damaged, "odd.pdf")
    assert "recoverable text here" in doc.text
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------- Office


def test_docx_paragraphs_and_tables_in_order() -> None:
    doc = parse_bytes(make_docx(), "runbook.docx")
    assert doc.text == (
        "Credential rotation\n\nRotate the keys every ninety days.\n\n"
        "Key | Owner\nalpha | ops team\nbeta | security\n\nRevoke the old key afterwards."
    )
    assert doc.mime_type.endswith("wordprocessingml.document")


def test_docx_corrupt_and_empty() -> None:
    data = make_docx()
    with pytest.raises(ParseError, match="corrupt .docx"):
        parse_bytes(data[: len(data) // 2], "cut.docx")
    buf = io.BytesIO()
    docx.Document().save(buf)
    with pytest.raises(ParseError, match="empty document"):
        parse_bytes(buf.getvalue(), "blank.docx")


def test_xlsx_sheets_as_records() -> None:
    doc = parse_bytes(make_xlsx(), "inventory.xlsx")
    assert doc.text == (
        "Sheet: Servers\n\nhost: db-1\ncores: 16\nsince: 2024-05-01\n\nhost: web-1\ncores: 4"
        "\n\nSheet: Notes\n\nnote: patch on tuesdays"
    )
    with pytest.raises(ParseError, match="corrupt .xlsx"):
        parse_bytes(b"PK\x03\x04 not really a zip", "bad.xlsx")


# ---------------------------------------------------------------- CSV


def test_csv_rows_as_header_value_lines() -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerows([["name", "role", "notes"], ["Ana", "admin", "rotates keys, weekly"], ["Bo", "", "new"]])
    doc = parse_bytes(buf.getvalue().encode(), "people.csv")
    assert doc.mime_type == "text/csv"
    assert doc.text == "name: Ana\nrole: admin\nnotes: rotates keys, weekly\n\nname: Bo\nnotes: new"


def test_csv_delimiter_is_sniffed_and_extra_cells_named() -> None:
    data = b"city;country\nLyon;France;extra\nOslo;Norway\n"
    assert parse_bytes(data, "c.csv").text == (
        "city: Lyon\ncountry: France\ncolumn 3: extra\n\ncity: Oslo\ncountry: Norway"
    )
    assert parse_bytes(b"a\tb\n1\t2\n", "t.tsv").text == "a: 1\nb: 2"


# ---------------------------------------------------------------- types, sizes, errors


def test_supported_extensions_and_mime_fallback() -> None:
    assert {".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".csv", ".xlsx"} <= SUPPORTED_EXTENSIONS
    assert is_supported("a/B.PDF") and is_supported("x.md")
    assert not is_supported("a.txt.metadata.json") and not is_supported("legacy.doc")
    assert mime_type_for("x.html") == "text/html" and mime_type_for("x.bin") is None
    doc = parse_bytes(b"# Title\n\nbody", "inline-document-1", "text/markdown")
    assert doc.text == "Title\n\nbody" and doc.mime_type == "text/markdown"


@pytest.mark.parametrize("name", ["legacy.doc", "old.xls", "photo.png", "noextension", "data.json"])
def test_unsupported_types(name: str) -> None:
    with pytest.raises(ParseError, match="unsupported file type") as info:
        parse_bytes(b"whatever", name)
    assert "\n" not in str(info.value)


def test_sidecar_is_not_a_document() -> None:
    with pytest.raises(ParseError, match="metadata, not a document"):
        parse_bytes(b'{"metadataAttributes": {}}', "a.txt.metadata.json")


def test_size_limit() -> None:
    check_size(MAX_FILE_BYTES)
    with pytest.raises(ParseError, match="over the 50 MB limit"):
        check_size(MAX_FILE_BYTES + 1)
    with pytest.raises(ParseError, match="over the 50 MB limit"):
        parse_bytes(b"a" * (MAX_FILE_BYTES + 1), "huge.txt")


def test_parse_error_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        parse_bytes(b"", "x.txt")
    assert info.value.code == "ValidationException" and info.value.status == 400


def test_binary_html_is_undecodable_but_utf16_html_is_fine() -> None:
    with pytest.raises(ParseError, match="undecodable text"):
        parse_bytes(b"\x00\x01\x02<html>binary</html>" * 10, "blob.html")
    assert parse_bytes("<p>wide ✓</p>".encode("utf-16"), "wide.html").text == "wide ✓"


def test_csv_cell_larger_than_the_csv_module_default() -> None:
    big = "x" * 200_000
    assert parse_bytes(f'note,n\n"{big}",2\n'.encode(), "big.csv").text == f"note: {big}\nn: 2"


def test_webvtt_transcript_keeps_speakers_and_words_only() -> None:
    vtt = (
        "WEBVTT - meeting\n\nNOTE recorded on tuesday\n\nSTYLE\n::cue { color: red }\n\n"
        "intro\n00:00:01.000 --> 00:00:04.000 align:start\n<v Ana Lima>We rotate keys &amp; tokens.\n\n"
        "00:00:04.000 --> 00:00:06.000\n<v.loud Bo>Every <b>ninety</b> days.\n\n"
        "00:00:06.000 --> 00:00:08.000\n<v.loud Bo>Every <b>ninety</b> days.\n<00:00:07.000>Then <c.y>revoke</c>.\n"
    )
    doc = parse_bytes(vtt.encode(), "meeting.vtt")
    assert doc.text == "Ana Lima: We rotate keys & tokens.\nBo: Every ninety days.\nThen revoke."
    assert doc.mime_type == "text/vtt"
    with pytest.raises(ParseError, match="not a WebVTT file"):
        parse_bytes(b"1\n00:00:01,000 --> 00:00:02,000\nsrt, not vtt\n", "wrong.vtt")


def test_zip_bomb_is_refused_before_inflating() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * 4096)
    data = bytearray(buf.getvalue())
    # Declare 2 GiB uncompressed in the central directory, as a real bomb's header would.
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 2**31)
    with pytest.raises(ParseError, match="expands to 2048 MB, over the 1024 MB limit"):
        parse_bytes(bytes(data), "bomb.docx")


def test_xhtml_pages_parse_as_html_without_a_warning_in_the_sync_log() -> None:
    # Pages of the PostgreSQL manual open with an XML declaration; bs4 warns that it reads XML as HTML.
    page = b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<p>CREATE INDEX constructs an index.</p>'
    with warnings.catch_warnings(record=True) as seen:
        text = parse_bytes(page, "sql-createindex.html").text
    assert "CREATE INDEX constructs an index." in text
    assert [w for w in seen if "XML" in type(w.message).__name__] == []


_PAGES = [
    b"", b"   ", b"<!-- only a comment -->", b"plain text, no tags",
    '<html><head><meta charset="iso-8859-1"><title>T\xe9st</title></head><body><p>caf\xe9</p></body></html>'.encode("latin-1"),
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
    '<body>\x93quoted\x94</body></html>'.encode("latin-1"),
    "\ufeff<p>BOM page \u2603</p>".encode("utf-8"), "\ufeff<p>utf16 \u2603</p>".encode("utf-16"),
    b"<p>a<br>b<script>x</script>tail after script<!-- c -->more</p>"
    b"<table><tr><td>1</td><th>2</th></tr><tr><td>3</td></tr></table>",
    b"<ul><li>one<li>two</ul><dl><dt>t<dd>d</dl><pre>  code\n  block</pre>x<hr>y",
    b'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><head>'
    b"<title>X</title></head><body><p>\xc3\xa9</p></body></html>",
    "<p>already a str \u2603</p>", b"<p>unclosed <b>bold <i>both</p> after",
    b"<html><body><nav>menu</nav><main><h1>Head</h1>Body &amp; soul &nbsp; x</main></body></html>",
    b"<svg><text>no</text></svg>yes<noscript>no</noscript><template>no</template><?php echo 1; ?>end",
]


@pytest.mark.parametrize("page", _PAGES)
def test_html_text_from_lxml_equals_the_bs4_walk(page: bytes | str) -> None:
    """HTML is walked over lxml's tree (4.4x faster than bs4's on the PostgreSQL manual); the text must
    be the one bs4's tree gives: decoding, dropped elements and the text after them, comments, blocks,
    list lines, table cells, titles."""
    from bs4 import BeautifulSoup

    from pgkb.parsing import markup

    stripped, encoding = markup._without_xml_declaration(page)
    soup = BeautifulSoup(stripped, "lxml", from_encoding=encoding)
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    expected = markup._soup_text(soup)
    if title and not expected.startswith(title):
        expected = f"{title}\n\n{expected}" if expected else title
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert markup.html_to_text(page) == expected
