"""`pgkb secrets`: database credentials in pgkb's local store (RDS-credentials JSON)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pgkb.cli.common import DataDir, JsonOut, out, print_json, secret_resolver, settings_for

app = typer.Typer(no_args_is_help=True, help="Database credentials kept by pgkb (RDS-credentials JSON).")


@app.command("put")
def secrets_put(
    name: str,
    username: Annotated[str, typer.Option("--username")],
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    dbname: Annotated[str | None, typer.Option("--dbname")] = None,
    sslmode: Annotated[str | None, typer.Option("--sslmode")] = None,
    sslrootcert: Annotated[str | None, typer.Option("--sslrootcert")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Store database credentials in pgkb's local store (0600 file); prints the secret's ARN."""
    from pgkb.secrets import DbCredentials

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, default="", show_default=False)
    extra = {k: v for k, v in (("sslmode", sslmode), ("sslrootcert", sslrootcert)) if v}
    creds = DbCredentials(username=username, password=password, host=host, port=port, dbname=dbname, extra=extra)
    arn = secret_resolver(settings_for(None, data_dir)).put_local(name, creds)
    out.print(arn, highlight=False, markup=False)


@app.command("list")
def secrets_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Secrets in pgkb's local store (names and ARNs, never values)."""
    s = settings_for(None, data_dir)
    resolver = secret_resolver(s)
    rows = [{"name": n, "arn": resolver.canonical(n)} for n in resolver.store.names()]
    if as_json:
        return print_json(rows)
    for r in rows:
        out.print(f"{r['name']}  {r['arn']}", highlight=False, markup=False)


@app.command("show")
def secrets_show(ref: str, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Where a secret points (user, host, port, dbname, TLS), resolved as pgkb would; never the password."""
    creds = secret_resolver(settings_for(None, data_dir)).resolve(ref, refresh=True)
    info = {k: v for k, v in creds.to_dict().items() if k != "password"}
    info["hasPassword"] = bool(creds.password)
    if as_json:
        return print_json(info)
    for k2, v in info.items():
        out.print(f"{k2}: {v}", highlight=False, markup=False)


@app.command("delete")
def secrets_delete(name: str, data_dir: DataDir = None) -> None:
    """Delete a secret from pgkb's local store."""
    from pgkb.errors import NotFoundError

    if not secret_resolver(settings_for(None, data_dir)).store.delete(name):
        raise NotFoundError(f"no local secret named {name!r}")
    out.print(f"deleted {name}", highlight=False, markup=False)

