-- Tags of knowledge bases (CreateKnowledgeBase's `tags`, TagResource, UntagResource, ListTagsForResource).
ALTER TABLE pgkb.knowledge_bases ADD COLUMN IF NOT EXISTS tags jsonb NOT NULL DEFAULT '{}'::jsonb;
