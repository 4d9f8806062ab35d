"""AWS Signature Version 4 verification (header and query-string forms).

The canonical request is rebuilt from what arrived on the wire exactly as the AWS spec (and
botocore's signer, the reference in the tests) builds it: the raw path with dot segments and
repeated slashes removed, URI-encoded once more; sorted, re-encoded query pairs; the signed headers
lower-cased, trimmed and sorted; the hex SHA-256 of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from threading import Lock
from urllib.parse import quote, unquote

from botocore.utils import normalize_url_path

from pgkb.server.protocol import WireError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "bedrock"
MAX_SKEW_S = 15 * 60
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*SignedHeaders=(?P<sh>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$"
)


def denied(message: str) -> WireError:
    return WireError("AccessDeniedException", message, status=403)


def unknown_key() -> WireError:
    return WireError(
        "UnrecognizedClientException", "The security token included in the request is invalid.", status=403
    )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def canonical_uri(raw_path: str) -> str:
    return quote(normalize_url_path(raw_path), safe="/~")


def canonical_query(query_string: str, *, drop_signature: bool = False) -> str:
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if drop_signature and key == "X-Amz-Signature":
            continue
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _query_params(query_string: str) -> dict[str, str]:
    out = {}
    for part in query_string.split("&"):
        key, _, value = part.partition("=")
        if key:
            out[unquote(key)] = unquote(value)
    return out


class SigV4Verifier:
    """Checks a request's signature against the secret of its access key.

    `lookup(access_key_id)` returns the secret, or None for an unknown or revoked key.
    """

    def __init__(
        self, lookup: Callable[[str], str | None], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.lookup = lookup
        self.clock = clock
        self._keys: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()
        self._lock = Lock()

    def _signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        ident = (hashlib.sha256(secret.encode()).hexdigest(), date, region, service)
        with self._lock:
            key = self._keys.get(ident)
            if key is not None:
                self._keys.move_to_end(ident)
                return key
        k = _hmac(("AWS4" + secret).encode("utf-8"), date)
        k = _hmac(k, region)
        k = _hmac(k, service)
        k = _hmac(k, "aws4_request")
        with self._lock:
            self._keys[ident] = k
            if len(self._keys) > 256:
                self._keys.popitem(last=False)
        return k

    def verify(
        self,
        method: str,
        raw_path: str,
        query_string: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> str:
        """Returns the access key id of a correctly signed request; raises WireError (403) otherwise."""
        hmap: dict[str, list[str]] = {}
        for name, value in headers:
            hmap.setdefault(name.lower(), []).append(value)
        authz = (hmap.get("authorization") or [None])[0]
        presigned = False
        if authz is not None:
            m = _AUTH_RE.match(authz.strip())
            if m is None:
                if authz.startswith(ALGORITHM):
                    raise denied("Authorization header is malformed.")
                raise denied("Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported.")
            credential, signed_headers, signature = m.group("cred"), m.group("sh"), m.group("sig").lower()
            amz_date = (hmap.get("x-amz-date") or [None])[0]
            expires = None
        elif "X-Amz-Signature=" in query_string:
            presigned = True
            q = _query_params(query_string)
            if q.get("X-Amz-Algorithm") != ALGORITHM:
                raise denied("Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported.")
            credential = q.get("X-Amz-Credential", "")
            signed_headers = q.get("X-Amz-SignedHeaders", "")
            signature = q.get("X-Amz-Signature", "").lower()
            amz_date = q.get("X-Amz-Date")
            try:
                expires = int(q.get("X-Amz-Expires", "900"))
            except ValueError:
                raise denied("X-Amz-Expires must be a number of seconds.") from None
        else:
            raise denied(
                "Missing Authentication Token: the request must be signed with AWS Signature Version 4."
            )

        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise denied(
                "Credential should be scoped to a valid region, service and aws4_request terminator."
            )
        access_key, scope_date, region, service = parts[0], parts[1], parts[2], parts[3]
        if service != SERVICE:
            raise denied(f"Credential should be scoped to correct service: '{SERVICE}'.")

        when = self._request_time(amz_date, hmap)
        if when.strftime("%Y%m%d") != scope_date:
            raise denied("Credential should be scoped to the date of the request (x-amz-date).")
        now = self.clock()
        age = now - when.timestamp()
        if presigned:
            if age > min(expires or 0, 7 * 24 * 3600) or age < -MAX_SKEW_S:
                raise denied("Request has expired.")
        elif abs(age) > MAX_SKEW_S:
            raise denied(
                "Signature expired: the request time is more than 15 minutes away from the server time."
            )

        names = signed_headers.split(";")
        if "host" not in names:
            raise denied("The host header must be signed.")
        canon_headers = []
        for name in names:
            values = hmap.get(name)
            if values is None:
                raise denied(f"Signed header '{name}' is missing from the request.")
            canon_headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")

        claimed = (hmap.get("x-amz-content-sha256") or [None])[0]
        actual = hashlib.sha256(body).hexdigest()
        if claimed is not None and claimed != UNSIGNED_PAYLOAD and claimed.lower() != actual:
            raise denied("The x-amz-content-sha256 header does not match the request body.")
        payload_hash = claimed if claimed is not None else actual

        canonical = "\n".join(
            [
                method.upper(),
                canonical_uri(raw_path),
                canonical_query(query_string, drop_signature=presigned),
                "\n".join(canon_headers) + "\n",
                signed_headers,
                payload_hash,
            ]
        )
        string_to_sign = "\n".join(
            [
                ALGORITHM,
                when.strftime("%Y%m%dT%H%M%SZ"),
                f"{scope_date}/{region}/{service}/aws4_request",
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            ]
        )
        secret = self.lookup(access_key)
        if secret is None:
            raise unknown_key()
        key = self._signing_key(secret, scope_date, region, service)
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise denied(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method."
            )
        return access_key

    @staticmethod
    def _request_time(amz_date: str | None, hmap: dict[str, list[str]]) -> datetime:
        if amz_date:
            try:
                return datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                raise denied(
                    "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'."
                ) from None
        date = (hmap.get("date") or [None])[0]
        if date:
            try:
                parsed = parsedate_to_datetime(date)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except (TypeError, ValueError):
                pass
        raise denied("Authorization requires a valid X-Amz-Date or Date header.")
