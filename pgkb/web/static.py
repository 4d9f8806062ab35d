"""Serving the console's static files: /console (the page) and /console/<asset>.

Only files shipped in this package directory with a known type are served, by bare name (no
sub-paths, so no traversal); nothing here touches the service or needs a signature, because the
page itself holds no data: it calls the signed Bedrock API like any other client.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

PREFIX = "/console"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# The page loads nothing from elsewhere, so the policy can say so; it also keeps an injected script
# or a framing site from using the key stored in the tab.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Small files, and a console upgraded with the package must not run stale JavaScript.
    (b"cache-control", b"no-cache"),
]


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@lru_cache(maxsize=64)
def _asset(name: str) -> tuple[bytes, str] | None:
    if not _NAME.match(name):
        return None
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix)
    if content_type is None:
        return None
    resource = resources.files(__package__).joinpath(name)
    if not resource.is_file():
        return None
    return resource.read_bytes(), content_type


def respond(method: str, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) for a request whose path is under /console."""
    if method not in ("GET", "HEAD"):
        return (
            405,
            [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8")],
            (b"Method not allowed\n"),
        )
    rest = path[len(PREFIX) :].lstrip("/")
    found = _asset(rest or "index.html")
    if found is None:
        return 404, [(b"content-type", b"text/plain; charset=utf-8"), *_SECURITY_HEADERS], b"Not found\n"
    body, content_type = found
    return 200, [(b"content-type", content_type.encode()), *_SECURITY_HEADERS], body
