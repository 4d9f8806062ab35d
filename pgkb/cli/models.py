"""`pgkb models`: the embedding models in the registry."""

from __future__ import annotations

from rich.table import Table

from pgkb.cli.common import JsonOut, out, print_json


def models(as_json: JsonOut = False) -> None:
    """Embedding models in the registry."""
    from pgkb.embeddings import list_specs

    specs = list_specs()
    if as_json:
        return print_json([{"id": s.id, "provider": s.provider, "dimensions": s.dimension_choices,
                            "maxInputTokens": s.max_input_tokens} for s in specs])
    t = Table("id", "provider", "dimensions", "max tokens", "description")
    for s in specs:
        t.add_row(s.id, s.provider, "/".join(map(str, s.dimension_choices)), str(s.max_input_tokens), s.description)
    out.print(t)

