"""Parsing throughput per format, against the bare library call on the same bytes in the same run.

    python bench/bench_parsing.py [--pages 100]

The reference is the least a parser must do with that library (pypdf's extract_text on every page,
python-docx's paragraph texts, BeautifulSoup's get_text, markdown-it's render); the ratio shows what
pgkb's structure-keeping adds on top.
"""

from __future__ import annotations

import argparse
import io
import random
import time

import docx
from bs4 import BeautifulSoup
from fpdf import FPDF
from markdown_it import MarkdownIt
from pypdf import PdfReader

from pgkb.parsing import parse_bytes

WORDS = [
    "key",
    "rotation",
    "policy",
    "service",
    "account",
    "credentials",
    "expire",
    "operators",
    "audit",
    "access",
    "logs",
    "weekly",
    "storage",
    "teams",
    "archive",
    "snapshots",
    "database",
    "replicas",
    "primary",
    "region",
    "network",
    "latency",
    "users",
    "remote",
    "offices",
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))).capitalize() + "."


def paragraphs(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def best(fn, repeat: int = 3) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name: str, size: int, ours: float, ref: float, unit: str = "MB") -> None:
    print(
        f"{name:6s} {size / 1e6:7.2f} {unit}  pgkb {ours:6.3f} s  library alone {ref:6.3f} s  "
        f"ratio {ref / ours:4.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=100)
    args = ap.parse_args()
    paras = paragraphs(args.pages * 6)

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for i in range(args.pages):
        pdf.add_page()
        pdf.multi_cell(0, 5, "\n\n".join(paras[i * 6 : i * 6 + 6]))
    pdf_bytes = bytes(pdf.output())
    ours = best(lambda: parse_bytes(pdf_bytes, "a.pdf"))
    ref = best(lambda: [p.extract_text() for p in PdfReader(io.BytesIO(pdf_bytes)).pages])
    report("pdf", len(pdf_bytes), ours, ref)
    print(f"       {args.pages / ours:7.1f} pages/s")

    document = docx.Document()
    for i, p in enumerate(paras):
        if i % 10 == 0:
            document.add_heading(f"Section {i // 10}", level=2)
        document.add_paragraph(p)
    buf = io.BytesIO()
    document.save(buf)
    docx_bytes = buf.getvalue()
    ours = best(lambda: parse_bytes(docx_bytes, "a.docx"))
    ref = best(lambda: [p.text for p in docx.Document(io.BytesIO(docx_bytes)).paragraphs])
    report("docx", len(docx_bytes), ours, ref)

    page = (
        "<html><body><nav>menu</nav>"
        + "".join(f"<h2>Section {i}</h2><p>{p}</p>" for i, p in enumerate(paras * 4))
        + "</body></html>"
    )
    html_bytes = page.encode()
    ours = best(lambda: parse_bytes(html_bytes, "a.html"))
    ref = best(lambda: BeautifulSoup(html_bytes, "lxml").get_text())
    report("html", len(html_bytes), ours, ref)

    md = "\n\n".join(
        f"## Section {i}\n\n{p}\n\n- item *one*\n- item [two](http://x)" for i, p in enumerate(paras * 4)
    )
    md_bytes = md.encode()
    ours = best(lambda: parse_bytes(md_bytes, "a.md"))
    ref = best(lambda: MarkdownIt("commonmark").render(md))
    report("md", len(md_bytes), ours, ref)


if __name__ == "__main__":
    main()
