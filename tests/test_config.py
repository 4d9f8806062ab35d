"""The configuration surface: one Settings class, every PGKB_* variable a field, the docs table generated from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pgkb import config
from pgkb.errors import ValidationError

ROOT = Path(__file__).resolve().parent.parent


def test_docs_table_is_generated_from_the_settings_class() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- settings-table:begin -->\n", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    assert table == config.markdown_table(), "regenerate docs/configuration.md from pgkb.config.markdown_table()"


def test_only_config_reads_the_environment() -> None:
    offenders = []
    for path in (ROOT / "pgkb").rglob("*.py"):
        if path.name == "config.py" and path.parent.name == "pgkb":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize(("env", "field", "raw", "value"), [
    ("PGKB_DATA_DIR", "data_dir", "/tmp/pgkb-x", Path("/tmp/pgkb-x")),
    ("PGKB_DATABASE_URL", "database_url", "postgresql://h/db", "postgresql://h/db"),
    ("PGKB_CONNECT_TIMEOUT", "connect_timeout_s", "2.5", 2.5),
    ("PGKB_POOL_MAX_SIZE", "pool_max_size", "3", 3),
    ("PGKB_EMBED_BATCH", "embed_batch", "8", 8),
    ("PGKB_BEDROCK_ENDPOINT_URL", "bedrock_endpoint_url", "http://127.0.0.1:1", "http://127.0.0.1:1"),
    ("PGKB_BEDROCK_GENERATION_TIMEOUT", "bedrock_generation_timeout", "5", 5.0),
    ("PGKB_RERANKERS", "rerankers", '{"m": "http://x"}', '{"m": "http://x"}'),
    ("PGKB_KEY_CACHE_TTL_S", "key_cache_ttl_s", "2.5", "2.5"),
])
def test_each_variable_sets_its_field(monkeypatch: pytest.MonkeyPatch, env: str, field: str, raw: str,
                                      value: object) -> None:
    assert config.env_names()[field] == env
    monkeypatch.setenv(env, raw)
    assert getattr(config.current(), field) == value
    monkeypatch.delenv(env)
    assert getattr(config.current(), field) != value


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGKB_DATABASE_URL", "")
    monkeypatch.setenv("PGKB_DATA_DIR", "")
    s = config.current()
    assert s.database_url is None and s.data_dir == config._platform_data_dir()


def test_malformed_value_is_a_typed_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGKB_EMBED_BATCH", "lots")
    with pytest.raises(ValidationError, match="PGKB_EMBED_BATCH"):
        config.current()
    monkeypatch.setenv("PGKB_EMBED_BATCH", "0")
    with pytest.raises(ValidationError, match="PGKB_EMBED_BATCH"):
        config.current()


def test_secret_key_is_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGKB_ACCESS_KEY_ENCRYPTION_KEY", "very-secret-fernet-key")
    s = config.current()
    assert s.access_key_encryption_key == "very-secret-fernet-key"
    assert "very-secret" not in repr(s)


def test_cli_reports_bad_configuration_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pgkb.cli import main

    monkeypatch.setenv("PGKB_POOL_MAX_SIZE", "many")
    monkeypatch.setattr("sys.argv", ["pgkb", "kb", "list"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "PGKB_POOL_MAX_SIZE" in err and "Traceback" not in err
