-- The work queue of a running ingestion job (issue 19): the process that started the job lists and
-- diffs the documents and writes the ones to index here, in batches; any worker of the database (that
-- process included, and `pgkb worker` processes) claims a batch with FOR UPDATE SKIP LOCKED in a
-- transaction it keeps open while it parses, embeds and writes the batch, and marks it DONE with the
-- batch's statistics in that same transaction. A worker that dies rolls its claim back, so the batch
-- returns to the queue and is counted once, by whoever finishes it. Rows go when the job ends.
CREATE TABLE IF NOT EXISTS pgkb.job_batches (
    job_id          text NOT NULL REFERENCES pgkb.ingestion_jobs (id) ON DELETE CASCADE,
    seq             int NOT NULL,
    documents       jsonb NOT NULL,          -- [{uri, kind, size, fingerprint, sidecar, location, acl}]
    status          text NOT NULL DEFAULT 'PENDING',   -- PENDING | DONE | FAILED | CANCELLED
    statistics      jsonb NOT NULL DEFAULT '{}',
    failure_reasons jsonb NOT NULL DEFAULT '[]',
    chunks          int NOT NULL DEFAULT 0,
    worker          text,                    -- host:pid that finished it
    done_at         timestamptz,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS job_batches_pending ON pgkb.job_batches (job_id, seq) WHERE status = 'PENDING';
