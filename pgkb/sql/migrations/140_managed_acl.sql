-- MANAGED knowledge bases and document-level access control (issue 14).
-- Idempotent: every statement may run again on a catalog that already has it.

-- userContextModeForRetrieval (pgkb serves API_INPUT_ONLY) and MANAGED metadataConfigurations.
ALTER TABLE pgkb.knowledge_bases ADD COLUMN IF NOT EXISTS user_context_mode text NOT NULL DEFAULT 'API_INPUT_ONLY';
ALTER TABLE pgkb.knowledge_bases ADD COLUMN IF NOT EXISTS metadata_configurations jsonb;

-- connectorParameters.aclEnabled, fixed when the data source is created.
ALTER TABLE pgkb.data_sources ADD COLUMN IF NOT EXISTS acl_enabled boolean NOT NULL DEFAULT false;

-- Each document's ACL as ingested (user names, exact), and a hash of it: a sync that finds only the
-- ACL changed rewrites the rows' ACL columns and embeds nothing.
ALTER TABLE pgkb.documents ADD COLUMN IF NOT EXISTS acl_allow text[];
ALTER TABLE pgkb.documents ADD COLUMN IF NOT EXISTS acl_deny text[];
ALTER TABLE pgkb.documents ADD COLUMN IF NOT EXISTS acl_hash text;

-- Secret for GetDocumentContent's presigned URLs (HMAC), shared by every process on this catalog.
CREATE TABLE IF NOT EXISTS pgkb.url_signing_key (
    id     int PRIMARY KEY CHECK (id = 1),
    secret text NOT NULL
);
INSERT INTO pgkb.url_signing_key (id, secret)
    VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))
    ON CONFLICT (id) DO NOTHING;

-- Document content kept for GetDocumentContent: the extracted text of every document of a MANAGED
-- knowledge base, and the original bytes of inline (CUSTOM) documents, which exist nowhere else.
CREATE TABLE IF NOT EXISTS pgkb.document_content (
    ds_id      text NOT NULL REFERENCES pgkb.data_sources (id) ON DELETE CASCADE,
    uri        text NOT NULL,
    mime_type  text,
    raw        bytea,
    extracted  text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ds_id, uri)
);

-- A RetrieveAndGenerate session started with a userContext belongs to that user: its history (which
-- holds answers drawn from that user's documents) is not given to anyone else.
ALTER TABLE pgkb.rag_sessions ADD COLUMN IF NOT EXISTS user_id text;
