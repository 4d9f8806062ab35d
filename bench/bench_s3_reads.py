"""Reading an S3 data source when every request costs a network round trip.

moto (in server mode) stands in for S3, behind a small proxy that holds each request for `--latency`
milliseconds (S3's time to first byte within a region is typically 10-30 ms; moto alone answers in
about 2 ms and caps near 400 requests/s, which hides what latency costs). Measured in the same run:

  * the scan: listing plus one GET per `*.metadata.json` sidecar, as pgkb does it (concurrently)
    against the same GETs one after another;
  * the documents: `read_ahead` (what an ingestion job uses) against reading them one after another.

Run:  . .venv/bin/activate && python bench/bench_s3_reads.py [--docs 1000] [--latency 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bench_data  # noqa: E402
import boto3

from pgkb.ingestion.sources import SIDECAR_SUFFIX, S3Source
from pgkb.ingestion.sync import READ_WORKERS, read_ahead


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def delaying_proxy(target_port: int, latency_s: float) -> ThreadingHTTPServer:
    """Forwards every request to 127.0.0.1:target_port after `latency_s`."""
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else Nagle and delayed ACKs add ~40 ms to each answer

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(latency_s)
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=20.0, help="milliseconds added to every S3 request")
    a = ap.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        direct = f"http://127.0.0.1:{moto_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", moto_port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto did not start") from None
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=direct)
        s3.create_bucket(Bucket="bench-docs")
        corpus = str(bench_data.find("msmarco-5k") / "corpus.jsonl")
        with open(corpus) as f:
            texts = [json.loads(line)["text"] for line, _ in zip(f, range(a.docs), strict=False)]

        def put(i: int) -> None:
            s3.put_object(Bucket="bench-docs", Key=f"docs/{i:05d}.txt", Body=texts[i].encode())
            s3.put_object(Bucket="bench-docs", Key=f"docs/{i:05d}.txt{SIDECAR_SUFFIX}",
                          Body=json.dumps({"metadataAttributes": {"n": i}}).encode())

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(len(texts))))
        proxy = delaying_proxy(moto_port, a.latency / 1000)
        url = f"http://127.0.0.1:{proxy.server_port}"
        src = S3Source("bench-docs", "docs/", url)

        t0 = time.perf_counter()
        docs = list(src.scan())
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for d in docs:  # the reference: the same sidecar GETs, one after another
            src._get(d.uri.split("/", 3)[3] + SIDECAR_SUFFIX)
        seq_sidecars_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        seq = [d.read() for d in docs]
        seq_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ahead = [data for _, data in read_ahead(docs)]
        ahead_s = time.perf_counter() - t0
        assert ahead == seq, "read_ahead must return the same bytes in the same order"

        n = len(docs)
        print(f"{n} S3 documents with sidecars, {a.latency:.0f} ms added to every request, {READ_WORKERS} read workers")
        print(f"scan (list + sidecars, concurrent):  {scan_s:6.2f} s   sidecar GETs one by one: {seq_sidecars_s:6.2f} s"
              f"   -> {seq_sidecars_s / scan_s:.1f}x")
        print(f"documents, read_ahead:               {ahead_s:6.2f} s ({n / ahead_s:6.0f} docs/s)   one by one: "
              f"{seq_s:6.2f} s ({n / seq_s:5.0f} docs/s)   -> {seq_s / ahead_s:.1f}x")
        proxy.shutdown()
    finally:
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    main()
