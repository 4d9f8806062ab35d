"""BM25 statistics kept inside PostgreSQL, next to a knowledge-base table, by set-based triggers.

`install_bm25(conn, table, mapping)` (idempotent; the integrator calls it when a KB table is created or
adopted) creates, in the `pgkb_bm25` schema:
- `<base>_postings (term, doc, tf, dl)`: one row per (lexeme, searchable chunk), with the lexeme's
  frequency in the chunk and the chunk's length in lexemes, and **one** index, unique on
  (term, impact, doc) and including (tf, dl): a query reads a term's postings best first from it
  (index only), and a trigger finds a posting to delete from (term, tf, dl, doc), which give its
  impact. (Statistics installed before also have a primary key (term, doc): the same queries and
  triggers work on them; a rebuild drops it. At 1M chunks it was 2.7 GB of 9.2 and 132 s of the
  rebuild's 673.)
- `<base>_stats (n, total)`: append-only deltas of the number of searchable chunks and their total
  length (no hot row for concurrent writers to queue on; re-installing compacts them);
- `<base>_df (term, d)`: append-only deltas of each term's document frequency, so a query reads a
  term's df from a few rows instead of counting its postings (`compact_bm25` folds them, after each
  ingestion job);
- the impact (a posting's BM25 term weight at a reference length) leads that index after the term, so
  an unfiltered query reads only a term's best `MAX_POSTINGS_PER_TERM` postings: bounded work per
  query however large the table grows;
- statement-level AFTER INSERT / UPDATE / DELETE triggers with transition tables (set-based: one
  tokenising statement per written batch, never per row) and an AFTER TRUNCATE trigger.
Initial loads: `suspend_bm25` turns the row triggers off (an empty table about to receive its first
sync: maintaining postings batch by batch was ~80 % of the write time) and `rebuild_bm25` rebuilds all
the statistics from the table in one set-based pass and turns the triggers back on, atomically. While
they are off the statistics are not `ready` and searches use the table's own text index instead.
Only chunks with an embedding are indexed: HIERARCHICAL parent rows (NULL embedding) are never searched.

Tokens are `to_tsvector(<config>, text)` lexemes (default config `english`: stemmed, stop words
removed); the query side tokenises with the same function, see `query_terms`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgkb.store import ddl
from pgkb.store.vector_table import FieldMapping, TableRef

log = logging.getLogger(__name__)

SCHEMA = "pgkb_bm25"
DEFAULT_CONFIG = "english"
# Anserini's MS MARCO passage values: short chunks need little length normalisation.
DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
#: The chunk length (in lexemes) at which postings are ordered by impact. It decides only which
#: postings a query reads first, never a score, so it can be a constant.
REF_AVGDL = 64.0


@dataclass(frozen=True)
class Bm25Index:
    """Where a table's BM25 statistics live and how they were tokenised."""

    base: str
    config: str
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    #: False for statistics installed by an older pgkb (no df deltas, no impact index) until the next
    #: `install_bm25`: queries then count document frequencies and read every posting.
    has_df: bool = True
    #: False while an initial load has the row triggers off (`suspend_bm25`): the statistics lag the
    #: table until `rebuild_bm25`, so searches must not read them.
    ready: bool = True

    @property
    def postings(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, f"{self.base}_postings")

    @property
    def stats(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, f"{self.base}_stats")

    @property
    def df(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, f"{self.base}_df")

    def impact(self, alias: str | None = None) -> sql.Composed:
        """A posting's BM25 term weight at length REF_AVGDL: the index's order and the query's ORDER BY
        (the same expression, so the planner matches them)."""
        col = (lambda c: sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))) if alias else sql.Identifier
        return self.impact_of(col("tf"), col("dl"))

    def impact_of(self, tf: sql.Composable, dl: sql.Composable) -> sql.Composed:
        """`impact` of any two int expressions: equal to the stored posting's when they are its tf and dl."""
        return sql.SQL("({tf}::float8 / ({tf} + {k1n}::float8 + {k1b}::float8 * {dl}))").format(
            tf=tf, dl=dl, k1n=sql.Literal(self.k1 * (1 - self.b)), k1b=sql.Literal(self.k1 * self.b / REF_AVGDL),
        )


def base_name(table: TableRef) -> str:
    """Side-table prefix: a hash, so any (schema, table) of up to 63 characters each fits."""
    return "t_" + hashlib.sha1(f"{table.schema}\x00{table.name}".encode()).hexdigest()[:20]


def _tokens(rows: sql.Composable, m: FieldMapping, config: str) -> sql.Composed:
    """(doc, term, tf) of the searchable rows of `rows` (a FROM item: a transition table or a subquery)."""
    return sql.SQL(
        "SELECT r.{pk} AS doc, u.lexeme AS term, cardinality(u.positions) AS tf"
        " FROM {rows} AS r, unnest(to_tsvector({cfg}::regconfig, r.{txt})) AS u"
        " WHERE r.{vec} IS NOT NULL AND r.{txt} IS NOT NULL"
    ).format(
        pk=sql.Identifier(m.primary_key), rows=rows, cfg=sql.Literal(config),
        txt=sql.Identifier(m.text), vec=sql.Identifier(m.vector),
    )


def _add_sql(rows: sql.Composable, m: FieldMapping, ix: Bm25Index) -> sql.Composed:
    """Index the searchable rows of `rows`: postings, one stats delta, df deltas of the new postings."""
    return sql.SQL(
        "WITH tok AS MATERIALIZED ({tok}),"
        " d AS (SELECT doc, sum(tf)::int AS dl FROM tok GROUP BY doc),"
        # A row new to the table has no postings yet (deletes and updates remove a row's postings,
        # TRUNCATE all of them), so nothing conflicts; if something ever did, skipping it keeps the
        # df deltas equal to the postings: they count exactly the postings inserted. No conflict
        # target: the unique index is (term, impact, doc), or (term, doc) on older statistics.
        " ins AS (INSERT INTO {postings} (term, doc, tf, dl)"
        "   SELECT tok.term, tok.doc, tok.tf, d.dl FROM tok JOIN d USING (doc) ORDER BY 1, 2"
        "   ON CONFLICT DO NOTHING RETURNING term),"
        " dfi AS (INSERT INTO {df} (term, d) SELECT term, count(*) FROM ins GROUP BY term)"
        " INSERT INTO {stats} (n, total)"
        " SELECT count(*), coalesce(sum(d.dl), 0) FROM {rows} AS r LEFT JOIN d ON d.doc = r.{pk}"
        " WHERE r.{vec} IS NOT NULL AND r.{txt} IS NOT NULL HAVING count(*) > 0"
    ).format(
        tok=_tokens(rows, m, ix.config), postings=ix.postings, stats=ix.stats, df=ix.df, rows=rows,
        pk=sql.Identifier(m.primary_key), vec=sql.Identifier(m.vector), txt=sql.Identifier(m.text),
    )


def _remove_sql(rows: sql.Composable, m: FieldMapping, ix: Bm25Index) -> sql.Composed:
    """Un-index the rows of `rows` (re-tokenised: to_tsvector is deterministic), minus one stats delta
    and minus the df of the postings actually deleted."""
    return sql.SQL(
        "WITH tok AS MATERIALIZED ({tok}),"
        " d AS (SELECT doc, sum(tf)::int AS dl FROM tok GROUP BY doc),"
        # The impact from the re-tokenised tf and dl equals the stored one: the index finds the posting.
        " del AS (DELETE FROM {postings} AS p USING tok JOIN d USING (doc) WHERE p.term = tok.term"
        "   AND {p_impact} = {t_impact} AND p.doc = tok.doc RETURNING p.term),"
        " dfd AS (INSERT INTO {df} (term, d) SELECT term, -count(*) FROM del GROUP BY term)"
        " INSERT INTO {stats} (n, total)"
        " SELECT -count(*), -coalesce(sum(d.dl), 0) FROM {rows} AS r LEFT JOIN d ON d.doc = r.{pk}"
        " WHERE r.{vec} IS NOT NULL AND r.{txt} IS NOT NULL HAVING count(*) > 0"
    ).format(
        tok=_tokens(rows, m, ix.config), postings=ix.postings, stats=ix.stats, df=ix.df, rows=rows,
        pk=sql.Identifier(m.primary_key), vec=sql.Identifier(m.vector), txt=sql.Identifier(m.text),
        p_impact=ix.impact("p"), t_impact=ix.impact_of(sql.SQL("tok.tf"), sql.SQL("d.dl")),
    )


def _changed(a: str, b: str, m: FieldMapping) -> sql.Composed:
    """Rows of transition table `a` without an identical (key, text, searchable) row in `b`, as a FROM item."""
    return sql.SQL(
        "(SELECT x.* FROM {a} AS x WHERE NOT EXISTS (SELECT 1 FROM {b} AS y WHERE y.{pk} = x.{pk}"
        " AND y.{txt} IS NOT DISTINCT FROM x.{txt} AND (y.{vec} IS NULL) = (x.{vec} IS NULL)))"
    ).format(
        a=sql.Identifier(a), b=sql.Identifier(b), pk=sql.Identifier(m.primary_key),
        txt=sql.Identifier(m.text), vec=sql.Identifier(m.vector),
    )


def _function(conn: psycopg.Connection, name: str, body: Sequence[sql.Composable]) -> sql.Composed:
    text = ";\n".join(s.as_string(conn) for s in body)
    if "$pgkb$" in text:  # identifiers are restricted to [a-zA-Z0-9_.-]; belt and braces
        raise ValueError("unexpected dollar-quote tag in generated SQL")
    return sql.SQL(
        # SECURITY DEFINER: any role that may write the KB table keeps its statistics current,
        # without rights of its own on pgkb_bm25; a fixed search_path, as such functions need.
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
        " SET search_path = pg_catalog, pg_temp AS $pgkb$ BEGIN\n"
        + text.replace("{", "{{").replace("}", "}}")
        + ";\nRETURN NULL; END $pgkb$"
    ).format(fn=sql.Identifier(SCHEMA, name))


def lookup(conn: psycopg.Connection, table: TableRef) -> Bm25Index | None:
    """The table's BM25 index, or None when it is not installed."""
    # CASE, not AND: each check may only run once the previous one passed (they raise otherwise).
    row = conn.execute(
        "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(s)s) THEN false"
        " WHEN NOT has_schema_privilege(%(s)s, 'USAGE') THEN false"
        " WHEN to_regclass(%(t)s) IS NULL THEN false"
        " ELSE has_table_privilege(%(t)s, 'SELECT') END",
        {"s": SCHEMA, "t": f"{SCHEMA}.tables"},
    ).fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT base, config::text, k1, b, to_regclass(format('%%I.%%I', %s::text, base || '_df')) IS NOT NULL,"
            " NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(format('%%I.%%I', schema_name, table_name))"
            "   AND tgname = 'pgkb_bm25_ins' AND tgenabled = 'D')"
            " FROM {} WHERE schema_name = %s AND table_name = %s"
        ).format(sql.Identifier(SCHEMA, "tables")),
        (SCHEMA, table.schema, table.name),
    ).fetchone()
    return Bm25Index(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5])) if row else None


def install_bm25(
    conn: psycopg.Connection,
    table: TableRef,
    mapping: FieldMapping,
    *,
    config: str = DEFAULT_CONFIG,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
) -> bool:
    """Create (or refresh) the BM25 statistics and triggers of a knowledge-base table. Idempotent.

    Atomic (a transaction, or a savepoint inside the caller's); takes a SHARE ROW EXCLUSIVE lock on
    the table so that no write slips between the backfill and the triggers. Returns True when it
    (re)built the statistics, False when they were already installed with these settings (then it
    only compacts the stats deltas) or when the role may not add triggers to the table (logged;
    hybrid search then uses the table's simple text index).
    """
    try:
        with conn.transaction():
            return _install(conn, table, mapping, config, float(k1), float(b))
    except psycopg.errors.InsufficientPrivilege as exc:
        # A table pgkb may read but not alter (e.g. adopted from Bedrock): hybrid search falls back
        # to the table's own `to_tsvector('simple', ...)` index.
        log.warning("BM25 statistics not installed on %s: %s", table, str(exc).splitlines()[0])
        return False


def _install(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, config: str, k1: float, b: float) -> bool:
    # Concurrent installs (two processes adopting tables at once) would race on CREATE ... IF NOT EXISTS.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('pgkb_bm25.install'))")
    for stmt in ddl.bm25_registry(SCHEMA):
        conn.execute(stmt)
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table.ident))
    ix = Bm25Index(base_name(table), config, float(k1), float(b))
    existing = conn.execute(
        sql.SQL(
            "SELECT base, text_column, key_column, vector_column, config::text, k1, b FROM {}"
            " WHERE schema_name = %s AND table_name = %s"
        ).format(sql.Identifier(SCHEMA, "tables")),
        (table.schema, table.name),
    ).fetchone()
    triggers = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE 'pgkb_bm25_%%'",
        (str(table.ident.as_string(conn)),),
    ).fetchone()[0]  # type: ignore[index]
    wanted = (ix.base, mapping.text, mapping.primary_key, mapping.vector, config, float(k1), float(b))
    if existing and tuple(existing) == wanted and triggers == 4:
        if conn.execute("SELECT to_regclass(%s) IS NULL", (ix.df.as_string(conn),)).fetchone()[0]:  # type: ignore[index]
            _create_df(conn, ix, backfill=True)  # installed by an older pgkb: add what queries now read
            _create_impact_index(conn, ix)
        _create_functions(conn, mapping, ix)  # CREATE OR REPLACE: picks up newer trigger code, no backfill
        _compact(conn, ix)
        return False

    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}, {}").format(ix.postings, ix.stats, ix.df))
    conn.execute(
        sql.SQL(
            # COLLATE "C": terms are only ever compared for equality and grouped, never shown in
            # order, so byte order serves; it halves the sort of a bulk build's two indexes (the
            # database's C.UTF-8 goes through strcoll) and every B-tree comparison after it.
            "CREATE TABLE {} (term text COLLATE \"C\" NOT NULL, doc uuid NOT NULL, tf int NOT NULL, dl int NOT NULL)"
        ).format(ix.postings)
    )
    conn.execute(sql.SQL("CREATE TABLE {} (n bigint NOT NULL, total bigint NOT NULL)").format(ix.stats))
    _create_df(conn, ix, backfill=False)
    # Backfill: the same statement the insert trigger runs, over the whole table; then the postings'
    # one index, built once over all of them.
    conn.execute(_add_sql(table.ident, mapping, ix))
    _create_impact_index(conn, ix)

    t = table.ident
    fns = _create_functions(conn, mapping, ix)
    for kind in fns:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(f"pgkb_bm25_{kind}"), t))
    fn = {k: sql.Identifier(SCHEMA, f"{ix.base}_{k}") for k in fns}
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER pgkb_bm25_ins AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {f}()"
        ).format(t=t, f=fn["ins"])
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER pgkb_bm25_del AFTER DELETE ON {t} REFERENCING OLD TABLE AS old_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {f}()"
        ).format(t=t, f=fn["del"])
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER pgkb_bm25_upd AFTER UPDATE ON {t} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION {f}()"
        ).format(t=t, f=fn["upd"])
    )
    conn.execute(
        sql.SQL("CREATE TRIGGER pgkb_bm25_trunc AFTER TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {f}()").format(
            t=t, f=fn["trunc"]
        )
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (schema_name, table_name, base, text_column, key_column, vector_column, config, k1, b)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::regconfig, %s, %s)"
            " ON CONFLICT (schema_name, table_name) DO UPDATE SET base = EXCLUDED.base,"
            " text_column = EXCLUDED.text_column, key_column = EXCLUDED.key_column,"
            " vector_column = EXCLUDED.vector_column, config = EXCLUDED.config, k1 = EXCLUDED.k1,"
            " b = EXCLUDED.b, installed_at = now()"
        ).format(sql.Identifier(SCHEMA, "tables")),
        (table.schema, table.name, *wanted[:4], config, float(k1), float(b)),
    )
    conn.execute(sql.SQL("ANALYZE {}").format(ix.postings))
    return True


def _create_df(conn: psycopg.Connection, ix: Bm25Index, *, backfill: bool) -> None:
    """The df deltas table (with `backfill`: df counted from the existing postings)."""
    conn.execute(sql.SQL("CREATE TABLE {} (term text COLLATE \"C\" NOT NULL, d bigint NOT NULL)").format(ix.df))
    conn.execute(sql.SQL("CREATE INDEX {} ON {} (term) INCLUDE (d)").format(sql.Identifier(f"{ix.base}_df_term"), ix.df))
    if backfill:
        conn.execute(sql.SQL("INSERT INTO {} (term, d) SELECT term, count(*) FROM {} GROUP BY term").format(ix.df, ix.postings))


def _create_impact_index(conn: psycopg.Connection, ix: Bm25Index) -> None:
    """Each term's postings by impact, best first (what a query reads, index only), unique with the
    chunk: (term, tf, dl, doc) of a posting find it, so deletes need no second index."""
    conn.execute(
        sql.SQL("CREATE UNIQUE INDEX {} ON {} (term, {} DESC, doc) INCLUDE (tf, dl)").format(
            sql.Identifier(f"{ix.base}_impact"), ix.postings, ix.impact()
        )
    )


def _create_functions(conn: psycopg.Connection, mapping: FieldMapping, ix: Bm25Index) -> list[str]:
    """(Re)create the trigger functions; returns their kinds."""
    fns = {
        "ins": [_add_sql(sql.Identifier("new_rows"), mapping, ix)],
        "del": [_remove_sql(sql.Identifier("old_rows"), mapping, ix)],
        # An upsert that rewrites a chunk with the same text changes nothing here.
        "upd": [
            _remove_sql(_changed("old_rows", "new_rows", mapping), mapping, ix),
            _add_sql(_changed("new_rows", "old_rows", mapping), mapping, ix),
        ],
        "trunc": [sql.SQL("TRUNCATE {}, {}, {}").format(ix.postings, ix.stats, ix.df)],
    }
    for kind, body in fns.items():
        conn.execute(_function(conn, f"{ix.base}_{kind}", body))
    return list(fns)


def _compact(conn: psycopg.Connection, ix: Bm25Index) -> None:
    """Fold the stats deltas into one row and each term's df deltas into one row (writers only ever
    insert deltas, so compacting alongside them, or alongside another compaction, loses nothing)."""
    conn.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM {s} RETURNING n, total)"
            " INSERT INTO {s} (n, total) SELECT coalesce(sum(n), 0), coalesce(sum(total), 0) FROM gone"
        ).format(s=ix.stats)
    )
    if ix.has_df:
        # Only the terms with several deltas are rewritten (a small sync rewrites a few rows, not all).
        conn.execute(
            sql.SQL(
                "WITH multi AS (SELECT term FROM {df} GROUP BY term HAVING count(*) > 1),"
                " gone AS (DELETE FROM {df} AS x USING multi WHERE x.term = multi.term RETURNING x.term, x.d)"
                " INSERT INTO {df} (term, d) SELECT term, sum(d) FROM gone GROUP BY term HAVING sum(d) <> 0"
            ).format(df=ix.df)
        )


def compact_bm25(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping | None = None) -> None:
    """Fold a table's statistics deltas (the ingestion service calls it when a job ends); with
    `mapping`, statistics installed by an older pgkb are upgraded first. A no-op without statistics
    or without the rights to them."""
    ix = lookup(conn, table)
    if ix is None:
        return
    if not ix.has_df and mapping is not None:
        install_bm25(conn, table, mapping, config=ix.config, k1=ix.k1, b=ix.b)  # adds df deltas, compacts
        return
    try:
        with conn.transaction():
            _compact(conn, ix)
    except psycopg.errors.InsufficientPrivilege as exc:
        log.info("BM25 statistics of %s not compacted: %s", table, str(exc).splitlines()[0])


#: The triggers an initial load turns off (TRUNCATE keeps its own: it empties the statistics too).
_ROW_TRIGGERS = ("pgkb_bm25_ins", "pgkb_bm25_del", "pgkb_bm25_upd")


def suspend_bm25(conn: psycopg.Connection, table: TableRef) -> bool:
    """Turn the row triggers off before an initial load (the caller has recorded that a rebuild is
    owed, so a crash after this leaves `rebuild_bm25` to the next job). Returns False when the table has
    no current statistics (nothing to suspend). Needs the table's owner (ALTER TABLE): raises otherwise."""
    ix = lookup(conn, table)
    if ix is None or not ix.has_df:
        return False
    with conn.transaction():
        for name in _ROW_TRIGGERS:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(table.ident, sql.Identifier(name)))
    return True


def rebuild_bm25(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, *, memory_kb: int = 256 * 1024,
                 timings: dict[str, float] | None = None, vacuum: bool = True) -> bool:
    """All of a table's statistics rebuilt from its rows in one pass, then its row triggers turned back
    on: one transaction, which blocks writers (SHARE, then SHARE ROW EXCLUSIVE to turn the triggers on)
    so none slips between the two; readers of the table go on, and so do index builds (CREATE INDEX
    holds SHARE too), so an initial load builds its indexes beside this; turning the triggers on waits
    for them. Idempotent (it recomputes from the table whatever the statistics held),
    so a job that died anywhere before or after it can simply run it again. False without statistics.
    `timings`, when given, receives the seconds of each step (benchmarks' breakdowns). `vacuum=False`:
    the caller runs `vacuum_statistics` itself once its own transaction has committed."""
    ix = lookup(conn, table)
    if ix is None or not ix.has_df:
        return False
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table.ident))
        _rebuild(conn, table, mapping, ix, memory_kb, _Clock(timings))
        for name in _ROW_TRIGGERS:
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(table.ident, sql.Identifier(name)))
    if vacuum:
        clock = _Clock(timings)
        clock.lap(vacuum_statistics(conn, table))
    return True


def vacuum_statistics(conn: psycopg.Connection, table: TableRef) -> str:
    """VACUUM (ANALYZE) a table's postings after a rebuild; inside a transaction (where VACUUM cannot run)
    only ANALYZE. Returns which ran ("" without statistics). Queries read postings index-only, which
    needs their pages marked all-visible: until autovacuum got to freshly written ones (minutes at 1M
    chunks) every posting a query read was a heap fetch too. Without the rights to VACUUM, PostgreSQL
    only warns."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    autocommit = conn.autocommit
    conn.autocommit = autocommit or idle  # on an idle connection even the lookup must not open a transaction
    try:
        ix = lookup(conn, table)
        if ix is None:
            return ""
        what = "VACUUM (ANALYZE)" if idle else "ANALYZE"
        conn.execute(sql.SQL(what + " {}").format(ix.postings))
        return what
    finally:
        conn.autocommit = autocommit


class _Clock:
    """Seconds per step into `timings` (None: nothing recorded)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[step] = self.timings.get(step, 0.0) + now - self.t
        self.t = now


def _rebuild(conn: psycopg.Connection, table: TableRef, mapping: FieldMapping, ix: Bm25Index, memory_kb: int,
             clock: _Clock) -> None:
    """Postings, df and stats from the table. The postings' index is dropped and built after the
    rows (a bulk build sorts once instead of growing a B-tree posting by posting); each row's text
    is tokenised once (its length and its postings from the same tsvector)."""
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (f"{int(memory_kb)}kB",))
    conn.execute(sql.SQL("TRUNCATE {}, {}, {}").format(ix.postings, ix.stats, ix.df))
    pk = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", (ix.postings.as_string(conn),)
    ).fetchone()
    if pk:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(ix.postings, sql.Identifier(pk[0])))
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(SCHEMA, f"{ix.base}_impact")))
    clock.lap("truncate, drop the postings' indexes")
    conn.execute(
        sql.SQL(
            # OFFSET 0 fences: without them the planner inlines the tsvector into both of its uses
            # and tokenises every text twice (2x the statement's time at 20,000 chunks).
            "INSERT INTO {postings} (term, doc, tf, dl)"
            " SELECT u.lexeme, x.doc, cardinality(u.positions), x.dl"
            " FROM (SELECT s.doc, s.v, (SELECT coalesce(sum(cardinality(e.positions)), 0)::int FROM unnest(s.v) AS e) AS dl"
            "       FROM (SELECT r.{pk} AS doc, to_tsvector({cfg}::regconfig, r.{txt}) AS v FROM {t} AS r"
            "             WHERE r.{vec} IS NOT NULL AND r.{txt} IS NOT NULL OFFSET 0) AS s OFFSET 0) AS x"
            " CROSS JOIN LATERAL unnest(x.v) AS u"
        ).format(
            postings=ix.postings, pk=sql.Identifier(mapping.primary_key), t=table.ident, cfg=sql.Literal(ix.config),
            txt=sql.Identifier(mapping.text), vec=sql.Identifier(mapping.vector),
        )
    )
    clock.lap("postings INSERT (to_tsvector of every chunk)")
    conn.execute(sql.SQL("INSERT INTO {} (term, d) SELECT term, count(*) FROM {} GROUP BY term").format(ix.df, ix.postings))
    conn.execute(
        sql.SQL(
            "INSERT INTO {stats} (n, total) SELECT count(*), (SELECT coalesce(sum(tf), 0) FROM {postings}) FROM {t} AS r"
            " WHERE r.{vec} IS NOT NULL AND r.{txt} IS NOT NULL HAVING count(*) > 0"
        ).format(
            stats=ix.stats, postings=ix.postings, t=table.ident, vec=sql.Identifier(mapping.vector),
            txt=sql.Identifier(mapping.text),
        )
    )
    clock.lap("df (GROUP BY term) and stats")
    _create_impact_index(conn, ix)  # the one index (older statistics' primary key is not rebuilt)
    clock.lap("impact index")


def uninstall_bm25(conn: psycopg.Connection, table: TableRef) -> None:
    """Drop the triggers, functions and side tables (e.g. when a knowledge base is deleted)."""
    with conn.transaction():
        _uninstall(conn, table)


def _uninstall(conn: psycopg.Connection, table: TableRef) -> None:
    ix = lookup(conn, table)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.ident.as_string(conn),)).fetchone()[0]  # type: ignore[index]
    if exists:
        for kind in ("ins", "del", "upd", "trunc"):
            conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(f"pgkb_bm25_{kind}"), table.ident)
            )
    if ix is None:
        return
    for kind in ("ins", "del", "upd", "trunc"):
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(SCHEMA, f"{ix.base}_{kind}")))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}, {}").format(ix.postings, ix.stats, ix.df))
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE schema_name = %s AND table_name = %s").format(sql.Identifier(SCHEMA, "tables")),
        (table.schema, table.name),
    )


def query_terms(conn: psycopg.Connection, config: str, text: str) -> list[tuple[str, int]]:
    """(lexeme, count) of a query as the index tokenises it (for tests and the bench's reference)."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector(%s::regconfig, %s))", (config, text)
        )
    ]
