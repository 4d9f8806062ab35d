"""`pgkb`: a thin command line over pgkb.service.KnowledgeBaseService, one module per command group.

Every command that touches the database accepts `--database-url` and `--data-dir` after its own
name. Errors are one line on stderr with a non-zero exit code, never a traceback. The commands are
registered here, in the order `pgkb --help` lists them.
"""

from __future__ import annotations

import sys

import typer

from pgkb.cli import db, ds, jobs, kb, keys, models, query, secrets, serve, worker
from pgkb.cli.common import err
from pgkb.config import current, quiet_model_libraries
from pgkb.errors import PgkbError
from pgkb.sqlfuncs.cli import sql_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Amazon Bedrock Knowledge Bases on PostgreSQL.")
app.add_typer(kb.app, name="kb")
app.add_typer(ds.app, name="ds")
app.add_typer(db.app, name="db")
app.command()(jobs.sync)
app.command()(jobs.jobs)
app.command()(jobs.documents)
app.command()(query.retrieve)
app.command()(query.ask)
app.command()(models.models)
app.add_typer(keys.app, name="keys")
app.command()(serve.serve)
app.command()(worker.worker)
app.command("eval")(query.eval_cmd)
app.add_typer(secrets.app, name="secrets")
app.command()(db.doctor)
app.add_typer(sql_app, name="sql")


def main() -> None:
    quiet_model_libraries()
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except PgkbError as exc:
        err.print(f"error: {exc.message}", highlight=False, markup=False)
        sys.exit(2 if exc.status == 400 else 1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and anything unexpected: one line, no traceback
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if current().debug:
            raise
        from pgkb.db import redact_url

        err.print(f"error: {redact_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
                  highlight=False, markup=False)
        sys.exit(1)


