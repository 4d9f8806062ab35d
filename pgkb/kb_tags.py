"""pgkb's own tags on a knowledge base: how its index is built and how deep its searches read.

Bedrock's CreateKnowledgeBase has no fields for these, and its `tags` reach pgkb from any SDK as they
are, so they are tags (like `pgkb:vectorIndex`, pgkb.store.vector_index). The build tags are read once,
when pgkb creates the table; the search tags at every search, so TagResource changes them at once.
CreateKnowledgeBase and TagResource check them all (`check`): a malformed value is refused, never
ignored.
"""

from __future__ import annotations

import re

from pgkb.errors import ValidationError
from pgkb.store.ddl import HNSW_M
from pgkb.store.vector_index import HnswBuild

#: Links per node of the HNSW graph of a table pgkb creates (pgvector: 2-100).
M_TAG = "pgkb:hnswM"
#: The graph build's candidate list (pgvector: 4-1000, and at least 2 m).
EF_CONSTRUCTION_TAG = "pgkb:hnswEfConstruction"
#: hnsw.ef_search of the knowledge base's searches; filtered searches go twice as deep.
EF_SEARCH_TAG = "pgkb:efSearch"
#: BM25 postings read per query term by an unfiltered HYBRID search (search.MAX_POSTINGS_PER_TERM):
#: more reads closer to exact BM25 on large tables, at a cost in proportion (docs/scaling.md).
BM25_POSTINGS_TAG = "pgkb:bm25PostingsPerTerm"

_DIGITS = re.compile(r"[0-9]{1,12}")


def _int_tag(tags: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    value = tags.get(key)
    if value is None:
        return None
    text = str(value).strip()
    if not _DIGITS.fullmatch(text) or not lo <= int(text) <= hi:  # ASCII digits: "²".isdigit() is true
        raise ValidationError(f"tag {key} {value!r} must be an integer from {lo:,} to {hi:,}")
    return int(text)


def hnsw_build(tags: dict[str, str] | None) -> HnswBuild:
    """The HNSW build the tags ask for; None fields: pgkb's defaults."""
    tags = tags or {}
    m, efc = _int_tag(tags, M_TAG, 2, 100), _int_tag(tags, EF_CONSTRUCTION_TAG, 4, 1000)
    if efc is not None and efc < 2 * (m or HNSW_M):
        raise ValidationError(f"tag {EF_CONSTRUCTION_TAG} {efc} must be at least twice m ({m or HNSW_M})")
    return HnswBuild(m, efc)


def ef_search(tags: dict[str, str] | None) -> int | None:
    """The knowledge base's unfiltered search depth; None: pgkb's rule."""
    return _int_tag(tags or {}, EF_SEARCH_TAG, 1, 1000)


def bm25_postings(tags: dict[str, str] | None) -> int | None:
    """BM25 postings read per query term; None: pgkb's default."""
    return _int_tag(tags or {}, BM25_POSTINGS_TAG, 10, 100_000_000)


def check(tags: dict[str, str] | None) -> HnswBuild:
    """Every pgkb tag well-formed (ValidationError naming the first that is not); the HNSW build."""
    ef_search(tags)
    bm25_postings(tags)
    return hnsw_build(tags)
