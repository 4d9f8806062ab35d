"""The HNSW index over a knowledge-base table's vectors: its kind, its DDL, and the expression a search
must order by for PostgreSQL to use it.

Every kind indexes the Bedrock layout's `vector(n)` column, so the table stays what Bedrock reads
and writes (a Bedrock-made table has the float32 index and is never altered):

  float32   (embedding vector_cosine_ops)                                    Bedrock's own; ~2 KB a chunk at 384-d
  halfvec   ((embedding::halfvec(n)) halfvec_cosine_ops)                     ~0.53x the float32 index (m 13, searched
                                                                             at ef_search 100: recall within 0.005)
  binary    ((binary_quantize(embedding)::bit(n)) bit_hamming_ops)           ~0.17x; hamming candidates re-ranked
                                                                             exactly (384-d: fine at 100k, -0.13
                                                                             recall@10 at 1M; docs/scaling.md)

The DDL is pgkb.store.ddl's (hnsw_expression). The kind is read back from the table's own index
definitions (`detect`), so a table made by a knowledge base created with one, or by hand, is
searched through its index, and nothing has to be recorded elsewhere. Numbers: docs/scaling.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import psycopg

from pgkb.errors import ValidationError

VectorIndexKind = Literal["float32", "halfvec", "binary"]
KINDS: tuple[VectorIndexKind, ...] = ("float32", "halfvec", "binary")

#: The CreateKnowledgeBase tag that chooses the index of a table pgkb creates (boto3 passes tags as
#: they are; Bedrock's own request has no such field). Read once, when the table is made.
VECTOR_INDEX_TAG = "pgkb:vectorIndex"
#: Binary-quantized index: hamming-nearest candidates read per query before the exact re-ranking
#: (at least this many, and at least 10 x k; docs/scaling.md has recall per count).
BINARY_CANDIDATES = 200


@dataclass(frozen=True)
class VectorIndex:
    kind: VectorIndexKind
    dimensions: int | None = None  # halfvec / binary: the n of the index expression

    def candidates(self, k: int) -> int:
        """Rows the index scan yields for a top-k (binary: the re-ranking's pool)."""
        return max(BINARY_CANDIDATES, 10 * k) if self.kind == "binary" else k


FLOAT32 = VectorIndex("float32")


@dataclass(frozen=True)
class HnswBuild:
    """m and ef_construction of an HNSW index pgkb builds; None: pgkb's default for the index kind."""

    m: int | None = None
    ef_construction: int | None = None


def check_kind(value: object, where: str = "vector index") -> VectorIndexKind:
    text = str(value).lower() if value is not None else "float32"
    for kind in KINDS:
        if text == kind:
            return kind
    raise ValidationError(f"{where} {value!r} must be one of {', '.join(KINDS)}")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def classify(definition: str, column: str) -> VectorIndex | None:
    """The kind of an HNSW index from its pg_get_indexdef text; None when it is not over `column`
    with one of the three operator classes."""
    if "USING hnsw" not in definition:
        return None
    # pg_get_indexdef quotes an identifier only when it must
    col = "(?:" + re.escape(column) + "|" + re.escape(_q(column)) + ")"
    if re.search(r"\(" + col + r" vector_cosine_ops\)", definition):
        return FLOAT32
    if m := re.search(r"\(\(?" + col + r"\)?::halfvec\((\d+)\)\) halfvec_cosine_ops\)", definition):
        return VectorIndex("halfvec", int(m.group(1)))
    if m := re.search(r"\(\(?binary_quantize\(" + col + r"\)\)?::bit\((\d+)\)\) bit_hamming_ops\)", definition):
        return VectorIndex("binary", int(m.group(1)))
    return None


def detect(conn: psycopg.Connection, schema: str, table: str, column: str) -> VectorIndex:
    """The index a search of this table should use: float32 when the table has one (Bedrock's),
    else halfvec, else binary; float32 (an exact scan) when it has none, e.g. during an initial load."""
    found = [
        ix
        for (d,) in conn.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND am.amname = 'hnsw' AND i.indisvalid",
            (schema, table),
        )
        if (ix := classify(d, column)) is not None
    ]
    for kind in KINDS:
        for ix in found:
            if ix.kind == kind:
                return ix
    return FLOAT32
