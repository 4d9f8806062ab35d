"""Server side of SCRAM-SHA-256 (RFC 5802 / 7677), the password exchange libpq (and so dblink) speaks.

pgkb keeps only the verifier (salt, iterations, StoredKey, ServerKey), never the password: whoever
reads pgkb's data dir can neither log in to the endpoint nor recover the password stored in the
database's user mapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pgkb.sqlfuncs.saslprep import saslprep

DEFAULT_ITERATIONS = 4096


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Verifier:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> Verifier:
        salt = salt or secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
        return cls(salt, iterations, _h(_hmac(salted, b"Client Key")), _hmac(salted, b"Server Key"))

    def to_text(self) -> str:
        """PostgreSQL's own format: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>."""
        b = base64.b64encode
        return (f"SCRAM-SHA-256${self.iterations}:{b(self.salt).decode()}"
                f"${b(self.stored_key).decode()}:{b(self.server_key).decode()}")

    @classmethod
    def from_text(cls, text: str) -> Verifier:
        try:
            scheme, iter_salt, keys = text.split("$")
            iterations, salt = iter_salt.split(":")
            stored, server = keys.split(":")
        except ValueError:
            raise ValueError("malformed SCRAM verifier") from None
        if scheme != "SCRAM-SHA-256":
            raise ValueError("unsupported verifier scheme")
        d = base64.b64decode
        return cls(d(salt), int(iterations), d(stored), d(server))


class ScramError(Exception):
    """The exchange failed: bad password, unknown user or a malformed message (never says which)."""


def _attrs(msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message")
        out[part[0]] = part[2:]
    return out


class ScramExchange:
    """One server-side exchange. `verifier` None (unknown user) runs a mock exchange that always fails,
    so that a caller cannot tell unknown users from wrong passwords."""

    def __init__(self, verifier: Verifier | None) -> None:
        self._known = verifier is not None
        self._v = verifier or Verifier(secrets.token_bytes(16), DEFAULT_ITERATIONS,
                                       secrets.token_bytes(32), secrets.token_bytes(32))
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def server_first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message") from None
        # gs2 header: "n,," (no channel binding) or "y,,"; we offer no -PLUS mechanism.
        if not (text.startswith("n,") or text.startswith("y,")):
            raise ScramError("channel binding is not supported")
        _, _, rest = text.partition(",")
        _authzid, _, bare = rest.partition(",")
        attrs = _attrs(bare)
        cnonce = attrs.get("r")
        if not cnonce:
            raise ScramError("malformed SCRAM message")
        self._client_first_bare = bare
        self._nonce = cnonce + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = f"r={self._nonce},s={base64.b64encode(self._v.salt).decode()},i={self._v.iterations}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message") from None
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed SCRAM message")
        attrs = _attrs(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("nonce mismatch")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise ScramError("malformed SCRAM message") from None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._v.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(_h(client_key), self._v.stored_key)
        if not (ok and self._known):
            raise ScramError("authentication failed")
        server_sig = _hmac(self._v.server_key, auth_message)
        return b"v=" + base64.b64encode(server_sig)
