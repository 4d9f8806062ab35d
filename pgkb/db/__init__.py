"""Database access: the embedded server, the connection pool, migrations."""

from pgkb.db.database import Database, open_database, redact_url

__all__ = ["Database", "open_database", "redact_url"]
