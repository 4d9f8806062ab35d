"""`pgkb keys`: access keys for the HTTP server's SigV4 authentication."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgkb.cli.common import DatabaseUrl, DataDir, JsonOut, out, print_json, settings_for

app = typer.Typer(no_args_is_help=True, help="Access keys for the HTTP server's SigV4 authentication.")


@app.command("create")
def keys_create(
    description: Annotated[str | None, typer.Option("--description", help="A note to tell keys apart.")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create an access key; the secret is printed this once and never again."""
    from pgkb.server.keys import create_key

    key = create_key(settings_for(database_url, data_dir), description)
    if as_json:
        return print_json({"accessKeyId": key["accessKeyId"], "secretAccessKey": key["secretAccessKey"]})
    out.print(f"accessKeyId:     {key['accessKeyId']}", highlight=False)
    out.print(f"secretAccessKey: {key['secretAccessKey']}", highlight=False)
    out.print("Store the secret now: pgkb cannot show it again.", highlight=False)


@app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Access keys (never their secrets)."""
    from pgkb.server.keys import list_keys

    keys = list_keys(settings_for(database_url, data_dir), include_revoked=include_revoked)
    if as_json:
        return print_json(keys)
    t = Table("access key id", "status", "created", "description")
    for k in keys:
        t.add_row(k["accessKeyId"], k["status"], str(k["createdAt"])[:19], k["description"] or "")
    out.print(t)


@app.command("revoke")
def keys_revoke(access_key_id: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Revoke an access key (a running server stops accepting it within 10 seconds)."""
    from pgkb.server.keys import revoke_key

    revoke_key(settings_for(database_url, data_dir), access_key_id)
    out.print(f"revoked {access_key_id}", highlight=False)
