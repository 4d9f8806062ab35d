"""The web console against a real `pgkb serve`: its static files (types, no auth, 404s), the JS
API client under Node.js through the real SigV4 verifier, and the page itself in headless Chromium
(list knowledge bases, details, Sync with Bedrock's job statistics, Retrieve with and without a
filter, readable API errors), with and without --no-auth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers.moto import fill_bucket, moto_server
from helpers.servers import pgkb_serve, running
from web_console_cdp import Browser, Page, find_chromium, install_chromium

import pgkb.web
from pgkb.config import Settings
from pgkb.server.keys import create_key

REGION = "us-east-1"
MODEL_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/sentence-transformers.all-minilm-l6-v2"
WEB = Path(pgkb.web.__file__).parent
DOCS = {
    "docs/volcano.txt": (
        "Volcanoes erupt when magma rises through the crust and escapes as lava and ash.",
        {"genre": "science", "year": 2020},
    ),
    "docs/bread.txt": (
        "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it.",
        {"genre": "cooking", "year": 2021},
    ),
    "docs/tides.txt": (
        "Ocean tides are caused by the gravitational pull of the moon and the sun.",
        {"genre": "science", "year": 2018},
    ),
}
ASSETS = {
    "console.css": "text/css",
    "console.mjs": "text/javascript",
    "api.mjs": "text/javascript",
    "sigv4.mjs": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_server() as url:
        fill_bucket(url, "console-docs", DOCS, REGION)
        yield url


class Served:
    def __init__(self, url: str, key: dict[str, Any]) -> None:
        self.url, self.key = url, key

    def client(self, name: str) -> Any:
        return boto3.client(
            name,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.key["accessKeyId"],
            aws_secret_access_key=self.key["secretAccessKey"],
            config=Config(retries={"max_attempts": 1}, read_timeout=120),
        )


@pytest.fixture(scope="module")
def server(settings: Settings, s3_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`pgkb serve` (auth on) in its own process on a free port."""
    log = tmp_path_factory.mktemp("console-serve") / "serve.log"
    env = {"PGKB_S3_ENDPOINT_URL": s3_url, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": REGION}
    key = create_key(settings, "web console tests")
    with pgkb_serve(settings, log, env) as (url, _):
        yield Served(url, key)


@pytest.fixture(scope="module")
def kb(server: Served, settings: Settings) -> dict[str, str]:
    """A knowledge base with an S3 data source that has not been synced yet (the console syncs it)."""
    import psycopg

    with psycopg.connect(str(settings.database_url)) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    agent = server.client("bedrock-agent")
    name = f"console-{uuid.uuid4().hex[:8]}"
    kb = agent.create_knowledge_base(
        name=name,
        description="Knowledge base made by the console tests",
        roleArn="arn:aws:iam::000000000000:role/kb",
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MODEL_ARN},
        },
        storageConfiguration={
            "type": "RDS",
            "rdsConfiguration": {
                "resourceArn": f"arn:aws:rds:{REGION}:000000000000:cluster:pgkb",
                "credentialsSecretArn": f"arn:aws:secretsmanager:{REGION}:000000000000:secret:pgkb",
                "databaseName": dbname,
                "tableName": f"bedrock_integration.console_{uuid.uuid4().hex[:8]}",
                "fieldMapping": {
                    "primaryKeyField": "id",
                    "vectorField": "embedding",
                    "textField": "chunks",
                    "metadataField": "metadata",
                    "customMetadataField": "custom_metadata",
                },
            },
        },
    )["knowledgeBase"]
    ds = agent.create_data_source(
        knowledgeBaseId=kb["knowledgeBaseId"],
        name="bucket",
        dataSourceConfiguration={
            "type": "S3",
            "s3Configuration": {"bucketArn": "arn:aws:s3:::console-docs", "inclusionPrefixes": ["docs/"]},
        },
    )["dataSource"]
    return {
        "id": kb["knowledgeBaseId"],
        "name": name,
        "table": kb["storageConfiguration"]["rdsConfiguration"]["tableName"],
        "ds": ds["dataSourceId"],
    }


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = find_chromium()
    if exe is None and os.environ.get("PGKB_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("PGKB_SKIP_BROWSER_TESTS=1 and no Chromium installed")
    if exe is None:
        exe = install_chromium()
    if exe is None:
        pytest.fail(
            "headless Chromium is needed: install Debian's `chromium` package (apt-get install chromium),"
            " point PGKB_CHROMIUM at a Chromium binary, or set PGKB_SKIP_BROWSER_TESTS=1 to skip"
        )
    return exe


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.new_page()
    yield p
    p.close()


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# -- static files -----------------------------------------------------------------------------
def test_console_page_and_assets_are_served_without_auth(server: Served) -> None:
    for path in ("/console", "/console/", "/console/index.html"):
        status, headers, body = fetch(server.url + path)
        assert status == 200, path
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b"<title>pgkb console</title>" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    page = fetch(server.url + "/console")[2].decode()
    for name, content_type in ASSETS.items():
        status, headers, body = fetch(f"{server.url}/console/{name}")
        assert status == 200, name
        assert headers["content-type"].split(";")[0] == content_type, name
        assert body == (WEB / name).read_bytes()
    for name in ("console.css", "console.mjs", "favicon.svg"):
        assert f"/console/{name}" in page  # the page refers to assets that exist
    status, headers, body = fetch(server.url + "/console", method="HEAD")
    assert status == 200 and body == b""


def test_unknown_assets_are_404_and_other_methods_405(server: Served) -> None:
    for path in (
        "/console/nope.js",
        "/console/static.py",  # the package's Python files are not assets
        "/console/__init__.py",
        "/console/%2e%2e/server/app.py",
        "/console/..%2fconfig.py",
        "/console/sub/dir.css",
    ):
        status, headers, body = fetch(server.url + path)
        assert status == 404, path
        assert body == b"Not found\n"
    status, headers, _ = fetch(server.url + "/console", method="POST", data=b"{}")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_the_api_still_requires_a_signature(server: Served) -> None:
    status, headers, body = fetch(server.url + "/knowledgebases/", method="POST", data=b"{}")
    assert status == 403
    assert headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    assert json.loads(body)["message"] == "Missing Authentication Token"


NODE_CLIENT = """
import { BedrockClient, ApiError } from %s;
const [origin, akid, secret] = process.argv.slice(1);
const out = {};
const good = new BedrockClient({ origin, region: "eu-central-1", credentials: { accessKeyId: akid, secretAccessKey: secret } });
const kbs = await good.listAll("ListKnowledgeBases", { maxResults: 2 }, "knowledgeBaseSummaries");
out.ids = kbs.map((k) => k.knowledgeBaseId);
for (const [name, client, op, params] of [
  ["badSecret", new BedrockClient({ origin, credentials: { accessKeyId: akid, secretAccessKey: "x" + secret } }), "ListKnowledgeBases", {}],
  ["unsigned", new BedrockClient({ origin }), "ListKnowledgeBases", {}],
  ["missing", good, "GetKnowledgeBase", { knowledgeBaseId: "NOSUCHKB00" }],
  ["invalid", good, "Retrieve", { knowledgeBaseId: "NOSUCHKB00", retrievalQuery: { text: "x" },
     retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: 0 } } }],
]) {
  try { await client.call(op, params); out[name] = "no error"; }
  catch (e) { out[name] = e instanceof ApiError ? { code: e.code, status: e.status, line: e.toString() } : String(e); }
}
process.stdout.write(JSON.stringify(out));
"""


def test_js_client_through_the_real_verifier(server: Served, kb: dict[str, str]) -> None:
    """api.mjs under Node.js: signed pagination reaches every KB; errors become one readable line."""
    node = shutil.which("node")
    assert node is not None, "node is required"
    proc = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            NODE_CLIENT % json.dumps((WEB / "api.mjs").as_uri()),
            server.url,
            server.key["accessKeyId"],
            server.key["secretAccessKey"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert kb["id"] in out["ids"]  # maxResults 2: found by following nextToken when there are more
    assert out["badSecret"]["code"] == "InvalidSignatureException" and out["badSecret"]["status"] == 403
    assert "signature we calculated does not match" in out["badSecret"]["line"]
    assert out["unsigned"]["code"] == "MissingAuthenticationTokenException"
    assert out["missing"]["code"] == "ResourceNotFoundException" and out["missing"]["status"] == 404
    assert out["invalid"]["code"] == "ValidationException"
    assert "numberOfResults" in out["invalid"]["line"] and "(HTTP 400)" in out["invalid"]["line"]


# -- the page in headless Chromium -----------------------------------------------------------
def _text(page: Page, selector: str) -> str:
    return page.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''")


def _results(page: Page) -> list[dict[str, Any]]:
    return page.evaluate(
        """[...document.querySelectorAll('#results > li')].map((li) => ({
             score: li.querySelector('.score').textContent,
             source: li.querySelector('.source').textContent,
             text: li.querySelector('.chunk').textContent,
             meta: li.querySelector('.meta')?.textContent ?? '' }))"""
    )


def _retrieve(page: Page, query: str, n: int = 5, search_type: str = "", flt: str = "") -> None:
    page.evaluate(
        f"""(() => {{
          document.getElementById('results').replaceChildren();
          document.getElementById('q').value = {json.dumps(query)};
          document.getElementById('n').value = {n};
          document.getElementById('search-type').value = {json.dumps(search_type)};
          document.getElementById('filter').value = {json.dumps(flt)};
          document.getElementById('query-form').requestSubmit();
        }})()"""
    )


def test_console_in_chromium(page: Page, server: Served, kb: dict[str, str], tmp_path: Path) -> None:
    page.navigate(server.url + "/console")
    page.wait_for("document.body.dataset.ready === 'true'")
    # no key yet against a server with auth on: a readable error that says what to do
    err = page.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert err.startswith("MissingAuthenticationTokenException: ") and "(HTTP 403)" in err
    assert "pgkb keys create --json" in err

    page.evaluate(
        f"""(() => {{
          document.getElementById('akid').value = {json.dumps(server.key["accessKeyId"])};
          document.getElementById('secret').value = {json.dumps(server.key["secretAccessKey"])};
          document.getElementById('region').value = 'eu-west-1';
          document.getElementById('creds').requestSubmit();
        }})()"""
    )
    button = f"#kbs button[data-kb-id='{kb['id']}']"
    page.wait_for(f"!!document.querySelector({json.dumps(button)})")
    assert page.evaluate("document.getElementById('error').hidden")
    assert kb["name"] in _text(page, button)
    # the secret lives in this tab's sessionStorage only, and is not echoed into the form
    assert page.evaluate("sessionStorage.getItem('pgkb.secretAccessKey')") == server.key["secretAccessKey"]
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.getElementById('secret').value") == ""
    assert server.key["accessKeyId"] in _text(page, "#auth-state")

    # GetKnowledgeBase: model, table, field mapping
    page.evaluate(f"document.querySelector({json.dumps(button)}).click()")
    page.wait_for("!document.getElementById('kb').hidden")
    assert _text(page, "#kb-name") == kb["name"]
    details = _text(page, "#kb-details")
    for expected in ("sentence-transformers.all-minilm-l6-v2", kb["table"], "custom_metadata", "embedding"):
        assert expected in details
    assert _text(page, "#kb-status") == "ACTIVE"

    # ListDataSources -> GetDataSource -> Sync (StartIngestionJob, then GetIngestionJob until done)
    ds_button = f"#ds-rows tr[data-ds-id='{kb['ds']}'] button"
    page.wait_for(f"!!document.querySelector({json.dumps(ds_button)})")
    page.evaluate(f"document.querySelector({json.dumps(ds_button)}).click()")
    page.wait_for("!document.getElementById('ds').hidden")
    assert "arn:aws:s3:::console-docs" in _text(page, "#ds-details")
    assert page.wait_for("!document.getElementById('jobs-empty').hidden")
    page.evaluate("document.getElementById('sync').click()")
    status = page.wait_for(
        "(() => { const r = document.querySelector('#job-rows tr');"
        " return r && ['COMPLETE','FAILED','STOPPED'].includes(r.dataset.status) && r.dataset.status; })()",
        timeout=120,
    )
    assert status == "COMPLETE"
    stats = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#job-rows tr:first-child td[data-stat]')]"
        ".map((td) => [td.dataset.stat, td.textContent]))"
    )
    assert stats["numberOfDocumentsScanned"] == str(len(DOCS))
    assert stats["numberOfNewDocumentsIndexed"] == str(len(DOCS))
    assert stats["numberOfDocumentsFailed"] == "0"
    page.wait_for("!document.getElementById('sync').disabled")
    assert "#kb=" in page.evaluate("location.hash")

    # Retrieve: ranked chunks with score, source and metadata
    _retrieve(page, "what causes ocean tides", n=2)
    page.wait_for("document.querySelectorAll('#results > li').length > 0")
    results = _results(page)
    assert len(results) == 2
    assert results[0]["source"] == "s3://console-docs/docs/tides.txt"
    assert results[0]["text"] == DOCS["docs/tides.txt"][0]
    assert "genre" in results[0]["meta"] and "science" in results[0]["meta"]
    assert float(results[0]["score"]) >= float(results[1]["score"])
    assert "2 results" in _text(page, "#query-state")

    # HYBRID with a filter: only the cooking document qualifies
    _retrieve(
        page,
        "what causes ocean tides",
        search_type="HYBRID",
        flt='{"equals": {"key": "genre", "value": "cooking"}}',
    )
    page.wait_for("document.querySelectorAll('#results > li').length > 0")
    assert [r["source"] for r in _results(page)] == ["s3://console-docs/docs/bread.txt"]

    # Answer (RetrieveAndGenerate with the offline generator): cited spans marked, references listed,
    # and a follow-up continues the same session.
    page.evaluate(
        """(() => {
          document.getElementById('q').value = 'what causes ocean tides';
          document.getElementById('search-type').value = '';
          document.getElementById('filter').value = '';
          document.getElementById('ask').click();
        })()"""
    )
    page.wait_for("document.querySelectorAll('#references > li').length > 0 && !document.getElementById('ask').disabled")
    answer = _text(page, "#answer-text")
    assert "moon" in answer and "[1]" in answer
    cited = page.evaluate("[...document.querySelectorAll('#answer-text .cited')].map((s) => s.textContent)")
    refs = page.evaluate("[...document.querySelectorAll('#references .chunk')].map((p) => p.textContent)")
    assert cited and all(any(c in r for r in refs) for c in cited)  # every cited span is in a reference
    assert "s3://console-docs/docs/tides.txt" in _text(page, "#references")
    session = page.evaluate("document.getElementById('answer').dataset.session")
    assert session
    page.evaluate("document.getElementById('q').value = 'and the sun?'; document.getElementById('ask').click()")
    page.wait_for("document.getElementById('answer-state').textContent.startsWith('in ')")
    assert page.evaluate("document.getElementById('answer').dataset.session") == session
    if os.environ.get("PGKB_CONSOLE_ANSWER_SCREENSHOT"):
        shutil.copy(page.screenshot(tmp_path / "answer.png"), os.environ["PGKB_CONSOLE_ANSWER_SCREENSHOT"])
    page.evaluate("document.getElementById('new-conversation').click()")
    assert page.evaluate("document.getElementById('answer').hidden")

    page.evaluate("window.scrollTo(0, 0)")
    _retrieve(page, "volcano lava", n=3)
    page.wait_for("document.querySelectorAll('#results > li').length === 3")
    shot = page.screenshot(tmp_path / "console.png")
    if os.environ.get("PGKB_CONSOLE_SCREENSHOT"):
        shutil.copy(shot, os.environ["PGKB_CONSOLE_SCREENSHOT"])
    assert shot.stat().st_size > 10_000

    # API errors are shown as one readable line; a bad filter never reaches the server
    _retrieve(page, "x", flt='{"equals": {"key": "a", "value": 1}, "notEquals": {"key": "b", "value": 2}}')
    err = page.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert err.startswith("ValidationException: ") and "(HTTP 400)" in err
    _retrieve(page, "x", flt="{not json")
    err = page.wait_for(
        "document.getElementById('error').textContent.startsWith('InvalidFilter') && "
        "document.getElementById('error').textContent"
    )
    assert "not valid JSON" in err

    # a reload in the same tab keeps the key (sessionStorage) and comes back to the same KB and source
    page.reload()
    page.wait_for("document.body.dataset.ready === 'true'")
    page.wait_for("!document.getElementById('ds').hidden", timeout=30)
    assert _text(page, "#kb-name") == kb["name"]
    assert (
        page.evaluate(f"document.querySelector(\"#ds-rows tr[data-ds-id='{kb['ds']}']\").dataset.selected")
        == "true"
    )
    assert page.wait_for("document.querySelector('#job-rows tr')?.dataset.status") == "COMPLETE"
    assert page.evaluate("document.getElementById('error').hidden")
    assert page.problems() == []


def test_console_without_auth(page: Page, settings: Settings, kb: dict[str, str]) -> None:
    """A server with --no-auth: the console lists knowledge bases with no key at all."""
    from pgkb.server.run import build_app

    with running(build_app(settings, no_auth=True)) as url:
        page.navigate(url + "/console")
        button = f"#kbs button[data-kb-id='{kb['id']}']"
        page.wait_for(f"!!document.querySelector({json.dumps(button)})")
        assert page.evaluate("document.getElementById('error').hidden")
        assert "No key" in _text(page, "#auth-state")
        page.evaluate(f"document.querySelector({json.dumps(button)}).click()")
        page.wait_for("!document.getElementById('kb').hidden")
        assert kb["table"] in _text(page, "#kb-details")
        assert page.problems() == []
