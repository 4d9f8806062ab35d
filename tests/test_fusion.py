"""HYBRID's query-adaptive fusion: the tokenizer-coverage evidence, and HYBRID following BM25 when
the embedding model cannot read the query (a generated corpus in Arabic script, the default model)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgkb.embeddings import DEFAULT_MODEL_ID
from pgkb.embeddings.base import HFTokenizer, RegexTokenizer, minilm_dir
from pgkb.embeddings.registry import get_model
from pgkb.retrieval import bm25, fusion
from pgkb.retrieval.search import search
from pgkb.store.vector_table import ChunkRow, FieldMapping, TableRef, create_table, write_rows

ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"


def arabic_corpus(n_docs: int = 40, seed: int = 7) -> tuple[list[str], list[tuple[str, int]]]:
    """Documents of pseudo-words in Arabic script (shared common words + words of their own), and
    queries made of a document's own words and common ones: (text, index of the relevant document)."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice(ARABIC) for _ in range(rng.randint(3, 7)))

    common = [word() for _ in range(30)]
    own = [[word() for _ in range(6)] for _ in range(n_docs)]
    docs = [" ".join(rng.sample(common, 12) + own[i]) for i in range(n_docs)]
    queries = [(" ".join(own[i][:2] + rng.sample(common, 3)), i) for i in range(0, n_docs, 5)]
    return docs, queries


def test_coverage_tells_a_model_that_cannot_read_the_query() -> None:
    d = minilm_dir()
    assert d is not None
    tok = HFTokenizer(d / "tokenizer.json")
    english = fusion.token_coverage(tok, "how long does the server keep retrying when the database is down?")
    arabic = fusion.token_coverage(tok, "من هو عبد المطلب بن هاشم؟")
    assert english >= 0.8 and fusion.dense_trust(english) == 1.0
    assert arabic <= 0.1 and fusion.dense_trust(arabic) == 0.0
    assert fusion.token_coverage(tok, "?!") == 1.0  # nothing to read, nothing to distrust
    assert fusion.token_coverage(RegexTokenizer(), "من هو عبد المطلب") == 1.0  # whole words
    assert 0 < fusion.dense_trust(0.35) < 1 and fusion.dense_trust(None) == 1.0
    # Only a model's own tokenizer is evidence: remote models get None (full trust).
    model = get_model(DEFAULT_MODEL_ID)
    assert fusion.model_coverage(model, "من هو عبد المطلب بن هاشم؟") == pytest.approx(arabic)

    class Remote:
        spec = type("Spec", (), {"provider": "bedrock"})()
        tokenizer = tok

    assert fusion.model_coverage(Remote(), "من هو عبد المطلب") is None


@pytest.fixture(scope="module")
def conn(session_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(session_db_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(c)
        schema = "fus_" + uuid.uuid4().hex[:8]
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        c.info_schema = schema  # type: ignore[attr-defined]
        yield c
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_hybrid_follows_bm25_when_the_model_is_blind(conn) -> None:
    """Arabic script through all-MiniLM-L6-v2's English WordPiece: the dense ranking is noise. With
    the query's coverage, HYBRID returns BM25's ranking (then what BM25 did not find); without it
    (the fixed fusion), the dense noise reorders it."""
    model = get_model(DEFAULT_MODEL_ID)
    docs, queries = arabic_corpus()
    emb = np.asarray(model.embed_documents(docs), dtype=np.float32)
    t, m = TableRef(conn.info_schema, "blind"), FieldMapping()
    create_table(conn, t, m, emb.shape[1])
    ids = [uuid.uuid4() for _ in docs]
    with conn.transaction():
        write_rows(conn, t, m, [ChunkRow(ids[i], d, emb[i], {"x-amz-bedrock-kb-source-uri": f"d{i}"}, {})
                                for i, d in enumerate(docs)])
        bm25.install_bm25(conn, t, m)
    qv = np.asarray(model.embed_queries([q for q, _ in queries]), dtype=np.float32)
    differs = 0
    for (text, rel), v in zip(queries, qv, strict=True):
        cov = fusion.model_coverage(model, text)
        assert cov is not None and fusion.dense_trust(cov) == 0.0
        lex = [h.id for h in search(conn, t, m, query_embedding=v, query_text=text, k=20, search_type="LEXICAL")]
        hyb = search(conn, t, m, query_embedding=v, query_text=text, k=30, search_type="HYBRID", query_coverage=cov)
        assert lex[0] == str(ids[rel])
        assert [h.id for h in hyb][: len(lex)] == lex
        assert hyb[0].score == pytest.approx(1.0) and all(0 <= h.score <= 1 for h in hyb)
        fixed = search(conn, t, m, query_embedding=v, query_text=text, k=30, search_type="HYBRID")
        differs += [h.id for h in fixed][: len(lex)] != lex
    assert differs >= len(queries) // 2  # what the coverage changes: the fixed fusion mixes in the noise
    # SEMANTIC stays the pure dense ranking, whatever the coverage.
    sem = search(conn, t, m, query_embedding=qv[0], query_text=queries[0][0], k=5, query_coverage=0.0)
    order = np.argsort(-(emb @ qv[0]))[:5]
    assert [h.id for h in sem] == [str(ids[j]) for j in order]
