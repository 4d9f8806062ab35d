"""Crash-safe batched writes of documents' rows, and deletions.

Each batch takes three short transactions:
  1. catalog: raise every document's chunk high-water mark to cover the rows about to be written;
  2. vector table: delete the rows of every earlier version (ids below the high-water mark), then
     upsert the new rows with binary COPY (ids are deterministic, so a re-run overwrites, never duplicates);
  3. catalog: record the documents as INDEXED with their hashes and chunk counts.
During an initial load (step 2), a batch of documents the catalog had never seen is COPYed straight
into the table: step 1 commits a document's entry before any of its rows, so a document without one
has no rows (a killed job's documents have entries: their re-run upserts). A duplicate all the same
(UniqueViolation) falls back to the upsert.
A process killed anywhere leaves at worst documents marked PENDING with the right high-water mark,
which the next sync re-processes and cleans up. The catalog and the vector table may live in
different databases.

Initial loads: `begin_initial_load` (a job about to index into an empty table) sets the table's HNSW
and GIN indexes aside and suspends its BM25 statistics' triggers; `finish_initial_load` rebuilds the
statistics in one set-based pass and builds the indexes from the rows, with the records of
`pgkb.store.index_build` making a killed job's unfinished work the next job's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pgkb.config import current
from pgkb.db import Database
from pgkb.ingestion.acl import NO_ACL_HIDDEN
from pgkb.ingestion.documents import PreparedDocument
from pgkb.kb import KnowledgeBase
from pgkb.retrieval import bm25
from pgkb.retrieval.bm25 import compact_bm25
from pgkb.store import catalog, index_build, planner_stats
from pgkb.store.acl import RowAcl, intern, row_acl, update_row_acls
from pgkb.store.content import store_extracted
from pgkb.store.vector_table import ChunkRow, chunk_id, delete_rows, write_rows


def _ids(ds_id: str, uri: str, n: int) -> list[Any]:
    return [chunk_id(ds_id, uri, i) for i in range(n)]


def _split_attributes(kb: KnowledgeBase, attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(custom metadata / per-attribute column values, attributes with nowhere else to go → metadata json)."""
    if kb.mapping.custom_metadata:
        return attributes, {}
    cols = kb.attribute_cols
    return {k: v for k, v in attributes.items() if k in cols}, {k: v for k, v in attributes.items() if k not in cols}


log = logging.getLogger(__name__)


class DocumentWriter:
    def __init__(self, catalog_db: Database, kb: KnowledgeBase, ds_id: str) -> None:
        self.catalog_db = catalog_db
        self.kb = kb
        self.ds_id = ds_id
        self.acl_enabled = False
        if kb.managed:
            with catalog_db.connection() as conn:
                row = conn.execute("SELECT acl_enabled FROM pgkb.data_sources WHERE id = %s", (ds_id,)).fetchone()
            self.acl_enabled = bool(row and row[0])

    def _row_acl(self, acl: Any) -> RowAcl:
        return row_acl(acl.allow if acl is not None else None, acl.deny if acl is not None else None,
                       acl_enabled=self.acl_enabled)

    def _acl_records(self, docs: Sequence[tuple[str, Any]]) -> list[tuple[str, Any, Any, Any, Any]]:
        """Catalog ACL records (uri, allow, deny, hash, reason) of an ACL-enabled source's documents."""
        if not self.acl_enabled:
            return []
        out: list[tuple[str, Any, Any, Any, Any]] = []
        for uri, acl in docs:
            if acl is None:
                out.append((uri, None, None, None, NO_ACL_HIDDEN))
            else:
                out.append((uri, list(acl.allow), list(acl.deny), acl.hash, None))
        return out

    def write(self, docs: Sequence[PreparedDocument], embeddings: np.ndarray) -> None:
        """Write documents whose rows to embed were embedded, in order, into `embeddings`."""
        if not docs:
            return
        with self.catalog_db.connection() as conn:
            high_water = catalog.get_documents(conn, self.ds_id, [d.uri for d in docs])
            new = not high_water and index_build.owed(conn, self.kb.id)  # see the module's docstring
            catalog.mark_documents_pending(conn, self.kb.id, self.ds_id, [(d.uri, d.n_rows) for d in docs])
        stale: list[Any] = []
        rows: list[ChunkRow] = []
        k = 0
        with self.kb.database.connection() as conn:  # user ids → principal ids, one statement per batch
            arrays = intern(conn, self.kb.table, [self._row_acl(d.acl) for d in docs]) if self.kb.managed else None
        for n_doc, d in enumerate(docs):
            previous = high_water.get(d.uri)
            old_n = max(previous["chunk_high_water"], previous["chunk_count"]) if previous else 0
            new_ids = _ids(self.ds_id, d.uri, d.n_rows)
            stale += [i for i in _ids(self.ds_id, d.uri, old_n)[d.n_rows:]]
            custom, extra = _split_attributes(self.kb, d.attributes)
            acl = arrays[n_doc] if arrays is not None else None
            for i in range(d.n_rows):
                vec = None
                if d.embed_texts[i] is not None:
                    vec = embeddings[k]
                    k += 1
                rows.append(ChunkRow(new_ids[i], d.texts[i], vec, {**extra, **d.metadata[i]}, custom, acl))
        with self.kb.database.connection() as conn:
            delete_rows(conn, self.kb.table, self.kb.mapping, stale)
            if new:
                try:
                    write_rows(conn, self.kb.table, self.kb.mapping, rows, attribute_cols=self.kb.attribute_cols,
                               acl=self.kb.managed, new=True)
                    log.debug("%d rows of %d new documents copied straight into %s", len(rows), len(docs), self.kb.table)
                except psycopg.errors.UniqueViolation:
                    log.warning("rows of %d documents new to the catalog already in %s: upserted", len(docs), self.kb.table)
                    new = False
            if not new:
                write_rows(conn, self.kb.table, self.kb.mapping, rows, attribute_cols=self.kb.attribute_cols,
                           acl=self.kb.managed)
                log.debug("%d rows of %d documents upserted into %s", len(rows), len(docs), self.kb.table)
        with self.catalog_db.connection() as conn:
            catalog.mark_documents_indexed(
                conn, self.ds_id, [(d.uri, d.fingerprint, d.sidecar_hash, d.n_rows) for d in docs]
            )
            catalog.set_document_acls(conn, self.ds_id, self._acl_records([(d.uri, d.acl) for d in docs]))
            if self.kb.managed:
                store_extracted(conn, self.ds_id, [(d.uri, d.extracted) for d in docs])

    def update_acls(self, items: Sequence[tuple[str, int, Any]]) -> None:
        """ACL-only changes: rewrite the rows' ACL arrays in place, embed nothing. (uri, rows, DocAcl|None).
        The rows of all the documents change in one statement."""
        if not items or not self.kb.managed:
            return
        with self.kb.database.connection() as conn:
            update_row_acls(
                conn, self.kb.table, self.kb.mapping,
                [(_ids(self.ds_id, uri, n), self._row_acl(acl)) for uri, n, acl in items],
            )
        with self.catalog_db.connection() as conn:
            catalog.set_document_acls(conn, self.ds_id, self._acl_records([(u, a) for u, _, a in items]))

    def update_metadata(self, items: Sequence[tuple[str, dict[str, Any], str | None, int]]) -> None:
        """Metadata-only changes: rewrite custom metadata in place, no re-embedding. (uri, attrs, hash, n)."""
        if not items or not self.kb.mapping.custom_metadata:
            return
        ids: list[Any] = []
        values: list[str] = []
        import json

        for uri, attrs, _, n in items:
            for i in _ids(self.ds_id, uri, n):
                ids.append(i)
                values.append(json.dumps(attrs))
        with self.kb.database.connection() as conn:
            conn.execute(
                sql.SQL("UPDATE {t} SET {c} = v.m FROM unnest(%s::uuid[], %s::jsonb[]) AS v(id, m) WHERE {t}.{pk} = v.id").format(
                    t=self.kb.table.ident,
                    c=sql.Identifier(self.kb.mapping.custom_metadata),
                    pk=sql.Identifier(self.kb.mapping.primary_key),
                ),
                (ids, values),
            )
        with self.catalog_db.connection() as conn:
            conn.execute(
                "UPDATE pgkb.documents d SET metadata_hash = t.m, updated_at = now()"
                " FROM unnest(%s::text[], %s::text[]) AS t(u, m) WHERE d.ds_id = %s AND d.uri = t.u",
                ([i[0] for i in items], [i[2] for i in items], self.ds_id),
            )

    def delete(self, uris: Sequence[str], known: dict[str, dict[str, Any]]) -> None:
        """Remove documents' rows, then their catalog entries."""
        if not uris:
            return
        ids: list[Any] = []
        for uri in uris:
            d = known.get(uri)
            n = max(d["chunk_high_water"], d["chunk_count"]) if d else 0
            ids += _ids(self.ds_id, uri, n)
        with self.catalog_db.connection() as conn:
            conn.execute(
                "UPDATE pgkb.documents SET status = 'DELETING', updated_at = now() WHERE ds_id = %s AND uri = ANY(%s)",
                (self.ds_id, list(uris)),
            )
        with self.kb.database.connection() as conn:
            delete_rows(conn, self.kb.table, self.kb.mapping, ids)
        with self.catalog_db.connection() as conn:
            catalog.delete_documents(conn, self.ds_id, uris)

    def begin_initial_load(self) -> bool:
        """Before indexing: if the table is empty (or an earlier initial load was interrupted), set
        its HNSW and GIN indexes aside and suspend its BM25 statistics, so that `finish_initial_load`
        builds them once from all the rows. Returns True when anything is deferred.
        PGKB_DEFER_HNSW=0 keeps the HNSW index, PGKB_DEFER_BM25=0 the statistics and GIN indexes."""
        settings = current()
        if not (settings.defer_hnsw or settings.defer_bm25):
            return False
        with self.catalog_db.connection() as conn:
            if index_build.deferred(conn, self.kb.id):
                return True  # an interrupted initial load: carry on with it
        methods = (["hnsw"] if settings.defer_hnsw else []) + (["gin"] if settings.defer_bm25 else [])
        with self.kb.database.connection() as conn:
            index_build.lock_table_builds(conn, self.kb.table)
            if not index_build.is_empty(conn, self.kb.table):
                return False
            found = index_build.deferrable_indexes(conn, self.kb.table, methods)
            ix = bm25.lookup(conn, self.kb.table) if settings.defer_bm25 else None
        statistics = ix is not None and ix.has_df and ix.ready
        todo = found + ([index_build.BM25_RECORD] if statistics else [])
        if not todo:
            return False
        with self.catalog_db.connection() as conn:  # the record first: a crash after it loses nothing
            index_build.record(conn, self.kb.id, todo)
        try:
            with self.kb.database.connection() as conn:  # one transaction: all set aside, or none
                index_build.lock_table_builds(conn, self.kb.table)
                index_build.drop(conn, self.kb.table, [n for n, _ in found])
                if statistics:
                    bm25.suspend_bm25(conn, self.kb.table)
        except Exception as exc:  # e.g. a role that does not own the table: index row by row instead
            log.warning("indexes of %s kept during the initial load: %s", self.kb.table, str(exc).splitlines()[0])
            with self.catalog_db.connection() as conn:
                index_build.forget(conn, self.kb.id, [n for n, _ in todo])
            return False
        log.info("initial load of %s: %s built after the rows", self.kb.table, [n for n, _ in todo])
        return True

    def finish_initial_load(self) -> None:
        """Rebuild the BM25 statistics and build the indexes set aside for this knowledge base (none:
        nothing to do), then forget them. Each step commits on its own and is idempotent; a failure
        leaves the records, so the next job finishes the work."""
        with self.catalog_db.connection() as conn:
            todo = index_build.deferred(conn, self.kb.id)
        if not todo:
            return
        t0 = time.monotonic()
        indexes = [(n, d) for n, d in todo if n != index_build.BM25_RECORD[0]]
        with self.kb.database.connection() as conn:
            # An exact count (statistics may not exist yet after a bulk load): sub-second at 1M rows.
            counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.kb.table.ident)).fetchone()
        memory = index_build.build_memory_kb(int(counted[0] if counted else 0), self.kb.dimensions)

        def statistics() -> None:
            with self.kb.database.connection() as conn:
                index_build.lock_table_builds(conn, self.kb.table, "statistics")
                steps: dict[str, float] = {}
                bm25.rebuild_bm25(conn, self.kb.table, self.kb.mapping, memory_kb=memory, timings=steps, vacuum=False)
            with self.kb.database.connection() as conn:  # after the commit: VACUUM runs outside a transaction
                t1 = time.monotonic()
                steps[bm25.vacuum_statistics(conn, self.kb.table)] = time.monotonic() - t1
            log.info("rebuilt BM25 statistics of %s in %.1f s (%s)", self.kb.table, time.monotonic() - t0,
                     ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))

        def build_indexes() -> None:
            with self.kb.database.connection() as conn:
                index_build.lock_table_builds(conn, self.kb.table, "indexes")
                for name, definition in indexes:
                    t1 = time.monotonic()
                    index_build.build(conn, definition, memory_kb=memory, workers=index_build.build_workers())
                    log.info("built %s in %.1f s", name, time.monotonic() - t1)

        # The statistics and the indexes side by side (both only read the rows; each holds SHARE on
        # the table, and its own advisory lock): the whole tail of an initial load runs after the last model call, and one
        # single-process step (BM25's tokenising, a GIN build) leaves the other cores idle.
        steps_todo = ([statistics] if len(indexes) < len(todo) else []) + ([build_indexes] if indexes else [])
        if len(steps_todo) == 1:
            steps_todo[0]()
        elif steps_todo:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgkb-initial-load") as pool:
                for done in [pool.submit(step) for step in steps_todo]:
                    done.result()  # the first failure is raised (after both ended); the records stay
        with self.catalog_db.connection() as conn:
            index_build.forget(conn, self.kb.id, [n for n, _ in todo])
        log.info("finished the initial load of %s in %.1f s", self.kb.table, time.monotonic() - t0)

    def refresh_planner_statistics(self) -> None:
        """ANALYZE the table when the writes outgrew its planner statistics (pgkb.store.planner_stats),
        so no pooled connection keeps a plan made for a smaller table. Best effort, like the fold."""
        try:
            with self.kb.database.connection() as conn:
                if planner_stats.refresh(conn, self.kb.table):
                    log.info("analyzed %s: its writes outgrew the planner's statistics", self.kb.table)
        except psycopg.Error as exc:
            log.warning("%s not analyzed: %s", self.kb.table, str(exc).splitlines()[0])

    def fold_statistics(self) -> None:
        """Fold the BM25 deltas that writes appended (queries then read fewer rows). Best effort: the
        writes stand whatever happens here, and a later fold catches up."""
        try:
            with self.kb.database.connection() as conn:
                compact_bm25(conn, self.kb.table, self.kb.mapping)
        except psycopg.Error as exc:
            log.warning("BM25 statistics of %s not compacted: %s", self.kb.table, str(exc).splitlines()[0])
