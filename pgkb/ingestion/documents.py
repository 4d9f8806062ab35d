"""One document from bytes to rows: parse, read its metadata, chunk, and lay out the rows to embed and write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgkb import chunking as chunking_mod
from pgkb import parsing
from pgkb.parsing import Sidecar
from pgkb.store.vector_table import DATA_SOURCE_ID, PAGE_NUMBER, PARENT_ID, SOURCE_URI, chunk_id


@dataclass
class PreparedDocument:
    """Rows for one document. Parent rows (HIERARCHICAL) have `embed_texts[i] is None`."""

    uri: str
    fingerprint: str | None
    sidecar_hash: str | None
    texts: list[str] = field(default_factory=list)
    embed_texts: list[str | None] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] | None = None
    acl: Any = None  # pgkb.ingestion.acl.DocAcl of a document of an ACL-enabled source (None: no ACL)
    extracted: str | None = None  # the parsed text (kept for GetDocumentContent on MANAGED knowledge bases)

    @property
    def n_rows(self) -> int:
        return len(self.texts)

    @property
    def n_to_embed(self) -> int:
        return sum(1 for t in self.embed_texts if t is not None)


def read_sidecar(data: bytes | None) -> Sidecar:
    """Parse a `<file>.metadata.json`; an absent sidecar is an empty one."""
    return parsing.read_sidecar(data) if data is not None else Sidecar({})


def prepare_document(
    *,
    ds_id: str,
    uri: str,
    name: str,
    data: bytes,
    sidecar: Sidecar,
    chunking: dict[str, Any] | None,
    model: Any,
    fingerprint: str | None,
    sidecar_hash: str | None,
    location: dict[str, Any] | None,
    mime_type: str | None = None,
) -> PreparedDocument:
    """Parse and chunk one document. Raises pgkb.errors.ValidationError (ParseError) with a one-line reason."""
    parsed = parsing.parse_bytes(data, name, mime_type)

    def embed(texts: list[str]) -> Any:
        return model.embed_documents(texts)

    chunk_set = chunking_mod.chunk_text(parsed, chunking, model.tokenizer, embed=embed)
    doc = PreparedDocument(uri, fingerprint, sidecar_hash, attributes=dict(sidecar.attributes), location=location)
    doc.extracted = parsed.text
    prefix = sidecar.embedding_prefix()
    base: dict[str, Any] = {SOURCE_URI: uri, DATA_SOURCE_ID: ds_id}
    parents = list(getattr(chunk_set, "parents", []) or [])
    parent_ids = [str(chunk_id(ds_id, uri, i)) for i in range(len(parents))]
    for p in parents:
        md = dict(base)
        if p.page is not None:
            md[PAGE_NUMBER] = float(p.page)
        md["x-pgkb-chunk-role"] = "parent"
        doc.texts.append(p.text)
        doc.embed_texts.append(None)
        doc.metadata.append(md)
    for c in chunk_set.chunks:
        md = dict(base)
        if c.page is not None:
            md[PAGE_NUMBER] = float(c.page)
        if c.parent is not None and parents:
            md[PARENT_ID] = parent_ids[c.parent]
        doc.texts.append(c.text)
        doc.embed_texts.append(prefix + c.text)
        doc.metadata.append(md)
    return doc
