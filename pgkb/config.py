"""The whole configuration surface: one pydantic-settings class, read from `PGKB_*` environment variables.

Nothing else in `pgkb/` reads `os.environ` (tests/test_config.py checks): modules take a `Settings`, or call
`current()`, which builds one per distinct environment and caches it, so a process reads its configuration once
and a test that changes a variable sees the change. Values whose format has its own error message (JSON tables,
TTLs) are kept as the raw text here and parsed by the module that owns them. The table in
docs/configuration.md is generated from this class by `markdown_table()` and checked against it by the suite.

Two kinds of variable are read by name at run time and so cannot be fields: `PGKB_SECRET_<NAME>` (credentials for
secret `<NAME>`) and the variable a model configuration names in `api_key_env`; `env_value()` reads those.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "PGKB_"


def default_data_dir() -> Path:
    return current().data_dir


def _platform_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("pgkb"))


class Settings(BaseSettings):
    """Where pgkb keeps its state, which database and services it talks to, and the knobs of its workers.

    `database_url` None means: start (or join) the embedded PostgreSQL under `data_dir`.
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default_factory=_platform_data_dir,
                           description="Where pgkb keeps its data (embedded PostgreSQL, keys, models).")
    database_url: str | None = Field(None, description="PostgreSQL URL; unset means the embedded server.")
    read_database_url: str | None = Field(
        None, description="Read-only PostgreSQL URL (a streaming replica, an Aurora reader endpoint) Retrieve reads "
        "the home database's knowledge bases from; writes stay on the primary (docs/scaling.md).")
    admin_database_url: str | None = Field(
        None, description="Default `--database-url` of the `pgkb db` commands (an administrator's connection).")
    region: str = Field("us-east-1", description="Region in the ARNs pgkb makes.")
    account_id: str = Field("000000000000", description="Account id in the ARNs pgkb makes.")
    connect_timeout_s: float = Field(30.0, validation_alias="PGKB_CONNECT_TIMEOUT",
                                     description="Seconds to keep retrying a database that is unreachable or starting.")
    pool_max_size: int = Field(10, description="Connections in the service's pool.")
    embed_batch: int = Field(256, gt=0, description="Chunks per embedding-model call during a sync.")
    model_threads: int | None = Field(
        None, ge=1, description="Threads each local embedding model (ONNX Runtime, torch) computes with; unset means "
        "every core, or cores / workers in each `pgkb serve --workers` process.")
    sync_batch_docs: int = Field(32, gt=0, description="Documents per work-queue batch of a sync (the unit a "
                                 "`pgkb worker` claims).")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for S3 data sources (MinIO, moto, ...).")
    bedrock_endpoint_url: str | None = Field(
        None, description="Amazon Bedrock runtime endpoint for Bedrock embedding and generation models.")
    bedrock_generation_timeout: float = Field(60.0, gt=0, description="Seconds a Bedrock Converse call may take.")
    bedrock_rerank_endpoint_url: str | None = Field(
        None, description="bedrock-agent-runtime endpoint for Bedrock rerank models.")
    secretsmanager_endpoint_url: str | None = Field(
        None, description="AWS Secrets Manager endpoint for database credentials.")
    openai_embeddings: str = Field(
        "", description="JSON list of OpenAI-compatible embedding models (see docs/embeddings.md).")
    openai_generators: str = Field(
        "", description="JSON object modelArn -> OpenAI-compatible chat endpoint (see docs/generation.md).")
    rerankers: str = Field("", description="JSON object modelArn -> HTTP reranker (see docs/retrieval.md).")
    session_ttl_seconds: str = Field(
        "", description="Seconds a RetrieveAndGenerate session lives (default 86400; invalid means default).")
    key_cache_ttl_s: str = Field(
        "", description="Seconds the server caches an access key lookup (0-3600, default 10).")
    access_key_encryption_key: str | None = Field(
        None, repr=False, description="Fernet key encrypting stored access keys (default: a key file in data_dir).")
    defer_hnsw: bool = Field(True, description="A first sync into an empty table builds HNSW after the rows "
                             "(0 turns it off).")
    defer_bm25: bool = Field(True, description="A first sync into an empty table builds the BM25 statistics and "
                             "the GIN indexes after the rows (0 turns it off).")
    index_build_memory: str = Field("2GB", pattern=r"^\s*\d+\s*(kB|MB|GB|TB)\s*$",
                                    description="Upper bound of maintenance_work_mem for an HNSW build.")
    index_build_workers: int | None = Field(None, ge=0, description="Parallel workers for an HNSW build; unset "
                                            "means cores - 1, at most 7.")
    progress: str | None = Field(None, description="Set (to anything) to draw `pgkb` progress bars off a terminal.")
    debug: str | None = Field(None, description="Non-empty: `pgkb` prints tracebacks instead of one-line errors.")

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_data_dir(cls, v: Any) -> Any:
        return v if v not in ("", None) else _platform_data_dir()

    @field_validator("database_url", "read_database_url", "admin_database_url", "s3_endpoint_url", "bedrock_endpoint_url",
                     "bedrock_rerank_endpoint_url", "secretsmanager_endpoint_url", "access_key_encryption_key",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return v or None

    def with_overrides(self, *, data_dir: Path | str | None = None, database_url: str | None = None) -> Settings:
        s = self
        if data_dir is not None:
            s = s.model_copy(update={"data_dir": Path(data_dir).expanduser().resolve()})
        if database_url:
            s = s.model_copy(update={"database_url": database_url})
        return s

    def replace(self, **changes: Any) -> Settings:
        return self.model_copy(update=changes)


def env_names() -> dict[str, str]:
    """field name -> the environment variable that sets it."""
    out = {}
    for name, f in Settings.model_fields.items():
        alias = f.validation_alias
        out[name] = alias if isinstance(alias, str) else PREFIX + name.upper()
    return out


_NAMES = tuple(env_names().values())


@lru_cache(maxsize=16)
def _build(_snapshot: tuple[str | None, ...]) -> Settings:
    return Settings()


def current() -> Settings:
    """Settings for the environment as it is now (cached per distinct set of `PGKB_*` values).

    A malformed value is a pgkb ValidationError naming the variable (one line in the CLI)."""
    try:
        return _build(tuple(os.environ.get(n) for n in _NAMES))
    except PydanticValidationError as exc:
        raise _config_error(exc) from None


def _config_error(exc: PydanticValidationError) -> Exception:
    from pgkb.errors import ValidationError

    names = env_names()
    problems = []
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        problems.append(f"{names.get(field, field)}: {e['msg']}")
    return ValidationError("invalid configuration: " + "; ".join(problems))


def env_value(name: str) -> str | None:
    """A variable named at run time (`PGKB_SECRET_<NAME>`, a model's `api_key_env`); None when unset."""
    return os.environ.get(name)


def quiet_model_libraries() -> None:
    """Keep Hugging Face libraries offline and quiet unless the user chose otherwise (pgkb never downloads)."""
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(name, value)


def markdown_table() -> str:
    """The environment-variable table of docs/configuration.md, generated from `Settings`."""
    rows = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, env in env_names().items():
        f = Settings.model_fields[name]
        if name == "data_dir":
            default = "platform data dir (`platformdirs.user_data_dir('pgkb')`)"
        elif f.default in (None, ""):
            default = "unset"
        else:
            default = f"`{f.default}`"
        kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("pathlib.", "")
        rows.append(f"| `{env}` | {kind.replace(' | ', ' or ')} | {default} | {f.description} |")
    return "\n".join(rows) + "\n"
