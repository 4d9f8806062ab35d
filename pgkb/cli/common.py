"""What every command module shares: the consoles, the common options, opening the service, printing JSON.

Commands parse their options, call pgkb.service.KnowledgeBaseService (or pgkb.admin / pgkb.server for the
commands that run without one) and print; the work lives in the library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pgkb.config import Settings, current

if TYPE_CHECKING:
    from pgkb.secrets import SecretResolver
    from pgkb.service import KnowledgeBaseService

out = Console(emoji=False)  # ARNs contain ":secret:", which rich would turn into an emoji
err = Console(stderr=True, soft_wrap=True, emoji=False)

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="PGKB_DATABASE_URL", help="PostgreSQL URL (default: the embedded server)."),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", envvar="PGKB_DATA_DIR", help="Where pgkb keeps its data.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="userContext.userId: whose document ACLs apply.")]


def settings_for(database_url: str | None, data_dir: Path | None) -> Settings:
    return current().with_overrides(data_dir=data_dir, database_url=database_url)


@contextmanager
def service(database_url: str | None, data_dir: Path | None) -> Iterator[KnowledgeBaseService]:
    from pgkb.service import KnowledgeBaseService

    svc = KnowledgeBaseService(settings_for(database_url, data_dir))
    try:
        yield svc
    finally:
        svc.close()


def secret_resolver(settings: Settings) -> SecretResolver:
    from pgkb.secrets import SecretResolver

    return SecretResolver(settings.data_dir, settings.region, settings.account_id)


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def kb_id_of(svc: KnowledgeBaseService, kb: str) -> str:
    """A knowledge base's id from its name or id."""
    return str(svc.get_knowledge_base(knowledgeBaseId=kb)["knowledgeBase"]["knowledgeBaseId"])


def ds_id_of(svc: KnowledgeBaseService, kb_id: str, ds: str) -> str:
    """A data source's id from its name or id."""
    return str(svc.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds)["dataSource"]["dataSourceId"])


def chunking_options(chunking: str, max_tokens: int | None, overlap: int | None, parent_tokens: int | None,
                     buffer_size: int | None, breakpoint: int | None) -> dict[str, Any] | None:
    from pgkb.chunking.config import chunking_configuration

    return chunking_configuration(chunking, max_tokens=max_tokens, overlap=overlap, parent_tokens=parent_tokens,
                                  buffer_size=buffer_size, breakpoint=breakpoint)


ChunkingOpt = Annotated[str, typer.Option(help="default | fixed | none | hierarchical | semantic")]
MaxTokensOpt = Annotated[int | None, typer.Option(help="Chunk (or child chunk) size in tokens.")]
OverlapOpt = Annotated[int | None, typer.Option(help="Overlap: percent (fixed) or tokens (hierarchical).")]
ParentTokensOpt = Annotated[int | None, typer.Option(help="Parent chunk size (hierarchical).")]
BufferSizeOpt = Annotated[int | None, typer.Option(help="Semantic: neighbouring sentences per group.")]
BreakpointOpt = Annotated[int | None, typer.Option(help="Semantic: breakpoint percentile threshold.")]
