"""Retrieval: filters, semantic and hybrid search, BM25 statistics, reranking, evaluation.

The integrator calls `install_bm25(conn, table, mapping)` when a knowledge-base table is created or
adopted, and `search(...)` for Retrieve. See docs/retrieval.md.
"""

from pgkb.retrieval.bm25 import install_bm25, uninstall_bm25
from pgkb.retrieval.filters import compile_filter, validate_filter
from pgkb.retrieval.search import SearchHit, search

__all__ = ["SearchHit", "compile_filter", "install_bm25", "search", "uninstall_bm25", "validate_filter"]
