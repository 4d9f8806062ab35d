"""Semantic and hybrid search over a knowledge-base table: one SQL statement per query.

Scores are in [0, 1], higher is better:
- SEMANTIC: `1 - cosine_distance / 2` = `(1 + cos) / 2` (pgvector's `<=>` distance is in [0, 2]);
- HYBRID: weighted reciprocal rank fusion of the dense and BM25 rankings,
  `t / (10 + dense rank) + 1 / (10 + BM25 rank)` over the top 50 (at least k) of each, then one
  round of dense feedback: the candidates are re-ranked by cosine to the query plus the best fused
  chunk, and fused again with the BM25 ranking, `3 t / (10 + feedback rank) + 1 / (10 + BM25 rank)`,
  divided by its maximum `(3 t + 1) / 11`, so a chunk ranked first by both scores 1.0. `t` in [0, 1] is
  the query's dense trust (fusion.py: how much of the query the embedding model's own tokenizer
  covers with real word pieces); at 0 the ranking is BM25's. Alternatives measured in
  bench/bench_fusion.py, see docs/retrieval.md.

HIERARCHICAL knowledge bases: children (rows whose metadata has `x-pgkb-parent-id`) are searched, and
each is replaced by its parent row; children of one parent collapse to one result, at the best child's
rank (Bedrock: "the number of results returned might be less than the requested amount").

Filtered searches (a metadata filter or an ACL) start from a deeper first batch
(`hnsw.ef_search` FILTERED_EF_SEARCH), let pgvector's HNSW scan continue until k rows pass the filter
(`hnsw.iterative_scan = relaxed_order`, re-sorted afterwards) and cap the scan with
`hnsw.max_scan_tuples`, so a filter that matches nothing returns quickly. All of it is set for the
statement's own transaction only. An unfiltered search's one setting, its `hnsw.ef_search`, is left on
an idle connection's session, so that the next one at that depth sends its statement alone (`_execute`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

from pgkb.errors import ValidationError
from pgkb.retrieval import bm25, fusion
from pgkb.retrieval.filters import SYSTEM_PREFIXES, compile_filter
from pgkb.store import ddl, vector_index
from pgkb.store.vector_index import VectorIndex
from pgkb.store.vector_table import (
    CHUNK_ID,
    DATA_SOURCE_ID,
    PAGE_NUMBER,
    PARENT_ID,
    SOURCE_URI,
    FieldMapping,
    TableRef,
    attribute_columns,
)

log = logging.getLogger(__name__)

#: LEXICAL (BM25 alone, score s / (1 + s)) is a pgkb extension for evaluation; Retrieve accepts the other two.
SearchType = Literal["SEMANTIC", "HYBRID", "LEXICAL"]
MAX_QUERY_CHARS = 20_000
MAX_K = 100
RRF_K = 10
#: Weight of the dense ranking in the first fusion (the lexical one weighs 1), times the query's dense
#: trust. With FEEDBACK_WEIGHT: the rule of the grid with the best worst case over msmarco-5k, arcd,
#: bench/data/pgkb-docs and bench/data/py-stdlib (bench/bench_fusion.py; 1.5 before, tuned on
#: msmarco-5k alone, was as good or worse on every corpus).
DENSE_WEIGHT = 1.0
#: Weight of the feedback ranking in the second fusion, times the query's dense trust.
FEEDBACK_WEIGHT = 3.0
#: Candidates taken from each ranking before fusion (per query, at least k).
HYBRID_CANDIDATES = 50
#: The same with a filter or an ACL. A filtered dense scan walks the graph until this many rows pass
#: (a user who sees 5 % of 100,000 chunks: 15 ms of a 26 ms HYBRID for 50, EXPLAIN ANALYZE), where an
#: unfiltered one costs its ef_search whatever the count. Fewer candidates cost fusion nothing
#: measurable: HYBRID nDCG@10 with 20 instead of 50 (bench/bench_fusion.py --candidates 50,20)
#: msmarco-5k 0.8272 / 0.8299, arcd 0.7201 / 0.7201, pgkb-docs 0.8553 / 0.8532, py-stdlib 0.8653 / 0.8525.
FILTERED_HYBRID_CANDIDATES = 20
EF_SEARCH = 64
#: ef_search of filtered (metadata filter or ACL) statements: twice the unfiltered default. A filter
#: passing a fraction s of the rows takes its top k from about the first k/s of the index's
#: candidates, so a broad filter (s = 50 %) needs a deeper first batch than an unfiltered top k; a
#: narrow one is served by the iterative scan (or exactly, through a GIN index) whatever the first
#: batch. bench/bench_acl.py --sweep (docs/managed-acl.md), 50 % tier recall@10: 0.896 at 64, 0.944 at
#: 128, 0.948 at 160, 0.950 at 400; 160 cost more and gained nothing on chunk-like queries.
FILTERED_EF_SEARCH = 2 * EF_SEARCH
#: ef_search on a halfvec index (filtered: twice it). Its graph links fewer neighbours
#: (ddl.HALFVEC_HNSW_M, so it is half the float32 index) and its distances are rounded: at 1M chunks
#: recall@10 at ef 64 was 0.945 against float32's 0.958; at 100 it is 0.956 (docs/scaling.md, "halfvec").
HALFVEC_EF_SEARCH = 100
#: BM25, unfiltered: postings read per query term, best impact first (bounds a query's work).
MAX_POSTINGS_PER_TERM = 1000
#: BM25 with a filter or an ACL, when fewer than `cand` of the chunks the unfiltered read scores pass
#: it: a second read of this many times as many postings per term. None: every posting (exact, but
#: at 1M chunks a common term has ~250,000, and a MANAGED knowledge base's every HYBRID Retrieve
#: carries an ACL: 150-330 ms per search at 1M).
FILTERED_POSTINGS_FACTOR: int | None = 10
#: Tables without BM25 statistics: query words found in this many chunks or more are left out.
FTS_MAX_DF = 1000
#: With a filter: how many index tuples an iterative scan may visit before giving up.
MAX_SCAN_TUPLES = 20_000
#: ef_search for filtered queries on pgvector < 0.8, which cannot continue a scan past ef_search.
OLD_PGVECTOR_FILTER_EF = 400



@dataclass
class SearchHit:
    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    source_uri: str | None = None
    data_source_id: str | None = None
    page: int | None = None


# Which tables have BM25 statistics ready to read, remembered for BM25_RECHECK_S (positive answers
# only: an install is seen on the next query; statistics of an older pgkb, or suspended by an initial
# load, are looked up again each time; a load that suspends cached statistics is seen within the TTL).
_BM25: dict[tuple[str, str, str], tuple[bm25.Bm25Index, float]] = {}
BM25_RECHECK_S = 1.0


def _conn_key(conn: psycopg.Connection, table: TableRef) -> tuple[str, str, str]:
    info = conn.info
    return (f"{info.host}:{info.port}/{info.dbname}", table.schema, table.name)


def _bm25_index(conn: psycopg.Connection, table: TableRef) -> bm25.Bm25Index | None:
    key = _conn_key(conn, table)
    cached = _BM25.get(key)
    if cached is not None and time.monotonic() - cached[1] < BM25_RECHECK_S:
        return cached[0]
    ix = bm25.lookup(conn, table)
    if ix is not None and not ix.ready:
        _BM25.pop(key, None)
        return None  # an initial load is under way: the statistics lag the rows
    if ix is not None and ix.has_df:
        _BM25[key] = (ix, time.monotonic())
    return ix


# Each table's HNSW index kind, looked at again after a few seconds: an initial load sets the index
# aside and builds it at the end (meanwhile float32, an exact scan, is right for any kind).
_INDEX: dict[tuple[str, str, str], tuple[float, VectorIndex]] = {}
INDEX_KIND_TTL = 5.0


def _vector_index(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping) -> VectorIndex:
    key = _conn_key(conn, table)
    now = time.monotonic()
    hit = _INDEX.get(key)
    if hit is None or now - hit[0] > INDEX_KIND_TTL:
        hit = _INDEX[key] = (now, vector_index.detect(conn, table.schema, table.name, mapping.vector))
    return hit[1]


_PGVECTOR: dict[str, tuple[int, ...]] = {}


def _has_iterative_scan(conn: psycopg.Connection) -> bool:
    """pgvector >= 0.8 (iterative index scans); older versions reject the hnsw.iterative_scan setting."""
    key = _conn_key(conn, TableRef("", ""))[0]
    version = _PGVECTOR.get(key)
    if version is None:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        version = _PGVECTOR[key] = ddl.version_tuple(row[0] if row else None)
    return version >= (0, 8)


def validate_request(query_text: str | None, k: int, search_type: str) -> None:
    if query_text is not None and len(query_text) > MAX_QUERY_CHARS:
        raise ValidationError(
            f"retrievalQuery.text: {len(query_text)} characters; a query must have at most {MAX_QUERY_CHARS}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValidationError(
            f"numberOfResults: {k!r} is out of range; it must be an integer from 1 to {MAX_K}"
        )
    if search_type not in ("SEMANTIC", "HYBRID"):
        raise ValidationError(f"overrideSearchType: {search_type!r} must be SEMANTIC or HYBRID")


def _query_vector(v: Any) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float32).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValidationError("query embedding must be a non-empty vector of finite numbers")
    return arr


def _vector_literal(v: Any) -> str:
    return "[" + ",".join(map(repr, _query_vector(v).tolist())) + "]"


def _vector_param(conn: psycopg.Connection, v: Any) -> Any:
    """The query vector as a statement parameter: the float32 array itself, sent in pgvector's binary
    format, on connections with pgvector's dumpers (`register_vector`, as every pooled connection
    has); else its text literal. Formatting 384 floats as text cost 0.2-0.35 ms of a Retrieve, about
    half of PostgreSQL's whole top-k (bench/bench_server.py, docs/server.md)."""
    arr = _query_vector(v)
    try:
        conn.adapters.get_dumper(np.ndarray, PyFormat.BINARY)
    except psycopg.ProgrammingError:  # a connection without pgvector's adapters
        return _vector_literal(arr)
    return arr


def _f8(x: float) -> sql.Composed:
    """A float8 constant: a bare decimal literal is numeric, and numeric arithmetic on every posting
    or candidate row costs several times float8's."""
    return sql.SQL("{}::float8").format(sql.Literal(float(x)))


def _parent_expr(alias: str, m: FieldMapping) -> sql.Composed:
    md = sql.SQL("({}.{} ->> {})").format(sql.Identifier(alias), sql.Identifier(m.metadata), sql.Literal(PARENT_ID))
    return sql.SQL("(CASE WHEN {md} ~ '^[0-9a-fA-F-]{{36}}$' THEN {md}::uuid END)").format(md=md)


def _dense_sql(
    t: sql.Composable, m: FieldMapping, where: sql.Composable, limit: int, index: VectorIndex = vector_index.FLOAT32,
    *, with_vector: bool = False,
) -> sql.Composed:
    """(id, dist) of the `limit` nearest rows by cosine distance, through the table's HNSW index: the
    ORDER BY is the index's own expression (pgkb.store.vector_index), or PostgreSQL scans every row.
    `with_vector`: (id, v, dist), v the stored vector, read from the row the scan fetches anyway."""
    pk, vec, lim = sql.Identifier(m.primary_key), sql.Identifier(m.vector), sql.Literal(int(limit))
    v = sql.SQL(" c.{} AS v,").format(vec) if with_vector else sql.SQL("")
    if index.kind == "halfvec":
        half = sql.SQL("halfvec({})").format(sql.Literal(index.dimensions))
        return sql.SQL(
            "SELECT c.{pk} AS id,{v} c.{vec}::{half} <=> %(qvec)s::{half} AS dist FROM {t} AS c"
            " WHERE c.{vec} IS NOT NULL{where} ORDER BY dist LIMIT {lim}"
        ).format(pk=pk, v=v, vec=vec, half=half, t=t, where=where, lim=lim)
    if index.kind == "binary":
        # Hamming-nearest candidates by the index, then the exact cosine distance on the stored vectors.
        bits = sql.SQL("bit({})").format(sql.Literal(index.dimensions))
        return sql.SQL(
            "SELECT b.id,{bv} b.v <=> %(qvec)s::vector AS dist FROM (SELECT c.{pk} AS id, c.{vec} AS v FROM {t} AS c"
            " WHERE c.{vec} IS NOT NULL{where} ORDER BY binary_quantize(c.{vec})::{bits}"
            " <~> binary_quantize(%(qvec)s::vector)::{bits} LIMIT {cand}) AS b ORDER BY dist LIMIT {lim}"
        ).format(pk=pk, bv=sql.SQL(" b.v,") if with_vector else sql.SQL(""), vec=vec, bits=bits, t=t, where=where,
                 cand=sql.Literal(index.candidates(limit)), lim=lim)
    return sql.SQL(
        "SELECT c.{pk} AS id,{v} c.{vec} <=> %(qvec)s::vector AS dist FROM {t} AS c"
        " WHERE c.{vec} IS NOT NULL{where} ORDER BY dist LIMIT {lim}"
    ).format(pk=pk, v=v, vec=vec, t=t, where=where, lim=lim)


def _bm25_scored(ix: bm25.Bm25Index, postings: int | None) -> sql.Composed:
    """(doc, s): BM25 scores of the chunks among each query term's best `postings` (None: all of
    them), unordered. Per query term: its idf (document frequency summed from the df deltas), then its
    postings best impact first, summing each chunk's term weights."""
    if ix.has_df:
        df = sql.SQL("(SELECT coalesce(sum(d0.d), 0) AS df FROM {} AS d0 WHERE d0.term = q.term)").format(ix.df)
    else:
        df = sql.SQL("(SELECT count(*) AS df FROM {} AS p0 WHERE p0.term = q.term)").format(ix.postings)
    read: sql.Composable
    if ix.has_df and postings is not None:
        read = sql.SQL("ORDER BY {} DESC LIMIT {}").format(ix.impact("p1"), sql.Literal(int(postings)))
    else:
        read = sql.SQL("OFFSET 0")
    return sql.SQL(
        "SELECT p.doc, sum(w.qw * p.tf / (p.tf + w.k1n + w.k1b * p.dl)) AS s"
        " FROM (SELECT q.term, q.qtf * ln(1 + (st.n - d.df + 0.5) / (d.df + 0.5)) * ({k1} + 1) AS qw,"
        "              {k1} * (1 - {b}) AS k1n, {k1} * {b} / st.avgdl AS k1b"
        "       FROM q CROSS JOIN LATERAL {df} AS d,"
        "            (SELECT greatest(sum(n), 1)::float8 AS n,"
        "                    greatest(sum(total)::float8 / greatest(sum(n), 1), 1) AS avgdl FROM {stats}) AS st"
        "       WHERE d.df > 0 OFFSET 0) AS w"  # OFFSET 0: weights once per term, not once per posting
        # LATERAL with a fence (OFFSET 0 or LIMIT): each term's postings are read through an index.
        # As a join, a table just written (statistics stale, visibility map unset until autovacuum)
        # was planned as a sequential scan of every posting: 3x slower at 5,000 chunks, and growing.
        " CROSS JOIN LATERAL (SELECT p1.doc, p1.tf, p1.dl FROM {postings} AS p1 WHERE p1.term = w.term {read}) AS p"
        " GROUP BY p.doc"
    ).format(
        k1=_f8(ix.k1), b=_f8(ix.b), postings=ix.postings, stats=ix.stats, df=df, read=read,
    )


def _bm25_sql(
    t: sql.Composable, m: FieldMapping, ix: bm25.Bm25Index, where: sql.Composable | None, cand: int,
    postings: int = MAX_POSTINGS_PER_TERM,
) -> sql.Composed:
    """BM25 scores of the chunks matching the query terms: (doc, s), best first, top `cand`.

    Only a term's best `postings` (MAX_POSTINGS_PER_TERM) by impact are read: exact whenever no query
    term is in more chunks than that, bounded work however large the table (statistics without the
    impact index: all postings). With a filter, the chunks so scored are checked best first until
    `cand` pass; when fewer pass (a narrow filter), the same again over FILTERED_POSTINGS_FACTOR times
    as many postings per term. The deeper pass runs only then: its CTE is behind a one-time filter."""
    if where is None:
        # Ties broken by id, as the rankings built on this list do: the same chunks at the cut for any k.
        return sql.SQL("SELECT doc, s FROM ({}) AS sc ORDER BY s DESC, doc LIMIT {}").format(
            _bm25_scored(ix, postings), sql.Literal(cand))

    def passing(scored: sql.Composable) -> sql.Composed:
        # Best score first, then the filter checked chunk by chunk until `cand` pass: a join of every
        # scored chunk with the table (then a sort) cost 20 ms at 100,000 chunks for a filter matching all.
        return sql.SQL(
            "SELECT sc.doc, sc.s FROM (SELECT doc, s FROM ({scored}) AS x ORDER BY s DESC, doc OFFSET 0) AS sc"
            " CROSS JOIN LATERAL (SELECT 1 FROM {t} AS c WHERE c.{pk} = sc.doc{where}) AS f"
            " ORDER BY sc.s DESC, sc.doc LIMIT {cand}"
        ).format(scored=scored, t=t, pk=sql.Identifier(m.primary_key), where=where, cand=sql.Literal(cand))

    deep = postings * FILTERED_POSTINGS_FACTOR if FILTERED_POSTINGS_FACTOR else None
    if not ix.has_df or deep == postings:
        return passing(_bm25_scored(ix, deep))
    return sql.SQL(
        "SELECT doc, s FROM (WITH lx1 AS MATERIALIZED ({first}), lx2 AS MATERIALIZED ({second})"
        " SELECT doc, s FROM lx1 WHERE (SELECT count(*) FROM lx1) >= {cand}"
        " UNION ALL SELECT doc, s FROM lx2 WHERE (SELECT count(*) FROM lx1) < {cand}) AS lx"
    ).format(first=passing(_bm25_scored(ix, postings)), second=passing(_bm25_scored(ix, deep)),
             cand=sql.Literal(cand))


def _fts_sql(table: TableRef, m: FieldMapping, where: sql.Composable | None, cand: int) -> sql.Composed:
    """Fallback for tables without BM25 statistics, served by the Bedrock layout's
    `to_tsvector('simple', text)` GIN index alone: a chunk scores the sum of the idf of the query words
    it contains.

    Each word's document frequency is counted through the index, up to FTS_MAX_DF rows; a word found
    in more rows than that carries little idf and would make the query visit that many rows, so it is
    left out (a query of only such words adds nothing lexical to HYBRID). The work is bounded by
    FTS_MAX_DF index matches per word, whatever the table's size, and no chunk text is re-tokenised.
    The 'simple' configuration keeps stop words: words that are English stop words are left out too.
    N is the planner's row estimate (`pg_class.reltuples`), at least the largest counted frequency.
    Needs the parameters %(tbl_schema)s and %(tbl_name)s (the table's schema and name)."""
    t = table.ident
    w = where if where is not None else sql.SQL("")
    return sql.SQL(
        "WITH words AS (SELECT plainto_tsquery('simple', u.w) AS q"
        "   FROM unnest(tsvector_to_array(to_tsvector('simple', %(qtext)s))) AS u(w)"
        "   WHERE to_tsvector('english', u.w) <> ''::tsvector),"
        " df AS (SELECT words.q, d.n FROM words CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM {t} AS c"
        "     WHERE {tsv} @@ words.q AND c.{vec} IS NOT NULL{where} LIMIT {cap}) AS x) AS d"
        "   WHERE d.n BETWEEN 1 AND {cap} - 1),"
        " tot AS (SELECT greatest(max(df.n), (SELECT max(cl.reltuples) FROM pg_class AS cl"
        "     JOIN pg_namespace AS ns ON ns.oid = cl.relnamespace WHERE ns.nspname = %(tbl_schema)s AND cl.relname = %(tbl_name)s),"
        "     1)::float8 AS n FROM df),"
        " hits AS (SELECT c.{pk} AS doc, sum(ln((tot.n + 1) / (df.n + 0.5))) AS s"
        "   FROM df CROSS JOIN tot CROSS JOIN LATERAL (SELECT c.{pk} FROM {t} AS c"
        "     WHERE {tsv} @@ df.q AND c.{vec} IS NOT NULL{where} OFFSET 0) AS c GROUP BY c.{pk})"  # per word, by the index
        " SELECT doc, s FROM hits ORDER BY s DESC, doc LIMIT {cand}"
    ).format(
        t=t, tsv=sql.SQL("to_tsvector('simple', c.{})").format(sql.Identifier(m.text)), vec=sql.Identifier(m.vector),
        where=w, cap=sql.Literal(FTS_MAX_DF),
        pk=sql.Identifier(m.primary_key), cand=sql.Literal(cand),
    )


def _result_sql(
    t: sql.Composable, m: FieldMapping, ranked: sql.Composable, attribute_cols: dict[str, str] | None
) -> sql.Composed:
    """Swap children for parents, dedupe, and fetch what a hit needs. `ranked` yields (id, score, rank)."""
    pk = sql.Identifier(m.primary_key)
    extra: sql.Composable
    if m.custom_metadata:
        extra = sql.SQL("r.{}::jsonb").format(sql.Identifier(m.custom_metadata))
    elif attribute_cols is not None:
        extra = (
            sql.SQL("jsonb_strip_nulls(jsonb_build_object({}))").format(
                sql.SQL(", ").join(
                    sql.SQL("{}, r.{}").format(sql.Literal(c), sql.Identifier(c)) for c in attribute_cols
                )
            )
            if attribute_cols
            else sql.SQL("NULL::jsonb")
        )
    else:  # discover per-attribute columns: every column the mapping does not name
        extra = sql.SQL("jsonb_strip_nulls(to_jsonb(r) - {}::text[])").format(
            sql.Literal(list(m.to_bedrock().values()))
        )
    return sql.SQL(
        "WITH ranked AS MATERIALIZED ({ranked}),"
        " swapped AS (SELECT DISTINCT ON (coalesce(par.{pk}, c.{pk})) coalesce(par.{pk}, c.{pk}) AS rid,"
        "   ranked.score, ranked.rank"
        "   FROM ranked JOIN {t} AS c ON c.{pk} = ranked.id LEFT JOIN {t} AS par ON par.{pk} = {parent}"
        "   ORDER BY coalesce(par.{pk}, c.{pk}), ranked.rank)"
        " SELECT r.{pk}::text, r.{txt}, s.score, r.{md}::jsonb, {extra}"
        " FROM swapped AS s JOIN {t} AS r ON r.{pk} = s.rid ORDER BY s.rank"
    ).format(
        ranked=ranked, pk=pk, t=t, parent=_parent_expr("c", m), txt=sql.Identifier(m.text),
        md=sql.Identifier(m.metadata), extra=extra,
    )


def _hit(row: tuple[Any, ...]) -> SearchHit:
    rid, text, score, md, extra = row
    md = dict(md) if isinstance(md, dict) else {}
    meta = {k: v for k, v in md.items() if not k.startswith("x-pgkb-")}
    if isinstance(extra, dict):
        for k, v in extra.items():
            if not k.startswith(SYSTEM_PREFIXES):
                meta[k] = v
    meta[CHUNK_ID] = rid
    page = md.get(PAGE_NUMBER)
    return SearchHit(
        id=rid,
        text=text or "",
        score=max(0.0, min(1.0, float(score))),
        metadata=meta,
        source_uri=md.get(SOURCE_URI),
        data_source_id=md.get(DATA_SOURCE_ID),
        page=int(page) if isinstance(page, int | float) and not isinstance(page, bool) else None,
    )


def _hybrid_sql(
    t: sql.Composable, m: FieldMapping, dense: sql.Composable, lexical: sql.Composable, k: int, cand: int
) -> sql.Composed:
    """Weighted RRF of the dense and BM25 rankings, then one round of dense feedback (Rocchio), both
    dense weights scaled by the query's dense trust `%(dtrust)s` in [0, 1] (fusion.py).

    The feedback query is the unit query vector plus the unit vector of the first fusion's best
    chunk; ranking by cosine to it is ranking by the sum of the two cosine distances (any vector
    scale, any pgvector version). A best chunk pointing away from the query (cosine <= 0) is no
    evidence of what the query means: then the candidates are ranked by the query alone. The
    candidates of both rankings (no others: a filter stays exact) are re-ranked that way, and that
    ranking replaces the dense one in a second fusion with the same BM25 ranking (weights 3 : 1 at
    trust 1). No second index scan. At trust 0 the order is BM25's, and the feedback ranking only
    orders what BM25 did not find. Yields `(id, score, rank)`, top k, best first."""
    pk, vec = sql.Identifier(m.primary_key), sql.Identifier(m.vector)
    rrf, one = _f8(RRF_K), _f8(1.0)
    trust = sql.SQL("%(dtrust)s::float8")
    return sql.SQL(
        "WITH dr AS MATERIALIZED (SELECT id, v, row_number() OVER (ORDER BY dist, id) AS r FROM ({dense}) AS d),"
        " lr AS MATERIALIZED (SELECT doc AS id, row_number() OVER (ORDER BY s DESC, doc) AS r FROM ({lexical}) AS l),"
        # Every candidate with its vector: the dense ones carry theirs from the index scan's rows, only
        # the lexical-only ones are looked up (at 1M chunks 2-3 % of a HYBRID search; level at 100k).
        " cd AS MATERIALIZED (SELECT id, v FROM dr UNION ALL SELECT lr.id, c.{vec} FROM lr JOIN {t} AS c"
        "   ON c.{pk} = lr.id WHERE NOT EXISTS (SELECT 1 FROM dr WHERE dr.id = lr.id)),"
        " first AS (SELECT coalesce(dr.id, lr.id) AS id FROM dr FULL JOIN lr ON dr.id = lr.id"
        "   ORDER BY coalesce({w} * {trust} / ({rrf} + dr.r), 0) + coalesce({one} / ({rrf} + lr.r), 0) DESC,"
        "   dr.r, 1 LIMIT 1),"
        " fb AS (SELECT cd.v FROM first JOIN cd ON cd.id = first.id WHERE cd.v <=> %(qvec)s::vector < 1),"
        " fr AS (SELECT cd.id, row_number() OVER ("
        "     ORDER BY (cd.v <=> %(qvec)s::vector) + coalesce(cd.v <=> fb.v, 0), cd.id) AS r"
        "   FROM cd LEFT JOIN fb ON true),"
        " fused AS (SELECT coalesce(fr.id, lr.id) AS id, fr.r AS fbr,"
        "   coalesce({wf} * {trust} / ({rrf} + fr.r), 0) + coalesce({one} / ({rrf} + lr.r), 0) AS f"
        "   FROM (SELECT * FROM fr WHERE r <= {cand}) AS fr FULL JOIN lr ON fr.id = lr.id)"
        " SELECT id, f * {top} / ({wf} * {trust} + {one}) AS score,"
        "   row_number() OVER (ORDER BY f DESC, fbr, id) AS rank"
        " FROM fused ORDER BY f DESC, fbr, id LIMIT {k}"
    ).format(
        dense=dense, lexical=lexical, rrf=rrf, w=_f8(DENSE_WEIGHT), trust=trust, t=t, pk=pk, vec=vec,
        cand=sql.Literal(int(cand)), k=sql.Literal(int(k)), one=one, wf=_f8(FEEDBACK_WEIGHT), top=_f8(RRF_K + 1),
    )


def build_query(
    table: TableRef,
    mapping: FieldMapping,
    *,
    k: int,
    search_type: SearchType,
    filter: dict[str, Any] | None,
    attribute_cols: dict[str, str] | None,
    bm25_index: bm25.Bm25Index | None,
    acl: tuple[sql.Composable, dict[str, Any]] | None = None,
    index: VectorIndex = vector_index.FLOAT32,
    postings_per_term: int | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The one statement of a search, with its parameters except %(qvec)s and %(qtext)s.
    `index`: the table's HNSW index (vector_index.detect), whose expression the dense ranking orders by.
    `postings_per_term`: BM25 postings an unfiltered lexical ranking reads per term (MAX_POSTINGS_PER_TERM).

    k and the candidate count are literals (bounded integers), so that a cached generic plan still
    knows its LIMITs and keeps using the HNSW index."""
    t = table.ident
    params: dict[str, Any] = {"k": k}
    where: sql.Composable = sql.SQL("")
    lex_where: sql.Composable | None = None
    if filter is not None:
        pred, fparams = compile_filter(filter, mapping, attribute_cols, alias="c")
        params.update(fparams)
        where = sql.SQL(" AND {}").format(pred)
        lex_where = where
    if acl is not None:  # document-level access control: one more predicate, beside the filter's
        params.update(acl[1])
        where = sql.SQL("{} AND {}").format(where, acl[0])
        lex_where = where
    if search_type == "SEMANTIC":
        ranked = sql.SQL(
            "SELECT id, 1 - dist / 2 AS score, row_number() OVER (ORDER BY dist) AS rank FROM ({}) AS d"
        ).format(_dense_sql(t, mapping, where, k, index))
        params["scan"] = index.candidates(k)
    else:
        hybrid_cand = FILTERED_HYBRID_CANDIDATES if filter is not None or acl is not None else HYBRID_CANDIDATES
        params["cand"] = max(hybrid_cand, k) if search_type == "HYBRID" else k
        if bm25_index is not None:
            lexical = sql.SQL(
                "WITH q AS (SELECT u.lexeme AS term, cardinality(u.positions) AS qtf"
                " FROM unnest(to_tsvector({cfg}::regconfig, %(qtext)s)) AS u) {body}"
            ).format(cfg=sql.Literal(bm25_index.config), body=_bm25_sql(t, mapping, bm25_index, lex_where, params["cand"],
                                                        postings_per_term or MAX_POSTINGS_PER_TERM))
        else:
            lexical = _fts_sql(table, mapping, lex_where, params["cand"])
            params.update(tbl_schema=table.schema, tbl_name=table.name)
    if search_type == "LEXICAL":
        ranked = sql.SQL(
            "SELECT doc AS id, s / (1 + s) AS score, row_number() OVER (ORDER BY s DESC, doc) AS rank FROM ({}) AS l"
        ).format(lexical)
    elif search_type == "HYBRID":
        dense = _dense_sql(t, mapping, where, params["cand"], index, with_vector=True)
        ranked = _hybrid_sql(t, mapping, dense, lexical, k, params["cand"])
        params["scan"] = index.candidates(params["cand"])
    return _result_sql(t, mapping, ranked, attribute_cols), params


# Rendered statements of searches without a filter or an ACL, by their shape (everything build_query
# reads but the query's values): composing and rendering the statement cost about 0.15 ms per
# Retrieve, a quarter of PostgreSQL's top-k. Filtered statements depend on the filter's structure
# and are built each time.
_STATEMENTS: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
STATEMENT_CACHE_SIZE = 256


def _statement(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    *,
    k: int,
    search_type: SearchType,
    filter: dict[str, Any] | None,
    attribute_cols: dict[str, str] | None,
    bm25_index: bm25.Bm25Index | None,
    acl: tuple[sql.Composable, dict[str, Any]] | None,
    index: VectorIndex,
    postings_per_term: int | None = None,
) -> tuple[sql.Composed | str, dict[str, Any]]:
    """build_query's statement and parameters; unfiltered ones rendered once per shape."""
    if filter is not None or acl is not None:
        return build_query(
            table, mapping, k=k, search_type=search_type, filter=filter, attribute_cols=attribute_cols,
            bm25_index=bm25_index, acl=acl, index=index, postings_per_term=postings_per_term,
        )
    cols = None if attribute_cols is None else tuple(attribute_cols.items())
    # The module's tunables are read at build time, so they are part of the shape (tests and
    # benchmarks set them).
    tunables = (RRF_K, DENSE_WEIGHT, FEEDBACK_WEIGHT, HYBRID_CANDIDATES, MAX_POSTINGS_PER_TERM, FTS_MAX_DF)
    key = (table, mapping, k, search_type, cols, bm25_index, index, tunables, postings_per_term)
    hit = _STATEMENTS.get(key)
    if hit is None:
        stmt, params = build_query(
            table, mapping, k=k, search_type=search_type, filter=None, attribute_cols=attribute_cols,
            bm25_index=bm25_index, index=index, postings_per_term=postings_per_term,
        )
        if len(_STATEMENTS) >= STATEMENT_CACHE_SIZE:
            _STATEMENTS.clear()
        hit = _STATEMENTS[key] = (stmt.as_string(conn), params)
    return hit[0], dict(hit[1])


def statement_settings(
    cand: int, *, filtered: bool, iterative: bool, ef_search: int | None = None, kind: str = "float32",
    default: int | None = None,
) -> list[tuple[str, str]]:
    """The settings of one search statement (set with SET LOCAL semantics in its transaction, so
    they never outlive it). `cand`: the rows the dense ranking takes; `iterative`: the server has
    pgvector >= 0.8; `ef_search`: an explicit value (benchmarks), else pgkb's rule: the unfiltered
    depth `default` (a knowledge base's tag) or the index `kind`'s (vector_index), twice it filtered."""
    base = default or (HALFVEC_EF_SEARCH if kind == "halfvec" else EF_SEARCH)
    rule = max(base * FILTERED_EF_SEARCH // EF_SEARCH if filtered else base, cand)
    ef = max(int(ef_search), cand) if ef_search else rule  # the scan must still yield `cand` rows
    if filtered and not iterative:
        ef = max(ef, OLD_PGVECTOR_FILTER_EF)  # no iterative scans: search wider so filters keep k rows
    settings = [("hnsw.ef_search", str(min(ef, 1000)))]
    if filtered and iterative:
        settings += [("hnsw.iterative_scan", "relaxed_order"), ("hnsw.max_scan_tuples", str(MAX_SCAN_TUPLES))]
    if filtered:
        # Plan with the filter's values: whether the GIN index or HNSW serves best depends on how
        # many rows they match, which a cached generic plan cannot know.
        settings.append(("plan_cache_mode", "force_custom_plan"))
    return settings


def settings_statement(settings: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """One constant statement setting them transaction-locally, and its parameters."""
    return "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings), [x for pair in settings for x in pair]


def search(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    *,
    query_embedding: Any,
    query_text: str | None,
    k: int,
    filter: dict[str, Any] | None = None,
    search_type: SearchType = "SEMANTIC",
    attribute_cols: dict[str, str] | None = None,
    ef_search: int | None = None,
    query_coverage: float | None = None,
    acl: tuple[sql.Composable, dict[str, Any]] | None = None,
    ef_search_default: int | None = None,
    postings_per_term: int | None = None,
) -> list[SearchHit]:
    """Top-k chunks for a query. HYBRID also needs `query_text`.

    `ef_search`: exactly this hnsw.ef_search (benchmarks); `ef_search_default`: a knowledge base's own
    unfiltered depth (its tag pgkb:efSearch) in place of pgkb's, filtered searches going twice as deep.
    `postings_per_term`: a knowledge base's BM25 postings read per query term (pgkb:bm25PostingsPerTerm).

    `acl`: the visibility predicate of `filters.acl_predicate` (MANAGED knowledge bases), applied
    inside the statement like a filter, so pages are full and nothing hidden is ever ranked.

    `attribute_cols`: per-attribute metadata columns (from `vector_table.attribute_columns`) for
    tables without a custom metadata column; None means "discover them from the row".
    `query_coverage`: HYBRID's evidence of how well the embedding model reads the query
    (`fusion.model_coverage`); None trusts the dense ranking fully.
    """
    validate_request(query_text, k, "SEMANTIC" if search_type == "LEXICAL" else search_type)
    qvec = _vector_param(conn, query_embedding) if search_type != "LEXICAL" else "[0]"
    if filter is not None and attribute_cols is None and not mapping.custom_metadata:
        attribute_cols = attribute_columns(conn, table, mapping)  # one catalog query; pass them to skip it
    for attempt in range(2):
        ix = _bm25_index(conn, table) if search_type != "SEMANTIC" else None
        try:
            return _run(conn, table, mapping, qvec, query_text, k, filter, search_type, attribute_cols, ef_search, ix,
                        acl=acl, dtrust=fusion.dense_trust(query_coverage), ef_search_default=ef_search_default,
                        postings_per_term=postings_per_term)
        except psycopg.errors.UndefinedTable:
            if ix is None or attempt:
                raise
            _BM25.pop(_conn_key(conn, table), None)  # statistics dropped since we looked: look again
    raise AssertionError("unreachable")


def _run(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    qvec: Any,
    query_text: str | None,
    k: int,
    filter: dict[str, Any] | None,
    search_type: SearchType,
    attribute_cols: dict[str, str] | None,
    ef_search: int | None,
    ix: bm25.Bm25Index | None,
    acl: tuple[sql.Composable, dict[str, Any]] | None = None,
    dtrust: float = 1.0,
    ef_search_default: int | None = None,
    postings_per_term: int | None = None,
) -> list[SearchHit]:
    index = _vector_index(conn, table, mapping) if search_type != "LEXICAL" else vector_index.FLOAT32
    stmt, params = _statement(
        conn, table, mapping, k=k, search_type=search_type, filter=filter, attribute_cols=attribute_cols,
        bm25_index=ix, acl=acl, index=index, postings_per_term=postings_per_term,
    )
    filtered = filter is not None or acl is not None
    params["qvec"] = qvec
    params["qtext"] = query_text or ""
    if search_type == "HYBRID":
        params["dtrust"] = float(dtrust)
    cand = params.pop("scan", params.get("cand", k))  # rows the index scan must yield
    settings = statement_settings(cand, filtered=filtered, iterative=filtered and _has_iterative_scan(conn),
                                  ef_search=ef_search, kind=index.kind, default=ef_search_default)
    try:
        rows = _execute(conn, settings, stmt, params)
    except psycopg.errors.DataException as exc:
        raise ValidationError(f"query could not be run against {table}: {str(exc).splitlines()[0]}") from None
    return [_hit(r) for r in rows]


# The hnsw.ef_search each idle connection has at session level, left there by the unfiltered searches
# (pgkb's pooled connections serve many): the next unfiltered search at that depth sends its
# statement alone. Filtered searches set theirs for their own transaction, over it.
_SESSION_EF: weakref.WeakKeyDictionary[psycopg.Connection, str] = weakref.WeakKeyDictionary()
_SESSION_LOCK = threading.Lock()


def _session_ef(conn: psycopg.Connection) -> str | None:
    with _SESSION_LOCK:
        return _SESSION_EF.get(conn)


def _remember_session_ef(conn: psycopg.Connection, value: str | None) -> None:
    with _SESSION_LOCK:
        if value is None:
            _SESSION_EF.pop(conn, None)
        else:
            _SESSION_EF[conn] = value


def _execute(
    conn: psycopg.Connection, settings: list[tuple[str, str]], stmt: sql.Composed | str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """The settings and the statement in a transaction of their own, in one round trip.

    On an idle connection (a pooled one, as Retrieve uses) the two go in one pipeline without BEGIN
    or COMMIT: PostgreSQL runs the messages up to a Sync as one implicit transaction, so the settings
    hold for the statement and, an error included, end with it (psycopg's own transaction block
    waited for BEGIN's answer before the statement and for COMMIT's after it, and the first wait
    after the query embedding pays the database process's wake-up on busy cores). An unfiltered
    search's only setting, hnsw.ef_search, is set for the session instead, so the next one at the
    same depth on this connection needs no setting (0.1 ms of a Retrieve): every search states its
    own depth, so what a connection keeps never reaches another search. A connection inside a
    transaction runs them in a savepoint, transaction-locally."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        set_sql, set_params = settings_statement(settings)
        with conn.transaction(), conn.pipeline():
            conn.execute(set_sql, set_params)  # constant text, values bound
            cur = conn.execute(stmt, params)
        return cur.fetchall()
    session = settings[0][1] if len(settings) == 1 and settings[0][0] == "hnsw.ef_search" else None
    autocommit = conn.autocommit
    conn.autocommit = True  # no BEGIN of psycopg's: the pipeline's Sync delimits the transaction
    try:
        if session is not None and _session_ef(conn) == session:
            return conn.execute(stmt, params).fetchall()
        if session is not None:
            set_sql, set_params = "SELECT set_config('hnsw.ef_search', %s, false)", [session]
        else:
            set_sql, set_params = settings_statement(settings)
        with conn.pipeline():
            conn.execute(set_sql, set_params)
            cur = conn.execute(stmt, params)
        rows = cur.fetchall()
        if session is not None:
            _remember_session_ef(conn, session)
        return rows
    except BaseException:
        _remember_session_ef(conn, None)  # the failed transaction took its SET with it: set it again
        raise
    finally:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.autocommit = autocommit
        else:  # cannot be put back as it was: a pool must not hand it out in autocommit
            conn.close()
