"""A seeded fuzzer of the wire protocol: requests generated from botocore's service models, made
hostile one spot at a time, SigV4-signed with botocore's signer and sent over real HTTP.

`generate(ctx, n, seed)` builds, for every operation pgkb serves, a plausible input from the
operation's input shape (real knowledge-base and data-source ids, a real embedding model, valid
enum values, strings that satisfy the member's pattern when one of a few candidates does), then
changes one thing: a leaf value or a map key becomes a hostile value (lone surrogate, NUL, huge or
negative number, wrong type, long string, deep nesting, SQL metacharacters), or a URI label, query
parameter or header does, or the body's bytes do (not JSON, not UTF-8, nested past any limit).
A small share go out unchanged, so the deep paths (filters, ingestion, sessions) are reached too.
`send(...)` signs and sends them and returns (request, status, body) triples.
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import re
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel, Shape

from pgkb.server.model import SERVED

REGION = "us-east-1"
ACCOUNT = "000000000000"
EMBED_MODEL = "sentence-transformers.all-minilm-l6-v2"
EMBED_ARN = f"arn:aws:bedrock:{REGION}::foundation-model/{EMBED_MODEL}"


def _deep(levels: int) -> Any:
    value: Any = "x"
    for i in range(levels):
        value = [value] if i % 2 else {"andAll": value}
    return value


# Hostile values for any JSON position. Each is a value the server must answer with a 4xx (or
# accept), never a 500.
HOSTILE: list[Any] = [
    "bad \ud800 query", "\udfff", "a\x00b", "\x00", 10**400, -(10**400), 2**63, -1, 0, 1e308, -1e-308,
    "", " ", "x" * 70_000, "é" * 5000, "' OR 1=1; --", "'); DROP TABLE pgkb.knowledge_bases; --",
    "%s %(x)s $1 \\x", "$$;$$", "\u202e\u0000\u200b", "\U0001f600", "../../../etc/passwd", "<script>",
    None, True, False, 3.5, [], {}, [None], {"": None}, ["\ud800"], {"\x00": "\ud800"},
    {"equals": {"key": "year", "value": 10**400}}, _deep(80), _deep(30), list(range(2000)),
    {"key": "a\x00", "value": "b\x00"}, "2026-13-45T99:99:99Z", "arn:aws:bedrock:us-east-1:0:x/\x00",
]
# Map keys and header / label text: strings only.
HOSTILE_TEXT: list[str] = [v for v in HOSTILE if isinstance(v, str) and len(v) < 10_000] + ["a" * 3000]
# Whole bodies.
HOSTILE_BODIES: list[bytes] = [
    b"", b"{", b"[]", b"null", b"42", b'"x"', b"\xff\xfe\x00", b'{"a": "\xed\xa0\x80"}', b"{" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"maxResults": 1e999}', b'{"maxResults": ' + b"9" * 5000 + b"}",
    b'{"maxResults": "\\ud800"}', b'{"x": "' + b"y" * 2_000_000 + b'"}', b'{"a":1,"a":2}', b"\x00" * 64,
]
_CANDIDATES = [
    "abc", "ABCDEFGHIJ", "a1", "doc-1", "inline", "genre", "value", "0123456789", "us-east-1",
    "arn:aws:iam::000000000000:role/kb", f"arn:aws:bedrock:{REGION}:{ACCOUNT}:knowledge-base/ABCDEFGHIJ",
    "s3://bucket/key.txt", "https://example.com/a", "2026-01-01T00:00:00Z", "text/plain", "application/json",
]


# Optional members pgkb refuses (features it does not have) or that rarely make sense at random:
# sent now and then, so most requests get past them to the code behind.
_RARE = frozenset({
    "guardrailConfiguration", "userContext", "sessionConfiguration", "trustedIdentitySources",
    "userContextModeForRetrieval", "serverSideEncryptionConfiguration", "metadataConfigurations",
    "additionalModelRequestFields", "implicitFilterConfiguration", "managedSearchConfiguration",
    "nextToken", "sessionId", "clientToken", "orchestrationConfiguration", "generationConfiguration",
    "rerankingConfiguration", "externalSourcesConfiguration", "parsingConfiguration",
    "customTransformationConfiguration", "contextEnrichmentConfiguration", "imageQuery", "image",
})
# Members that make a request useful (the query, the filter).
_ALWAYS = frozenset({"text", "textQuery", "textDocument", "retrievalQuery", "input", "filter",
                     "vectorSearchConfiguration", "retrievalConfiguration"})


@dataclass
class Context:
    """What real resources the generated requests may point at."""

    kb_id: str
    ds_id: str
    rds: dict[str, Any]  # a valid rdsConfiguration, tableName replaced per request
    kb_arn: str = ""
    real_ids: float = 0.8  # share of knowledgeBaseId / dataSourceId that name the real ones


@dataclass
class Request:
    service: str
    operation: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    note: str = ""
    signing_name: str = "bedrock"


class _Gen:
    def __init__(self, ctx: Context, rng: random.Random) -> None:
        self.ctx = ctx
        self.rng = rng

    # -- plausible values ----------------------------------------------------------------------
    def rid(self, n: int = 10) -> str:
        return "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))

    def named(self, op: str, name: str) -> Any:
        """Values that make a request reach past validation, by member name; None: no opinion."""
        real = self.rng.random() < self.ctx.real_ids and not op.startswith("Delete")
        if name == "knowledgeBaseId":
            return self.ctx.kb_id if real else self.rid()
        if name == "dataSourceId":
            return self.ctx.ds_id if real else self.rid()
        if name == "ingestionJobId":
            return self.rid()
        if name == "resourceArn" and op.endswith(("TagResource", "TagsForResource")):
            return self.ctx.kb_arn if real else f"arn:aws:bedrock:{REGION}:{ACCOUNT}:knowledge-base/{self.rid()}"
        if name in ("embeddingModelArn",):
            return EMBED_ARN
        if name == "modelId" and op == "InvokeModel":
            return EMBED_MODEL
        if name == "modelArn":
            return self.rng.choice(["pgkb.extractive", EMBED_ARN])
        if name == "roleArn":
            return f"arn:aws:iam::{ACCOUNT}:role/kb"
        if name == "name":
            return f"fz{self.rid(8).lower()}"
        if name == "tableName":
            return f"bedrock_integration.fz_{self.rid(8).lower()}"
        if name in ("text", "textDocument") or (name == "input" and op == "Rerank"):
            return self.rng.choice(["what makes a volcano erupt?", "bread", "tides and the moon"])
        if name == "key":
            return self.rng.choice(["genre", "year", "x-amz-bedrock-kb-source-uri", "tags"])
        return None

    def structure_override(self, op: str, shape: Shape) -> Any:
        if shape.name == "KnowledgeBaseConfiguration" and op.endswith("KnowledgeBase"):
            return {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBED_ARN}}
        if shape.name == "StorageConfiguration":
            rds = dict(self.ctx.rds, tableName=self.named(op, "tableName"))
            return {"type": "RDS", "rdsConfiguration": rds}
        if shape.name == "DataSourceConfiguration":
            return {"type": "CUSTOM"}
        if shape.name == "RetrieveAndGenerateConfiguration":
            return {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                "knowledgeBaseId": self.ctx.kb_id, "modelArn": "pgkb.extractive"}}
        if shape.name == "RetrievalFilter":
            return self.filter(2)
        if shape.name == "KnowledgeBaseDocuments":
            doc = f"doc-{self.rid(4)}"
            return [{"metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
                        {"key": "genre", "value": {"type": "STRING", "stringValue": "science"}}]},
                     "content": {"dataSourceType": "CUSTOM", "custom": {
                        "customDocumentIdentifier": {"id": doc}, "sourceType": "IN_LINE",
                        "inlineContent": {"type": "TEXT", "textContent": {"data": "Volcanoes erupt lava."}}}}}]
        return None

    def filter(self, depth: int) -> dict[str, Any]:
        """A well-typed RetrievalFilter (the model types its values only as documents)."""
        ops = ["equals", "notEquals", "greaterThan", "lessThanOrEquals", "in", "notIn", "startsWith",
               "listContains", "stringContains"] + (["andAll", "orAll"] if depth > 0 else [])
        op = self.rng.choice(ops)
        if op in ("andAll", "orAll"):
            return {op: [self.filter(depth - 1) for _ in range(self.rng.randint(2, 3))]}
        key = self.named("Retrieve", "key")
        value: Any = {
            "equals": self.rng.choice(["science", 2020, True]), "notEquals": "cooking",
            "greaterThan": 2019, "lessThanOrEquals": 2021.5, "in": ["science", 2020], "notIn": [2018],
            "startsWith": "sci", "listContains": "a", "stringContains": "ien",
        }[op]
        return {op: {"key": key, "value": value}}

    def value(self, op: str, shape: Shape, name: str, depth: int) -> Any:
        named = self.named(op, name)
        if named is not None:
            return named
        kind = shape.type_name
        if kind == "structure":
            override = self.structure_override(op, shape)
            if override is not None:
                return override
            if shape.is_document_type:
                return self.rng.choice(["science", 2020, True, ["a", "b"]])
            members = shape.members
            if shape.is_tagged_union:
                pick = self.rng.choice(list(members))
                return {pick: self.value(op, members[pick], pick, depth + 1)}
            out = {}
            for m, mshape in members.items():
                if mshape.serialization.get("location"):
                    continue
                share = 0.05 if m in _RARE else 1.0 if m in _ALWAYS else 0.5 if depth < 4 else 0.0
                if m in shape.required_members or self.rng.random() < share:
                    out[m] = self.value(op, mshape, m, depth + 1)
            return out
        if kind == "list":
            if shape.name == "KnowledgeBaseDocuments":
                return self.structure_override(op, shape)
            n = max(shape.metadata.get("min", 1), 1 if depth < 5 else 0)
            n = min(n + self.rng.randint(0, 1), 3)
            return [self.value(op, shape.member, name, depth + 1) for _ in range(n)]
        if kind == "map":
            return {self.value(op, shape.key, "", depth + 1): self.value(op, shape.value, "", depth + 1)
                    for _ in range(self.rng.randint(1, 2))}
        if kind == "string":
            if shape.enum:
                return self.rng.choice(shape.enum)
            return self.text(shape)
        if kind in ("integer", "long"):
            lo, hi = shape.metadata.get("min", 0), shape.metadata.get("max", 100)
            return self.rng.randint(int(lo), int(min(hi, lo + 100)))
        if kind in ("float", "double"):
            return round(self.rng.uniform(0, 1), 3)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "timestamp":
            return "2026-01-01T00:00:00Z"
        if kind == "blob":
            return "aGVsbG8="
        return None

    def text(self, shape: Shape) -> str:
        lo, hi = shape.metadata.get("min", 0), shape.metadata.get("max", 10**9)
        pattern = shape.metadata.get("pattern")
        rx = None
        if pattern:
            try:
                rx = re.compile(pattern)
            except re.error:
                rx = None
        pool = _CANDIDATES[:]
        self.rng.shuffle(pool)
        for cand in pool:
            if lo <= len(cand) <= hi and (rx is None or rx.search(cand)):
                return cand
        return "a" * max(lo, 1)

    # -- one request ---------------------------------------------------------------------------
    def request(self, service: str, op: OperationModel) -> Request:
        shape = op.input_shape
        members = shape.members if shape is not None else {}
        labels: dict[str, Any] = {}
        query: dict[str, Any] = {}
        headers: dict[str, str] = {}
        body: Any = {}
        payload = shape.serialization.get("payload") if shape is not None else None
        for m, ms in members.items():
            loc = ms.serialization.get("location")
            required = shape is not None and m in shape.required_members
            if not required and self.rng.random() < (0.95 if m in _RARE else 0.4):
                continue
            if m == payload:
                body = self.invoke_body() if op.name == "InvokeModel" else self.value(op.name, ms, m, 1)
                continue
            v = self.value(op.name, ms, m, 1)
            wire = ms.serialization.get("name", m)
            if loc == "uri":
                labels[wire] = v
            elif loc == "querystring":
                query[wire] = v
            elif loc == "header":
                headers[wire] = str(v)
            else:
                body[m] = v
        if op.name == "InvokeModel":
            headers.setdefault("Content-Type", "application/json")
        note = "valid"
        raw: bytes | None = None
        roll = self.rng.random()
        if roll < 0.15:
            pass  # unchanged: reach the deep paths with well-formed input
        elif roll < 0.22 and labels:
            k = self.rng.choice(list(labels))
            labels[k] = self.rng.choice(HOSTILE_TEXT)
            note = f"label {k}"
        elif roll < 0.26 and (query or headers):
            if query and (not headers or self.rng.random() < 0.5):
                k = self.rng.choice(list(query))
                query[k] = self.rng.choice(HOSTILE_TEXT)
                note = f"query {k}"
            else:
                k = self.rng.choice(list(headers))
                headers[k] = self.rng.choice([t for t in HOSTILE_TEXT if _latin1(t)])
                note = f"header {k}"
        elif roll < 0.33:
            raw = self.rng.choice(HOSTILE_BODIES)
            note = f"body {raw[:20]!r}"
        else:
            if isinstance(body, dict | list) and body:
                body, note = self.mutate(body)
            elif op.name == "InvokeModel":
                body = self.invoke_body(hostile=True)
                note = "invoke body"
        if raw is None:
            if isinstance(body, bytes):
                raw = body
            else:
                raw = json.dumps(body).encode() if body != {} or op.http["method"] in ("POST", "PUT") else b""
        path = _expand(op.http["requestUri"], labels)
        qs = "&".join(f"{quote(k)}={_quoted(str(v).lower() if isinstance(v, bool) else v)}" for k, v in query.items())
        path, _, fixed_query = path.partition("?")
        qs = "&".join(p for p in (fixed_query, qs) if p)
        return Request(service, op.name, op.http["method"], path, qs, headers, raw, note,
                       op.service_model.signing_name or "bedrock")

    def invoke_body(self, hostile: bool = False) -> bytes:
        text: Any = "what is a volcano?"
        if hostile:
            text = copy.deepcopy(self.rng.choice(HOSTILE))
        shape = self.rng.choice(["titan", "cohere"])
        doc = {"inputText": text} if shape == "titan" else {"texts": [text], "input_type": "search_query"}
        return json.dumps(doc).encode()

    def mutate(self, doc: Any) -> tuple[Any, str]:
        """Replace one value (or one map key) somewhere in `doc` by a hostile one."""
        spots: list[tuple[Any, Any]] = []  # (container, key or index)
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for k, v in node.items():
                    spots.append((node, k))
                    stack.append(v)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    spots.append((node, i))
                    stack.append(v)
        container, key = self.rng.choice(spots)
        if isinstance(container, dict) and self.rng.random() < 0.2:
            new_key = self.rng.choice(HOSTILE_TEXT)
            container[new_key] = container.pop(key)
            return doc, f"key {key!r}"
        old = container[key]
        if isinstance(old, str) and self.rng.random() < 0.3:
            container[key] = old + self.rng.choice(["\x00", "\ud800", "'--", "\udc00x"])
        else:
            container[key] = copy.deepcopy(self.rng.choice(HOSTILE))  # never share (and later mutate) one
        return doc, f"value {key!r}"


def _latin1(text: str) -> bool:
    """A header value HTTP can carry at all (control characters are refused by the HTTP parser,
    before any application sees them)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in text)


def _quoted(value: Any, safe: str = "~") -> str:
    """Percent-encoded UTF-8; a lone surrogate as its (invalid) bytes, as a careless client sends it."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe=safe)


def _expand(uri: str, labels: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        greedy = name.endswith("+")
        return _quoted(labels.get(name.rstrip("+"), ""), "/~" if greedy else "~")

    return re.sub(r"\{([^}]+)\}", one, uri)


def served_operations() -> list[tuple[str, OperationModel]]:
    session = botocore.session.get_session()
    out = []
    for service, names in SERVED.items():
        model = session.get_service_model(service)
        out += [(service, model.operation_model(n)) for n in sorted(names)]
    return out


def generate(ctx: Context, n: int, seed: int) -> list[Request]:
    """`n` requests spread evenly over every served operation, reproducible from `seed`."""
    rng = random.Random(seed)
    gen = _Gen(ctx, rng)
    ops = served_operations()
    return [gen.request(*ops[i % len(ops)]) for i in range(n)]


def send(base_url: str, key: dict[str, str], reqs: list[Request], timeout: float = 60) -> list[tuple[Request, int, bytes]]:
    """Sign each request with botocore's SigV4 signer and send it over one keep-alive connection."""
    creds = Credentials(key["accessKeyId"], key["secretAccessKey"])
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    out = []
    for r in reqs:
        url = f"{base_url}{r.path}" + (f"?{r.query}" if r.query else "")
        aws = AWSRequest(method=r.method, url=url, data=r.body, headers=dict(r.headers))
        SigV4Auth(creds, r.signing_name, REGION).add_auth(aws)
        prepared = aws.prepare()
        target = r.path + (f"?{r.query}" if r.query else "")
        for attempt in (1, 2):
            try:
                conn.request(r.method, target, body=prepared.body, headers=dict(prepared.headers.items()))
                resp = conn.getresponse()
                out.append((r, resp.status, resp.read()))
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                break
            except (ConnectionError, http.client.HTTPException):
                conn.close()  # the server may close a connection after an error; open a new one
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                if attempt == 2:
                    raise
    conn.close()
    return out
