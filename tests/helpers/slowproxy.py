"""A slow API server for tests: a proxy in front of the real kube-apiserver that holds every chunk
of a request and of an answer for `delay` seconds before passing it on, so a request is answered
2 x `delay` late and a watch's events arrive `delay` late, as when the server queues requests
(priority and fairness, a slow etcd); bytes keep their order and nothing is dropped.

It ends TLS itself (with the API server's own serving certificate, which the clients' kubeconfig
trusts and which names 127.0.0.1) and opens TLS onward as admin: handshakes cost nothing, as a
server slow at its work still accepts connections at once, and every client acts as admin (the
tests' kubeconfig is admin's anyway).

``SlowProxy.of(control_plane)`` runs its own event loop in a thread (a test's blocking calls never
add latency to it); ``start()`` returns it listening on 127.0.0.1, ``delay`` may be changed at any
time (bytes already held keep the delay they arrived with), ``kubeconfig(dst)`` writes a copy of the
admin kubeconfig whose server is the proxy, ``stop()`` closes every connection.

``refuse(True)`` is an API server shedding load: it drops every open connection, and answers each
request 429 Too Many Requests with `Retry-After: 1` (then closes the connection) until
``refuse(False)``; ``refused`` counts those answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from pathlib import Path

import yaml

from stargate_operator.localcp.controlplane import LocalControlPlane


class SlowProxy:
    def __init__(self, upstream_port: int, serving: ssl.SSLContext, upstream: ssl.SSLContext,
                 source_kubeconfig: Path, delay: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.serving = serving
        self.upstream_ssl = upstream
        self.source_kubeconfig = source_kubeconfig
        self.delay = delay
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refusing = False
        self.refused = 0

    @classmethod
    def of(cls, control_plane: LocalControlPlane, delay: float = 0.0) -> SlowProxy:
        serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        serving.load_cert_chain(control_plane.pki.serving_cert, control_plane.pki.serving_key)
        return cls(control_plane.apiserver_port, serving, control_plane.ssl_context,
                   control_plane.kubeconfig, delay)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> SlowProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.serving), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def refuse(self, on: bool) -> None:
        def turn() -> None:
            self.refusing = on
            if on:
                for t in list(self._tasks):
                    t.cancel()  # open connections dropped: their clients come back and are refused

        self._loop.call_soon_threadsafe(turn)

    def kubeconfig(self, dst: Path) -> Path:
        """A copy of the admin kubeconfig whose every cluster's server is this proxy."""
        config = yaml.safe_load(self.source_kubeconfig.read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = self.url
        dst.write_text(yaml.safe_dump(config))
        return dst

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        if self.refusing:
            await self._refuse(client_r, client_w)
            self._tasks.discard(task)
            return
        try:
            server_r, server_w = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, ssl=self.upstream_ssl, server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            client_w.close()
            self._tasks.discard(task)
            return
        pumps = [asyncio.create_task(self._pump(client_r, server_w)),
                 asyncio.create_task(self._pump(server_r, client_w))]
        try:
            # Either side closing (or failing) ends the connection, as a TCP proxy's would.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (client_w, server_w):
                w.close()
            self._tasks.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = (b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too many requests, '
                b'please try again later","reason":"TooManyRequests","code":429}')
        answer = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        with contextlib.suppress(OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError,
                                 asyncio.LimitOverrunError):
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):  # read the request's body too: unread, closing resets
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            writer.write(answer)
            await writer.drain()
            self.refused += 1
        writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bytes from `reader` to `writer`, each chunk `delay` after it arrived."""
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while chunk := await reader.read(65536):
                    held.put_nowait((time.monotonic() + self.delay, chunk))
            except (OSError, ssl.SSLError):
                pass
            held.put_nowait((time.monotonic() + self.delay, b""))  # closed: after what it held

        reading = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await held.get()
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    return  # the other side closed: _accept closes both
                writer.write(chunk)
                await writer.drain()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await reading
