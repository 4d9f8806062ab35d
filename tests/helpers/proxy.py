"""A TCP proxy a test can cut: the database "goes away" for the processes connected through it
(connections dropped, new ones refused) while the real server keeps running for everyone else."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class CuttableProxy:
    """Listens on 127.0.0.1:<port>; forwards to a TCP (host, port) or a Unix socket path."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def open(self) -> None:
        """Listen (again) on the same port."""
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        lst, self._listener = self._listener, None
        if lst is not None:
            with suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (a close alone does not)
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                if isinstance(self.target, str):
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(self.target)
                else:
                    upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextmanager
def cuttable_proxy(target: tuple[str, int] | str) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target)
    proxy.open()
    try:
        yield proxy
    finally:
        proxy.cut()


def through(url: str, proxy: CuttableProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    return make_conninfo(url, host="127.0.0.1", port=str(proxy.port))


def target_of(url: str) -> tuple[str, int] | str:
    """Where `url` connects: (host, port), or the Unix socket's path for a socket directory."""
    info = conninfo_to_dict(url)
    host, port = str(info.get("host") or "/tmp"), int(info.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
