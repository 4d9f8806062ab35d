import psycopg
import pytest

from pgkb.config import Settings
from pgkb.db import open_database, redact_url
from pgkb.db.database import migrate, migration_files
from pgkb.errors import DatabaseUnavailableError


def test_migrations_are_idempotent(new_database_url: str) -> None:
    with psycopg.connect(new_database_url) as conn:
        first = migrate(conn)
        second = migrate(conn)
    assert first == [v for v, _, _ in migration_files()]
    assert second == []


def test_pool_has_pgvector_types(db) -> None:
    from pgvector import Vector

    with db.connection() as conn:
        v = conn.execute("SELECT '[1,2,3]'::vector").fetchone()[0]
    assert isinstance(v, Vector) and v.to_list() == [1.0, 2.0, 3.0]


def test_unreachable_database_is_one_line_error(tmp_path) -> None:
    url = "postgresql://someone:s3cretpw@127.0.0.1:1/nodb"
    s = Settings(data_dir=tmp_path, database_url=url, connect_timeout_s=0.3)
    with pytest.raises(DatabaseUnavailableError) as err:
        open_database(s)
    assert "s3cretpw" not in str(err.value)
    assert "\n" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_url("host=h password=abc user=u") == "host=h password=*** user=u"


def test_a_migration_numbered_below_applied_ones_still_runs(new_database_url: str, monkeypatch) -> None:
    import pgkb.db.database as database

    with psycopg.connect(new_database_url) as conn:
        migrate(conn)
        files = migration_files()
        late = (5, "added_later", "CREATE TABLE pgkb.added_later (x int)")
        monkeypatch.setattr(database, "migration_files", lambda: sorted([*files, late]))
        assert migrate(conn) == [5]
        assert conn.execute("SELECT to_regclass('pgkb.added_later') IS NOT NULL").fetchone()[0]
