"""`pgkb worker`: join the running ingestion jobs of a database (docs/scaling.md)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer

from pgkb.cli.common import DatabaseUrl, DataDir, err, service


def worker(
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Exit once no running job has a batch left to claim.")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Work the queued batches of every running ingestion job of the database (run as many as you like)."""
    # Warnings (a batch that failed, a database that went away) must reach the operator's terminal.
    logging.basicConfig(level=logging.INFO, format="pgkb worker: %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def leave(*_: Any) -> None:  # the batches held go back to the queue for another worker
        stop.set()

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    with service(database_url, data_dir) as svc:
        err.print("pgkb worker: waiting for ingestion batches", highlight=False)
        n = svc.work_ingestion_queue(stop=stop, until_idle=exit_when_idle)
    err.print(f"pgkb worker: finished {n} batch(es)", highlight=False)
