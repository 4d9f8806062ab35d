"""SigV4 verification against botocore's own signer, and the access-key store on a real database."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.servers import running

from pgkb.config import Settings
from pgkb.errors import NotFoundError
from pgkb.server.app import create_app
from pgkb.server.auth import SigV4Verifier
from pgkb.server.keys import KEY_FILE, KeyStore
from pgkb.server.protocol import WireError

AKID, SECRET = "PGKBTESTKEY000000001", "s3cr3t/with+chars0123456789abcdefghijklm"


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    secret: str = SECRET,
    region: str = "us-west-2",
    service: str = "bedrock",
    presign: bool = False,
) -> AWSRequest:
    req = AWSRequest(
        method=method, url=url, data=body, headers=headers or {"Content-Type": "application/json"}
    )
    creds = Credentials(AKID, secret)
    (
        SigV4QueryAuth(creds, service, region, expires=300) if presign else SigV4Auth(creds, service, region)
    ).add_auth(req)
    return req


def verify(req: AWSRequest, verifier: SigV4Verifier, *, body: bytes | None = None) -> str:
    """Feed the request as a server sees it: raw path, raw query string, headers as sent."""
    prepared = req.prepare()
    from urllib.parse import urlsplit

    parts = urlsplit(prepared.url)
    headers = [(k, v if isinstance(v, str) else v.decode()) for k, v in prepared.headers.items()]
    headers.append(("Host", parts.netloc))
    data = prepared.body if body is None else body
    if isinstance(data, str):
        data = data.encode()
    return verifier.verify(prepared.method, parts.path, parts.query, headers, data or b"")


@pytest.fixture
def verifier() -> SigV4Verifier:
    return SigV4Verifier(lambda k: SECRET if k == AKID else None)


@pytest.mark.parametrize(
    "method, url, body",
    [
        (
            "POST",
            "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ/retrieve",
            b'{"retrievalQuery": {"text": "q"}}',
        ),
        ("POST", "http://127.0.0.1:8400/model/amazon.titan-embed-text-v2%3A0/invoke", b'{"inputText": "x"}'),
        ("PUT", "http://localhost:8400/knowledgebases/", b"{}"),
        ("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ", b""),
        ("GET", "http://127.0.0.1:8400/flows/?maxResults=5&nextToken=a%2Fb%3Dc", b""),
        ("POST", "http://127.0.0.1:8400/a/./b/../c//d%20e/", b"x"),
    ],
)
def test_botocore_signatures_verify(verifier: SigV4Verifier, method: str, url: str, body: bytes) -> None:
    assert verify(sign(method, url, body), verifier) == AKID


def test_presigned_query_auth_verifies(verifier: SigV4Verifier) -> None:
    req = sign("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ", presign=True)
    assert verify(req, verifier) == AKID


def _code(req: AWSRequest, verifier: SigV4Verifier, **kw: Any) -> tuple[str, int]:
    with pytest.raises(WireError) as e:
        verify(req, verifier, **kw)
    return e.value.code, e.value.status or 0


def test_tampered_body_is_denied(verifier: SigV4Verifier) -> None:
    req = sign("POST", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ/retrieve", b'{"a": 1}')
    assert _code(req, verifier, body=b'{"a": 2}') == ("InvalidSignatureException", 403)


def test_wrong_secret_is_denied(verifier: SigV4Verifier) -> None:
    req = sign("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ", secret="wrong")
    assert _code(req, verifier) == ("InvalidSignatureException", 403)
    with pytest.raises(WireError) as e:
        verify(req, verifier)
    assert e.value.message.startswith("The request signature we calculated does not match the signature you provided.")


def test_unknown_key_is_unrecognized() -> None:
    v = SigV4Verifier(lambda k: None)
    req = sign("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ")
    assert _code(req, v) == ("UnrecognizedClientException", 403)


def test_other_signing_service_is_denied(verifier: SigV4Verifier) -> None:
    req = sign("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ", service="s3")
    assert _code(req, verifier)[0] == "InvalidSignatureException"


def test_old_request_is_denied() -> None:
    req = sign("GET", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ")
    fresh = SigV4Verifier(lambda k: SECRET, clock=lambda: time.time() + 14 * 60)
    assert verify(req, fresh) == AKID
    stale = SigV4Verifier(lambda k: SECRET, clock=lambda: time.time() + 16 * 60)
    assert _code(req, stale) == ("InvalidSignatureException", 403)
    with pytest.raises(WireError) as e:
        verify(req, stale)
    assert e.value.message.startswith("Signature expired: ") and "is now earlier than" in e.value.message
    early = SigV4Verifier(lambda k: SECRET, clock=lambda: time.time() - 16 * 60)
    assert _code(req, early) == ("InvalidSignatureException", 403)
    with pytest.raises(WireError) as e:
        verify(req, early)
    assert e.value.message.startswith("Signature not yet current: ")


def test_unsigned_and_malformed_are_denied(verifier: SigV4Verifier) -> None:
    with pytest.raises(WireError) as e:
        verifier.verify("GET", "/knowledgebases/X", "", [("Host", "h")], b"")
    assert (e.value.code, e.value.status) == ("MissingAuthenticationTokenException", 403)
    assert e.value.message == "Missing Authentication Token"
    with pytest.raises(WireError):
        verifier.verify("GET", "/", "", [("Authorization", "AWS4-HMAC-SHA256 garbage"), ("Host", "h")], b"")
    with pytest.raises(WireError):
        verifier.verify("GET", "/", "", [("Authorization", "Basic dXNlcjpwYXNz"), ("Host", "h")], b"")


def test_path_signed_differently_is_denied(verifier: SigV4Verifier) -> None:
    req = sign("POST", "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ/retrieve", b"{}")
    prepared = req.prepare()
    headers = [(k, v) for k, v in prepared.headers.items()] + [("Host", "127.0.0.1:8400")]
    with pytest.raises(WireError):
        verifier.verify("POST", "/knowledgebases/ABCDEFGHIK/retrieve", "", headers, b"{}")


# -- the key store, on the real database --------------------------------------------------------


@pytest.fixture
def store(db: Any, settings: Settings) -> KeyStore:
    return KeyStore(db, settings.data_dir, ttl_s=0)


def test_keys_create_list_revoke(store: KeyStore, settings: Settings, db: Any) -> None:
    created = store.create("ci")
    akid, secret = created["accessKeyId"], created["secretAccessKey"]
    assert akid.startswith("PGKB") and len(akid) == 20 and len(secret) == 40
    assert store.secret_for(akid) == secret
    listed = {k["accessKeyId"]: k for k in store.list()}
    assert listed[akid]["status"] == "ACTIVE" and "secretAccessKey" not in listed[akid]
    # the secret is not stored in the clear
    with db.connection() as conn:
        raw = bytes(
            conn.execute(
                "SELECT secret_encrypted FROM pgkb.access_keys WHERE access_key_id = %s", (akid,)
            ).fetchone()[0]
        )
    assert secret.encode() not in raw
    key_file = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    store.revoke(akid)
    assert store.secret_for(akid) is None
    assert akid not in {k["accessKeyId"] for k in store.list()}
    assert akid in {k["accessKeyId"] for k in store.list(include_revoked=True)}
    with pytest.raises(NotFoundError):
        store.revoke("PGKBNOSUCHKEY0000000")


def test_secret_unreadable_without_the_key_file(store: KeyStore, db: Any, tmp_path: Any) -> None:
    akid = store.create()["accessKeyId"]
    other = KeyStore(db, tmp_path, ttl_s=0)
    assert other.secret_for(akid) is None  # encrypted with another data dir's key


def test_signed_boto3_requests_through_the_server(store: KeyStore) -> None:
    """End to end: boto3 signs, the app verifies against the store; unsigned and revoked are refused."""

    class Svc:
        def list_knowledge_bases(self, **kw: Any) -> dict[str, Any]:
            return {"knowledgeBaseSummaries": []}

    key = store.create()
    app = create_app(Svc(), SigV4Verifier(store.secret_for))
    with running(app) as url:

        def agent(akid: str, secret: str) -> Any:
            return boto3.client(
                "bedrock-agent",
                endpoint_url=url,
                region_name="eu-west-1",
                aws_access_key_id=akid,
                aws_secret_access_key=secret,
                config=Config(retries={"max_attempts": 1}),
            )

        assert (
            agent(key["accessKeyId"], key["secretAccessKey"]).list_knowledge_bases()["knowledgeBaseSummaries"]
            == []
        )
        bad = agent(key["accessKeyId"], "x" * 40)
        with pytest.raises(ClientError) as e:
            bad.list_knowledge_bases()
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        unknown = agent("PGKBUNKNOWN000000000", "x" * 40)
        with pytest.raises(Exception) as e:
            unknown.list_knowledge_bases()
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"  # type: ignore[attr-defined]
        import http.client

        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/knowledgebases/", body=b"{}", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 403 and r.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
        assert json.loads(r.read())["message"]
        store.revoke(key["accessKeyId"])
        with pytest.raises(Exception) as e:
            agent(key["accessKeyId"], key["secretAccessKey"]).list_knowledge_bases()
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"  # type: ignore[attr-defined]


def test_payload_hash_header_must_match() -> None:
    body = b'{"x": 1}'
    req = sign(
        "POST",
        "http://127.0.0.1:8400/knowledgebases/",
        body,
        headers={
            "Content-Type": "application/json",
            "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
        },
    )
    v = SigV4Verifier(lambda k: SECRET)
    assert verify(req, v) == AKID
    with pytest.raises(WireError):
        verify(req, v, body=b'{"x": 2}')


class AuthoritySigner(SigV4Auth):
    """Signs as the JavaScript SDK does over HTTP/2: the `:authority` pseudo-header instead of `host`."""

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        host = headers["host"]
        del headers["host"]
        headers[":authority"] = host
        return headers


def test_authority_pseudo_header_stands_for_host(verifier: SigV4Verifier) -> None:
    body = b'{"retrievalQuery": {"text": "q"}}'
    req = AWSRequest(method="POST", url="http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ/retrieve", data=body,
                     headers={"Content-Type": "application/json"})
    AuthoritySigner(Credentials(AKID, SECRET), "bedrock", "us-east-1").add_auth(req)
    assert "SignedHeaders=:authority;" in req.headers["Authorization"]
    # an HTTP/2 server hands the :authority over to the app as `host` (ASGI)
    assert verify(req, verifier) == AKID
    req.headers["Authorization"] = req.headers["Authorization"].replace(":authority;", "")
    with pytest.raises(WireError):
        verify(req, verifier)


def test_header_checks_come_before_the_body(verifier: SigV4Verifier) -> None:
    """`begin` refuses what the headers alone condemn, so the server never reads such a body."""
    url = "http://127.0.0.1:8400/knowledgebases/ABCDEFGHIJ/retrieve"
    body = b'{"a": 1}'

    def head(req: AWSRequest) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in req.prepare().headers.items()] + [("Host", "127.0.0.1:8400")]

    path = "/knowledgebases/ABCDEFGHIJ/retrieve"
    with pytest.raises(WireError) as e:
        verifier.begin("POST", path, "", [("Host", "h"), ("Content-Length", "99999999")])
    assert e.value.code == "MissingAuthenticationTokenException"
    with pytest.raises(WireError) as e:
        SigV4Verifier(lambda k: None).begin("POST", path, "", head(sign("POST", url, body)))
    assert e.value.code == "UnrecognizedClientException"
    stale = SigV4Verifier(lambda k: SECRET, clock=lambda: time.time() + 3600)
    with pytest.raises(WireError) as e:
        stale.begin("POST", path, "", head(sign("POST", url, body)))
    assert e.value.message.startswith("Signature expired")
    # with the payload's hash in x-amz-content-sha256 the signature itself is checked up front
    hashed = {"Content-Type": "application/json", "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    with pytest.raises(WireError) as e:
        verifier.begin("POST", path, "", head(sign("POST", url, body, headers=hashed, secret="wrong")))
    assert e.value.code == "InvalidSignatureException"
    # without it, the signature needs the body: begin passes, finish decides
    pending = verifier.begin("POST", path, "", head(sign("POST", url, body, secret="wrong")))
    with pytest.raises(WireError) as e:
        verifier.finish(pending, hashlib.sha256(body).hexdigest())
    assert e.value.code == "InvalidSignatureException"
    good = verifier.begin("POST", path, "", head(sign("POST", url, body)))
    assert verifier.finish(good, hashlib.sha256(body).hexdigest()) == AKID
