"""SCRAM passwords are SASLprep'd (RFC 4013) as PostgreSQL and libpq prepare them: a password with a
character SASLprep maps logs in to the endpoint, and its verifier equals PostgreSQL's own."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import psycopg
import pytest

from pgkb.sqlfuncs.calls import Calls
from pgkb.sqlfuncs.credentials import set_user
from pgkb.sqlfuncs.saslprep import saslprep
from pgkb.sqlfuncs.scram import Verifier
from pgkb.sqlfuncs.wire import EndpointThread, WireServer, file_users

# A soft hyphen (mapped to nothing), a no-break space (mapped to SPACE) and a Roman numeral (NFKC: "IX").
MAPPED = "pass\u00adword\u00a0\u2168"
PASSWORDS = [MAPPED, "plain-ascii\x07bell", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "mixed \u05d0 latin"]


def test_saslprep_maps_as_rfc_4013_says() -> None:
    assert saslprep(MAPPED) == "password IX"
    assert saslprep("plain-ascii\x07bell") == "plain-ascii\x07bell"  # ASCII is used as is (PostgreSQL's rule)
    assert saslprep("mixed \u05d0 latin") == "mixed \u05d0 latin"  # bidi rule broken: used as is


@pytest.mark.parametrize("password", PASSWORDS)
def test_verifier_equals_postgresqls_own(pg_url: str, password: str) -> None:
    role = "scram_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))
        try:
            theirs = Verifier.from_text(conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0])
        finally:
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))
    mine = Verifier.from_password(password, theirs.iterations, theirs.salt)
    assert base64.b64encode(mine.stored_key) == base64.b64encode(theirs.stored_key)
    assert mine.server_key == theirs.server_key


def test_libpq_logs_in_with_a_password_saslprep_maps(tmp_path: Path) -> None:
    set_user(tmp_path, "scram_user", MAPPED)
    thread = EndpointThread(WireServer(file_users(tmp_path), Calls()))
    host, port = thread.start()
    try:
        with psycopg.connect(host=host, port=port, dbname="pgkb", user="scram_user", password=MAPPED,
                             sslmode="disable") as conn:
            assert conn.info.status == psycopg.pq.ConnStatus.OK
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=host, port=port, dbname="pgkb", user="scram_user", password="password IX!",
                            sslmode="disable")
    finally:
        thread.stop()
