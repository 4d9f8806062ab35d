-- RetrieveAndGenerate conversation sessions. A session belongs to one knowledge base and expires
-- after a period without use (sliding); its turns go with it.
CREATE TABLE IF NOT EXISTS pgkb.rag_sessions (
    id          text PRIMARY KEY,
    kb_id       text NOT NULL REFERENCES pgkb.knowledge_bases (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rag_sessions_expires ON pgkb.rag_sessions (expires_at);

CREATE TABLE IF NOT EXISTS pgkb.rag_turns (
    session_id  text NOT NULL REFERENCES pgkb.rag_sessions (id) ON DELETE CASCADE,
    turn        int  NOT NULL,
    question    text NOT NULL,
    rewritten   text NOT NULL,               -- the question as used for retrieval
    answer      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, turn)
);
