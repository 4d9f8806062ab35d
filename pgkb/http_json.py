"""The one HTTP client pgkb uses for model endpoints it calls itself (OpenAI-compatible embeddings
and chat completions, HTTP rerankers): POST a JSON body, get JSON back.

One failure policy, Bedrock's: a dependency that cannot answer now (unreachable, timed out, HTTP 5xx)
is a BadGatewayException (502: retry later); one that answers what the configuration has to fix
(HTTP 4xx, a body that is not JSON) is a DependencyFailedException (424). Both carry `resourceName`
(the model or reranker the caller named), and their messages never hold a password or key.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pgkb.errors import BadGatewayError, DependencyFailedError
from pgkb.redact import redact_url


def post_json(url: str, body: Any, *, resource: str, what: str, api_key: str | None = None,
              timeout: float = 30.0) -> Any:
    """The decoded JSON answer of `url` to `body`; `what` names the endpoint in errors
    ("embedding endpoint", "reranker", ...)."""
    where = f"{what} {resource} at {redact_url(url)}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        cause = f"HTTP {exc.code}" + (f": {redact_url(detail)}" if detail else "")
        raise (BadGatewayError if exc.code >= 500 else DependencyFailedError)(
            f"The {where} failed: {cause}", resource_name=resource) from None
    except TimeoutError:
        raise BadGatewayError(f"The {where} failed: no answer within {timeout:g} s", resource_name=resource) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise BadGatewayError(f"The {where} failed: no answer within {timeout:g} s",
                                  resource_name=resource) from None
        raise BadGatewayError(f"The {where} failed: cannot reach it: {exc.reason}", resource_name=resource) from None
    except (OSError, ValueError) as exc:  # connection reset mid-body, a malformed URL
        raise BadGatewayError(f"The {where} failed: {redact_url(str(exc))}", resource_name=resource) from None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise DependencyFailedError(f"The {where} failed: it did not answer JSON", resource_name=resource) from None


def unexpected_answer(resource: str, what: str, url: str, cause: str) -> DependencyFailedError:
    """A JSON answer that is not what the endpoint's API promises."""
    return DependencyFailedError(f"The {what} {resource} at {redact_url(url)} failed: {cause}", resource_name=resource)
