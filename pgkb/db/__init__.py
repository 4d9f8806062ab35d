"""Database access: the embedded server, the connection pool, migrations."""

from pgkb.db.database import Database, DatabaseAuthError, open_database, redact_url

__all__ = ["Database", "DatabaseAuthError", "open_database", "redact_url"]
