"""Authentication over real HTTP against `pgkb serve`: bodies refused before they are read, AWS's error
codes through boto3, key revocation within the key cache's TTL, HTTPS with HTTP/2 by ALPN."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers.servers import pgkb_serve, running

from pgkb.config import Settings
from pgkb.server.app import create_app
from pgkb.server.auth import SigV4Verifier
from pgkb.server.keys import create_key, revoke_key

REGION = "us-east-1"
TTL_S = 1.0
BIG = 79 * 1024 * 1024  # declared: under the 80 MiB cap, so only the signature check can refuse it early


@pytest.fixture(scope="module")
def served(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any], Path]]:
    log = tmp_path_factory.mktemp("serve-auth") / "serve.log"
    key = create_key(settings)
    with pgkb_serve(settings, log, {"PGKB_KEY_CACHE_TTL_S": str(TTL_S)}) as (url, _proc):
        yield url, key, log


def client(url: str, akid: str, secret: str, name: str = "bedrock-agent", **kw: Any) -> Any:
    return boto3.client(name, endpoint_url=url, region_name=REGION, aws_access_key_id=akid,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}), **kw)


def code_of(call: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def head_then_stall(url: str, head: dict[str, str], sent: int = 256 * 1024) -> bytes:
    """POST with Content-Length BIG, send `sent` bytes of body, then stop sending and read the answer.
    The answer can only come before the body is complete if the server decided without reading it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        lines = ["POST /knowledgebases/ABCDEFGHIJ/retrieve HTTP/1.1", f"Host: {host}:{port}",
                 f"Content-Length: {BIG}", "Content-Type: application/json",
                 *[f"{k}: {v}" for k, v in head.items()]]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def signed_head(url: str, akid: str, secret: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers botocore signs for a Retrieve whose body we never finish sending."""
    req = AWSRequest(method="POST", url=f"{url}/knowledgebases/ABCDEFGHIJ/retrieve", data=b"x" * 16,
                     headers={"Content-Type": "application/json", **(headers or {})})
    SigV4Auth(Credentials(akid, secret), "bedrock", REGION).add_auth(req)
    keep = ("authorization", "x-amz-date", "x-amz-content-sha256")
    return {k: v for k, v in req.headers.items() if k.lower() in keep}


def stale_head(akid: str, age_s: float) -> dict[str, str]:
    """A well-formed Authorization whose X-Amz-Date is `age_s` old (the signature is never reached)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - age_s))
    return {"X-Amz-Date": stamp, "Authorization": (
        f"AWS4-HMAC-SHA256 Credential={akid}/{stamp[:8]}/{REGION}/bedrock/aws4_request, "
        f"SignedHeaders=content-type;host;x-amz-date, Signature={'0' * 64}")}


def test_bodies_are_refused_before_they_are_read(served: tuple[str, dict[str, Any], Path]) -> None:
    url, key, _ = served
    unsigned = head_then_stall(url, {})
    assert unsigned.startswith(b"HTTP/1.1 403"), unsigned[:200]
    assert b"MissingAuthenticationTokenException" in unsigned
    unknown = head_then_stall(url, signed_head(url, "PGKBUNKNOWN000000000", "x" * 40))
    assert unknown.startswith(b"HTTP/1.1 403") and b"UnrecognizedClientException" in unknown
    stale = head_then_stall(url, stale_head(key["accessKeyId"], 3600))
    assert stale.startswith(b"HTTP/1.1 403") and b"Signature expired" in stale
    # the payload's hash sent in x-amz-content-sha256: the signature is checked from the headers alone
    claimed = {"X-Amz-Content-SHA256": "0" * 64}
    forged = head_then_stall(url, signed_head(url, key["accessKeyId"], "x" * 40, claimed))
    assert forged.startswith(b"HTTP/1.1 403") and b"InvalidSignatureException" in forged
    too_big = head_then_stall(url, {}, sent=0).split(b"\r\n")[0]
    assert too_big.startswith(b"HTTP/1.1 4")
    # and the server still serves
    agent = client(url, key["accessKeyId"], key["secretAccessKey"])
    assert "knowledgeBaseSummaries" in agent.list_knowledge_bases()


def test_auth_errors_through_boto3(served: tuple[str, dict[str, Any], Path]) -> None:
    url, key, _ = served
    code, status, message = code_of(client(url, key["accessKeyId"], "x" * 40).list_knowledge_bases)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    code, status, message = code_of(client(url, "PGKBUNKNOWN000000000", "x" * 40).list_knowledge_bases)
    assert (code, status, message) == (
        "UnrecognizedClientException", 403, "The security token included in the request is invalid.")
    unsigned = boto3.client("bedrock-agent-runtime", endpoint_url=url, region_name=REGION,
                            config=Config(signature_version=__import__("botocore").UNSIGNED,
                                          retries={"max_attempts": 1}))
    code, status, message = code_of(lambda: unsigned.retrieve(knowledgeBaseId="ABCDEFGHIJ",
                                                             retrievalQuery={"text": "q"}))
    assert (code, status, message) == ("MissingAuthenticationTokenException", 403, "Missing Authentication Token")


def test_a_stale_clock_gets_signature_expired_through_boto3(settings: Settings) -> None:
    """boto3 signs with the real clock; the server's clock runs 20 minutes ahead (then behind)."""

    class Svc:
        def list_knowledge_bases(self, **kw: Any) -> dict[str, Any]:
            return {"knowledgeBaseSummaries": []}

    key = create_key(settings)
    for offset, start in ((20 * 60, "Signature expired: "), (-20 * 60, "Signature not yet current: ")):
        verifier = SigV4Verifier(lambda k: key["secretAccessKey"] if k == key["accessKeyId"] else None,
                                 clock=lambda offset=offset: time.time() + offset)
        with running(create_app(Svc(), verifier)) as url:
            code, status, message = code_of(client(url, key["accessKeyId"], key["secretAccessKey"]).list_knowledge_bases)
        assert (code, status) == ("InvalidSignatureException", 403) and message.startswith(start), message


def test_a_revoked_key_is_refused_once_the_cache_ttl_has_passed(settings: Settings,
                                                              served: tuple[str, dict[str, Any], Path]) -> None:
    """`pgkb keys revoke` in another process: the server refuses the key for every request made after
    the key cache's TTL (PGKB_KEY_CACHE_TTL_S, 1 s here, 10 s by default) has passed."""
    url, _, _ = served
    key = create_key(settings)
    agent = client(url, key["accessKeyId"], key["secretAccessKey"])
    assert "knowledgeBaseSummaries" in agent.list_knowledge_bases()  # cached as valid now
    revoke_key(settings, key["accessKeyId"])
    time.sleep(TTL_S + 0.2)
    code, status, _ = code_of(agent.list_knowledge_bases)
    assert (code, status) == ("UnrecognizedClientException", 403)


def test_https_with_http2_by_alpn(settings: Settings, tmp_path: Path) -> None:
    """`pgkb serve --tls`: the data dir's self-signed pair; HTTP/2 is chosen by ALPN, HTTP/1.1 still works."""
    key = create_key(settings)
    with pgkb_serve(settings, tmp_path / "serve.log", {}, ("--tls",), scheme="https") as (url, _proc):
        host, port = url.removeprefix("https://").split(":")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
        from pgkb.sqlfuncs.tls import ensure_certificate

        cert, _ = ensure_certificate(settings.data_dir)
        agent = boto3.client("bedrock-agent", endpoint_url=url.replace("127.0.0.1", "localhost"),
                             region_name=REGION, aws_access_key_id=key["accessKeyId"],
                             aws_secret_access_key=key["secretAccessKey"], verify=str(cert),
                             config=Config(retries={"max_attempts": 1}))
        assert json.dumps(agent.list_knowledge_bases()["knowledgeBaseSummaries"], default=str)
