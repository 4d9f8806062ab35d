"""Markdown and HTML → readable plain text.

Markdown: we render to plain text rather than keep the raw source. Headings, list items, table cells
and code stay (they carry meaning and headings give chunks context), while emphasis markers, link
URLs, image URLs and raw HTML go (they are noise for an embedding model and for lexical search).
Each block ends on its own line, so headings and list items become sentence units for the chunker.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, CData, NavigableString, Tag, UnicodeDammit
from markdown_it import MarkdownIt
from markdown_it.token import Token

try:
    from lxml import etree as _lxml_etree
    from lxml import html as _lxml_html
except ImportError:  # pragma: no cover
    _lxml_html = None

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])

_BLOCK_CLOSE = {
    "paragraph_close",
    "heading_close",
    "blockquote_close",
    "bullet_list_close",
    "ordered_list_close",
    "table_close",
}


def markdown_to_text(source: str) -> str:
    out: list[str] = []
    row: list[str] = []
    in_cell = False
    for tok in _MD.parse(source):
        t = tok.type
        if t == "inline":
            text = _inline_text(tok.children or [])
            if in_cell:
                row.append(text)
            else:
                out.append(text)
        elif t == "list_item_open":
            out.append("- " if tok.markup in "-*+" else f"{tok.info or ''}{tok.markup} ".lstrip())
        elif t in ("fence", "code_block"):
            out.append(tok.content.rstrip("\n") + "\n\n")
        elif t in ("th_open", "td_open"):
            in_cell = True
        elif t in ("th_close", "td_close"):
            in_cell = False
        elif t == "tr_close":
            out.append(" | ".join(cell for cell in row) + "\n")
            row = []
        elif t == "html_block":
            out.append(html_fragment_text(tok.content) + "\n\n")
        elif t in ("paragraph_close", "heading_close") and tok.hidden:
            out.append("\n")  # tight list items
        elif t in _BLOCK_CLOSE:
            out.append("\n\n")
    return _tidy("".join(out))


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    for child in children:
        t = child.type
        if t in ("text", "code_inline"):
            parts.append(child.content)
        elif t == "softbreak":
            parts.append(" ")
        elif t == "hardbreak":
            parts.append("\n")
        elif t == "image":
            parts.append(_inline_text(child.children or []))
        # link/emphasis open/close markers and inline HTML carry no text
    return "".join(parts)


# ---------------------------------------------------------------- HTML

_DROP = ("script", "style", "nav", "noscript", "template", "svg", "iframe", "head", "form", "button")
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "html",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)

_LINES = frozenset(["li", "tr", "dt", "dd"])

# An XML declaration opening an XHTML page (the PostgreSQL manual's pages have one). We read such
# pages as HTML on purpose; handed to the HTML parser, the declaration only makes bs4 warn (into a
# sync's output) that XML is being read as HTML. Its one useful part, the encoding, is kept.
_XML_DECLARATION = re.compile(rb"\A\s*<\?xml\b[^>]*\?>")
_XML_DECLARATION_TEXT = re.compile(r"\A\s*<\?xml\b[^>]*\?>")
_DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _without_xml_declaration(data: bytes | str) -> tuple[bytes | str, str | None]:
    """The page without a leading XML declaration, and the encoding it declared (bytes only)."""
    if isinstance(data, str):
        text = _XML_DECLARATION_TEXT.match(data)
        return (data[text.end():] if text else data), None
    found = _XML_DECLARATION.match(data)
    if not found:
        return data, None
    named = _DECLARED_ENCODING.search(found.group(0))
    return data[found.end():], named.group(1).decode() if named else None


def html_to_text(data: bytes | str) -> str:
    markup, encoding = _without_xml_declaration(data)
    if _lxml_html is not None:
        # bs4 still decodes bytes (BOM, <meta charset>, the XML declaration's encoding, then UTF-8 and
        # its fallbacks); lxml builds and walks the tree in C: bs4's Python tree building was 60 % of
        # parsing and chunking on the PostgreSQL manual's pages.
        text = markup if isinstance(markup, str) else (UnicodeDammit(
            markup, [encoding] if encoding else [], is_html=True).unicode_markup or markup.decode("utf-8", "replace"))
        title, body = _lxml_title_and_text(text)
    else:  # pragma: no cover - lxml is a dependency; kept for an install without it
        soup = BeautifulSoup(markup, "html.parser", from_encoding=encoding)
        title = soup.title.get_text(" ", strip=True) if soup.title else ""
        body = _soup_text(soup)
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}" if body else title
    return body


def _lxml_title_and_text(text: str) -> tuple[str, str]:
    """(title, text) of a page by the rules of _soup_text, over lxml's tree."""
    assert _lxml_html is not None
    try:
        root = _lxml_html.document_fromstring(text)
    except (ValueError, _lxml_etree.ParserError):  # empty, or only whitespace / comments
        return "", ""
    found = root.find(".//title")
    title = " ".join(s.strip() for s in found.itertext() if s.strip()) if found is not None else ""
    out: list[str] = []
    _lxml_walk(root, out)
    return title, _joined(out)


def _lxml_walk(el: object, out: list[str]) -> None:
    """Append an element's text as _soup_text would (its tail is its parent's business)."""
    stack: list[object] = [el]
    while stack:
        node = stack.pop()
        if type(node) is str:  # a separator or a tail queued to follow an element's children
            out.append(node)
            continue
        tag = node.tag  # type: ignore[attr-defined]
        tail = node.tail  # type: ignore[attr-defined]
        if tail:
            stack.append(tail)
        if not isinstance(tag, str):  # comment, processing instruction, entity: their text is not text
            continue
        if not _enter(tag.rsplit("}", 1)[-1].lower(), out, stack):
            continue
        stack.extend(reversed(node))  # type: ignore[call-overload]
        if node.text:  # type: ignore[attr-defined]
            out.append(node.text)  # type: ignore[attr-defined]


def html_fragment_text(fragment: str) -> str:
    return _soup_text(BeautifulSoup(fragment, _html_parser()))


def _soup_text(soup: BeautifulSoup) -> str:
    """Text with a blank line around block elements and a line per list item / table row.
    An explicit walk (no tree edits): several times faster than decorating the tree first."""
    out: list[str] = []
    stack: list[object] = [soup]
    while stack:
        node = stack.pop()
        if type(node) is str:  # a separator queued to follow an element's children
            out.append(node)
        elif isinstance(node, NavigableString):
            if type(node) in (NavigableString, CData):
                out.append(node)
        elif isinstance(node, Tag) and _enter(node.name, out, stack):
            stack.extend(reversed(node.contents))
    return _joined(out)


def _enter(name: str, out: list[str], stack: list[object]) -> bool:
    """The layout rules of one element, for both walks: what goes before its children (into `out`)
    and after them (queued on `stack`). False: its children are not text (dropped, or a <br>)."""
    if name in _DROP:
        return False
    if name == "br":
        out.append("\n")
        return False
    if name in ("td", "th"):
        stack.append(" | ")
    elif name in _LINES:
        out.append("\n")
    elif name in _BLOCKS:
        out.append("\n\n")
        stack.append("\n\n")
    return True


def _joined(out: list[str]) -> str:
    lines = [_SPACES.sub(" ", line).strip().removesuffix(" |") for line in "".join(out).split("\n")]
    return _tidy("\n".join(lines))


def _html_parser() -> str:
    try:
        import lxml  # noqa: F401

        return "lxml"
    except ImportError:  # pragma: no cover
        return "html.parser"


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    """Strip line ends and keep at most one blank line between blocks."""
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()
