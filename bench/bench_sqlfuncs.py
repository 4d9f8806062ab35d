"""SQL functions benchmark: one call's latency, the Aurora DO block and the table fast path, each
against the model's own batch encode of the same texts in the same run.

    python bench/bench_sqlfuncs.py [--do-rows 1000] [--fill-rows 5000] [--calls 200]

Prints figures and ratios; asserts nothing (timings are not tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bench_data  # noqa: E402
import psycopg  # noqa: E402

from pgkb.db.embedded import ensure_embedded, stop_embedded  # noqa: E402
from pgkb.embeddings.registry import DEFAULT_MODEL_ID, REFERENCE_MODEL_ID, get_model  # noqa: E402
from pgkb.sqlfuncs.calls import Calls  # noqa: E402
from pgkb.sqlfuncs.credentials import set_user  # noqa: E402
from pgkb.sqlfuncs.fill import fill_embeddings  # noqa: E402
from pgkb.sqlfuncs.install import install  # noqa: E402
from pgkb.sqlfuncs.wire import EndpointThread, WireServer, file_users  # noqa: E402

MODEL = DEFAULT_MODEL_ID
DO_BLOCK = """
DO
$embed$
    DECLARE
        doc RECORD;
        emb vector(384);
    BEGIN
        FOR doc in SELECT id, content FROM documents WHERE embedding IS NULL LOOP
            EXECUTE $$ SELECT aws_bedrock.invoke_model_get_embeddings(
                    model_id      := 'sentence-transformers.all-minilm-l6-v2',
                    content_type  := 'application/json',
                    json_key      := 'embedding',
                    model_input   := json_build_object('inputText', $1)::text)$$
                INTO emb
                USING doc.content;
            UPDATE documents SET embedding = emb WHERE id = doc.id;
            COMMIT;
        END LOOP;
    END;
$embed$ LANGUAGE plpgsql;
"""


def _load(url: str, table: str, texts: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, content text, embedding vector(384))")
        with conn.cursor().copy(f"COPY {table} (id, content) FROM STDIN") as cp:
            for i, t in enumerate(texts, 1):
                cp.write_row((i, t))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--do-rows", type=int, default=1000)
    ap.add_argument("--fill-rows", type=int, default=5000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default=DEFAULT_MODEL_ID, help="a local model id, e.g. ...-onnx-int8")
    args = ap.parse_args()
    global MODEL
    MODEL = args.model

    root = Path(tempfile.mkdtemp(prefix="pgkbb-"))
    os.chmod(root, 0o755)
    endpoint = None
    try:
        admin = ensure_embedded(root)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        base, _, query = admin.partition("?")
        url = base.rsplit("/", 1)[0] + "/bench" + ("?" + query if query else "")
        password = set_user(root, "pgkb_bench")
        endpoint = EndpointThread(WireServer(file_users(root), Calls()))
        host, port = endpoint.start()
        install(url, host, port, "pgkb_bench", password)

        model = get_model(MODEL)
        corpus = [json.loads(line)["text"] for line in (bench_data.find("msmarco-5k") / "corpus.jsonl").open()]
        model.embed_documents(corpus[:64])  # warm-up

        # 1. One call on a short text.
        short = "What is the boiling point of water at sea level?"
        body = json.dumps({"inputText": short})
        q = "SELECT aws_bedrock.invoke_model_get_embeddings(%s, 'application/json', 'embedding', %s)"
        sql_ms, raw_ms = [], []
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(10):
                conn.execute(q, (MODEL, body)).fetchone()
            for _ in range(args.calls):
                t = time.perf_counter()
                conn.execute(q, (MODEL, body)).fetchone()
                sql_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                model.embed_documents([short])
                raw_ms.append((time.perf_counter() - t) * 1000)
        p50, raw_p50 = statistics.median(sql_ms), statistics.median(raw_ms)
        print(f"invoke_model_get_embeddings, short text: p50 {p50:.2f} ms, p90 "
              f"{statistics.quantiles(sql_ms, n=10)[-1]:.2f} ms  (model alone p50 {raw_p50:.2f} ms; "
              f"endpoint+dblink overhead {p50 - raw_p50:.2f} ms; target <= 15 ms)")

        # 2. The Aurora DO block over --do-rows rows, vs one batch encode of the same texts.
        counts = model.tokenizer.count(corpus)
        fitting = [t for t, c in zip(corpus, counts, strict=True) if c < 250]
        do_texts = fitting[: args.do_rows]
        _load(url, "documents", do_texts)
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DO_BLOCK.replace(REFERENCE_MODEL_ID, MODEL))  # type: ignore[arg-type]
        do_s = time.perf_counter() - t
        t = time.perf_counter()
        model.embed_documents(do_texts)
        raw_s = time.perf_counter() - t
        print(f"DO block, {len(do_texts)} rows: {len(do_texts) / do_s:.1f} rows/s; model batch encode "
              f"{len(do_texts) / raw_s:.1f} rows/s; ratio {raw_s / do_s:.2f} (one call per row, as in Aurora's guide)")

        # 3. The fast path over msmarco-5k, vs one batch encode of the same texts.
        fill_texts = corpus[: args.fill_rows]
        _load(url, "passages", fill_texts)
        t = time.perf_counter()
        model.embed_documents(fill_texts)
        raw_s = time.perf_counter() - t
        stats = fill_embeddings(url, "passages", "content", "embedding", MODEL, batch_size=args.batch_size)
        print(f"fast path (fill_embeddings, batch {args.batch_size}), {stats.rows} rows: {stats.rows_per_s:.1f} rows/s; "
              f"model batch encode {len(fill_texts) / raw_s:.1f} rows/s; ratio {raw_s / stats.seconds:.2f} "
              f"(target >= 0.8); model share of fill time {stats.model_seconds / stats.seconds:.2f}")
        print(f"load average during run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if endpoint is not None:
            endpoint.stop()
        stop_embedded(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
