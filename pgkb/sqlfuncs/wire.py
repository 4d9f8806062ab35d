"""pgkb's SQL endpoint: a small PostgreSQL (v3 protocol) server whose queries are model calls.

A database reaches it with dblink through a foreign server and a user mapping, so the credentials live
in the database's own catalog and any PostgreSQL with contrib can call pgkb's models, with no untrusted
language and no superuser. What it speaks: TLS when given a certificate (then required: a peer that
does not ask for it is refused; GSS encryption is declined), SCRAM-SHA-256 password authentication,
the simple query protocol (what dblink uses), Terminate. Extended-protocol messages
are answered with an error (until Sync) so a driver gets a clean failure, never a hang.

Model calls run in a thread pool; many connections are served at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgkb.sqlfuncs import sqltext
from pgkb.sqlfuncs.calls import Calls, Result
from pgkb.sqlfuncs.credentials import load_users, users_file
from pgkb.sqlfuncs.errors import INTERNAL, SqlStateError
from pgkb.sqlfuncs.scram import ScramError, ScramExchange, Verifier

log = logging.getLogger(__name__)

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# Before authentication a peer may send little; after it, a query carries whole batches of texts.
MAX_STARTUP_MESSAGE = 10_000
MAX_MESSAGE = 512 * 1024 * 1024
STARTUP_TIMEOUT_S = 30.0

_ENCODINGS = {"UTF8": "utf-8", "UNICODE": "utf-8", "SQL_ASCII": "utf-8", "LATIN1": "latin-1"}

Users = Callable[[], dict[str, Verifier]]


def file_users(data_dir: Path | str) -> Users:
    """Users from the data dir's users.json, re-read when the file changes (install adds users live)."""
    path = users_file(data_dir)
    cache: dict[str, object] = {"mtime": None, "users": {}}

    def get() -> dict[str, Verifier]:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime != cache["mtime"]:
            cache["users"] = load_users(data_dir)
            cache["mtime"] = mtime
        return cache["users"]  # type: ignore[return-value]

    return get


class _ProtocolViolation(Exception):
    pass


def _msg(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _cstr(s: str, enc: str = "utf-8") -> bytes:
    return s.encode(enc, "replace").replace(b"\0", b"") + b"\0"


def _auth(code: int, data: bytes = b"") -> bytes:
    return _msg(b"R", struct.pack("!I", code) + data)


def _error(err: SqlStateError, *, fatal: bool = False, enc: str = "utf-8") -> bytes:
    sev = "FATAL" if fatal else "ERROR"
    fields = [b"S" + _cstr(sev), b"V" + _cstr(sev), b"C" + _cstr(err.sqlstate), b"M" + _cstr(err.message, enc)]
    if err.detail:
        fields.append(b"D" + _cstr(err.detail, enc))
    if err.hint:
        fields.append(b"H" + _cstr(err.hint, enc))
    return _msg(b"E", b"".join(fields) + b"\0")


def _param_status(name: str, value: str) -> bytes:
    return _msg(b"S", _cstr(name) + _cstr(value))


def _ready() -> bytes:
    return _msg(b"Z", b"I")


def _result(res: Result, enc: str) -> bytes:
    out = [_msg(b"T", struct.pack("!H", len(res.columns)) + b"".join(
        _cstr(name) + struct.pack("!IHIhih", 0, 0, oid, -1, -1, 0) for name, oid in res.columns))]
    for row in res.rows:
        parts = [struct.pack("!H", len(row))]
        for v in row:
            if v is None:
                parts.append(struct.pack("!i", -1))
            else:
                b = v.encode(enc)
                parts.append(struct.pack("!i", len(b)) + b)
        out.append(_msg(b"D", b"".join(parts)))
    out.append(_msg(b"C", _cstr(f"SELECT {len(res.rows)}")))
    return b"".join(out)


async def _read_message(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    kind, length = header[:1], struct.unpack("!I", header[1:])[0]
    if length < 4 or length > limit:
        raise _ProtocolViolation(f"message length {length} out of range")
    return kind, await reader.readexactly(length - 4)


class _Coalescer:
    """Concurrent single-text embedding calls for one model share one model call.

    No timer: the first request runs at once; requests that arrive while the model runs form the next
    batch. A lone caller pays nothing, many callers get the model's batch throughput.
    """

    def __init__(self, calls: Calls, executor: ThreadPoolExecutor, max_items: int = 64) -> None:
        self.calls = calls
        self.executor = executor
        self.max_items = max_items
        self._pending: dict[str, list[tuple[str, asyncio.Future[Any]]]] = {}
        self._running: set[str] = set()
        self.batches = 0
        self.items = 0

    async def embed(self, model_id: str, text: str) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(model_id, []).append((text, fut))
        if model_id not in self._running:
            self._running.add(model_id)
            asyncio.ensure_future(self._drain(model_id))
        return await fut

    async def _drain(self, model_id: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending.get(model_id):
                queue = self._pending[model_id]
                batch, self._pending[model_id] = queue[: self.max_items], queue[self.max_items:]
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.calls.embed_many, model_id, [t for t, _ in batch])
                except BaseException as exc:  # every waiter must wake up
                    results = [SqlStateError(INTERNAL, f"pgkb endpoint internal error: {type(exc).__name__}")] * len(batch)
                self.batches += 1
                self.items += len(batch)
                for (_, fut), res in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, SqlStateError):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._running.discard(model_id)
            if not self._pending.get(model_id):
                self._pending.pop(model_id, None)


@dataclass
class WireServer:
    """The endpoint. `users` gives the current (user → SCRAM verifier) map on each login."""

    users: Users
    calls: Calls = field(default_factory=Calls)
    host: str = "127.0.0.1"
    port: int = 0
    max_workers: int = 4
    _server: asyncio.base_events.Server | None = None
    _executor: ThreadPoolExecutor | None = None
    _conns: set[asyncio.Task[None]] = field(default_factory=set)
    coalescer: _Coalescer | None = None
    #: With a context, every connection must be TLS (libpq `sslmode=require` or stricter).
    ssl_context: ssl.SSLContext | None = None

    async def start(self) -> tuple[str, int]:
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="pgkb-sql")
        self.coalescer = _Coalescer(self.calls, self._executor)
        self._server = await asyncio.start_server(self._serve_conn, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("pgkb SQL endpoint listening on %s:%d", self.host, self.port)
        return self.host, self.port

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            conns = list(self._conns)
            for t in conns:
                t.cancel()
            # Let each connection's finally run, so clients see the socket close at once.
            await asyncio.gather(*conns, return_exceptions=True)
            await self._server.wait_closed()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- one connection ------------------------------------------------------------------------------

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        peer = writer.get_extra_info("peername")
        try:
            # A peer that does not finish logging in promptly is dropped (no idle pre-auth sockets).
            enc = await asyncio.wait_for(self._startup(reader, writer), STARTUP_TIMEOUT_S)
            if enc is not None:
                await self._session(reader, writer, enc)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError, TimeoutError):
            pass
        except _ProtocolViolation as exc:
            log.info("closing connection from %s: %s", peer, exc)
            writer.write(_error(SqlStateError("08P01", str(exc)), fatal=True))
        except Exception:  # a bug must not take the endpoint down
            log.exception("endpoint connection from %s failed", peer)
        finally:
            if task is not None:
                self._conns.discard(task)
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        """Negotiate and authenticate; returns the session's client encoding, None to hang up."""
        tls = False
        while True:
            length = struct.unpack("!I", await reader.readexactly(4))[0]
            if length < 8 or length > MAX_STARTUP_MESSAGE:
                raise _ProtocolViolation("invalid startup packet length")
            body = await reader.readexactly(length - 4)
            code = struct.unpack("!I", body[:4])[0]
            if code == SSL_REQUEST and self.ssl_context is not None and not tls:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self.ssl_context)  # the reader reads through TLS from here on
                tls = True
                continue
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                if tls:
                    raise _ProtocolViolation("TLS negotiation requested twice")
                writer.write(b"N")  # declined; the client then sends its real startup (or gives up)
                await writer.drain()
                continue
            if code == CANCEL_REQUEST:
                return None  # calls are not cancellable mid-model-call; the client just stops waiting
            break
        if self.ssl_context is not None and not tls:
            writer.write(_error(SqlStateError("28000", "pgkb's SQL endpoint requires TLS (sslmode require or stricter)"),
                                fatal=True))
            return None
        major = code >> 16
        if major != 3:
            writer.write(_error(SqlStateError("0A000", f"unsupported frontend protocol {major}.{code & 0xFFFF}"), fatal=True))
            return None
        parts = body[4:].split(b"\0")
        params = {parts[i].decode("utf-8", "replace"): parts[i + 1].decode("utf-8", "replace")
                  for i in range(0, len(parts) - 1, 2) if parts[i]}
        unknown_options = [k for k in params if k.startswith("_pq_.")]
        if code != PROTOCOL_3_0 or unknown_options:
            # Newer minor version (3.2) or protocol options: answer with what we speak.
            payload = struct.pack("!II", PROTOCOL_3_0, len(unknown_options)) + b"".join(_cstr(k) for k in unknown_options)
            writer.write(_msg(b"v", payload))
        user = params.get("user", "")
        if not await self._authenticate(reader, writer, user):
            peer = writer.get_extra_info("peername")
            log.warning("endpoint authentication failed for user %r from %s", user, peer)
            writer.write(_error(SqlStateError("28P01", f'password authentication failed for user "{user}"'), fatal=True))
            return None
        enc_name = params.get("client_encoding", "UTF8").upper().replace("-", "")
        if enc_name not in _ENCODINGS:
            enc_name = "UTF8"
        writer.write(_auth(0))
        for name, value in (("server_version", "17.0 (pgkb)"), ("server_encoding", "UTF8"),
                            ("client_encoding", enc_name),
                            ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"), ("IntervalStyle", "postgres"),
                            ("standard_conforming_strings", "on"), ("TimeZone", "UTC"),
                            ("is_superuser", "off"), ("session_authorization", user),
                            ("application_name", params.get("application_name", ""))):
            writer.write(_param_status(name, value))
        writer.write(_msg(b"K", struct.pack("!I", os.getpid() & 0x7FFFFFFF) + secrets.token_bytes(4)))
        writer.write(_ready())
        await writer.drain()
        return _ENCODINGS[enc_name]

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str) -> bool:
        verifier = self.users().get(user)
        exchange = ScramExchange(verifier)
        writer.write(_auth(10, _cstr("SCRAM-SHA-256") + b"\0"))
        await writer.drain()
        kind, body = await _read_message(reader, MAX_STARTUP_MESSAGE)
        if kind != b"p":
            return False
        mech, _, rest = body.partition(b"\0")
        if mech != b"SCRAM-SHA-256" or len(rest) < 4:
            return False
        n = struct.unpack("!i", rest[:4])[0]
        try:
            writer.write(_auth(11, exchange.server_first(rest[4:4 + n] if n >= 0 else b"")))
            await writer.drain()
            kind, body = await _read_message(reader, MAX_STARTUP_MESSAGE)
            if kind != b"p":
                return False
            writer.write(_auth(12, exchange.server_final(body)))
        except ScramError:
            return False
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, enc: str) -> None:
        loop = asyncio.get_running_loop()
        in_error = False  # extended protocol: skip until Sync after an error
        while True:
            kind, body = await _read_message(reader, MAX_MESSAGE)
            if kind == b"X":
                return
            if kind == b"Q":
                query = body[:-1].decode(enc, "replace")
                try:
                    stmt = sqltext.parse(query)
                    if stmt is None:
                        writer.write(_msg(b"I"))
                    elif isinstance(stmt, sqltext.SetCommand):
                        if stmt.name == "client_encoding" and stmt.value is not None:
                            name = stmt.value.upper().replace("-", "")
                            if name not in _ENCODINGS:
                                raise SqlStateError("22023", f"client encoding {stmt.value} is not supported")
                            enc = _ENCODINGS[name]
                            writer.write(_param_status("client_encoding", name))
                        writer.write(_msg(b"C", _cstr("SET" if stmt.value is not None else "RESET")))
                    elif isinstance(stmt, sqltext.Constant):
                        writer.write(_result(Result([("?column?", 25)], [[stmt.value]]), enc))
                    else:
                        assert self._executor is not None and self.coalescer is not None
                        single = self.calls.batchable(stmt.name, stmt.args)
                        if single is not None:
                            vec = await self.coalescer.embed(*single)
                            res = self.calls.embedding_result(vec)
                        else:
                            res = await loop.run_in_executor(self._executor, self.calls.run, stmt.name, stmt.args)
                        writer.write(_result(res, enc))
                except SqlStateError as err:
                    writer.write(_error(err, enc=enc))
                except Exception:
                    log.exception("endpoint call failed")
                    writer.write(_error(SqlStateError(INTERNAL, "pgkb endpoint internal error"), enc=enc))
                writer.write(_ready())
                await writer.drain()
            elif kind == b"S":  # Sync
                in_error = False
                writer.write(_ready())
                await writer.drain()
            elif kind in (b"P", b"B", b"D", b"E", b"C", b"H"):
                if not in_error:
                    in_error = True
                    writer.write(_error(SqlStateError("0A000", "pgkb's endpoint speaks the simple query protocol only")))
                    await writer.drain()
            else:
                raise _ProtocolViolation(f"unexpected message type {kind!r}")


class EndpointThread:
    """The endpoint on its own event loop in a daemon thread (for `pgkb serve` and tests)."""

    def __init__(self, server: WireServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pgkb-sql-endpoint", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def start(self) -> tuple[str, int]:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self.server.host, self.server.port

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _server(data_dir: Path | str, host: str, port: int, max_workers: int, tls: bool) -> WireServer:
    server = WireServer(file_users(data_dir), Calls(), host, port, max_workers)
    if tls:
        from pgkb.sqlfuncs.tls import ensure_certificate, server_context

        server.ssl_context = server_context(*ensure_certificate(data_dir, [host]))
    return server


def start_in_background(data_dir: Path | str, host: str = "127.0.0.1", port: int = 5444,
                        max_workers: int = 4, *, tls: bool = False) -> EndpointThread:
    """Start the endpoint inside another process (e.g. `pgkb serve`); `.stop()` it on shutdown.
    `tls`: require TLS, with the data dir's certificate (made on first use, see pgkb.sqlfuncs.tls)."""
    thread = EndpointThread(_server(data_dir, host, port, max_workers, tls))
    thread.start()
    return thread


def serve(data_dir: Path | str, host: str = "127.0.0.1", port: int = 5444, max_workers: int = 4,
          *, tls: bool = False) -> None:
    """Run the endpoint in the foreground (`pgkb sql serve`) until interrupted."""
    asyncio.run(_server(data_dir, host, port, max_workers, tls).serve_forever())
