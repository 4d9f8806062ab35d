"""The JavaScript clients people use against Bedrock knowledge bases, unchanged, against `pgkb serve`.

`tests/js/clients.mjs` runs the AWS SDK for JavaScript v3 (bedrock-agent over HTTP/1.1; bedrock-agent-runtime
and bedrock-runtime over HTTP/2 with prior knowledge, their default NodeHttp2Handler) and @langchain/aws with
default settings, and prints what it got. The npm packages (pinned in tests/js/package-lock.json) are
installed once into `<repo>/.cache/js/<lockfile hash>` (or `PGKB_JS_CACHE`) with `npm ci`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers.servers import pgkb_serve

from pgkb.config import Settings
from pgkb.server.keys import create_key

REPO = Path(__file__).resolve().parent.parent
JS = REPO / "tests" / "js"
MODEL = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"


def js_packages() -> Path:
    """The folder holding node_modules for tests/js, installed on first use; a clear failure without node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm (Node.js 18 or later) are needed for the JavaScript client tests: install them "
                    "(e.g. `apt-get install nodejs npm`) and run again")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.fail(f"the AWS SDK for JavaScript v3 needs Node.js 18 or later; this machine has {version}")
    lock = (JS / "package-lock.json").read_bytes()
    root = Path(os.environ.get("PGKB_JS_CACHE") or REPO / ".cache" / "js")
    folder = root / hashlib.sha256(lock + (JS / "package.json").read_bytes()).hexdigest()[:16]
    if not (folder / ".installed").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, folder / name)
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.fail(f"npm ci in {folder} failed (the npm registry must be reachable):\n{proc.stderr[-2000:]}")
        (folder / ".installed").write_text(version)
    shutil.copy(JS / "clients.mjs", folder / "clients.mjs")  # imports resolve from the script's folder
    return folder


@pytest.fixture(scope="module")
def js_run(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = js_packages()
    key = create_key(settings)
    import psycopg

    with psycopg.connect(str(settings.database_url)) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    rds = {
        "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:pgkb",
        "credentialsSecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:pgkb-home",
        "databaseName": dbname,
        "tableName": f"bedrock_integration.js_{uuid.uuid4().hex[:8]}",
        "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks",
                         "metadataField": "metadata", "customMetadataField": "custom_metadata"},
    }
    log = tmp_path_factory.mktemp("serve-js") / "serve.log"
    with pgkb_serve(settings, log, {}) as (url, _proc):
        env = {
            **os.environ,
            "PGKB_URL": url,
            "PGKB_AKID": key["accessKeyId"],
            "PGKB_SECRET": key["secretAccessKey"],
            "PGKB_RDS": json.dumps(rds),
            "PGKB_MODEL_ARN": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
            "PGKB_MODEL_ID": MODEL,
            "AWS_SDK_JS_SUPPRESS_NODE_VERSION_WARNING": "1",
        }
        for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
            env.pop(name, None)
        proc = subprocess.run(["node", "clients.mjs"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stderr[-4000:]}\nserver log:\n{log.read_text()[-4000:]}"
    return json.loads(proc.stdout)


def test_default_handlers_are_http2_for_the_runtime_clients(js_run: dict[str, Any]) -> None:
    # what broke before pgkb spoke HTTP/2: these two default to HTTP/2 with prior knowledge
    assert js_run["handlers"] == {"agent": "NodeHttpHandler", "runtime": "NodeHttp2Handler",
                                  "models": "NodeHttp2Handler"}


def test_agent_creates_and_ingests(js_run: dict[str, Any]) -> None:
    assert js_run["statuses"] == ["INDEXED"] * 4 and js_run["listed"]


def test_retrieve_with_a_filter(js_run: dict[str, Any]) -> None:
    assert js_run["filtered"][0] == "penguins" and set(js_run["filtered"]) == {"penguins", "owls"}
    assert js_run["filteredNextToken"] is None


def test_paginate_retrieve_stops_at_number_of_results(js_run: dict[str, Any]) -> None:
    assert js_run["paged"]["pages"] == 1 and len(js_run["paged"]["ids"]) == 2


def test_retrieve_and_generate_and_stream(js_run: dict[str, Any]) -> None:
    assert "Penguins" in js_run["rag"]["text"] and "penguins" in js_run["rag"]["cited"]
    assert js_run["rag"]["sessionId"]
    stream = js_run["stream"]
    assert "Penguins" in stream["output"] and stream["citations"] >= 1 and stream["other"] == []
    assert stream["sessionId"]


def test_invoke_model(js_run: dict[str, Any]) -> None:
    assert js_run["invoke"]["dims"] == 384


def test_errors_as_aws_answers_them(js_run: dict[str, Any]) -> None:
    e = js_run["errors"]
    assert (e["missingKb"]["name"], e["missingKb"]["status"]) == ("ResourceNotFoundException", 404)
    assert (e["badNumber"]["name"], e["badNumber"]["status"]) == ("ValidationException", 400)
    assert (e["wrongSecret"]["name"], e["wrongSecret"]["status"]) == ("InvalidSignatureException", 403)
    assert e["wrongSecret"]["message"].startswith("The request signature we calculated does not match")
    assert (e["unknownKey"]["name"], e["unknownKey"]["status"]) == ("UnrecognizedClientException", 403)
    assert e["unknownKey"]["message"] == "The security token included in the request is invalid."
    assert e["skewNoRetry"]["name"] == "InvalidSignatureException"
    assert e["skewNoRetry"]["message"].startswith("Signature expired: ")
    assert e["agentSkewNoRetry"]["name"] == "InvalidSignatureException"
    assert e["agentSkewNoRetry"]["message"].startswith("Signature not yet current: ")


def test_clock_skew_is_corrected_by_the_sdk_retry(js_run: dict[str, Any]) -> None:
    """The SDK recognises InvalidSignatureException as clock skew, takes the time from the answer's
    Date header and succeeds on its second attempt."""
    assert js_run["skewRetried"]["attempts"] == 2 and js_run["skewRetried"]["results"] >= 1


def test_langchain_aws_retriever_and_embeddings(js_run: dict[str, Any]) -> None:
    docs = js_run["langchain"]
    assert [d["team"] for d in docs] == ["fish", "fish"] and "eels" in docs[0]["text"]
    assert js_run["langchainEmbedding"] == 384
