"""`pgkb db` (the database pgkb runs on, and the ones it does not start) and `pgkb doctor`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from pgkb.cli.common import (
    DatabaseUrl,
    DataDir,
    JsonOut,
    kb_id_of,
    out,
    print_json,
    secret_resolver,
    service,
    settings_for,
)
from pgkb.errors import PgkbError

app = typer.Typer(no_args_is_help=True, help="The database pgkb runs on.")


@app.command("info")
def db_info(database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """The resourceArn, credentialsSecretArn and databaseName to put in rdsConfiguration."""
    with service(database_url, data_dir) as svc:
        info = svc.db_info()
    if as_json:
        return print_json(info)
    for k2, v in info.items():
        out.print(f"{k2}: {v}", highlight=False)


@app.command("stop")
def db_stop(data_dir: DataDir = None) -> None:
    """Stop the embedded PostgreSQL server."""
    from pgkb.db.embedded import stop_embedded

    s = settings_for(None, data_dir)
    out.print("stopped" if stop_embedded(s.data_dir) else "not running")



AdminUrl = Annotated[str, typer.Option("--database-url", envvar="PGKB_ADMIN_DATABASE_URL",
                                       help="Connection URL of an admin (e.g. the RDS master user).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Embedding model id: its dimensions size the vector column.")]
DimsOpt = Annotated[int | None, typer.Option("--dimensions", help="Vector dimensions (instead of, or with, --model).")]
ColumnNames = Annotated[str | None, typer.Option(
    "--column-names", help="id,embedding,chunks,metadata[,custom_metadata]: the field mapping's column names.")]
VectorField = Annotated[str | None, typer.Option("--vector-field")]
TextField = Annotated[str | None, typer.Option("--text-field")]
MetadataField = Annotated[str | None, typer.Option("--metadata-field")]
PrimaryKeyField = Annotated[str | None, typer.Option("--primary-key-field")]
CustomMetadataField = Annotated[str | None, typer.Option(
    "--custom-metadata-field", help="Custom metadata column; '' or 'none' for per-attribute columns.")]


def _mapping(column_names: str | None, primary_key: str | None, vector: str | None, text: str | None,
             metadata: str | None, custom: str | None) -> Any:
    from pgkb.store.vector_table import FieldMapping

    fm = FieldMapping().to_bedrock()
    if column_names:
        names = [c.strip() for c in column_names.split(",")]
        if len(names) not in (4, 5):
            raise PgkbError("--column-names takes 4 or 5 names: id,embedding,chunks,metadata[,custom_metadata]")
        keys = ["primaryKeyField", "vectorField", "textField", "metadataField", "customMetadataField"]
        fm = dict(zip(keys, names, strict=False))
    for key, value in (("primaryKeyField", primary_key), ("vectorField", vector), ("textField", text),
                       ("metadataField", metadata), ("customMetadataField", custom)):
        if value is not None:
            fm[key] = value
    if fm.get("customMetadataField", "").lower() in ("", "none"):
        fm.pop("customMetadataField", None)
    return FieldMapping.from_bedrock(fm)


def _dimensions(model: str | None, dimensions: int | None, default: int | None) -> int | None:
    if model:
        from pgkb.embeddings import get_spec
        from pgkb.embeddings.registry import model_id_from_arn

        spec = get_spec(model_id_from_arn(model) if model.startswith("arn:") else model)
        if dimensions and dimensions not in spec.dimension_choices:
            raise PgkbError(f"{spec.id} offers {'/'.join(map(str, spec.dimension_choices))} dimensions, not {dimensions}")
        return dimensions or spec.dimensions
    return dimensions or default


@app.command("setup")
def db_setup(
    database_url: AdminUrl,
    schema: Annotated[str, typer.Option("--schema")] = "bedrock_integration",
    role: Annotated[str, typer.Option("--role", help="Login role for retrieval and ingestion.")] = "bedrock_user",
    table: Annotated[str, typer.Option("--table")] = "bedrock_kb",
    model: ModelOpt = None,
    dimensions: DimsOpt = None,
    column_names: ColumnNames = None,
    primary_key_field: PrimaryKeyField = None,
    vector_field: VectorField = None,
    text_field: TextField = None,
    metadata_field: MetadataField = None,
    custom_metadata_field: CustomMetadataField = None,
    secret_name: Annotated[str | None, typer.Option("--secret-name", help="Name of the secret for the role (default pgkb-<role>).")] = None,
    secrets_manager: Annotated[bool, typer.Option("--secrets-manager", help="Store the secret in AWS Secrets Manager, not pgkb's store.")] = False,
    rotate_password: Annotated[bool, typer.Option("--rotate-password", help="Give the role a new password even if the stored one works.")] = False,
    catalog: Annotated[bool, typer.Option("--catalog/--no-catalog", help="Also create pgkb's catalog (schema pgkb) and grant it.")] = True,
    ef_construction: Annotated[int | None, typer.Option("--ef-construction", help="HNSW ef_construction (default: from the table's size).")] = None,
    vector_index: Annotated[str, typer.Option(
        "--vector-index", help="HNSW index kind for a new index: float32 (Bedrock's), halfvec or binary (docs/scaling.md).")] = "float32",
    print_sql: Annotated[bool, typer.Option("--print-sql", help="Print the SQL instead of running it.")] = False,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create the extension, schema, least-privilege role, Bedrock-layout table and indexes, catalog; store a secret."""
    from psycopg.conninfo import conninfo_to_dict

    from pgkb.admin.setup import SetupPlan, run_setup
    from pgkb.admin.setup import print_sql as setup_sql

    plan = SetupPlan(schema=schema, role=role, table=table,
                     dimensions=_dimensions(model, dimensions, 384) or 384,
                     mapping=_mapping(column_names, primary_key_field, vector_field, text_field, metadata_field,
                                      custom_metadata_field),
                     catalog=catalog, ef_construction=ef_construction, vector_index=vector_index)
    try:
        dbname = str(conninfo_to_dict(database_url).get("dbname") or "postgres")
    except Exception:
        raise PgkbError("--database-url is not a valid PostgreSQL connection URL") from None
    if print_sql:
        sys.stdout.write(setup_sql(plan, dbname))
        return
    settings = settings_for(None, data_dir)
    resolver = secret_resolver(settings)
    name = secret_name or f"pgkb-{role}"
    existing: str | None = None  # a stored password that still works is kept (idempotent re-runs)
    try:
        if secrets_manager:
            from pgkb.secrets import DbCredentials
            from pgkb.secrets.resolve import _secrets_manager_value

            existing = DbCredentials.from_json(_secrets_manager_value(name, settings.region), name).password
        else:
            existing = resolver.resolve(name, refresh=True).password
    except PgkbError:
        existing = None
    from pgkb.db.database import wait_for_database

    wait_for_database(database_url, settings.connect_timeout_s)
    result = run_setup(database_url, plan, existing_password=existing, rotate=rotate_password)
    if secrets_manager:
        from pgkb.secrets.resolve import put_secrets_manager

        ref = put_secrets_manager(name, result.credentials, settings.region)
    else:
        ref = resolver.put_local(name, result.credentials)
    summary = {
        "table": str(plan.ref), "role": role, "dimensions": plan.dimensions,
        "fieldMapping": plan.mapping.to_bedrock(), "credentialsSecretArn": ref,
        "createdRole": result.created_role, "passwordChanged": result.password_changed,
        "createdTable": result.created_table, "warnings": [p.to_dict() for p in result.warnings],
    }
    if as_json:
        return print_json(summary)
    out.print(f"{'created' if result.created_table else 'checked'} {plan.ref} (vector({plan.dimensions})) "
              f"for role {role}{' (new)' if result.created_role else ''}", highlight=False, markup=False)
    out.print(f"credentials secret: {ref}" + (" (password set)" if result.password_changed else " (password kept)"),
              highlight=False, markup=False)
    for p in result.warnings:
        out.print(f"warning: {p.message} Fix: {p.fix}", highlight=False, markup=False)
    out.print(f"next: pgkb db register <name> --secret {ref}", highlight=False, markup=False)


@app.command("register")
def db_register(
    name: Annotated[str, typer.Argument(help="Cluster name for the ARN: [a-zA-Z0-9-]{1,63}.")],
    secret: Annotated[str, typer.Option("--secret", help="Secret ARN or name holding the RDS-credentials JSON.")],
    database_name: Annotated[str | None, typer.Option("--database-name", help="Default: the secret's dbname.")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Register a PostgreSQL database (host/port/dbname from the secret) as an RDS cluster ARN."""
    from pgkb.admin.registry import register_database
    from pgkb.db import open_database

    settings = settings_for(database_url, data_dir)
    home = open_database(settings)
    try:
        reg = register_database(home, settings, name, secret, database_name=database_name)
    finally:
        home.close()
    if as_json:
        return print_json(reg)
    out.print(f"registered {reg['name']}: resourceArn {reg['resourceArn']}, credentialsSecretArn "
              f"{reg['credentialsSecretArn']}, databaseName {reg['databaseName']}", highlight=False, markup=False)


@app.command("list")
def db_list(database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """The home database and the registered ones, with their rdsConfiguration values."""
    from pgkb.admin.registry import list_databases

    with service(database_url, data_dir) as svc:
        home = {k: v for k, v in svc.db_info().items() if k != "url"}
        rows = [{"name": "pgkb (home)", **home}] + list_databases(svc.db)
    if as_json:
        return print_json(rows)
    t = Table("name", "resourceArn", "credentialsSecretArn", "databaseName")
    for r in rows:
        t.add_row(r["name"], r["resourceArn"], r["credentialsSecretArn"], r["databaseName"])
    out.print(t)


@app.command("unregister")
def db_unregister(name: str, database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Forget a registered database (its tables and the secret are left alone)."""
    from pgkb.admin.registry import unregister_database

    with service(database_url, data_dir) as svc:
        unregister_database(svc.db, name)
    out.print(f"unregistered {name}", highlight=False, markup=False)



def doctor(
    table: Annotated[str | None, typer.Option("--table", help="schema.table of the knowledge base's vectors.")] = None,
    kb: Annotated[str | None, typer.Option("--kb", help="Check a knowledge base as configured (name or id) instead.")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", envvar="PGKB_DATABASE_URL",
                                                     help="URL of the database holding the table.")] = None,
    secret: Annotated[str | None, typer.Option("--secret", help="Connect with this secret instead of a URL.")] = None,
    model: ModelOpt = None,
    dimensions: DimsOpt = None,
    column_names: ColumnNames = None,
    primary_key_field: PrimaryKeyField = None,
    vector_field: VectorField = None,
    text_field: TextField = None,
    metadata_field: MetadataField = None,
    custom_metadata_field: CustomMetadataField = None,
    role: Annotated[str | None, typer.Option("--role", help="Check this role's grants (and over-privilege).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Check a database and table for a knowledge base; each problem with its fix. Exit 1 on errors."""
    import psycopg

    from pgkb.admin.doctor import diagnose
    from pgkb.db.database import wait_for_database
    from pgkb.store.vector_table import TableRef

    settings = settings_for(database_url, data_dir)
    if kb:
        from pgkb.admin.doctor import diagnose_kb

        with service(database_url, data_dir) as svc:
            resolved = svc.resolve(kb_id_of(svc, kb))
            problems = diagnose_kb(resolved, role)
            ref = resolved.table
        return _doctor_report(problems, ref, as_json)
    if not table:
        raise PgkbError("give --table SCHEMA.TABLE (with --database-url or --secret), or --kb NAME")
    ref = TableRef.parse(table)
    mapping = _mapping(column_names, primary_key_field, vector_field, text_field, metadata_field, custom_metadata_field)
    dims = _dimensions(model, dimensions, None)
    if secret:
        resolver = secret_resolver(settings)
        url = wait_for_database(resolver.resolve(secret).conninfo(), settings.connect_timeout_s,
                                refresh=lambda: resolver.resolve(secret, refresh=True).conninfo())
    else:
        from pgkb.db.database import resolve_url

        url = wait_for_database(resolve_url(settings), settings.connect_timeout_s)
    with psycopg.connect(url) as conn:
        problems = diagnose(conn, ref, mapping, dimensions=dims, role=role)
    _doctor_report(problems, ref, as_json)


def _doctor_report(problems: list[Any], ref: Any, as_json: bool) -> None:
    from rich.markup import escape

    from pgkb.admin.doctor import report

    rep = report(problems)
    if as_json:
        print_json(rep)
    else:
        for p in problems:
            mark = "[red]error[/]" if p.severity == "error" else "[yellow]warning[/]"
            out.print(f"{mark} {escape('[' + p.check + ']')} {escape(p.message)}", highlight=False)
            out.print(f"  fix: {p.fix}", highlight=False, markup=False)
        out.print(f"{ref}: {rep['errors']} error(s), {rep['warnings']} warning(s)"
                  + (" — ready" if rep["ok"] else ""), highlight=False, markup=False)
    if not rep["ok"]:
        raise typer.Exit(1)

