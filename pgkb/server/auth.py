"""AWS Signature Version 4 verification (header and query-string forms).

The canonical request is rebuilt from what arrived on the wire exactly as the AWS spec (and
botocore's signer, the reference in the tests) builds it: the raw path with dot segments and
repeated slashes removed, URI-encoded once more; sorted, re-encoded query pairs; the signed headers
lower-cased, trimmed and sorted; the hex SHA-256 of the body.

Verification comes in two steps so the server can refuse before reading a body: `begin` checks all
the headers decide (form, scope, date window, key; the signature too when x-amz-content-sha256 carries
the payload hash), `finish` completes it with the body's hash. Failures are AWS's own answers (403):
MissingAuthenticationTokenException, IncompleteSignatureException, InvalidSignatureException (bad
signature, expired or not yet current), UnrecognizedClientException (unknown or revoked key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


def missing_token() -> WireError:
    """No signature at all: AWS's API front door answers this before the service sees the request."""
    return WireError("MissingAuthenticationTokenException", "Missing Authentication Token", status=403)


def incomplete(message: str) -> WireError:
    """A malformed Authorization header or presigned query (AWS: IncompleteSignatureException)."""
    return WireError("IncompleteSignatureException", message, status=403)


def invalid_signature(message: str) -> WireError:
    """Bad signature, expired or wrongly scoped request: the code SDKs key their clock-skew retry on."""
    return WireError("InvalidSignatureException", message, status=403)


def unknown_key() -> WireError:
    return WireError(
        "UnrecognizedClientException", "The security token included in the request is invalid.", status=403
    )


MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


def _amz(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Pending:
    """What the headers proved; the body's SHA-256 completes the check (`SigV4Verifier.finish`)."""

    access_key: str
    signature: str
    key: bytes
    canonical_head: str  # method, URI, query, headers, signed header names: all but the payload hash
    claimed_hash: str | None  # x-amz-content-sha256 as sent (None when absent)
    string_to_sign_head: str  # algorithm, date and scope lines


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
        pending = self.begin(method, raw_path, query_string, headers)
        return self.finish(pending, hashlib.sha256(body).hexdigest())

    def begin(
        self, method: str, raw_path: str, query_string: str, headers: Iterable[tuple[str, str]]
    ) -> Pending:
        """Everything that can be checked before the body is read: the header is well formed, the key
        exists and is active, the date is inside the window; and when the client sent the payload's hash
        in x-amz-content-sha256 (or UNSIGNED-PAYLOAD), the signature itself. Raises WireError (403)."""
        hmap: dict[str, list[str]] = {}
        for name, value in headers:
            hmap.setdefault(name.lower(), []).append(value)
        authz = next(iter(hmap.get("authorization") or ()), None)
        presigned = False
        if authz is not None:
            m = _AUTH_RE.match(authz.strip())
            if m is None:
                if authz.startswith(ALGORITHM):
                    raise incomplete(
                        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."
                    )
                raise incomplete("Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported.")
            credential, signed_headers, signature = m.group("cred"), m.group("sh"), m.group("sig").lower()
            amz_date = next(iter(hmap.get("x-amz-date") or ()), None)
            expires = None
        elif "X-Amz-Signature=" in query_string:
            presigned = True
            q = _query_params(query_string)
            if q.get("X-Amz-Algorithm") != ALGORITHM:
                raise incomplete("Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported.")
            credential = q.get("X-Amz-Credential", "")
            signed_headers = q.get("X-Amz-SignedHeaders", "")
            signature = q.get("X-Amz-Signature", "").lower()
            amz_date = q.get("X-Amz-Date")
            try:
                expires = int(q.get("X-Amz-Expires", "900"))
            except ValueError:
                raise incomplete("X-Amz-Expires must be a number of seconds.") from None
        else:
            raise missing_token()

        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise incomplete(
                "Credential should be scoped to a valid region, service and aws4_request terminator."
            )
        access_key, scope_date, region, service = parts[0], parts[1], parts[2], parts[3]
        if service != SERVICE:
            raise invalid_signature(f"Credential should be scoped to correct service: '{SERVICE}'.")

        when = self._request_time(amz_date, hmap)
        if when.strftime("%Y%m%d") != scope_date:
            raise invalid_signature("Credential should be scoped to the date of the request (x-amz-date).")
        now = self.clock()
        age = now - when.timestamp()
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        if presigned and age > min(expires or 0, 7 * 24 * 3600):
            raise invalid_signature("Request has expired.")
        if age > MAX_SKEW_S and not presigned:
            raise invalid_signature(
                f"Signature expired: {stamp} is now earlier than {_amz(now - MAX_SKEW_S)} ({_amz(now)} - 15 min.)"
            )
        if age < -MAX_SKEW_S:
            raise invalid_signature(
                f"Signature not yet current: {stamp} is still later than {_amz(now + MAX_SKEW_S)} ({_amz(now)} + 15 min.)"
            )

        names = signed_headers.split(";")
        # Over HTTP/2 the JavaScript SDK signs the `:authority` pseudo-header instead of `host`; the
        # server hands both over as `host` (ASGI), so either name stands for the request's authority.
        if "host" not in names and ":authority" not in names:
            raise incomplete("The host header must be signed.")
        canon_headers = []
        for name in names:
            values = hmap.get(name)
            if values is None and name == ":authority":
                values = hmap.get("host")
            if values is None:
                raise incomplete(f"Signed header '{name}' is missing from the request.")
            canon_headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")

        secret = self.lookup(access_key)
        if secret is None:
            raise unknown_key()
        pending = Pending(
            access_key=access_key,
            signature=signature,
            key=self._signing_key(secret, scope_date, region, service),
            canonical_head="\n".join(
                [
                    method.upper(),
                    canonical_uri(raw_path),
                    canonical_query(query_string, drop_signature=presigned),
                    "\n".join(canon_headers) + "\n",
                    signed_headers,
                ]
            ),
            claimed_hash=next(iter(hmap.get("x-amz-content-sha256") or ()), None),
            string_to_sign_head=f"{ALGORITHM}\n{stamp}\n{scope_date}/{region}/{service}/aws4_request\n",
        )
        if pending.claimed_hash is not None:
            # The signature covers the claimed hash, so it can be checked now; the body must then match it.
            self._check_signature(pending, pending.claimed_hash)
        return pending

    def finish(self, pending: Pending, body_sha256: str) -> str:
        """Completes `begin` with the hex SHA-256 of the body as received; returns the access key id."""
        claimed = pending.claimed_hash
        if claimed is None:
            self._check_signature(pending, body_sha256)
        elif claimed != UNSIGNED_PAYLOAD and claimed.lower() != body_sha256:
            raise invalid_signature("The x-amz-content-sha256 header does not match the request body.")
        return pending.access_key

    @staticmethod
    def _check_signature(pending: Pending, payload_hash: str) -> None:
        canonical = f"{pending.canonical_head}\n{payload_hash}"
        string_to_sign = pending.string_to_sign_head + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        expected = hmac.new(pending.key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, pending.signature):
            raise invalid_signature(MISMATCH)

    @staticmethod
    def _request_time(amz_date: str | None, hmap: dict[str, list[str]]) -> datetime:
        if amz_date:
            try:
                return datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                raise incomplete(
                    "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'."
                ) from None
        date = next(iter(hmap.get("date") or ()), None)
        if date:
            try:
                parsed = parsedate_to_datetime(date)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except (TypeError, ValueError):
                pass
        raise incomplete("Authorization requires a valid X-Amz-Date or Date header.")
