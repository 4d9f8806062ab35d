"""The ASGI application: one bare ASGI callable serving the three Bedrock services.

A bare callable (no framework) keeps the per-request overhead of the Retrieve hot path to routing,
one signature check, one JSON parse and one JSON dump. The service is synchronous, so its calls
run in a thread pool; concurrent Retrieve calls meet in the query-embedding micro-batcher there.
A Retrieve that is the only request in flight, on a server whose recent Retrieve calls were quick,
runs on the event loop itself: no thread hand-off there and back for a lone client, and nobody
else is waiting for the loop meanwhile (`InlinePolicy`).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from pgkb.errors import PgkbError
from pgkb.server import eventstream
from pgkb.server.auth import SigV4Verifier
from pgkb.server.model import Operation, Router
from pgkb.server.protocol import (
    Response,
    WireError,
    error_response,
    extra_headers,
    new_request_id,
    parse_input,
    serialize_output,
    validation_error,
)
from pgkb.server.validate import Validator
from pgkb.web import static as console

log = logging.getLogger("pgkb.server")

DEFAULT_MAX_BODY = 80 * 1024 * 1024  # 10 documents of 5 MiB, base64-encoded, plus JSON
_STREAMS = ("RetrieveAndGenerateStream", "AgenticRetrieveStream")  # event-stream answers
InvokeFn = Callable[[str, bytes, str | None, str | None], tuple[bytes, str]]


def _text(value: bytes | str) -> str:
    """ASGI servers differ in whether raw_path and query_string are bytes (the spec) or str."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _log_unexpected(request_id: str) -> None:
    """The traceback goes to the server log (never to the client), with connection passwords removed."""
    from pgkb.db import redact_url

    log.error("unexpected error (request %s)\n%s", request_id, redact_url(traceback.format_exc()))


def _default_invoke(
    model_id: str, body: bytes, content_type: str | None, accept: str | None
) -> tuple[bytes, str]:
    from pgkb.embeddings.invoke import invoke

    return invoke(model_id, body, content_type, accept)


class InlinePolicy:
    """When a request may run its service call on the event loop instead of the thread pool.

    Only `ops` (Retrieve), only when no other request is in flight (after yielding once, so requests
    the loop has already been handed get counted), and only while the last such call took under
    `max_s`: a slow one (a remote model, a reranker, a cold cache) goes back to the thread pool, so
    a lone slow request never holds the loop for long."""

    def __init__(self, ops: frozenset[str] = frozenset({"Retrieve"}), max_s: float = 0.05) -> None:
        self.ops = ops
        self.max_s = max_s
        self.last_s = 0.0  # duration of the last call of `ops`, inline or not
        self.inline_calls = 0

    def wanted(self, op_name: str) -> bool:
        return op_name in self.ops and self.last_s < self.max_s


class BedrockApp:
    """`service` is a KnowledgeBaseService (or anything with the same method names)."""

    def __init__(
        self,
        service: Any,
        *,
        auth: SigV4Verifier | None,
        invoke: InvokeFn | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        workers: int = 64,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.auth = auth
        self.invoke = invoke or _default_invoke
        self.max_body = max_body_bytes
        self.router = Router()
        self.validators: dict[str, Validator] = {}
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgkb-req")
        self.on_shutdown = on_shutdown
        self._params: dict[str, frozenset[str]] = {}
        self.inline = InlinePolicy()
        self._in_flight = 0  # HTTP requests between their first line and their answer

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.on_shutdown is not None:
            try:
                self.on_shutdown()
            except Exception:  # shutting down: report, never raise
                log.exception("error while closing the service")

    async def _http(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        self._in_flight += 1
        try:
            await self._http_request(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _http_request(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if console.is_console_path(scope["path"]):  # the web console's static files: no signature
            await self._send(send, Response(*console.respond(scope["method"], scope["path"])))
            return
        if scope["method"] == "GET" and scope["path"].startswith("/content/"):  # presigned: its own signature
            status, ctype, data = await self._run(self.service.document_content_response, scope["path"][9:])
            await self._send(send, Response(status, [(b"content-type", ctype.encode())], data))
            return
        request_id = new_request_id()
        op: Operation | None = None
        try:
            method: str = scope["method"]
            raw_path = _text(scope.get("raw_path") or scope["path"].encode("utf-8"))
            raw_path = raw_path.split("?", 1)[0]
            query_string = _text(scope.get("query_string", b""))
            header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            # The signature's header part is checked before a byte of the body is read, so an unsigned,
            # unknown-key or stale request is refused without buffering its body.
            pending = None if self.auth is None else self.auth.begin(method, raw_path, query_string, header_list)
            body, digest = await self._read_body(scope, receive, hashed=pending is not None)
            if pending is not None:
                assert self.auth is not None
                self.auth.finish(pending, digest)
            query = parse_qs(query_string, keep_blank_values=True)
            match = self.router.match(method, raw_path, query)
            if match is None:
                raise WireError(
                    "UnknownOperationException",
                    f"No operation matches {method} {raw_path}"
                    if not self.router.path_exists(raw_path)
                    else f"Method {method} is not allowed on {raw_path}",
                    status=404,
                )
            op = match.operation
            if not op.served:
                raise validation_error(f"{op.name} ({op.service.name}) is not supported by pgkb")
            headers: dict[str, str] = {}
            for k, v in header_list:
                headers[k.lower()] = f"{headers[k.lower()]},{v}" if k.lower() in headers else v
            kwargs = parse_input(op, self._validator(op), match.labels, query, headers, body)
            if op.name == "GetDocumentContent":  # its presigned URL points back at this server
                kwargs["contentBaseUrl"] = f"{scope.get('scheme', 'http')}://{headers.get('host', '127.0.0.1')}"
            if op.name in _STREAMS:
                await self._stream(op, kwargs, request_id, send)
                return
            result = await self._call(op, kwargs)
            response = serialize_output(op, result, request_id)
        except (WireError, PgkbError) as err:
            response = error_response(err, op, request_id)
        except Exception:
            _log_unexpected(request_id)
            response = error_response(
                WireError(
                    "InternalServerException", f"Internal server error (request id {request_id})", status=500
                ),
                op,
                request_id,
            )
        await self._send(send, response)

    async def _read_body(self, scope: dict[str, Any], receive: Callable, *, hashed: bool) -> tuple[bytes, str]:
        """The body and (when `hashed`) its hex SHA-256, hashed chunk by chunk as it arrives; the size
        cap is enforced on the declared length and again as bytes arrive."""
        declared: int | None = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise validation_error("Content-Length is not a number") from None
                if declared > self.max_body:
                    raise validation_error(f"Request body exceeds the limit of {self.max_body} bytes")
        chunks: list[bytes] = []
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise validation_error(f"Request body exceeds the limit of {self.max_body} bytes")
            if hashed:
                digest.update(chunk)
            chunks.append(chunk)
            # Done at the declared length: granian hands over the body, then an empty last message,
            # and waiting for that one cost a hand-off from its runtime thread (0.07 ms per request).
            if not message.get("more_body") or size == declared:
                break
        return b"".join(chunks), digest.hexdigest()

    @staticmethod
    async def _send(send: Callable, response: Response) -> None:
        headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _validator(self, op: Operation) -> Validator:
        v = self.validators.get(op.service.name)
        if v is None:
            v = self.validators[op.service.name] = Validator(op.service)
        return v

    async def _run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _call(self, op: Operation, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The service call, on the loop when `InlinePolicy` allows it, else in the thread pool."""
        policy = self.inline
        if op.name not in policy.ops:
            result: dict[str, Any] = await self._run(self._dispatch, op, kwargs)
            return result
        inline = False
        if policy.wanted(op.name):
            await asyncio.sleep(0)  # let requests already handed to the loop count themselves in
            inline = self._in_flight == 1
        t0 = time.perf_counter()
        try:
            if inline:
                policy.inline_calls += 1
                return self._dispatch(op, kwargs)
            result = await self._run(self._dispatch, op, kwargs)
            return result
        finally:
            policy.last_s = time.perf_counter() - t0

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, op: Operation, kwargs: dict[str, Any]) -> dict[str, Any]:
        if op.name == "InvokeModel":
            body, content_type = self.invoke(
                kwargs["modelId"], kwargs.get("body") or b"", kwargs.get("contentType"), kwargs.get("accept")
            )
            return {"body": body, "contentType": content_type}
        method = getattr(self.service, op.python_name, None)
        if method is None:
            raise validation_error(f"{op.name} is not available in this pgkb build yet")
        return method(**self._accepted(op.python_name, method, kwargs))

    def _accepted(self, name: str, method: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Refuse modelled members the service does not implement (e.g. `guardrailConfiguration`)
        with a ValidationException that names them, instead of a TypeError inside the service."""
        params = self._params.get(name)
        if params is None:
            sig = inspect.signature(method)
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
                params = self._params[name] = frozenset({"*"})
            else:
                params = self._params[name] = frozenset(sig.parameters)
        if "*" in params:
            return kwargs
        unsupported = sorted(k for k in kwargs if k not in params)
        if unsupported:
            raise validation_error(f"pgkb does not support {', '.join(unsupported)} in {name} yet")
        return kwargs

    async def _stream(self, op: Operation, kwargs: dict[str, Any], request_id: str, send: Callable) -> None:
        """RetrieveAndGenerateStream, AgenticRetrieveStream: errors before the first event are ordinary
        error responses; errors after it become in-stream exception frames."""
        method = getattr(self.service, op.python_name, None)
        if method is None:
            raise validation_error(f"{op.name} is not available in this pgkb build yet")
        kwargs = self._accepted(op.python_name, method, kwargs)
        result: dict[str, Any] = await self._run(lambda: method(**kwargs))
        events: Iterator[dict[str, Any]] = iter(result.get("stream") or ())
        headers = [
            (b"content-type", eventstream.CONTENT_TYPE.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if result.get("sessionId"):
            headers.append((b"x-amzn-bedrock-knowledge-base-session-id", str(result["sessionId"]).encode()))
        headers += extra_headers(result)
        await send({"type": "http.response.start", "status": op.success_status, "headers": headers})
        done = object()
        while True:
            try:
                item = await self._run(next, events, done)
            except PgkbError as err:
                extra = {k: v for k in ("resourceName", "reason") if (v := getattr(err, k, None)) is not None}
                frame = eventstream.exception(eventstream.exception_member(err.code), err.message, **extra)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                break
            except Exception:
                _log_unexpected(request_id)
                frame = eventstream.exception(
                    "internalServerException", f"Internal server error (request id {request_id})"
                )
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                break
            if item is done:
                break
            for event_type, payload in item.items():
                await send(
                    {
                        "type": "http.response.body",
                        "body": eventstream.event(event_type, payload),
                        "more_body": True,
                    }
                )
        await send({"type": "http.response.body", "body": b""})


def create_app(
    service: Any,
    auth: SigV4Verifier | None = None,
    *,
    invoke: InvokeFn | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    on_shutdown: Callable[[], None] | None = None,
) -> BedrockApp:
    """The ASGI app. `auth=None` serves unsigned requests (only `serve(..., no_auth=True)` on loopback)."""
    return BedrockApp(
        service, auth=auth, invoke=invoke, max_body_bytes=max_body_bytes, on_shutdown=on_shutdown
    )
