"""`serve()` guards: --no-auth only on loopback hosts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pgkb.config import Settings
from pgkb.errors import ValidationError
from pgkb.server.run import is_loopback, serve


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "no-such-host.invalid"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_no_auth_refused_on_public_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="loopback"):
        serve(Settings(data_dir=tmp_path, database_url="postgresql://unused/x"), host="0.0.0.0", no_auth=True)


def test_no_auth_refused_from_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgkb.server.run",
            "--host",
            "0.0.0.0",
            "--no-auth",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "loopback" in r.stderr and "Traceback" not in r.stderr


def test_tls_options_go_together_and_must_be_usable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pgkb.server.run import tls_pair

    settings = Settings(data_dir=tmp_path, database_url="postgresql://unused/x")
    with pytest.raises(ValidationError, match="go together"):
        tls_pair(settings, "127.0.0.1", str(tmp_path / "c.pem"), None, False)
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(ValidationError, match="cannot use the TLS certificate"):
        tls_pair(settings, "127.0.0.1", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), False)
    assert tls_pair(settings, "127.0.0.1", None, None, False) is None
    cert, key = tls_pair(settings, "127.0.0.1", None, None, True) or ("", "")
    assert cert.endswith("server.crt") and key.endswith("server.key")


def test_key_cache_ttl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgkb.server.run import KEY_CACHE_TTL_ENV, key_cache_ttl

    monkeypatch.delenv(KEY_CACHE_TTL_ENV, raising=False)
    assert key_cache_ttl() == 10.0
    monkeypatch.setenv(KEY_CACHE_TTL_ENV, "2.5")
    assert key_cache_ttl() == 2.5
    for bad in ("soon", "-1", "99999"):
        monkeypatch.setenv(KEY_CACHE_TTL_ENV, bad)
        with pytest.raises(ValidationError, match=KEY_CACHE_TTL_ENV):
            key_cache_ttl()


def test_several_workers_share_the_port(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--workers 2`: two processes answer on one port, each request on its own connection; SIGTERM ends all."""
    import signal
    import urllib.request

    import boto3
    import psutil
    from botocore.config import Config
    from helpers.servers import pgkb_serve

    from pgkb.server.keys import create_key

    key = create_key(settings)
    with pgkb_serve(settings, tmp_path / "serve.log", {}, ("--workers", "2")) as (url, proc):
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len([w for w in workers if "python" in w.name() or "pgkb" in w.name()]) >= 2
        for _ in range(8):
            agent = boto3.client("bedrock-agent", endpoint_url=url, region_name="us-east-1",
                                 aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"],
                                 config=Config(retries={"max_attempts": 1}))
            assert "knowledgeBaseSummaries" in agent.list_knowledge_bases()
        assert urllib.request.urlopen(url + "/console", timeout=10).status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0  # longer than granian's own 60 s kill timeout for a stuck worker
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
