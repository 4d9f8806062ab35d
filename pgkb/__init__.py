"""pgkb: Amazon Bedrock Knowledge Bases on PostgreSQL + pgvector."""

__version__ = "0.1.0"
