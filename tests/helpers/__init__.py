"""Helpers shared by the test modules, one job per module (tests/ is on sys.path, so `from helpers.x import y`):

- databases: fresh databases on any server (create, yield its URL, drop)
- servers:   free ports, an ASGI app under uvicorn in a thread, `pgkb serve` in its own process
- moto:      a moto server (S3, Secrets Manager) on a free port, an S3 bucket filled with documents
- byo:       a second embedded PostgreSQL that checks passwords (bring-your-own-database tests)
- jobs:      who holds a data source's ingestion claim
- acl:       MANAGED knowledge bases, data sources and documents with ACLs

Test data lives beside them: corpus.py (English text), rag_fakes.py, wire_fuzz.py.
"""
