-- pgkb's catalog: knowledge bases, data sources, ingestion jobs, and the documents each source holds.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE pgkb.knowledge_bases (
    id            text PRIMARY KEY,              -- Bedrock id: 10 characters [0-9A-Z]
    name          text NOT NULL UNIQUE,
    description   text,
    role_arn      text,
    model_id      text NOT NULL,                 -- registry id, e.g. sentence-transformers.all-minilm-l6-v2
    dimensions    int  NOT NULL,
    -- knowledgeBaseConfiguration and storageConfiguration as Bedrock shapes them
    kb_config     jsonb NOT NULL,
    storage       jsonb NOT NULL,
    status        text NOT NULL,
    failure_reasons jsonb NOT NULL DEFAULT '[]',
    client_token  text UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgkb.data_sources (
    id            text PRIMARY KEY,
    kb_id         text NOT NULL REFERENCES pgkb.knowledge_bases (id) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text,
    source_type   text NOT NULL,                 -- LOCAL | S3 | CUSTOM
    ds_config     jsonb NOT NULL,                -- dataSourceConfiguration
    ingestion     jsonb NOT NULL DEFAULT '{}',   -- vectorIngestionConfiguration
    data_deletion_policy text NOT NULL DEFAULT 'DELETE',
    status        text NOT NULL,
    failure_reasons jsonb NOT NULL DEFAULT '[]',
    client_token  text UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kb_id, name)
);

CREATE TABLE pgkb.ingestion_jobs (
    id            text PRIMARY KEY,
    kb_id         text NOT NULL REFERENCES pgkb.knowledge_bases (id) ON DELETE CASCADE,
    ds_id         text NOT NULL REFERENCES pgkb.data_sources (id) ON DELETE CASCADE,
    description   text,
    status        text NOT NULL,                 -- STARTING | IN_PROGRESS | COMPLETE | FAILED | STOPPING | STOPPED
    statistics    jsonb NOT NULL DEFAULT '{}',
    failure_reasons jsonb NOT NULL DEFAULT '[]',
    client_token  text UNIQUE,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz
);
CREATE INDEX ingestion_jobs_ds ON pgkb.ingestion_jobs (ds_id, started_at DESC);
-- At most one unfinished job per data source.
CREATE UNIQUE INDEX ingestion_jobs_one_active ON pgkb.ingestion_jobs (ds_id)
    WHERE status IN ('STARTING', 'IN_PROGRESS', 'STOPPING');

-- One row per source document. Chunk ids are derived from (data source, uri, position), so
-- `chunk_high_water` (the most chunks any version may have written) is enough to delete every chunk
-- of a document, even after a crash between writing vectors and recording them here.
CREATE TABLE pgkb.documents (
    ds_id         text NOT NULL REFERENCES pgkb.data_sources (id) ON DELETE CASCADE,
    uri           text NOT NULL,
    kb_id         text NOT NULL,
    content_hash  text,
    metadata_hash text,
    status        text NOT NULL,                 -- INDEXED | FAILED | IGNORED | PENDING | DELETING
    status_reason text,
    chunk_count   int NOT NULL DEFAULT 0,
    chunk_high_water int NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ds_id, uri)
);
