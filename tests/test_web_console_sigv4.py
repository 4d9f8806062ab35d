"""The console's JavaScript SigV4 signer (pgkb/web/sigv4.mjs), run under Node.js, signs exactly as
botocore's SigV4Auth does for the same request: same canonical request, same Authorization header."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import pgkb.web

WEB = Path(pgkb.web.__file__).parent
NOW = datetime(2026, 11, 25, 17, 58, 3, tzinfo=UTC)
HOST = "127.0.0.1:8400"
AKID = "PGKBTESTKEY0000000001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

# Each case: method, wire path (labels already percent-encoded as botocore sends them), query pairs,
# headers, body, region, session token.
CASES: list[dict[str, Any]] = [
    {
        "name": "retrieve-json-body",
        "method": "POST",
        "path": "/knowledgebases/KB12345678/retrieve",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "retrievalQuery": {"text": "how do tides work?"},
                "retrievalConfiguration": {
                    "vectorSearchConfiguration": {
                        "numberOfResults": 5,
                        "filter": {"equals": {"key": "genre", "value": "science"}},
                    }
                },
            }
        ),
    },
    {
        "name": "percent-encoded-colon",
        "method": "POST",
        "path": "/model/amazon.titan-embed-text-v2%3A0/invoke",
        "headers": {"Content-Type": "application/json", "Accept": "application/json"},
        "body": '{"inputText": "hello"}',
    },
    {
        "name": "literal-colon-and-query",
        "method": "GET",
        "path": "/model/cohere.embed-english-v3:0/x",
        "query": [["b", "2 3"], ["a", "x:y/z"], ["a", "1"], ["é", "ü*'()!"]],
        "headers": {},
        "body": "",
        "region": "eu-west-3",
    },
    {
        "name": "unicode-label-dot-segments-and-spaces-in-header",
        "method": "PUT",
        "path": "/knowledgebases/KB1/./datasources//caf%C3%A9%20bar/ingestionjobs/",
        "headers": {"Content-Type": "application/json", "X-Custom": "  a   b  c "},
        "body": '{"clientToken": "ü—€ tokens", "description": "naïve"}',
        "token": "FQoGZXIvYXdzEXAMPLE//token+=",
    },
    {
        "name": "empty-get",
        "method": "GET",
        "path": "/knowledgebases/KB12345678",
        "headers": {},
        "body": "",
    },
]

NODE_SCRIPT = """
import { signRequest } from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const c of JSON.parse(input)) {
  const r = await signRequest(
    { method: c.method, host: c.host, path: c.path, query: c.query || [], headers: c.headers, body: c.body },
    { accessKeyId: c.akid, secretAccessKey: c.secret, sessionToken: c.token || undefined },
    { region: c.region || "us-east-1", service: "bedrock", date: new Date(c.date) },
  );
  out.push({ name: c.name, headers: r.headers, canonical: r.canonicalRequest });
}
process.stdout.write(JSON.stringify(out));
"""


def sign_in_node(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the console signer test (it is on the CI machine)")
    script = NODE_SCRIPT % json.dumps((WEB / "sigv4.mjs").as_uri())
    payload = [
        {**c, "host": HOST, "akid": AKID, "secret": SECRET, "date": NOW.isoformat().replace("+00:00", "Z")}
        for c in cases
    ]
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def sign_with_botocore(case: dict[str, Any]) -> tuple[dict[str, str], str]:
    request = AWSRequest(
        method=case["method"],
        url=f"http://{HOST}{case['path']}",
        headers=dict(case["headers"]),
        data=case["body"].encode("utf-8"),
    )
    if case.get("query"):
        # botocore signs request.params when present; pairs with a repeated key need the URL form.
        from urllib.parse import quote

        request.url += "?" + "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in case["query"]
        )
    auth = SigV4Auth(Credentials(AKID, SECRET, case.get("token")), "bedrock", case.get("region", "us-east-1"))
    seen: list[str] = []
    original = auth.canonical_request

    def record(req: AWSRequest) -> str:
        seen.append(original(req))
        return seen[-1]

    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)),
        mock.patch.object(auth, "canonical_request", side_effect=record),
    ):
        auth.add_auth(request)
    return dict(request.headers.items()), seen[0]


def test_node_signer_matches_botocore() -> None:
    signed = sign_in_node(CASES)
    for case in CASES:
        js = signed[case["name"]]
        headers, canonical = sign_with_botocore(case)
        assert js["canonical"] == canonical, case["name"]
        assert js["headers"]["X-Amz-Date"] == headers["X-Amz-Date"] == "20261125T175803Z"
        assert js["headers"]["Authorization"] == headers["Authorization"], case["name"]
        if case.get("token"):
            assert js["headers"]["X-Amz-Security-Token"] == case["token"]


def test_signer_double_encodes_the_wire_path_like_botocore() -> None:
    """The ':' in a model id is sent as %3A and signed as %253A; a literal ':' is signed as %3A."""
    signed = sign_in_node(CASES)
    assert (
        "\n/model/amazon.titan-embed-text-v2%253A0/invoke\n" in signed["percent-encoded-colon"]["canonical"]
    )
    assert "\n/model/cohere.embed-english-v3%3A0/x\n" in signed["literal-colon-and-query"]["canonical"]
    # dot segments and repeated slashes are removed before encoding, as the verifier does
    assert (
        "\n/knowledgebases/KB1/datasources/caf%25C3%25A9%2520bar/ingestionjobs/\n"
        in (signed["unicode-label-dot-segments-and-spaces-in-header"]["canonical"])
    )


def test_a_changed_byte_changes_the_signature() -> None:
    base = CASES[0]
    other = {**base, "name": "changed", "body": base["body"].replace("tides", "tidez")}
    signed = sign_in_node([base, other])
    assert signed[base["name"]]["headers"]["Authorization"] != signed["changed"]["headers"]["Authorization"]
