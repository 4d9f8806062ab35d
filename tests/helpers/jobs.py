"""Who holds a data source's ingestion claim (`pgkb.ingestion.claim`), seen from pg_locks."""

from __future__ import annotations

import time
from typing import Any

# The advisory lock's bigint key is split into classid (high 32 bits) and objid (low 32 bits).
CLAIM_HOLDER = (
    "SELECT l.pid FROM pg_locks l, (SELECT hashtext(%s)::bigint AS k) h"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.objid::bigint = (h.k & 4294967295) AND l.classid::bigint = ((h.k >> 32) & 4294967295)"
)


def claim_holder(conn: Any, ds_id: str) -> int | None:
    row = conn.execute(CLAIM_HOLDER, ("pgkb-ingestion:" + ds_id,)).fetchone()
    return row[0] if row else None


def wait_claim_released(svc: Any, ds_id: str, timeout: float = 30) -> None:
    """After a SIGKILLed sync: PostgreSQL ends the dead client's backends (releasing its claim) once it
    reads their closed sockets, asynchronously and slowly on a loaded machine; until then the job
    still looks alive and a new job is refused."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with svc.db.connection() as conn:
            if claim_holder(conn, ds_id) is None:
                return
        time.sleep(0.05)
    raise AssertionError(f"the claim on data source {ds_id} was not released within {timeout} s")
