-- HNSW indexes set aside during a knowledge base's initial load (issue 19): a first sync into an
-- empty table drops them and builds them once the rows are in (pgvector's advice: a bulk build is
-- many times faster than row-by-row inserts). The definition is recorded here before the drop and
-- removed only after the rebuild, so a job killed anywhere leaves it for the next job to build.
CREATE TABLE IF NOT EXISTS pgkb.deferred_indexes (
    kb_id       text NOT NULL REFERENCES pgkb.knowledge_bases (id) ON DELETE CASCADE,
    index_name  text NOT NULL,
    definition  text NOT NULL,   -- pg_get_indexdef() of the dropped index
    deferred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kb_id, index_name)
);
