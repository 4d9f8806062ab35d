"""Real clients against a real `pgkb serve` process: boto3 (three services, SigV4-signed with a key
from the store), an S3 data source over moto in server mode, and LangChain's retriever."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers.moto import fill_bucket, moto_server
from helpers.servers import pgkb_serve

from pgkb.config import Settings
from pgkb.server.keys import create_key

REGION = "us-east-1"
MODEL_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/sentence-transformers.all-minilm-l6-v2"

DOCS = {
    "docs/volcano.txt": (
        "Volcanoes erupt when magma rises through the crust and escapes as lava and ash.",
        {"genre": "science", "year": 2020},
    ),
    "docs/bread.txt": (
        "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it.",
        {"genre": "cooking", "year": 2021},
    ),
    "docs/lava.txt": (
        "Lava flows from a volcano can travel many kilometres before cooling into basalt rock.",
        {"genre": "travel", "year": 2019},
    ),
    "docs/nested/tides.txt": (
        "Ocean tides are caused by the gravitational pull of the moon and the sun.",
        {"genre": "science", "year": 2018},
    ),
}


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    with moto_server() as url:
        fill_bucket(url, "kb-docs", DOCS, REGION)
        yield url


class Server:
    def __init__(self, url: str, key: dict[str, Any], proc: subprocess.Popen, log: Path) -> None:
        self.url, self.key, self.proc, self.log = url, key, proc, log

    def client(self, name: str, **kw: Any) -> Any:
        return boto3.client(
            name,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=kw.get("akid", self.key["accessKeyId"]),
            aws_secret_access_key=kw.get("secret", self.key["secretAccessKey"]),
            config=Config(retries={"max_attempts": 1}, read_timeout=120),
        )


@pytest.fixture(scope="module")
def server(settings: Settings, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`pgkb serve` in a subprocess on a free port, over the session database."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        "PGKB_S3_ENDPOINT_URL": moto_s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    key = create_key(settings)
    with pgkb_serve(settings, log, env) as (url, proc):
        yield Server(url, key, proc, log)


def rds(settings: Settings, table: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(str(settings.database_url)) as conn:
        dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    return {
        "resourceArn": f"arn:aws:rds:{REGION}:000000000000:cluster:pgkb",
        "credentialsSecretArn": f"arn:aws:secretsmanager:{REGION}:000000000000:secret:pgkb-home",
        "databaseName": dbname,
        "tableName": table,
        "fieldMapping": {
            "primaryKeyField": "id",
            "vectorField": "embedding",
            "textField": "chunks",
            "metadataField": "metadata",
            "customMetadataField": "custom_metadata",
        },
    }


def create_kb(server: Server, settings: Settings, name: str) -> str:
    agent = server.client("bedrock-agent")
    kb = agent.create_knowledge_base(
        name=name,
        roleArn="arn:aws:iam::000000000000:role/kb",
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MODEL_ARN},
        },
        storageConfiguration={
            "type": "RDS",
            "rdsConfiguration": rds(settings, f"bedrock_integration.t_{uuid.uuid4().hex[:10]}"),
        },
    )["knowledgeBase"]
    assert len(kb["knowledgeBaseId"]) == 10
    return kb["knowledgeBaseId"]



def inline_kb(server: Server, settings: Settings, name: str, docs: dict[str, str]) -> tuple[str, str]:
    """A knowledge base with a CUSTOM data source holding `docs` (id -> text), waited for until indexed."""
    agent = server.client("bedrock-agent")
    kb_id = create_kb(server, settings, name)
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="inline",
                                     dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]["dataSourceId"]
    from test_generation import documents

    agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=documents(docs))
    ids = [{"dataSourceType": "CUSTOM", "custom": {"id": k}} for k in docs]
    deadline = time.monotonic() + 60
    while True:
        details = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                     documentIdentifiers=ids)["documentDetails"]
        if all(d["status"] == "INDEXED" for d in details):
            return kb_id, ds_id
        if time.monotonic() > deadline:
            pytest.fail(f"documents not indexed: {details}")
        time.sleep(0.2)


def wait_job(agent: Any, kb_id: str, ds_id: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)[
            "ingestionJob"
        ]
        if job["status"] in ("COMPLETE", "FAILED", "STOPPED") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


@pytest.fixture(scope="module")
def s3_kb(server: Server, settings: Settings) -> tuple[str, str]:
    agent = server.client("bedrock-agent")
    kb_id = create_kb(server, settings, f"e2e-{uuid.uuid4().hex[:8]}")
    ds = agent.create_data_source(
        knowledgeBaseId=kb_id,
        name="docs",
        dataSourceConfiguration={
            "type": "S3",
            "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-docs", "inclusionPrefixes": ["docs/"]},
        },
    )["dataSource"]
    ds_id = ds["dataSourceId"]
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] in ("STARTING", "IN_PROGRESS", "COMPLETE")
    job = wait_job(agent, kb_id, ds_id, job["ingestionJobId"])
    assert job["status"] == "COMPLETE", job
    assert job["statistics"]["numberOfDocumentsScanned"] == len(DOCS)
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == len(DOCS)
    return kb_id, ds_id


def test_s3_ingestion_and_filtered_retrieve(server: Server, s3_kb: tuple[str, str]) -> None:
    kb_id, _ = s3_kb
    rt = server.client("bedrock-agent-runtime")
    out = rt.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": "volcano lava"},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}},
    )
    res = out["retrievalResults"]
    assert {r["location"]["s3Location"]["uri"] for r in res} == {
        "s3://kb-docs/docs/volcano.txt",
        "s3://kb-docs/docs/lava.txt",
    }
    assert all(r["content"]["type"] == "TEXT" and 0 <= r["score"] <= 1 for r in res)
    filtered = rt.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": "volcano lava"},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 5,
                "filter": {
                    "andAll": [
                        {"equals": {"key": "genre", "value": "science"}},
                        {"notEquals": {"key": "year", "value": 2018}},
                    ]
                },
            }
        },
    )["retrievalResults"]
    assert [r["location"]["s3Location"]["uri"] for r in filtered] == ["s3://kb-docs/docs/volcano.txt"]
    assert filtered[0]["metadata"]["genre"] == "science"
    assert filtered[0]["metadata"]["x-amz-bedrock-kb-source-uri"] == "s3://kb-docs/docs/volcano.txt"
    in_filter = rt.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": "anything"},
        retrievalConfiguration={
            "vectorSearchConfiguration": {"filter": {"in": {"key": "year", "value": [2019, 2021]}}}
        },
    )["retrievalResults"]
    assert {r["location"]["s3Location"]["uri"] for r in in_filter} == {
        "s3://kb-docs/docs/lava.txt",
        "s3://kb-docs/docs/bread.txt",
    }


def test_control_plane_reads(server: Server, s3_kb: tuple[str, str]) -> None:
    kb_id, ds_id = s3_kb
    agent = server.client("bedrock-agent")
    kb = agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]
    assert kb["status"] == "ACTIVE" and kb["knowledgeBaseArn"].endswith(f"knowledge-base/{kb_id}")
    assert kb["createdAt"].tzinfo is not None
    ids = [
        s["knowledgeBaseId"]
        for p in agent.get_paginator("list_knowledge_bases").paginate(PaginationConfig={"PageSize": 1})
        for s in p["knowledgeBaseSummaries"]
    ]
    assert kb_id in ids
    assert (
        agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["dataSource"]["status"]
        == "AVAILABLE"
    )
    jobs = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJobSummaries"]
    assert jobs and jobs[0]["status"] == "COMPLETE"


def test_errors_from_the_real_service(server: Server, s3_kb: tuple[str, str]) -> None:
    kb_id, ds_id = s3_kb
    rt = server.client("bedrock-agent-runtime")
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        rt.retrieve(knowledgeBaseId="ZZZZZZZZZZ", retrievalQuery={"text": "q"})
    with pytest.raises(rt.exceptions.ValidationException, match="numberOfResults"):
        rt.retrieve(
            knowledgeBaseId=kb_id,
            retrievalQuery={"text": "q"},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 101}},
        )
    agent = server.client("bedrock-agent")
    with pytest.raises(agent.exceptions.ResourceNotFoundException):
        agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId="ZZZZZZZZZZ")
    bad = server.client("bedrock-agent-runtime", secret="x" * 40)
    with pytest.raises(ClientError) as e:
        bad.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "q"})
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_second_job_on_a_busy_data_source_conflicts(server: Server, settings: Settings, moto_s3: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="kb-many")
    for i in range(300):
        s3.put_object(
            Bucket="kb-many", Key=f"d/{i}.txt", Body=f"document number {i} about topic {i % 7}".encode()
        )
    agent = server.client("bedrock-agent")
    kb_id = create_kb(server, settings, f"busy-{uuid.uuid4().hex[:8]}")
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id,
        name="many",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-many"}},
    )["dataSource"]["dataSourceId"]
    first = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    with pytest.raises(agent.exceptions.ConflictException):
        agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert wait_job(agent, kb_id, ds_id, first["ingestionJobId"])["status"] == "COMPLETE"
    agent.delete_knowledge_base(knowledgeBaseId=kb_id)


def test_direct_ingestion_delete_documents_and_knowledge_base(server: Server, settings: Settings) -> None:
    agent = server.client("bedrock-agent")
    rt = server.client("bedrock-agent-runtime")
    kb_id = create_kb(server, settings, f"custom-{uuid.uuid4().hex[:8]}")
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="inline", dataSourceConfiguration={"type": "CUSTOM"}
    )["dataSource"]["dataSourceId"]

    def doc(doc_id: str, text: str, team: str) -> dict[str, Any]:
        return {
            "content": {
                "dataSourceType": "CUSTOM",
                "custom": {
                    "customDocumentIdentifier": {"id": doc_id},
                    "sourceType": "IN_LINE",
                    "inlineContent": {"type": "TEXT", "textContent": {"data": text}},
                },
            },
            "metadata": {
                "type": "IN_LINE_ATTRIBUTE",
                "inlineAttributes": [{"key": "team", "value": {"type": "STRING", "stringValue": team}}],
            },
        }

    out = agent.ingest_knowledge_base_documents(
        knowledgeBaseId=kb_id,
        dataSourceId=ds_id,
        documents=[
            doc("penguins", "Penguins are flightless birds living in the southern hemisphere.", "birds"),
            doc("owls", "Owls hunt at night and can rotate their heads very far.", "birds"),
            doc("sharks", "Sharks have skeletons made of cartilage rather than bone.", "fish"),
        ],
    )
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 202
    ids = [{"dataSourceType": "CUSTOM", "custom": {"id": i}} for i in ("penguins", "owls", "sharks")]
    deadline = time.monotonic() + 60
    while True:
        details = agent.get_knowledge_base_documents(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids
        )["documentDetails"]
        if all(d["status"] == "INDEXED" for d in details) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [d["status"] for d in details] == ["INDEXED"] * 3, details
    res = rt.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": "birds that cannot fly"},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 1,
                "filter": {"equals": {"key": "team", "value": "birds"}},
            }
        },
    )["retrievalResults"]
    assert res[0]["location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": "penguins"}}
    agent.delete_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids[:1]
    )
    deadline = time.monotonic() + 60
    while True:
        res = rt.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "birds that cannot fly"})[
            "retrievalResults"
        ]
        locs = [r["location"]["customDocumentLocation"]["id"] for r in res]
        if "penguins" not in locs or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "penguins" not in locs and "owls" in locs
    listed = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)["documentDetails"]
    assert {d["identifier"]["custom"]["id"] for d in listed if d["status"] == "INDEXED"} == {"owls", "sharks"}
    deleted = agent.delete_knowledge_base(knowledgeBaseId=kb_id)
    assert deleted["knowledgeBaseId"] == kb_id and deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            agent.get_knowledge_base(knowledgeBaseId=kb_id)
            time.sleep(0.2)
        except agent.exceptions.ResourceNotFoundException:
            break
    else:
        pytest.fail("knowledge base still there after DeleteKnowledgeBase")
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        rt.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "q"})


def test_invoke_model_titan_and_cohere_bodies(server: Server) -> None:
    br = server.client("bedrock-runtime")
    out = br.invoke_model(
        modelId="sentence-transformers.all-minilm-l6-v2",
        body=json.dumps({"inputText": "hello world"}),
        contentType="application/json",
        accept="application/json",
    )
    doc = json.loads(out["body"].read())
    assert len(doc["embedding"]) == 384 and doc["inputTextTokenCount"] > 0
    out = br.invoke_model(
        modelId=MODEL_ARN, body=json.dumps({"texts": ["a", "b"], "input_type": "search_query"})
    )
    assert len(json.loads(out["body"].read())["embeddings"]) == 2
    with pytest.raises(br.exceptions.ValidationException):
        br.invoke_model(modelId="sentence-transformers.all-minilm-l6-v2", body=b"not json")


def test_langchain_retriever(server: Server, s3_kb: tuple[str, str]) -> None:
    from langchain_aws import AmazonKnowledgeBasesRetriever
    from pydantic import SecretStr

    kb_id, _ = s3_kb
    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_id,
        retrieval_config={
            "vectorSearchConfiguration": {
                "numberOfResults": 2,
                "filter": {"equals": {"key": "genre", "value": "science"}},
            }
        },
        client=server.client("bedrock-agent-runtime"),
        min_score_confidence=0.0,
    )
    docs = retriever.invoke("how do tides work")
    assert docs and docs[0].metadata["location"]["s3Location"]["uri"] == "s3://kb-docs/docs/nested/tides.txt"
    assert 0 <= docs[0].metadata["score"] <= 1
    assert docs[0].metadata["source_metadata"]["genre"] == "science"
    assert "tides" in docs[0].page_content
    # endpoint_url form, as users configure it
    by_url = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_id,
        region_name=REGION,
        endpoint_url=server.url,
        aws_access_key_id=SecretStr(server.key["accessKeyId"]),
        aws_secret_access_key=SecretStr(server.key["secretAccessKey"]),
        retrieval_config={"vectorSearchConfiguration": {"numberOfResults": 1}},
    )
    assert len(by_url.invoke("baking bread")) == 1


def test_retrieve_and_generate_and_stream(server: Server, s3_kb: tuple[str, str]) -> None:
    kb_id, _ = s3_kb
    rt = server.client("bedrock-agent-runtime")
    conf = {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": kb_id, "modelArn": "pgkb.extractive"},
    }
    out = rt.retrieve_and_generate(
        input={"text": "what causes ocean tides"}, retrieveAndGenerateConfiguration=conf
    )
    assert out["output"]["text"] and out["sessionId"]
    uris = {
        ref["location"]["s3Location"]["uri"] for c in out["citations"] for ref in c["retrievedReferences"]
    }
    assert "s3://kb-docs/docs/nested/tides.txt" in uris
    streamed = rt.retrieve_and_generate_stream(
        input={"text": "what causes ocean tides"}, retrieveAndGenerateConfiguration=conf
    )
    assert streamed["sessionId"]
    events = list(streamed["stream"])
    text = "".join(e["output"]["text"] for e in events if "output" in e)
    assert text and any("citation" in e for e in events)
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        rt.retrieve_and_generate(
            input={"text": "q"},
            retrieveAndGenerateConfiguration={
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {
                    "knowledgeBaseId": "ZZZZZZZZZZ",
                    "modelArn": "pgkb.extractive",
                },
            },
        )


def test_docs_boto3_example(server: Server, settings: Settings, moto_s3: str) -> None:
    """docs/server.md's boto3 block runs as written, with only this test's endpoint, key, bucket,
    database and names put in (each replacement must still find its text, so the docs cannot drift)."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "server.md").read_text()
    code = re.search(r"## boto3\n.*?```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name=REGION, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    bucket = "doc-example-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=bucket)
    for key, (text, attrs) in DOCS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
        s3.put_object(Bucket=bucket, Key=key + ".metadata.json", Body=json.dumps({"metadataAttributes": attrs}).encode())
    name = "docex" + uuid.uuid4().hex[:6]
    for old, new in {
        'endpoint_url="http://127.0.0.1:8400"': f'endpoint_url="{server.url}"',
        'aws_access_key_id="PGKB..."': f'aws_access_key_id="{server.key["accessKeyId"]}"',
        'aws_secret_access_key="..."': f'aws_secret_access_key="{server.key["secretAccessKey"]}"',
        '"databaseName": "postgres"': f'"databaseName": "{rds(settings, "x")["databaseName"]}"',
        'name="docs"': f'name="{name}"',
        '"bedrock_integration.docs"': f'"bedrock_integration.{name}"',
        "arn:aws:s3:::my-bucket": f"arn:aws:s3:::{bucket}",
    }.items():
        assert old in code, f"docs/server.md no longer has {old!r}"
        code = code.replace(old, new)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/server.md", "exec"), scope)  # noqa: S102  (our own documentation)
    assert scope["job"]["status"] == "COMPLETE"
    assert scope["job"]["statistics"]["numberOfNewDocumentsIndexed"] == len(DOCS)
    hits = scope["hits"]
    assert hits and all(h["metadata"]["genre"] == "science" for h in hits)
    assert "tides" in hits[0]["content"]["text"]
    assert "moon" in scope["answer"]["output"]["text"] and scope["answer"]["citations"]
    assert len(scope["emb"]) == 384


def test_tags_of_a_knowledge_base(server: Server) -> None:
    """What infrastructure-as-code tools call around a create: tags given at creation, then
    TagResource / UntagResource / ListTagsForResource on the knowledge base's ARN."""
    agent = server.client("bedrock-agent")
    kb = agent.create_knowledge_base(
        name="tagged" + uuid.uuid4().hex[:6], roleArn="arn:aws:iam::000000000000:role/kb",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MODEL_ARN}},
        tags={"team": "search", "env": "ci"},
    )["knowledgeBase"]
    arn = kb["knowledgeBaseArn"]
    assert agent.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "search", "env": "ci"}
    agent.tag_resource(resourceArn=arn, tags={"env": "prod", "owner": "ana"})
    agent.untag_resource(resourceArn=arn, tagKeys=["team", "absent"])
    assert agent.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "owner": "ana"}
    with pytest.raises(agent.exceptions.ValidationException, match="at most 50 tags"):
        agent.tag_resource(resourceArn=arn, tags={f"k{i}": "v" for i in range(49)})
    assert len(agent.list_tags_for_resource(resourceArn=arn)["tags"]) == 2  # the refused call changed nothing
    with pytest.raises(agent.exceptions.ResourceNotFoundException):
        agent.list_tags_for_resource(resourceArn=arn.rsplit("/", 1)[0] + "/ZZZZZZZZZZ")
    with pytest.raises(agent.exceptions.ValidationException, match="knowledge bases only"):
        agent.tag_resource(resourceArn="arn:aws:bedrock:us-east-1:000000000000:agent/ABCDEFGHIJ", tags={"a": "b"})
    agent.delete_knowledge_base(knowledgeBaseId=kb["knowledgeBaseId"])


def test_retrieve_paginator_stops_at_number_of_results(server: Server, s3_kb: tuple[str, str]) -> None:
    """numberOfResults caps the whole answer, as in Bedrock: boto3's (and awscli's) auto-pagination
    gets one page and no nextToken, however many documents match."""
    kb_id, _ = s3_kb
    rt = server.client("bedrock-agent-runtime")
    pages = list(rt.get_paginator("retrieve").paginate(
        knowledgeBaseId=kb_id, retrievalQuery={"text": "volcano lava rock"},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}},
    ))
    assert len(pages) == 1 and "nextToken" not in pages[0]
    assert len(pages[0]["retrievalResults"]) == 2


def test_endpoint_from_environment_variables(server: Server, s3_kb: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The service-specific endpoint variables that botocore-based clients honour (set-up without code)."""
    kb_id, _ = s3_kb
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME", server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.key["accessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.key["secretAccessKey"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    session = boto3.Session()
    rt = session.client("bedrock-agent-runtime")
    assert rt.meta.endpoint_url == server.url
    hits = rt.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "ocean tides"})["retrievalResults"]
    assert hits[0]["location"]["s3Location"]["uri"] == "s3://kb-docs/docs/nested/tides.txt"
    out = session.client("bedrock-runtime").invoke_model(
        modelId="sentence-transformers.all-minilm-l6-v2", body=json.dumps({"inputText": "hi"}))
    assert len(json.loads(out["body"].read())["embedding"]) == 384


def test_sigterm_shuts_down_cleanly(server: Server) -> None:
    """Last test of the module: SIGTERM ends the process with status 0 and no traceback."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    assert "Traceback" not in server.log.read_text()

